package broker_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/testkit"
)

// A broker resource alarm (connection.blocked) must neither hang a
// settlement nor lose its job: the publish gives up after the confirm
// timeout, the delivery goes back to the queue (acks run on the consumer's
// connection, which the alarm does not block), and once the alarm lifts the
// job is settled normally. It runs on a private node: the alarm blocks
// every publisher of a node.
func TestResourceAlarmBoundsPublishesAndLosesNothing(t *testing.T) {
	node := testkit.StartRabbitNode(t)
	topo := broker.NewTopology("alarm.jobs", "alarm.results")
	logs := &testkit.SyncBuffer{}
	b, err := broker.Dial(context.Background(), broker.Options{URL: node.URL(), Topology: topo, Prefetch: 10,
		ConfirmTimeout: 2 * time.Second, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	require.NoError(t, err)
	require.NoError(t, b.Publish(context.Background(), broker.Message{Key: topo.Queue,
		Publishing: b.ResultMessage("x", []byte(`{"job":1}`), time.Now()).Publishing}))
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan *broker.Delivery)
	running := make(chan struct{})
	go func() { _ = b.Run(ctx, out); close(running) }()
	first := next(t, out)

	node.Ctl("set_vm_memory_high_watermark", "0.000001")
	t.Cleanup(func() { node.Ctl("set_vm_memory_high_watermark", "0.4") })
	require.Eventually(t, func() bool { return strings.Contains(node.Ctl("eval", "rabbit_alarm:get_alarms()."), "memory") },
		30*time.Second, 100*time.Millisecond, "the memory alarm is on")
	result := b.ResultMessage("sent", []byte(`{"status":"sent"}`), time.Now())

	// RabbitMQ announces connection.blocked only when a blocked
	// connection next publishes, and then stops reading it: this first
	// publish is written but held, so it times out unconfirmed.
	start := time.Now()
	err = b.Settle(context.Background(), first, result)
	took := time.Since(start)
	require.ErrorIs(t, err, broker.ErrUnconfirmed)
	assert.Less(t, took, 5*time.Second, "bounded by the 2 s confirm timeout")
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "broker_blocked") },
		10*time.Second, 50*time.Millisecond, "the broker announced connection.blocked")

	// The job came back (requeued on the consumer's connection, which the
	// alarm does not block), not acked. Its next settlement writes nothing
	// to the blocked connection and gives up after the timeout.
	again := next(t, out)
	assert.True(t, again.Redelivered)
	assert.Equal(t, `{"job":1}`, string(again.Body))
	start = time.Now()
	err = b.Settle(context.Background(), again, result)
	require.ErrorIs(t, err, broker.ErrBlocked)
	t.Logf("settlements under the alarm gave up after %v and %v", took, time.Since(start))
	assert.Less(t, time.Since(start), 5*time.Second)
	third := next(t, out)

	node.Ctl("set_vm_memory_high_watermark", "0.4")
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "broker_unblocked") },
		30*time.Second, 50*time.Millisecond)
	require.NoError(t, b.Settle(context.Background(), third, result))
	cancel()
	<-running

	start = time.Now()
	require.NoError(t, b.Close())
	assert.Less(t, time.Since(start), 5*time.Second)
	ch := testkit.ChannelTo(t, node.URL())
	results := testkit.Collect(t, ch, topo.ResultsQueue(), 1, 5*time.Second)
	assert.Equal(t, `{"status":"sent"}`, string(results[0].Body))
	// The publish the broker held when it blocked is delivered once the
	// alarm lifts: an unconfirmed publish may still land, which is why a
	// result is at least once and carries the job's internalId.
	held := testkit.Depth(t, ch, topo.ResultsQueue())
	assert.LessOrEqual(t, held, 1, "at most the one held publish beside the confirmed result")
	t.Logf("results: 1 confirmed + %d held during the alarm", held)
	assert.Zero(t, testkit.Depth(t, ch, topo.Queue), "the job was acked, once, after its result")
}
