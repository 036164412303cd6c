package worker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

// perJob counts the events named name by internal id.
func (h *harness) perJob(name string) map[string]int {
	out := map[string]int{}
	for _, e := range h.events(name) {
		id, _ := e["internalId"].(string)
		out[id]++
	}
	return out
}

// TestEveryEventIsLoggedOncePerOccurrence runs one worker through each kind
// of outcome and counts the operational log events (message_delivered,
// message_failed, message_deferred, circuit_breaker_opened, ...) each job
// produced.
func TestEveryEventIsLoggedOncePerOccurrence(t *testing.T) {
	ok := testTenant{ID: "ok", Phone: "600000000000001", Token: "EAAtoken-ok-s3cr3t"}
	perm := testTenant{ID: "perm", Phone: "600000000000002", Token: "EAAtoken-perm-s3cr3t"}
	limited := testTenant{ID: "limited", Phone: "600000000000003", Token: "EAAtoken-limited-s3cr3t",
		Extra: "rate_limit: {per_minute: 600, burst: 1}"}
	broken := testTenant{ID: "broken", Phone: "600000000000004", Token: "EAAtoken-broken-s3cr3t",
		Extra: "breaker: {failure_threshold: 2, open_for: 60s}"}
	h := startHarness(t, []testTenant{ok, perm, limited, broken}, harnessOptions{})
	h.fake.Behave(perm.Phone, fakemeta.Behaviour{FailCode: 131026, FailSubcode: 2494010})
	h.fake.Behave(broken.Phone, fakemeta.Behaviour{FailRaw: 500})

	for i := range 3 {
		h.publish(job(ok.ID, fmt.Sprintf("ok-%d", i), fmt.Sprintf("155500001%02d", i)))
		h.publish(job(limited.ID, fmt.Sprintf("limited-%d", i), fmt.Sprintf("155500002%02d", i)))
	}
	h.publish(job(perm.ID, "perm-0", "15550000012"))
	h.publish([]byte("{not json"))
	results := h.results(7, 30*time.Second)
	for i := range 3 {
		h.publish(job(broken.ID, fmt.Sprintf("broken-%d", i), fmt.Sprintf("155500003%02d", i)))
	}
	require.Eventually(t, func() bool { return h.tenantInfo(broken.ID).Deferred == 3 }, 30*time.Second, 20*time.Millisecond,
		"broken's three jobs end deferred: two after failing, one refused by the open breaker")

	delivered := h.perJob("message_delivered")
	for _, id := range []string{"ok-0", "ok-1", "ok-2", "limited-0", "limited-1", "limited-2"} {
		assert.Equal(t, 1, delivered[id], "message_delivered for %s", id)
	}
	assert.Len(t, delivered, 6)
	for _, e := range h.events("message_delivered") {
		id := e["internalId"].(string)
		assert.Equal(t, results[id].WAMID, e["wamid"], "wamid of %s", id)
		assert.Contains(t, e, "duration")
		assert.NotEmpty(t, e["tenantId"])
	}

	failed := h.events("message_failed")
	require.Len(t, failed, 1)
	assert.Equal(t, "perm-0", failed[0]["internalId"])
	assert.EqualValues(t, 131026, failed[0]["errorCode"])
	assert.EqualValues(t, 2494010, failed[0]["errorSubcode"])
	assert.NotEmpty(t, failed[0]["fbtrace"])
	assert.Equal(t, results["perm-0"].FBTraceID, failed[0]["fbtrace"])

	apiErrors := h.perJob("meta_api_error")
	assert.Equal(t, 1, apiErrors["perm-0"])
	assert.Equal(t, 1, apiErrors["broken-0"])
	assert.Equal(t, 1, apiErrors["broken-1"])
	assert.Zero(t, apiErrors["broken-2"], "no call, so no API error, while the breaker is open")
	for _, e := range h.events("meta_api_error") {
		for _, k := range []string{"errorCode", "errorSubcode", "fbtrace", "retryCount"} {
			assert.Contains(t, e, k, "meta_api_error for %v", e["internalId"])
		}
	}

	opened := h.events("circuit_breaker_opened")
	require.Len(t, opened, 1, "one opening, one event")
	assert.Equal(t, "OPEN", opened[0]["circuitState"])
	assert.Equal(t, broken.ID, opened[0]["tenantId"])
	assert.Empty(t, h.events("circuit_breaker_closed"))

	limitedInfo := h.tenantInfo(limited.ID)
	rateLimited := h.events("rate_limit_exceeded")
	assert.Len(t, rateLimited, int(limitedInfo.DeferredTotal), "one rate_limit_exceeded per rate-limit deferral")
	require.NotEmpty(t, rateLimited)
	for _, e := range rateLimited {
		require.Contains(t, e, "rateLimit")
		rl := e["rateLimit"].(map[string]any)
		assert.Contains(t, rl, "available")
		assert.EqualValues(t, 1, rl["max"])
		assert.Contains(t, e, "delayMs")
	}
	deferrals := 0
	for _, e := range h.events("message_deferred") {
		if e["tenantId"] == limited.ID {
			deferrals++
			assert.Equal(t, "rate_limited", e["reason"])
		}
	}
	assert.Equal(t, len(rateLimited), deferrals, "each rate-limit deferral logs one message_deferred")

	dead := h.events("message_dead_lettered")
	require.Len(t, dead, 1, "only the invalid job is dead-lettered; a permanent error logs message_failed")
	assert.Equal(t, messages.ReasonInvalidJSON, dead[0]["reason"])
	assert.Len(t, h.events("broker_connected"), 1)
	assert.Empty(t, h.events("broker_connection_lost"))
	assert.Empty(t, h.events("tenant_actor_restarted"))
}
