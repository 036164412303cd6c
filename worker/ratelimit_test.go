package worker_test

import (
	"encoding/json"
	"fmt"
	"sort"
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

// sentCalls are the fake's accepted calls for one phone number, in order.
func sentCalls(calls []fakemeta.Call, phone string) []fakemeta.Call {
	var out []fakemeta.Call
	for _, c := range calls {
		if c.PhoneNumberID == phone && c.Status == 200 {
			out = append(out, c)
		}
	}
	return out
}

func TestRateLimitedTenantNeitherDelaysOthersNorGetsThrottled(t *testing.T) {
	a := testTenant{ID: "burst", Phone: "200000000000001", Token: "EAAtoken-burst-s3cr3t", Extra: "rate_limit: {per_minute: 600, burst: 20}"}
	b := testTenant{ID: "quiet", Phone: "200000000000002", Token: "EAAtoken-quiet-s3cr3t"}
	h := startHarness(t, []testTenant{a, b}, harnessOptions{})
	const perMinute, burst = 600.0, 20
	// The fake enforces the same rate: any send too early is answered 130429.
	h.fake.Behave(a.Phone, fakemeta.Behaviour{RateLimit: &fakemeta.Rate{PerMinute: perMinute, Burst: burst}})

	for i := range 300 {
		h.publish(job(a.ID, fmt.Sprintf("a-%03d", i), fmt.Sprintf("1555%07d", i)))
	}
	for i := range 20 {
		h.publish(job(b.ID, fmt.Sprintf("b-%03d", i), fmt.Sprintf("1666%07d", i)))
	}
	results := h.results(320, 90*time.Second)
	for id, r := range results {
		assert.Equal(t, messages.StatusSent, r.Status, id)
	}

	calls := h.fake.Calls()
	for _, c := range calls {
		assert.NotEqual(t, 130429, c.ErrorCode, "Meta (the fake, at the same rate) never had to throttle")
	}
	aSent, bSent := sentCalls(calls, a.Phone), sentCalls(calls, b.Phone)
	require.Len(t, aSent, 300)
	require.Len(t, bSent, 20)
	assert.True(t, bSent[19].At.Before(aSent[150].At),
		"the quiet tenant finished (%s) while the bursting one was still draining (its 150th send at %s)",
		bSent[19].At.Format(time.StampMilli), aSent[150].At.Format(time.StampMilli))

	// Over any window, A's sends stay within burst + rate × t. Sends are
	// never early, so the only allowance is the clock's resolution.
	for i := range aSent {
		for j := i; j < len(aSent); j++ {
			window := aSent[j].At.Sub(aSent[i].At).Seconds()
			allowed := float64(burst) + perMinute/60*window + 1e-6
			if float64(j-i+1) > allowed {
				require.Failf(t, "rate exceeded", "%d sends in %.3fs (allowed %.2f), sends %d..%d", j-i+1, window, allowed, i, j)
			}
		}
	}
	deferrals := 0
	for _, e := range h.events("message_deferred") {
		if e["tenantId"] == a.ID {
			deferrals++
		}
	}
	perJob := float64(deferrals) / 300
	t.Logf("bursting tenant: %d deferrals for 300 jobs (%.2f per job)", deferrals, perJob)
	assert.LessOrEqual(t, perJob, 2.0, "deferrals per job")
	assert.NotEmpty(t, h.events("rate_limit_exceeded"))
	for _, e := range h.events("rate_limit_exceeded")[:1] {
		rl, ok := e["rateLimit"].(map[string]any)
		require.True(t, ok, "rateLimit group: %v", e)
		assert.EqualValues(t, burst, rl["max"])
		assert.Contains(t, rl, "available")
		assert.Contains(t, e, "delayMs")
	}
	// About arrival order: a job can be overtaken only by those that found
	// a burst token or a slot while it sat in a delay tier, within one
	// burst plus one prefetch window.
	reorder := maxReorder(aSent)
	t.Logf("bursting tenant: largest reordering %v positions", reorder)
	assert.LessOrEqual(t, reorder, burst+h.cfg.Prefetch, "jobs left in about arrival order")
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

func TestPairRateDelaysOnlyThatRecipient(t *testing.T) {
	a := testTenant{ID: "pairs", Phone: "200000000000004", Token: "EAAtoken-pairs-s3cr3t"}
	h := startHarness(t, []testTenant{a}, harnessOptions{})
	h.fake.Behave(a.Phone, fakemeta.Behaviour{PairRate: 3 * time.Second})
	h.publish(job(a.ID, "first-to-x", "15550000001"))
	h.publish(job(a.ID, "second-to-x", "15550000001"))
	h.publish(job(a.ID, "third-to-y", "15550000002"))
	results := h.results(3, 30*time.Second)
	for id, r := range results {
		assert.Equal(t, messages.StatusSent, r.Status, id)
	}
	sent := sentCalls(h.fake.Calls(), a.Phone)
	require.Len(t, sent, 3)
	sort.Slice(sent, func(i, j int) bool { return sent[i].At.Before(sent[j].At) })
	assert.Equal(t, "15550000001", sent[0].To)
	assert.Equal(t, "15550000002", sent[1].To, "the other recipient went through first")
	assert.Less(t, sent[1].At.Sub(sent[0].At), time.Second, "without waiting")
	assert.Equal(t, "15550000001", sent[2].To)
	assert.GreaterOrEqual(t, sent[2].At.Sub(sent[0].At), 6*time.Second, "the same recipient waited at least 6s")
	info := h.tenantInfo(a.ID)
	assert.Equal(t, 60000.0, info.EffectivePerMinute, "pair rate does not slow the tenant")
}
