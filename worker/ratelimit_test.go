package worker_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/actors"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

// tenantInfo asks the running worker's router about one tenant.
func (h *harness) tenantInfo(id string) messages.TenantInfo {
	h.tb.Helper()
	info, err := h.worker.TenantInfo(id)
	require.NoError(h.tb, err)
	return info
}

// maxReorder is the largest number of positions a job moved between
// publishing and sending, read from the job number in the payload text.
func maxReorder(calls []fakemeta.Call) int {
	order := make([]int, len(calls))
	for i, c := range calls {
		var p struct{ Text struct{ Body string } }
		_ = json.Unmarshal(c.Body, &p)
		var n int
		_, _ = fmt.Sscanf(p.Text.Body[strings.LastIndex(p.Text.Body, "-")+1:], "%d", &n)
		order[i] = n
	}
	worst := 0
	for pos, n := range order {
		worst = max(worst, abs(pos-n))
	}
	return worst
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func TestMetaThrottlingSlowsTheTenantAndLosesNothing(t *testing.T) {
	a := testTenant{ID: "throttled", Phone: "200000000000003", Token: "EAAtoken-thr-s3cr3t", Extra: "rate_limit: {per_minute: 600, burst: 20}"}
	h := startHarness(t, []testTenant{a}, harnessOptions{})
	h.fake.Behave(a.Phone, fakemeta.Behaviour{FailCode: 130429, FailTimes: 3})
	for i := range 20 {
		h.publish(job(a.ID, fmt.Sprintf("t-%02d", i), fmt.Sprintf("1555%07d", i)))
	}
	results := h.results(20, 60*time.Second)
	for id, r := range results {
		assert.Equal(t, messages.StatusSent, r.Status, id)
	}
	throttled := 0
	for _, c := range h.fake.Calls() {
		if c.ErrorCode == 130429 {
			throttled++
		}
	}
	assert.Equal(t, 3, throttled)
	info := h.tenantInfo(a.ID)
	assert.Less(t, info.EffectivePerMinute, 600.0, "the tenant's rate was lowered")
	assert.Equal(t, actors.BreakerClosed.String(), info.CircuitState, "throttling is not a breaker failure")
	assert.Zero(t, info.ConsecutiveFailures)
	reasons := map[string]int{}
	for _, e := range h.events("message_deferred") {
		reasons[fmt.Sprint(e["reason"])]++
	}
	assert.Equal(t, 3, reasons["throttled"])
}
