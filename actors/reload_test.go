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
	"github.com/wadispatch/wadispatch/whatsapp"
)

// reconfigure applies a reload to the router and returns its answer.
func (h *harness) reconfigure(msg *Reconfigure) *Reconfigured {
	h.t.Helper()
	res, ok := h.ask(msg).(*Reconfigured)
	require.True(h.t, ok)
	h.settle()
	return res
}

func tokensOf(ids ...string) map[string]whatsapp.TokenSource {
	m := map[string]whatsapp.TokenSource{}
	for _, id := range ids {
		m[id] = &testkit.FakeToken{Value: "token2-" + id}
	}
	return m
}

// A new rate applies to the live bucket without refilling it: tokens spent
// stay spent, the burst is the new cap, and the refill runs at the new rate
// from the reload on. Whether the tenant's actor runs or has passivated.
func TestAReloadedRateDoesNotRefillTheBucket(t *testing.T) {
	for _, passivated := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			a := tenant("a")
			a.RateLimit = config.RateLimit{PerMinute: 60, Burst: 5}
			cfg := Config{Tenants: []config.Tenant{a}}
			if passivated {
				cfg.PassivateAfter = time.Second
			}
			h := startHarness(t, cfg)
			for _, id := range []string{"j1", "j2", "j3", "j4", "j5"} {
				h.publish("a", id)
			}
			if passivated {
				h.advance(2 * time.Second) // +2 tokens at 60/min
				require.False(t, h.listed("a").Active)
			}
			before := h.listed("a").TokensAvailable
			changed := a
			changed.RateLimit = config.RateLimit{PerMinute: 600, Burst: 10}
			res := h.reconfigure(&Reconfigure{Changed: []config.Tenant{changed}, Tokens: tokensOf("a")})
			assert.Equal(t, 1, res.Changed)

			info := h.listed("a")
			assert.InDelta(t, before, info.TokensAvailable, 0.01, "no refill on the reload (passivated %v)", passivated)
			assert.Equal(t, 10, info.TokensMax)
			assert.Equal(t, 600.0, info.RatePerMinute)
			h.advance(500 * time.Millisecond)
			assert.InDelta(t, before+5, h.info("a").TokensAvailable, 0.01, "10 a second from now on")
		})
	}
}

// Lowering the burst caps the tokens on hand at once.
func TestAReloadedBurstCapsTheTokensOnHand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := tenant("a")
		a.RateLimit = config.RateLimit{PerMinute: 60, Burst: 50}
		h := startHarness(t, Config{Tenants: []config.Tenant{a}})
		require.InDelta(t, 50, h.info("a").TokensAvailable, 0.01)
		a.RateLimit.Burst = 3
		h.reconfigure(&Reconfigure{Changed: []config.Tenant{a}})
		assert.InDelta(t, 3, h.info("a").TokensAvailable, 0.01)
	})
}

// An open breaker stays open until the instant it was to end; pause and
// quarantine survive; the new threshold counts from the next failure.
func TestAReloadKeepsTheBreakerOpenAndThePause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := openBreaker(t) // open until t0+30s
		h.pause("a")
		changed := breakerTenant()
		changed.Breaker = config.Breaker{FailureThreshold: 2, OpenFor: 5 * time.Minute}
		h.advanceTo(10 * time.Second)
		h.reconfigure(&Reconfigure{Changed: []config.Tenant{changed}})
		info := h.info("a")
		assert.Equal(t, "OPEN", info.CircuitState)
		assert.Equal(t, h.at(30*time.Second), info.OpenUntil, "the open time in force is kept")
		assert.True(t, info.Paused, "a reload never resumes a tenant")
		assert.Equal(t, 5, info.ConsecutiveFailures)
	})
}

// A removed tenant's actor finishes what it holds: its send in flight ends
// with its result. Its later jobs, and anything of it coming back, are
// dead-lettered as unknown_tenant. An added tenant serves at once.
func TestARemovedTenantFinishesWhatItHoldsAndAnAddedOneServes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{tenant("a")}})
		h.answer(func(c call) reply { return reply{Delay: 5 * time.Second} })
		h.publish("a", "j1")
		require.Len(t, h.callsOf("a"), 1)

		b := tenant("b")
		res := h.reconfigure(&Reconfigure{Added: []config.Tenant{b}, Removed: []string{"a"}, Tokens: tokensOf("b")})
		assert.Equal(t, &Reconfigured{Added: 1, Removed: 1}, res)
		_, isNotFound := h.ask(&messages.GetTenant{TenantID: "a"}).(*messages.TenantNotFound)
		assert.True(t, isNotFound, "a is no longer configured")

		h.publish("a", "j2")
		assert.Equal(t, messages.StatusDeadLettered, h.result("j2").Status)
		assert.Equal(t, messages.ReasonUnknownTenant, h.deadLetter("j2").Publishing.Headers[messages.HeaderDLQReason])

		h.advance(5 * time.Second)
		assert.Equal(t, messages.StatusSent, h.result("j1").Status, "the send in flight was finished")

		h.answer(always(reply{}))
		h.publish("b", "k1")
		assert.Equal(t, messages.StatusSent, h.result("k1").Status)
		calls := h.callsFor("k1")
		require.Len(t, calls, 1)
		assert.Equal(t, "token2-b", calls[0].Token, "with the token source the reload gave")
	})
}
