package actors

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
)

// Stopping the actors while a send is in flight must leave no goroutine
// behind: the harness's teardown (the worker's own order: cancel the
// context, poison the router, shut the system down) fails the test with
// the stack of any goroutine of the bubble still blocked after it.
//
// Today the cancelled send's SendDone often reaches the tenant actor after
// it has stopped; protoactor makes it a dead letter, and its dead-letter
// log throttle starts a goroutine that sleeps DeadLetterThrottleInterval
// (1 s) past system.Shutdown (actor.NewDeadLetter.NewThrottle.func4.1,
// throttler.go:33). Whether the SendDone wins the race with the stop
// varies, so the scenario runs several times.
func TestTeardownWithASendInFlightLeavesNoGoroutineBehind(t *testing.T) {
	for range 30 {
		synctest.Test(t, func(t *testing.T) {
			h := startHarness(t, Config{Tenants: []config.Tenant{tenant("a")}})
			h.answer(always(reply{Delay: time.Hour, Err: errTimeout})) // hangs until the context ends
			h.publish("a", "j1")
			require.Len(t, h.callsOf("a"), 1)
			require.Equal(t, 1, h.info("a").InFlight)
		})
		if t.Failed() {
			return
		}
	}
}
