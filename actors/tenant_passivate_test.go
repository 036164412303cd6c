package actors

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
)

func TestIdleTenantActorStopsAfterPassivateAfterAndItsStateSurvives(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		idle := tenant("idle")
		idle.RateLimit = config.RateLimit{PerMinute: 1, Burst: 10}
		h := startHarness(t, Config{Tenants: []config.Tenant{idle}}) // PassivateAfter: the 2 min default
		for _, id := range []string{"j1", "j2", "j3"} {
			h.publish("idle", id)
		}

		h.advanceTo(DefaultPassivateAfter - time.Millisecond)
		require.True(t, h.listed("idle").Active)
		h.advanceTo(DefaultPassivateAfter)
		info := h.listed("idle")
		require.False(t, info.Active, "stopped exactly PassivateAfter after its last job")
		assert.EqualValues(t, 3, info.Sent)
		assert.Equal(t, 9.0, info.TokensAvailable, "7 left, plus 2 minutes' refill at 1/min")

		h.publish("idle", "j1") // redelivered after it was sent
		assert.Len(t, h.callsOf("idle"), 3, "a sent job is not sent again after passivation")
		dup := h.logs("duplicate_suppressed", "idle")
		require.Len(t, dup, 1)
		assert.Equal(t, "wamid.j1", dup[0]["wamid"])
		results := h.results("j1")
		require.Len(t, results, 2)
		assert.Equal(t, messages.StatusSent, results[1].Status)
		assert.Equal(t, "wamid.j1", results[1].WAMID)

		info = h.info("idle")
		assert.True(t, info.Active, "the job started a new actor")
		assert.EqualValues(t, 4, info.Sent)
		assert.Equal(t, 9.0, info.TokensAvailable, "a duplicate spends no token")

		h.advanceTo(2 * DefaultPassivateAfter)
		assert.False(t, h.listed("idle").Active, "it passivates again")
	})
}

// An admin command that reaches a tenant's actor just as it asks to be
// passivated is handled, not lost with the stopping actor's mailbox: the
// router counts it like a job and declines a passivation request that did
// not see it. Here the request is the actor's own, sent to the router
// right behind the pause, as when the idle check fires while the pause is
// on its way; before admin messages were counted, the router stopped the
// actor and the pause went down with its mailbox whenever the actor had
// not handled it yet.
func TestPauseRacingPassivationIsNotLost(t *testing.T) {
	for run := range 20 {
		synctest.Test(t, func(t *testing.T) {
			h := startHarness(t, Config{Tenants: []config.Tenant{tenant("a")}})
			h.publish("a", "j1")
			h.settle()
			pid := actor.NewPID(h.root.ActorSystem().Address(), h.router.Id+"/tenant-a")
			pause := h.root.RequestFuture(h.router, &messages.PauseTenant{TenantID: "a"}, AskTimeout)
			h.root.Send(h.router, &passivate{pid: pid, received: 1}) // it had handled j1
			res, err := pause.Result()
			require.NoError(t, err, "run %d: the pause was answered", run)
			assert.True(t, res.(*messages.TenantInfo).Paused, "run %d", run)
			h.settle()
			assert.True(t, h.listed("a").Paused, "run %d: the pause stays", run)
			h.advanceTo(3 * DefaultPassivateAfter)
			info := h.listed("a")
			assert.False(t, info.Active, "run %d: passivated at a later check", run)
			assert.True(t, info.Paused, "run %d", run)
		})
	}
}
