package broker_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/testkit"
)

// shardWorker is one Broker consuming a sharded topology, as a worker
// process would, with the deliveries it was handed.
type shardWorker struct {
	b      *broker.Broker
	out    chan *broker.Delivery
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	events []broker.ShardEvent
}

func startShardWorker(t *testing.T, topo broker.Topology) *shardWorker {
	t.Helper()
	// Unbuffered, as the worker's: a delivery is in hand once taken.
	w := &shardWorker{out: make(chan *broker.Delivery), done: make(chan struct{})}
	b, err := broker.Dial(context.Background(), broker.Options{URL: testkit.AMQPURL(), Topology: topo, Prefetch: 10,
		RebalanceInterval: 50 * time.Millisecond,
		OnShards: func(e broker.ShardEvent) {
			w.mu.Lock()
			w.events = append(w.events, e)
			w.mu.Unlock()
		}})
	require.NoError(t, err)
	w.b = b
	var ctx context.Context
	ctx, w.cancel = context.WithCancel(context.Background())
	go func() { _ = b.Run(ctx, w.out); close(w.done) }()
	t.Cleanup(w.stop)
	return w
}

// stop ends consuming and closes the connections (what is in hand goes back).
func (w *shardWorker) stop() {
	w.cancel()
	<-w.done
	_ = w.b.Close()
}

func (w *shardWorker) owned() []int { return w.b.Ownership().Owned }

// split reports whether the workers together own every shard once.
func split(shards int, ws ...*shardWorker) bool {
	var all []int
	for _, w := range ws {
		all = append(all, w.owned()...)
	}
	slices.Sort(all)
	if len(all) != shards {
		return false
	}
	for i, s := range all {
		if s != i {
			return false
		}
	}
	return true
}

func shardedTopology(t *testing.T, shards int) broker.Topology {
	topo := testkit.Topology(t)
	topo.Shards = shards
	return topo
}

// Workers share the shards evenly and never own one twice; one that leaves
// has its shards taken over, one that joins takes its share.
func TestWorkersSplitTheShardsAndTakeOverALeaversShare(t *testing.T) {
	const shards = 6
	topo := shardedTopology(t, shards)
	a := startShardWorker(t, topo)
	require.Eventually(t, func() bool { return split(shards, a) }, 10*time.Second, 10*time.Millisecond, "one worker owns all")
	require.Eventually(t, func() bool { return a.b.Ownership().Intake }, 10*time.Second, 10*time.Millisecond, "and moves the intake")

	b := startShardWorker(t, topo)
	c := startShardWorker(t, topo)
	require.Eventually(t, func() bool {
		return split(shards, a, b, c) && len(a.owned()) == 2 && len(b.owned()) == 2 && len(c.owned()) == 2
	}, 20*time.Second, 10*time.Millisecond, "three workers own two shards each")
	ranks := []int{a.b.Ownership().Rank, b.b.Ownership().Rank, c.b.Ownership().Rank}
	slices.Sort(ranks)
	assert.Equal(t, []int{0, 1, 2}, ranks)

	b.stop()
	require.Eventually(t, func() bool {
		return split(shards, a, c) && len(a.owned()) == 3 && len(c.owned()) == 3
	}, 20*time.Second, 10*time.Millisecond, "the two left own three each")
}

// A shard given away is not consumed by its new owner until the jobs the
// old one holds from it are settled; what the old one never handed out
// goes to the new owner, in order.
func TestAShardIsHandedOverOnlyAfterItsJobsInHandAreSettled(t *testing.T) {
	const shards = 2
	topo := shardedTopology(t, shards)
	a := startShardWorker(t, topo)
	require.Eventually(t, func() bool { return split(shards, a) }, 10*time.Second, 10*time.Millisecond)
	ch := testkit.Channel(t)
	for i := range 5 {
		testkit.Publish(t, ch, topo.ShardQueue(1), []byte(fmt.Sprintf(`{"n":%d}`, i)), nil)
	}
	first := next(t, a.out)
	require.Equal(t, 1, first.Shard)

	b := startShardWorker(t, topo)
	// b wants one shard; a holds a delivery of each it may give away.
	require.Eventually(t, func() bool { return len(a.b.Ownership().Owned) == 1 || len(b.owned()) > 0 },
		20*time.Second, 10*time.Millisecond, "a starts giving a shard away")
	moving := 1
	if a.b.Ownership().Owns(1) {
		moving = 0 // a keeps shard 1 and gives shard 0 (empty) away
	}
	if moving == 1 {
		// a no longer hands shard 1 out, and b cannot consume it while a
		// holds its first job.
		assert.Never(t, func() bool { return len(b.owned()) > 0 }, 500*time.Millisecond, 10*time.Millisecond,
			"the new owner waits for the job in hand")
	}
	require.NoError(t, first.Ack())
	require.Eventually(t, func() bool { return split(shards, a, b) && len(a.owned()) == 1 }, 20*time.Second, 10*time.Millisecond)
	owner := a
	if b.b.Ownership().Owns(1) {
		owner = b
	}
	var got []string
	for len(got) < 4 {
		d := next(t, owner.out)
		if d.Shard != 1 {
			continue
		}
		got = append(got, string(d.Body))
		require.NoError(t, d.Ack())
	}
	want := []string{`{"n":1}`, `{"n":2}`, `{"n":3}`, `{"n":4}`}
	if owner == a {
		assert.Equal(t, want, got, "a kept shard 1 and went on")
	} else {
		assert.Equal(t, want, got, "b got the rest of shard 1, in order")
	}
}

