package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/testkit"
)

func dial(t *testing.T, topo broker.Topology) *broker.Broker {
	t.Helper()
	b, err := broker.Dial(context.Background(), broker.Options{URL: testkit.AMQPURL(), Topology: topo, Prefetch: 10})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// consume runs the broker's consumer until the test ends.
func consume(t *testing.T, b *broker.Broker) <-chan *broker.Delivery {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan *broker.Delivery)
	done := make(chan struct{})
	go func() { _ = b.Run(ctx, out); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return out
}

func next(t *testing.T, in <-chan *broker.Delivery) *broker.Delivery {
	t.Helper()
	select {
	case d := <-in:
		return d
	case <-time.After(10 * time.Second):
		require.FailNow(t, "no delivery within 10s")
		return nil
	}
}

func TestTopologyMismatchIsAClearError(t *testing.T) {
	topo := testkit.Topology(t)
	ch := testkit.Channel(t)
	_, err := ch.QueueDeclare(topo.Queue, true, false, false, false, amqp.Table{"x-max-length": int32(5)})
	require.NoError(t, err)
	_, err = broker.Dial(context.Background(), broker.Options{URL: testkit.AMQPURL(), Topology: topo})
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrTopologyMismatch)
	assert.Contains(t, err.Error(), topo.Queue)
	assert.NotContains(t, err.Error(), "guest:guest", "no credentials in the error")
}

func TestSettleAcksOnlyAfterConfirm(t *testing.T) {
	topo := testkit.Topology(t)
	b := dial(t, topo)
	ch := testkit.Channel(t)
	in := consume(t, b)
	testkit.Publish(t, ch, topo.Queue, []byte(`{"n":1}`), amqp.Table{"x-keep": "yes"})
	d := next(t, in)
	require.NoError(t, b.Settle(context.Background(), d,
		b.ResultMessage("sent", []byte(`{"ok":true}`), time.Now()),
		b.DeadLetterMessage(d, map[string]any{"x-dlq-reason": "test", "x-keep": nil})))
	res := testkit.Collect(t, ch, topo.ResultsQueue(), 1, 5*time.Second)[0]
	assert.Equal(t, "sent", res.RoutingKey)
	dl := testkit.Collect(t, ch, topo.DLQ(), 1, 5*time.Second)[0]
	assert.Equal(t, []byte(`{"n":1}`), dl.Body)
	assert.Equal(t, "test", dl.Headers["x-dlq-reason"])
	assert.NotContains(t, dl.Headers, "x-keep", "a nil header value removes it")
	assert.Eventually(t, func() bool { return b.Unsettled() == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestReturnedPublishLeavesTheJobInTheQueue(t *testing.T) {
	topo := testkit.Topology(t)
	b := dial(t, topo)
	ch := testkit.Channel(t)
	in := consume(t, b)
	testkit.Publish(t, ch, topo.Queue, []byte(`{"n":2}`), nil)
	d := next(t, in)
	// No queue has this name: the broker returns the mandatory publish.
	err := b.Settle(context.Background(), d, broker.Message{Key: "no.such.queue." + topo.Queue,
		Publishing: amqp.Publishing{Body: []byte("x")}})
	require.Error(t, err)
	assert.True(t, errors.Is(err, broker.ErrReturned), "got %v", err)
	again := next(t, in)
	assert.True(t, again.Redelivered, "the job came back instead of being acked")
	assert.Equal(t, d.Body, again.Body)
	require.NoError(t, again.Ack())
}

func TestDeferredCopyComesBackAfterItsTier(t *testing.T) {
	topo := testkit.Topology(t)
	b := dial(t, topo)
	ch := testkit.Channel(t)
	in := consume(t, b)
	testkit.Publish(t, ch, topo.Queue, []byte(`{"n":3}`), nil)
	d := next(t, in)
	start := time.Now()
	require.NoError(t, b.Settle(context.Background(), d, b.DeferMessage(d, time.Second, map[string]any{"x-not-before": int64(1)})))
	back := next(t, in)
	waited := time.Since(start)
	assert.GreaterOrEqual(t, waited, 900*time.Millisecond, "came back through the 1s tier")
	assert.Equal(t, int64(1), back.Headers["x-not-before"])
	require.Contains(t, back.Headers, "x-death")
	again := b.DeferMessage(back, time.Second, nil)
	assert.NotContains(t, again.Publishing.Headers, "x-death", "dead-letter bookkeeping is not carried to the next hop")
	assert.NotContains(t, again.Publishing.Headers, "x-first-death-queue")
	require.NoError(t, back.Ack())
}

func TestTierChoice(t *testing.T) {
	topo := broker.NewTopology("q", "r")
	cases := map[time.Duration]time.Duration{
		0:                      50 * time.Millisecond,
		70 * time.Millisecond:  100 * time.Millisecond, // 30 ms late rather than two hops
		100 * time.Millisecond: 100 * time.Millisecond,
		180 * time.Millisecond: 100 * time.Millisecond, // 250 would be 70 ms late
		249 * time.Millisecond: 250 * time.Millisecond,
		300 * time.Millisecond: 250 * time.Millisecond,
		960 * time.Millisecond: time.Second,
		time.Second:            time.Second,
		37 * time.Second:       32 * time.Second,
		10 * time.Hour:         4096 * time.Second,
	}
	for wait, tier := range cases {
		assert.Equal(t, tier, topo.Tier(wait), "wait %s", wait)
	}
	assert.Equal(t, "q.delay.50ms", topo.WaitQueue(50*time.Millisecond))
	assert.Equal(t, "q.delay.250ms", topo.WaitQueue(250*time.Millisecond))
	assert.Equal(t, "q.delay.32s", topo.WaitQueue(32*time.Second))
	assert.Equal(t, "q.dlq", topo.DLQ())
}

// RunFunc hands each delivery to its function, on the consumer's own
// goroutine, in the order the queue gave them, and they settle as Run's do.
func TestRunFuncHandsEachDeliveryInOrder(t *testing.T) {
	topo := testkit.Topology(t)
	b := dial(t, topo)
	ch := testkit.Channel(t)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *broker.Delivery, 100)
	done := make(chan struct{})
	go func() {
		_ = b.RunFunc(ctx, func(d *broker.Delivery) { got <- d })
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	const n = 30
	for i := range n {
		testkit.Publish(t, ch, topo.Queue, fmt.Appendf(nil, `{"n":%d}`, i), nil)
	}
	for i := range n {
		d := next(t, got)
		assert.Equal(t, fmt.Sprintf(`{"n":%d}`, i), string(d.Body))
		require.NoError(t, b.Settle(context.Background(), d, b.ResultMessage("sent", d.Body, time.Now())))
	}
	assert.Len(t, testkit.Collect(t, ch, topo.ResultsQueue(), n, 5*time.Second), n)
	assert.Eventually(t, func() bool { return b.Unsettled() == 0 }, 5*time.Second, 10*time.Millisecond)
}
