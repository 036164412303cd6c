package actors

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
)

// breakerTenant opens after 5 consecutive failures for 30 s and retries a
// job up to 10 times.
func breakerTenant() config.Tenant {
	a := tenant("a")
	a.Breaker = config.Breaker{FailureThreshold: 5, OpenFor: 30 * time.Second}
	a.MaxAttempts = 10
	return a
}

// openBreaker fails five jobs j1..j5 transiently at t0, which opens a's
// breaker until t0+30s; the jobs wait for their retries.
func openBreaker(t *testing.T) *harness {
	h := startHarness(t, Config{Tenants: []config.Tenant{breakerTenant()}})
	h.answer(always(reply{Err: errTransient}))
	for _, id := range []string{"j1", "j2", "j3", "j4", "j5"} {
		h.publish("a", id)
	}
	require.Equal(t, []time.Duration{0, 0, 0, 0, 0}, h.callStarts("a"))
	return h
}

func TestBreakerOpensAfterFiveTransientFailuresAndSendsNothingWhileOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := openBreaker(t)

		opened := h.logs("circuit_breaker_opened", "a")
		require.Len(t, opened, 1)
		assert.EqualValues(t, 5, opened[0]["failureCount"])
		assert.Equal(t, time.Duration(0), opened[0].At(h))
		info := h.info("a")
		assert.Equal(t, "OPEN", info.CircuitState)
		assert.Equal(t, 5, info.ConsecutiveFailures)
		assert.Equal(t, 1, info.BreakerOpened)
		assert.Equal(t, h.at(30*time.Second), info.OpenUntil)

		h.advanceTo(10 * time.Second)
		h.publish("a", "j6")
		h.advanceTo(30*time.Second - time.Millisecond)
		assert.Len(t, h.callsOf("a"), 5, "no call while the breaker is open")
		assert.Equal(t, []string{"retry", "breaker_open"}, h.deferReasons("j1"),
			"a failed job comes back for its retry and waits out the open time")
		assert.Equal(t, []string{"breaker_open"}, h.deferReasons("j6"))
		assert.Equal(t, "OPEN", h.info("a").CircuitState)
	})
}

func TestBreakerLetsExactlyOneTrialThroughAfterOpenForAndItsSuccessClosesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := openBreaker(t)
		h.answer(always(reply{Delay: 100 * time.Millisecond}))

		h.advanceTo(30 * time.Second)
		trial := h.callsOf("a")[5:]
		require.Len(t, trial, 1, "the five jobs are back at the end of the open time; one is the trial")
		assert.Equal(t, 30*time.Second, trial[0].Start)
		assert.Equal(t, "HALF_OPEN", h.info("a").CircuitState)
		require.Len(t, h.logs("circuit_breaker_half_open", "a"), 1)

		h.advanceTo(30*time.Second + 100*time.Millisecond)
		closed := h.logs("circuit_breaker_closed", "a")
		require.Len(t, closed, 1)
		assert.Equal(t, 30*time.Second+100*time.Millisecond, closed[0].At(h))
		info := h.info("a")
		assert.Equal(t, "CLOSED", info.CircuitState)
		assert.Equal(t, 0, info.ConsecutiveFailures)

		h.advanceTo(time.Minute)
		assert.Len(t, h.callsOf("a"), 10, "each job failed once and was sent once")
		assert.Equal(t, map[string]int{messages.StatusSent: 5}, h.statuses("a"))
	})
}

func TestBreakerReopensForAnotherOpenForWhenItsTrialFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := openBreaker(t)
		h.answer(always(reply{Delay: 100 * time.Millisecond, Err: errTransient}))

		h.advanceTo(30*time.Second + 100*time.Millisecond)
		require.Len(t, h.callsOf("a"), 6, "one trial")
		opened := h.logs("circuit_breaker_opened", "a")
		require.Len(t, opened, 2)
		assert.Equal(t, 30*time.Second+100*time.Millisecond, opened[1].At(h))
		info := h.info("a")
		assert.Equal(t, "OPEN", info.CircuitState)
		assert.Equal(t, 2, info.BreakerOpened)
		assert.Equal(t, h.at(60*time.Second+100*time.Millisecond), info.OpenUntil, "the open time restarts")

		h.advanceTo(60*time.Second + 99*time.Millisecond)
		assert.Len(t, h.callsOf("a"), 6, "no call while reopened")
		h.advanceTo(60*time.Second + 100*time.Millisecond)
		next := h.callsOf("a")[6:]
		require.Len(t, next, 1, "the next trial")
		assert.Equal(t, 60*time.Second+100*time.Millisecond, next[0].Start)

		h.advanceTo(60*time.Second + 200*time.Millisecond)
		info = h.info("a")
		assert.Equal(t, "OPEN", info.CircuitState, "its failure reopens it again")
		assert.Equal(t, 3, info.BreakerOpened)
		assert.Len(t, h.callsOf("a"), 7)
	})
}

func TestPermanentErrorFailsTheJobAndIsNeverABreakerFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{breakerTenant()}})
		h.answer(always(reply{Err: errTransient}))
		for _, id := range []string{"t1", "t2", "t3", "t4"} {
			h.publish("a", id)
		}
		require.Equal(t, 4, h.info("a").ConsecutiveFailures)

		h.answer(always(reply{Err: errPermanent}))
		for _, id := range []string{"p1", "p2", "p3", "p4", "p5", "p6"} {
			h.publish("a", id)
			res := h.result(id)
			assert.Equal(t, messages.StatusFailed, res.Status)
			assert.Equal(t, 131026, res.ErrorCode)
			dl := h.deadLetter(id)
			assert.Equal(t, messages.ReasonPermanentError, dl.Publishing.Headers[messages.HeaderDLQReason])
			assert.EqualValues(t, 131026, header(dl, messages.HeaderErrorCode))
		}
		info := h.info("a")
		assert.Equal(t, "CLOSED", info.CircuitState)
		assert.Equal(t, 0, info.ConsecutiveFailures, "an answered call resets the count")
		assert.Equal(t, 0, info.BreakerOpened)
		assert.EqualValues(t, 6, info.Failed)
		assert.Len(t, h.callsOf("a"), 10)
		assert.Empty(t, h.logs("circuit_breaker_opened", "a"))
		assert.Len(t, h.copies(testkit.KindDeadLetter, ""), 6)
	})
}
