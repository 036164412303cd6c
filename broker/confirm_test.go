package broker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/testkit"
)

// raServer is an Erlang expression that applies sys:Fun to the Raft server
// of the quorum queue name in vhost "/" (a single node: its only member).
func raServer(fun, name string) string {
	return fmt.Sprintf(`{ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"%s">>)), `+
		`{Server, _} = amqqueue:get_pid(Q), sys:%s(Server).`, name, fun)
}

// A publish whose confirm cannot arrive yet must not hold back the outcome
// of the publishes after it. Suspending a quorum delay tier's Raft server
// (sys:suspend, on a private node) holds its confirms for as long as the
// test wants, without any timing: RabbitMQ still confirms the result and the
// dead letter published after it, out of order, and returns the unroutable
// one. Read through NotifyPublish those confirms would wait, in delivery-tag
// order, behind the held one until the confirm timeout; each publish must
// see its own.
func TestHeldQuorumConfirmHoldsBackNoLaterPublish(t *testing.T) {
	node := testkit.StartRabbitNode(t)
	topo := broker.NewTopology("held.jobs", "held.results")
	ctx := context.Background()
	// The held confirm must outlive every step below on a busy machine:
	// the test, not a timeout, decides when it may come.
	b, err := broker.Dial(ctx, broker.Options{URL: node.URL(), Topology: topo, Prefetch: 10, ConfirmTimeout: 5 * time.Minute})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	job := broker.NewDelivery([]byte(`{"job":"a-1"}`), amqp.Table{"tenant": "a"})
	deferral := topo.DeferMessage(job, time.Second, nil)
	tier := topo.WaitQueue(topo.Tier(time.Second))
	require.Equal(t, topo.DelayExchange(), deferral.Exchange)
	require.True(t, strings.HasPrefix(deferral.Key, "1s."), deferral.Key)
	// Once first, confirmed: the broker's channel then knows the queue and
	// only pipelines commands to its server.
	require.NoError(t, b.Publish(ctx, deferral))

	require.Equal(t, "ok", strings.TrimSpace(node.Ctl("eval", raServer("suspend", tier))))
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			node.Ctl("eval", raServer("resume", tier))
		}
	}
	t.Cleanup(resume) // before the node stops
	held := make(chan error, 1)
	go func() { held <- b.Publish(ctx, deferral) }()
	require.Eventually(t, func() bool { return broker.PendingPublishes(b) == 1 }, 10*time.Second, time.Millisecond,
		"the deferral is written before the publishes below")

	require.NoError(t, b.Publish(ctx, b.ResultMessage("sent", []byte(`{"job":"b-1"}`), time.Now())),
		"a result published after the held deferral is confirmed on its own")
	require.NoError(t, b.Publish(ctx, topo.DeadLetterMessage(job, map[string]any{"x-dlq-reason": "test"})),
		"so is a dead letter")
	err = b.Publish(ctx, broker.Message{Key: "no.such.queue", Publishing: amqp.Publishing{Body: []byte("x")}})
	require.ErrorIs(t, err, broker.ErrReturned, "a returned publish is still reported as returned")
	select {
	case err := <-held:
		require.FailNow(t, "the deferral was resolved while its queue's server was suspended", "%v", err)
	default:
	}

	resume()
	require.NoError(t, <-held, "the held deferral is confirmed once its queue's server runs again")
	ch := testkit.ChannelTo(t, node.URL())
	assert.Equal(t, 1, testkit.Depth(t, ch, topo.ResultsQueue()))
	assert.Equal(t, 1, testkit.Depth(t, ch, topo.DLQ()))
}

// Returns stay matched to their publishes when confirms arrive out of order:
// many concurrent publishes, a third of them unroutable (the broker returns
// and confirms those at once, the others once their queue has them), each
// sees its own outcome.
func TestReturnsMatchTheirPublishesUnderConcurrency(t *testing.T) {
	topo := testkit.Topology(t)
	b := dial(t, topo)
	const n = 300
	errs := make([]error, n)
	done := make(chan int)
	for i := range n {
		go func() {
			m := b.ResultMessage("sent", []byte(fmt.Sprintf(`{"n":%d}`, i)), time.Now())
			if i%3 == 0 {
				m = broker.Message{Key: "no.such.queue." + topo.Queue, Publishing: m.Publishing}
			}
			errs[i] = b.Publish(context.Background(), m)
			done <- i
		}()
	}
	for range n {
		<-done
	}
	for i, err := range errs {
		if i%3 == 0 {
			assert.ErrorIs(t, err, broker.ErrReturned, "publish %d", i)
		} else {
			assert.NoError(t, err, "publish %d", i)
		}
	}
	ch := testkit.Channel(t)
	assert.Equal(t, n-n/3, testkit.Depth(t, ch, topo.ResultsQueue()))
}
