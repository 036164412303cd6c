package broker

import (
	"log/slog"
	"strconv"
	"sync"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The dispatcher's side of return matching, fed the way amqp091-go's reader
// goroutine feeds it: for a returned publish the Return is handed over on
// the unbuffered channel before the publish's confirmation resolves (here a
// closed channel stands in for the DeferredConfirmation). A publisher that
// then asks for its outcome must see the return, whichever goroutine runs
// first; a publish without a return is never reported returned, and a
// return for a publish that gave up is dropped.
func TestReturnIsSeenByThePublishItBelongsTo(t *testing.T) {
	g := newPubGen()
	returns := make(chan amqp.Return)
	chClosed := make(chan *amqp.Error, 1)
	dispatched := make(chan struct{})
	go func() {
		g.dispatch(returns, chClosed, make(chan *amqp.Error), make(chan amqp.Blocking), slog.New(slog.DiscardHandler))
		close(dispatched)
	}()

	const n = 2000
	confirmed := make([]chan struct{}, n+1)
	got := make([]bool, n+1)
	var wg sync.WaitGroup
	for seq := uint64(1); seq <= n; seq++ {
		g.pending[seq] = &pending{}
		confirmed[seq] = make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-confirmed[seq]
			got[seq] = g.returned(seq)
		}()
	}
	// The reader: every third publish is returned, in frame order.
	for seq := uint64(1); seq <= n; seq++ {
		if seq%3 == 0 {
			returns <- amqp.Return{Headers: amqp.Table{pubIDHeader: strconv.FormatUint(seq, 10)}}
		}
		close(confirmed[seq])
	}
	wg.Wait()
	for seq := uint64(1); seq <= n; seq++ {
		assert.Equal(t, seq%3 == 0, got[seq], "publish %d", seq)
	}
	assert.Empty(t, g.pending, "every publish was forgotten once resolved")

	// A return for a publish no longer waiting, or without an id, changes
	// nothing.
	returns <- amqp.Return{Headers: amqp.Table{pubIDHeader: "7"}}
	returns <- amqp.Return{}
	g.mu.Lock()
	assert.Empty(t, g.pending)
	g.mu.Unlock()

	// Once the channel closes the dispatcher ends; a publish asking then
	// still gets what was recorded.
	g.mu.Lock()
	g.pending[n+1] = &pending{returned: true}
	g.mu.Unlock()
	close(chClosed)
	<-dispatched
	require.ErrorIs(t, g.err, ErrConnectionLost)
	assert.True(t, g.returned(n+1))
}