// A worker started with another SHARDS than the queue was split into is
// refused at start with one line saying what to do.
func TestAnotherShardCountIsRefused(t *testing.T) {
	topo := shardedTopology(t, 4)
	_ = dial(t, topo)
	other := topo
	other.Shards = 8
	_, err := broker.Dial(context.Background(), broker.Options{URL: testkit.AMQPURL(), Topology: other})
	require.ErrorIs(t, err, broker.ErrShardsMismatch)
	assert.Contains(t, err.Error(), "SHARDS is 8")
	assert.Contains(t, err.Error(), "already split into 4 shards")
	assert.NotContains(t, err.Error(), "\n")
}

// A job deferred from a shard comes back to that shard, not to the intake.
func TestADeferredJobComesBackToItsShard(t *testing.T) {
	const shards = 3
	topo := shardedTopology(t, shards)
	a := startShardWorker(t, topo)
	require.Eventually(t, func() bool { return split(shards, a) }, 10*time.Second, 10*time.Millisecond)
	ch := testkit.Channel(t)
	testkit.Publish(t, ch, topo.ShardQueue(2), []byte(`{"n":1}`), amqp.Table{"k": "v"})
	d := next(t, a.out)
	require.Equal(t, 2, d.Shard)
	require.NoError(t, a.b.Settle(context.Background(), d, a.b.DeferMessage(d, 50*time.Millisecond, nil)))
	back := next(t, a.out)
	assert.Equal(t, 2, back.Shard, "back in its shard")
	assert.Equal(t, `{"n":1}`, string(back.Body))
	assert.Equal(t, "v", back.Headers["k"])
	require.NoError(t, back.Ack())
	assert.Zero(t, testkit.Depth(t, ch, topo.Queue), "nothing went to the intake")
}

// Moves made one after the other reach their shard in that order, though
// their confirms are waited for side by side; each delivery is acked only
// once its move is confirmed.
func TestMovesKeepTheirOrderWithConfirmsWaitedForTogether(t *testing.T) {
	const shards, n = 2, 50
	topo := shardedTopology(t, shards)
	a := startShardWorker(t, topo)
	require.Eventually(t, func() bool { return split(shards, a) && a.b.Ownership().Intake }, 10*time.Second, 10*time.Millisecond)
	ch := testkit.Channel(t)
	for i := range n {
		testkit.Publish(t, ch, topo.Queue, []byte(fmt.Sprintf(`{"n":%d}`, i)), nil)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	var moved []string
	for started := 0; started < n || len(moved) < n; {
		d := next(t, a.out)
		if d.Shard == -1 {
			wait := a.b.Move(context.Background(), d, a.b.MoveMessage(d, 1))
			wg.Add(1)
			go func(i int) { defer wg.Done(); errs[i] = wait() }(started)
			started++
			continue
		}
		require.Equal(t, 1, d.Shard)
		moved = append(moved, string(d.Body))
		require.NoError(t, d.Ack())
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, fmt.Sprintf(`{"n":%d}`, i), moved[i], "in the order moved")
	}
	assert.Zero(t, testkit.Depth(t, ch, topo.Queue), "every intake delivery acked")
}

// A delivery waiting for room in the prefetch window is seen by the other
// shards' tenants (WaitingBesides), not by its own shard's, and no longer
// once it is handed out.
func TestWaitingBesidesSeesAnotherShardsDeliveryAtTheGate(t *testing.T) {
	const shards = 3
	topo := shardedTopology(t, shards)
	a := startShardWorker(t, topo)
	require.Eventually(t, func() bool { return split(shards, a) }, 10*time.Second, 10*time.Millisecond)
	a.b.SetPrefetch(1)
	ch := testkit.Channel(t)
	testkit.Publish(t, ch, topo.ShardQueue(0), []byte(`{"n":0}`), nil)
	first := next(t, a.out)
	require.Equal(t, 0, first.Shard)
	assert.False(t, a.b.WaitingBesides(0), "nothing else has come")

	testkit.Publish(t, ch, topo.ShardQueue(2), []byte(`{"n":2}`), nil)
	require.Eventually(t, func() bool { return a.b.WaitingBesides(0) }, 10*time.Second, 10*time.Millisecond,
		"shard 2's delivery waits for the slot shard 0's holds")
	assert.False(t, a.b.WaitingBesides(2), "its own shard's tenants are not told")
	assert.True(t, a.b.WaitingBesides(1))

	require.NoError(t, first.Ack())
	second := next(t, a.out)
	require.Equal(t, 2, second.Shard)
	assert.False(t, a.b.WaitingBesides(0), "handed out, it waits no more")
	require.NoError(t, second.Ack())
}
