package actors

import (
	"fmt"
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

// errPairRate is 131056: too many messages to the same recipient.
var errPairRate = &whatsapp.APIError{HTTPStatus: 400, Code: 131056, HasCode: true, Message: "(Business Account, Consumer Account) pair rate limit hit"}

// An admin question is answered by the tenant's actor at once, however
// long its Meta call takes: the call runs off the actor.
func TestTenantAnswersAdminQuestionsWhileItsSendHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{tenant("a")}})
		h.answer(always(reply{Delay: time.Hour}))
		h.publish("a", "j1")
		for range 5 {
			before := h.now()
			info := h.info("a")
			assert.Equal(t, before, h.now(), "answered without any time passing")
			assert.Equal(t, 1, info.InFlight)
			h.advance(time.Second)
		}
	})
}

// Meta's pair rate (131056) defers that job by PairRateDelay and touches
// nothing else: another recipient of the same tenant is sent at once, and
// the tenant's rate and breaker are unchanged.
func TestPairRateDefersOnlyThatJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{tenant("a")}})
		first := true
		h.answer(func(c call) reply {
			if c.To == "15550000001" && first {
				first = false
				return reply{Err: errPairRate}
			}
			return reply{}
		})
		h.publishTo("a", "x1", "15550000001")
		h.publishTo("a", "y1", "15550000002")
		h.advanceTo(time.Minute)

		assert.Equal(t, []time.Duration{0}, starts(h.callsFor("y1")), "the other recipient is sent at once")
		assert.Equal(t, []time.Duration{0, PairRateDelay + SendGuard}, starts(h.callsFor("x1")),
			"the refused job waits PairRateDelay (and, holding its token, the send guard)")
		assert.Equal(t, []string{ReasonPairRate.String()}, h.deferReasons("x1"))
		assert.Equal(t, messages.StatusSent, h.result("x1").Status)
		info := h.info("a")
		assert.Equal(t, "CLOSED", info.CircuitState)
		assert.Zero(t, info.ConsecutiveFailures, "a pair-rate answer is not a failure")
		assert.Equal(t, info.RatePerMinute, info.EffectivePerMinute, "the tenant's rate is unchanged")
	})
}

// A tenant known to be fast may hold up to MaxHeldFast deliveries; when
// its API then starts hanging it gives back what it holds beyond MaxHeld
// once its send has been in flight for HoldBudget, keeping their tokens,
// so the shared prefetch window is not held for the whole timeout.
func TestFastTenantThatStartsHangingGivesBackWhatItHoldsAfterTheHoldBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{tenant("a")}, MaxHeldFast: 10})
		h.answer(always(reply{Delay: time.Millisecond}))
		for i := range 5 {
			h.publish("a", fmt.Sprintf("fast-%d", i))
			h.advance(10 * time.Millisecond)
		}
		require.Len(t, h.callsOf("a"), 5, "A is known to be fast now")

		h.answer(always(reply{Delay: time.Hour}))
		for i := range 8 {
			h.deliver(jobBody("a", fmt.Sprintf("slow-%d", i), harnessRecipient), nil)
		}
		h.settle()
		start := h.now()
		assert.Equal(t, 8, h.info("a").Held, "fast: it holds them all")
		h.advanceTo(start + HoldBudget - time.Millisecond)
		assert.Equal(t, 8, h.info("a").Held, "still within the hold budget")
		h.advanceTo(start + HoldBudget)
		info := h.info("a")
		assert.Equal(t, 2, info.Held, "one sending, one next")
		assert.Equal(t, 6, info.Deferred, "the rest went back to the broker")
		released := h.copies(testkit.KindDeferred, "slow-7")
		require.Len(t, released, 1)
		assert.Equal(t, ReasonBusy.String(), released[0].Publishing.Headers[messages.HeaderDeferReason])
	})
}

func starts(calls []call) []time.Duration {
	out := make([]time.Duration, len(calls))
	for i, c := range calls {
		out[i] = c.Start
	}
	return out
}
