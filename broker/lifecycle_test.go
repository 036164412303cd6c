package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/testkit"
)

// A delivery the consumer could not hand out when consuming stopped (nobody
// reads out any more) goes back to the queue, and the connection stays open
// so the deliveries in hand can still be acked: a graceful stop hands back
// nothing that was finished.
func TestStopWhileHandingOutKeepsDeliveriesInHandAckable(t *testing.T) {
	topo := testkit.Topology(t)
	b := dial(t, topo)
	ch := testkit.Channel(t)
	for _, body := range []string{`{"n":1}`, `{"n":2}`} {
		testkit.Publish(t, ch, topo.Queue, []byte(body), nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan *broker.Delivery)
	done := make(chan struct{})
	go func() { _ = b.Run(ctx, out); close(done) }()
	inHand := next(t, out)
	// The second delivery is now waiting to be handed out; stop consuming.
	require.Eventually(t, func() bool { return b.Unsettled() == 2 }, 5*time.Second, 5*time.Millisecond)
	cancel()
	<-done

	require.NoError(t, inHand.Ack(), "the delivery in hand is still ackable after consuming stopped")
	assert.Zero(t, b.Unsettled())
	require.NoError(t, b.Close())
	left := testkit.Collect(t, ch, topo.Queue, 1, 5*time.Second)
	assert.Equal(t, `{"n":2}`, string(left[0].Body), "the undelivered one went back, the acked one did not")
}

// A delivery whose channel has closed is back in the queue and will be
// handed out again; what would replace it now would be published a second
// time then. So Settle publishes nothing for it.
func TestSettlingAStaleDeliveryPublishesNothing(t *testing.T) {
	topo := testkit.Topology(t)
	b := dial(t, topo)
	ch := testkit.Channel(t)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan *broker.Delivery)
	done := make(chan struct{})
	go func() { _ = b.Run(ctx, out); close(done) }()
	testkit.Publish(t, ch, topo.Queue, []byte(`{"n":1}`), nil)
	d := next(t, out)
	cancel()
	<-done
	require.NoError(t, b.Close()) // closes d's channel; d goes back to the queue

	err := b.Settle(context.Background(), d, b.ResultMessage("sent", []byte(`{"n":1}`), time.Now()))
	require.ErrorIs(t, err, broker.ErrStaleDelivery)
	assert.Zero(t, b.Unsettled())
	assert.Zero(t, testkit.Depth(t, ch, topo.ResultsQueue()), "no result for a job that comes back")
	assert.Equal(t, 1, testkit.Depth(t, ch, topo.Queue), "the job is back in the queue")
}
