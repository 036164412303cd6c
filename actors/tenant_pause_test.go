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

func TestPausedTenantDefersItsJobsAndSendsThemAfterResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{tenant("a"), tenant("b")}})
		require.True(t, h.pause("a").Paused)
		for i, id := range []string{"j1", "j2", "j3"} {
			h.advanceTo(time.Duration(i) * time.Second)
			h.publish("a", id)
			assert.Equal(t, []string{"paused"}, h.deferReasons(id))
			deferred := h.copies(testkit.KindDeferred, id)
			require.Len(t, deferred, 1)
			assert.Equal(t, "paused", deferred[0].Publishing.Headers[messages.HeaderDeferReason])
			assert.Equal(t, PauseRecheck, testkit.WaitOf(deferred[0]))
		}
		h.publish("b", "other")
		assert.Empty(t, h.callsOf("a"), "a paused tenant sends nothing")
		assert.Len(t, h.callsOf("b"), 1, "another tenant is not paused")

		h.advanceTo(5 * time.Second)
		assert.False(t, h.resume("a").Paused)
		h.advanceTo(time.Minute)
		assert.Equal(t, []time.Duration{PauseRecheck, PauseRecheck + time.Second, PauseRecheck + 2*time.Second},
			h.callStarts("a"), "each job is sent when its recheck brings it back")
		assert.Equal(t, map[string]int{messages.StatusSent: 3}, h.statuses("a"))
		assert.Equal(t, 0, h.info("a").Deferred)
	})
}
