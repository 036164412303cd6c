package actors

import (
	"testing"
	"testing/synctest"
	"time"

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
