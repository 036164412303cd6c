package actors

import (
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
)

// Trickle: b and c each get a job every trickleEvery for trickleFor.
const (
	trickleEvery = 40 * time.Millisecond
	trickleFor   = 3 * time.Second
)

// trickle runs b and c's trickle in a bubble of its own, beside a tenant
// a that gets 10 jobs at t0 and answers every call with aReply (no a when
// aReply is nil), and returns when each of b and c's jobs was sent. check
// runs at each step of the trickle.
func trickle(t *testing.T, aReply *reply, check func(h *harness)) map[string]time.Duration {
	sent := map[string]time.Duration{}
	synctest.Test(t, func(t *testing.T) {
		tenants := []config.Tenant{tenant("b"), tenant("c")}
		if aReply != nil {
			tenants = append(tenants, tenant("a"))
		}
		h := startHarness(t, Config{Tenants: tenants})
		if aReply != nil {
			h.answer(forTenant("a", *aReply))
			for i := range 10 {
				h.deliver(jobBody("a", fmt.Sprintf("a%d", i), ownRecipient), nil)
			}
		}
		for i := 0; time.Duration(i)*trickleEvery < trickleFor; i++ {
			h.advanceTo(time.Duration(i) * trickleEvery)
			h.deliver(jobBody("b", fmt.Sprintf("b%d", i), ownRecipient), nil)
			h.deliver(jobBody("c", fmt.Sprintf("c%d", i), ownRecipient), nil)
			h.settle()
			if check != nil {
				check(h)
			}
		}
		h.advanceTo(trickleFor + time.Second)
		for _, id := range []string{"b", "c"} {
			for _, c := range h.callsOf(id) {
				sent[c.InternalID] = c.Start
			}
		}
	})
	return sent
}

func TestHangingOrFailingTenantDoesNotDelayAnother(t *testing.T) {
	alone := trickle(t, nil, nil)
	require.Len(t, alone, 2*int(trickleFor/trickleEvery))
	for id, at := range alone {
		var i int
		_, err := fmt.Sscanf(id[1:], "%d", &i)
		require.NoError(t, err)
		assert.Equal(t, time.Duration(i)*trickleEvery, at, "%s is sent when it is published", id)
	}

	hanging := trickle(t, &reply{Delay: 500 * time.Millisecond, Err: errTimeout}, func(h *harness) {
		assert.LessOrEqual(t, h.info("a").Held, 2, "a hanging tenant holds at most MaxHeld deliveries")
	})
	assert.Equal(t, alone, hanging, "beside a tenant whose calls hang 500 ms and time out")

	failing := trickle(t, &reply{Err: errTransient}, nil)
	assert.Equal(t, alone, failing, "beside a tenant whose calls fail with HTTP 500")
}

// The worker lets a tenant whose sends are fast hold up to PREFETCH
// deliveries (MaxHeldFast). A tenant whose very first send hangs has no
// latency yet: it must hold MaxHeld, not the whole window, or every other
// tenant's jobs wait in the broker until its stall check (this was the
// ~55 ms stall its neighbours saw end to end).
func TestHangingTenantHoldsAtMostTwoDeliveriesAndDefersTheRest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{tenant("a")}, Prefetch: 10})
		h.answer(always(reply{Delay: 500 * time.Millisecond, Err: errTimeout}))
		h.deliver(jobBody("a", "a0", ownRecipient), nil)
		h.advance(time.Millisecond) // the rest arrive while the first send is in flight
		for i := 1; i < 10; i++ {
			h.deliver(jobBody("a", fmt.Sprintf("a%d", i), ownRecipient), nil)
		}
		h.settle()
		info := h.info("a")
		assert.Equal(t, 1, info.InFlight)
		assert.Equal(t, 2, info.Held, "one sending, one next")
		assert.Equal(t, 8, info.Deferred, "the rest go back to the broker")

		for h.now() < 3*time.Second {
			h.advance(50 * time.Millisecond)
			require.LessOrEqual(t, h.info("a").Held, 2, "at %s", h.now())
		}
		starts := h.callStarts("a")
		assert.Equal(t, []time.Duration{0, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond, 2 * time.Second},
			starts, "one call at a time, each hanging 500 ms, until five timeouts open the breaker")
		info = h.info("a")
		assert.Equal(t, "OPEN", info.CircuitState)
		assert.Equal(t, 0, info.InFlight)
	})
}

// A backlog that reaches a new tenant before its first send has answered:
// the tenant holds MaxHeld and defers the rest, unspaced, to come back
// when the first answer is likely in. With Meta answering in 20 ms they
// (and a rate that does not bind) they are all sent within a few
// delay-tier hops, each deferred a few times at most; spacing them by MinBusySpacing, as before, sent the last of 98
// about five seconds after the first.
func TestBacklogBeforeTheFirstAnswerComesBackTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := tenant("a")
		a.RateLimit = config.RateLimit{PerMinute: 60_000, Burst: 1000} // the window, not the rate, limits
		h := startHarness(t, Config{Tenants: []config.Tenant{a}, Prefetch: 100})
		h.answer(always(reply{Delay: 20 * time.Millisecond}))
		for i := range 60 {
			id := fmt.Sprintf("a%d", i)
			h.deliver(jobBody("a", id, recipientFor(id)), nil)
		}
		h.advanceTo(5 * time.Second)
		starts := h.callStarts("a")
		require.Len(t, starts, 60)
		assert.LessOrEqual(t, slices.Max(starts), 200*time.Millisecond, "every job sent soon after the first answer")
		info := h.info("a")
		assert.LessOrEqual(t, info.DeferredTotal, int64(3*58), "at most three deferrals for each job beyond the two held")
	})
}

// The same backlog beside a first send that hangs for 10 s: the deferred
// jobs come back with a wait twice as long as the send has been out each
// time, so they bounce a few times, not every MinBusySpacing.
func TestBacklogBesideAHangingFirstSendBouncesAFewTimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{tenant("a")}, Prefetch: 100})
		h.answer(always(reply{Delay: 10 * time.Second, Err: errTimeout}))
		for i := range 20 {
			id := fmt.Sprintf("a%d", i)
			h.deliver(jobBody("a", id, recipientFor(id)), nil)
		}
		h.advanceTo(10*time.Second - time.Millisecond)
		assert.Len(t, h.callStarts("a"), 1, "one send in flight, hanging")
		info := h.info("a")
		// Waits of 50 ms, then twice the time out: back at 0.05, 0.15, 0.45,
		// 1.35, 4.05 s and 12.15 s: six deferrals per job before the
		// timeout, where a fixed 50 ms would be two hundred.
		assert.LessOrEqual(t, info.DeferredTotal, int64(7*19))
		assert.GreaterOrEqual(t, info.DeferredTotal, int64(19))
	})
}
