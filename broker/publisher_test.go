package broker

import (
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Return matching, fed the way amqp091-go's reader goroutine feeds it: for
// a returned publish the Return is put in the returns channel before the
// publish's confirmation resolves (here a closed channel stands in for the
// DeferredConfirmation). A publisher that then asks for its outcome must
// see the return, whichever goroutine runs first; a publish without a
// return is never reported returned, and a return for a publish that gave
// up is dropped.
func TestReturnIsSeenByThePublishItBelongsTo(t *testing.T) {
	const n = 2000
	returns := make(chan amqp.Return, n)
	g := newPubGen(returns)
	chClosed := make(chan *amqp.Error, 1)
	dispatched := make(chan struct{})
	go func() {
		g.dispatch(chClosed, make(chan *amqp.Error), make(chan amqp.Blocking), slog.New(slog.DiscardHandler))
		close(dispatched)
	}()

	confirmed := make([]chan struct{}, n+1)
	got := make([]bool, n+1)
	var wg sync.WaitGroup
	for seq := uint64(1); seq <= n; seq++ {
		g.pending[seq] = false
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
	// nothing, and is taken from the channel.
	returns <- amqp.Return{Headers: amqp.Table{pubIDHeader: "7"}}
	returns <- amqp.Return{}
	g.mu.Lock()
	g.takeReturnsLocked()
	assert.Empty(t, g.pending)
	assert.Empty(t, returns)
	g.mu.Unlock()

	// Once the channel closes the dispatcher ends; a publish asking then
	// still gets what was recorded.
	g.mu.Lock()
	g.pending[n+1] = true
	g.mu.Unlock()
	close(chClosed)
	<-dispatched
	require.ErrorIs(t, g.err, ErrConnectionLost)
	assert.True(t, g.returned(n+1))
}

// Returns of publishes nobody waits for any more are swept from the
// channel, so it never fills and makes the library drop one.
func TestReturnsNobodyWaitsForAreSwept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		returns := make(chan amqp.Return, 4)
		g := newPubGen(returns)
		chClosed := make(chan *amqp.Error, 1)
		go g.dispatch(chClosed, make(chan *amqp.Error), make(chan amqp.Blocking), slog.New(slog.DiscardHandler))
		for range 4 {
			returns <- amqp.Return{Headers: amqp.Table{pubIDHeader: "1"}}
		}
		time.Sleep(returnsSweep)
		synctest.Wait()
		assert.Empty(t, returns)
		close(chClosed)
	})
}
