package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/logging"
)

// DefaultAMQPURL is the local broker `go tool task rabbitmq` starts.
const DefaultAMQPURL = "amqp://guest:guest@127.0.0.1:5672/"

// AMQPURL is the broker tests use: TEST_AMQP_URL, else the local default.
func AMQPURL() string {
	if u := os.Getenv("TEST_AMQP_URL"); u != "" {
		return u
	}
	return DefaultAMQPURL
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// Topology returns queue names no other test uses (derived from the test's
// name plus a random suffix) and deletes every queue and exchange of it
// when the test ends.
func Topology(tb testing.TB) broker.Topology {
	tb.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := unsafeName.ReplaceAllString(strings.ToLower(tb.Name()), "-")
	if len(name) > 60 {
		name = name[:60]
	}
	q := "test." + name + "." + hex.EncodeToString(b[:])
	topo := broker.NewTopology(q, q+".results")
	tb.Cleanup(func() { DeleteTopology(tb, topo) })
	return topo
}

// DeleteTopology deletes every queue and the exchange of topo, ignoring
// what does not exist.
func DeleteTopology(tb testing.TB, topo broker.Topology) {
	tb.Helper()
	if err := topo.Delete(AMQPURL()); err != nil {
		tb.Logf("%v", err)
	}
}

// Channel opens a connection and channel to the test broker, closed when
// the test ends.
func Channel(tb testing.TB) *amqp.Channel {
	tb.Helper()
	return ChannelTo(tb, AMQPURL())
}

// ChannelTo is Channel on the broker at url (e.g. a RabbitNode's).
func ChannelTo(tb testing.TB, url string) *amqp.Channel {
	tb.Helper()
	conn, err := amqp.Dial(url)
	require.NoError(tb, err, "connect to RabbitMQ at %s (run: go tool task rabbitmq)", logging.RedactURL(url))
	tb.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(tb, err)
	return ch
}

// Publish puts one job body on a queue, persistent, with optional headers,
// and waits for the broker's confirm.
func Publish(tb testing.TB, ch *amqp.Channel, queue string, body []byte, headers amqp.Table) {
	tb.Helper()
	require.NoError(tb, ch.Confirm(false))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body, Headers: headers,
	})
	require.NoError(tb, err)
	ok, err := dc.WaitContext(ctx)
	require.NoError(tb, err)
	require.True(tb, ok, "broker nacked the publish to %s", queue)
}

// Collect consumes n messages from queue (acking them) or fails the test
// when they have not all arrived within timeout.
func Collect(tb testing.TB, ch *amqp.Channel, queue string, n int, timeout time.Duration) []amqp.Delivery {
	tb.Helper()
	out := make([]amqp.Delivery, 0, n)
	deadline := time.Now().Add(timeout)
	for len(out) < n {
		d, ok, err := ch.Get(queue, true)
		require.NoError(tb, err)
		if ok {
			out = append(out, d)
			continue
		}
		if time.Now().After(deadline) {
			require.Failf(tb, "messages missing", "%d of %d messages arrived on %s within %s", len(out), n, queue, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return out
}

// Depth is the number of ready messages in queue.
func Depth(tb testing.TB, ch *amqp.Channel, queue string) int {
	tb.Helper()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(tb, err)
	return q.Messages
}
