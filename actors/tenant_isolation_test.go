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

// A tenant whose very first send hangs has no latency yet. It holds what
// reaches it meanwhile (deferring it would cost a delay-queue trip a job
// to a tenant that may answer in milliseconds) but never the prefetch
// window's reserve, which stays free for the other tenants' jobs, and only
// until its stall check: from then on it holds MaxHeld, and the rest go
// back to the broker. (Holding the whole window for the stall check's
// 100 ms was the ~55 ms stall its neighbours once saw end to end.)
func TestHangingTenantHoldsItsStartUpJobsOnlyUntilItsStallCheck(t *testing.T) {
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
		assert.Equal(t, 10-fairReserve(10), info.Held, "all but the reserve")
		assert.Equal(t, fairReserve(10), info.Deferred, "the reserve's worth goes back to the broker")

		h.advanceTo(HoldBudget)
		assert.Equal(t, 2, h.info("a").Held, "stalled: one sending, one next")
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
// the tenant holds it (the prefetch window has room to spare) and sends it
// as the first answer, 20 ms later, opens its window (to 51: 1,000/s ×
// 40 ms high estimate × 1.25, and one) and the next answers free it;
// nothing goes through a delay queue.
func TestBacklogBeforeTheFirstAnswerIsHeldAndSentOnIt(t *testing.T) {
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
		assert.Equal(t, 40*time.Millisecond, slices.Max(starts), "51 sent on the first answer, the last 8 on the next")
		assert.Zero(t, h.info("a").DeferredTotal)
	})
}

// The same backlog while another tenant holds a delivery: the new tenant
// bets only a few of the slots the other may need on its first answer. It
// holds startupHold, and the rest come back when that answer is likely in.
func TestBacklogBeforeTheFirstAnswerBesideABusyTenantHoldsAFew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := tenant("a")
		a.RateLimit = config.RateLimit{PerMinute: 60_000, Burst: 1000}
		h := startHarness(t, Config{Tenants: []config.Tenant{a, tenant("b")}, Prefetch: 100})
		h.answer(func(c call) reply {
			if c.Tenant == "b" {
				return reply{Delay: time.Second}
			}
			return reply{Delay: 20 * time.Millisecond}
		})
		h.publish("b", "b0")
		for i := range 60 {
			id := fmt.Sprintf("a%d", i)
			h.deliver(jobBody("a", id, recipientFor(id)), nil)
		}
		h.settle()
		info := h.info("a")
		assert.Equal(t, startupHold, info.Held)
		assert.Equal(t, 60-startupHold, info.Deferred)
		h.advanceTo(5 * time.Second)
		assert.Len(t, h.callStarts("a"), 60, "all sent once they come back")
	})
}

// The same backlog beside a first send that hangs for 10 s: the tenant
// holds it until its stall check (HoldBudget), then keeps MaxHeld and
// defers the rest, which come back with a wait twice as long as the send
// has been out each time, so they bounce a few times, not every
// MinBusySpacing.
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
		// Released at 0.1 s with twice the time out as their wait: back at
		// 0.3, 0.9, 2.7 and 8.1 s, four deferrals for each of the 18
		// before the timeout, where a fixed 50 ms would be two hundred.
		assert.Equal(t, int64(4*18), info.DeferredTotal)
	})
}
