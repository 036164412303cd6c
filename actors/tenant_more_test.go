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
		assert.Equal(t, []time.Duration{0, 4*time.Second + SendGuard}, starts(h.callsFor("x1")),
			"the refused job waits Meta's 4^1 s (and, holding its token, the send guard)")
		assert.Equal(t, []string{ReasonPairRate.String()}, h.deferReasons("x1"))
		assert.Equal(t, messages.StatusSent, h.result("x1").Status)
		info := h.info("a")
		assert.Equal(t, "CLOSED", info.CircuitState)
		assert.Zero(t, info.ConsecutiveFailures, "a pair-rate answer is not a failure")
		assert.Equal(t, info.RatePerMinute, info.EffectivePerMinute, "the tenant's rate is unchanged")
	})
}

// A tenant whose API stops answering keeps its window's sends in flight
// (they end at the timeout), but once its oldest send has stalled
// (Schedule.StallAt) it gives back what it holds beyond them, keeping
// their tokens, and starts nothing new.
func TestTenantWhoseAPIStallsGivesBackWhatItHoldsBeyondItsSends(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{tenant("a")}, Prefetch: 100})
		h.answer(always(reply{Delay: 10 * time.Millisecond}))
		for i := range 20 {
			h.publishTo("a", fmt.Sprintf("warm-%d", i), fmt.Sprintf("1555000%04d", i))
			h.advance(20 * time.Millisecond)
		}
		window := h.info("a").Window
		require.Greater(t, window, 2, "the window has grown")

		h.answer(always(reply{Delay: time.Hour}))
		for i := range window + 5 {
			h.deliver(jobBody("a", fmt.Sprintf("stuck-%d", i), fmt.Sprintf("1556000%04d", i)), nil)
		}
		h.settle()
		info := h.info("a")
		assert.Equal(t, window, info.InFlight, "the window fills")
		assert.Equal(t, window+1, info.Held, "and one waits next")
		calls := len(h.callsOf("a"))
		h.advance(10 * time.Second)
		info = h.info("a")
		assert.Equal(t, window, info.Held, "the waiting one went back to the broker")
		assert.Equal(t, calls, len(h.callsOf("a")), "nothing new started")
	})
}

func starts(calls []call) []time.Duration {
	out := make([]time.Duration, len(calls))
	for i, c := range calls {
		out[i] = c.Start
	}
	return out
}
