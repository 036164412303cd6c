package actors

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
)

// panicOn makes the send of job id panic its first times calls (every
// call when times < 0); everything else succeeds.
func panicOn(id string, times int) metaFunc {
	var n atomic.Int64
	return func(c call) reply {
		if c.InternalID == id && (times < 0 || n.Add(1) <= int64(times)) {
			return reply{Panic: "boom: " + id}
		}
		return reply{}
	}
}

// crashTenants are a, whose bucket refills slowly enough that a reset
// would show, and its neighbour b.
func crashTenants() []config.Tenant {
	a := tenant("a")
	a.RateLimit = config.RateLimit{PerMinute: 60, Burst: 10}
	return []config.Tenant{a, tenant("b")}
}

func TestCrashRestartsTheTenantKeepingItsStateAndRetriesTheJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: crashTenants()})
		h.answer(panicOn("boom", 1))
		h.publish("a", "warm")
		h.publish("b", "n1")
		before := h.info("a")
		require.Equal(t, 9.0, before.TokensAvailable)

		h.publish("a", "boom")
		restarted := h.logs("tenant_actor_restarted", "a")
		require.Len(t, restarted, 1)
		assert.EqualValues(t, 1, restarted[0]["restarts"])
		requeued := h.copies(testkit.KindRequeued, "boom")
		require.Len(t, requeued, 1)
		assert.EqualValues(t, 1, header(requeued[0], messages.HeaderCrashes))
		assert.Len(t, h.callsFor("boom"), 2, "the crashed send, then the retry")
		assert.Equal(t, messages.StatusSent, h.result("boom").Status)

		after := h.info("a")
		assert.Equal(t, 1, after.Restarts)
		assert.Equal(t, before.TokensAvailable-2, after.TokensAvailable,
			"both admissions were charged: the restart did not refill the bucket")
		assert.EqualValues(t, 2, after.Sent, "the counters survive the restart")

		h.publish("b", "n2")
		assert.Equal(t, 0, h.info("b").Restarts, "the neighbour is not restarted")
		assert.Empty(t, h.logs("tenant_actor_restarted", "b"))
		assert.EqualValues(t, 2, h.info("b").Sent)
	})
}

func TestJobThatCrashesItsTenantThreeTimesIsDeadLetteredAsPoison(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: crashTenants()})
		h.answer(panicOn("poison", -1))
		h.publish("a", "poison")

		calls := h.callsFor("poison")
		require.Len(t, calls, MaxCrashes)
		for _, c := range calls {
			assert.True(t, c.Panicked)
			assert.Equal(t, time.Duration(0), c.Start)
		}
		var crashes []int64
		for _, m := range h.copies(testkit.KindRequeued, "poison") {
			crashes = append(crashes, header(m, messages.HeaderCrashes))
		}
		assert.Equal(t, []int64{1, 2}, crashes)
		dl := h.deadLetter("poison")
		assert.Equal(t, messages.ReasonPoison, dl.Publishing.Headers[messages.HeaderDLQReason])
		assert.EqualValues(t, MaxCrashes, header(dl, messages.HeaderCrashes))
		res := h.result("poison")
		assert.Equal(t, messages.StatusDeadLettered, res.Status)
		assert.Equal(t, messages.ReasonPoison, res.Reason)
		assert.Equal(t, MaxCrashes, res.Attempts, "a call that panicked is still a call to Meta")
		assert.EqualValues(t, MaxCrashes, header(dl, messages.HeaderAttempts))

		info := h.info("a")
		assert.Equal(t, MaxCrashes, info.Restarts)
		assert.EqualValues(t, 1, info.DeadLettered)
		assert.False(t, info.Quarantined)
		h.publish("a", "next")
		assert.Equal(t, messages.StatusSent, h.result("next").Status, "the tenant goes on")
	})
}

func TestCrashLoopingTenantIsQuarantinedUntilResumed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{tenant("q")}})
		h.answer(always(reply{Panic: "meta client bug"}))
		h.publish("q", "p1") // crashes 3 times: poison
		h.publish("q", "p2") // crashes twice: the fifth restart quarantines
		require.Len(t, h.callsOf("q"), 5)

		quarantined := h.logs("tenant_quarantined", "q")
		require.Len(t, quarantined, 1)
		assert.EqualValues(t, 5, quarantined[0]["restarts"])
		info := h.info("q")
		assert.True(t, info.Quarantined)
		assert.Equal(t, 5, info.Restarts)

		h.publish("q", "p3")
		assert.Len(t, h.callsOf("q"), 5, "a quarantined tenant sends nothing")
		assert.Equal(t, []string{"paused"}, h.deferReasons("p2"))
		assert.Equal(t, []string{"paused"}, h.deferReasons("p3"))

		h.answer(always(reply{}))
		h.advanceTo(5 * time.Second)
		assert.False(t, h.resume("q").Quarantined)
		h.advanceTo(PauseRecheck - time.Millisecond)
		assert.Len(t, h.callsOf("q"), 5)
		h.advanceTo(PauseRecheck)
		assert.Equal(t, []time.Duration{PauseRecheck, PauseRecheck}, h.callStarts("q")[5:],
			"the deferred jobs are sent when they come back")
		assert.Equal(t, messages.StatusSent, h.result("p2").Status)
		assert.Equal(t, messages.StatusSent, h.result("p3").Status)
	})
}
