package worker_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

// End to end, at Meta-like latency: a tenant's sends overlap (its window),
// its jobs to each recipient reach Meta one at a time in publish order,
// and a fake enforcing the tenant's own rate (strictly) throttles at most
// 1 % of its sends.
func TestWindowSendsConcurrentlyInOrderPerRecipientWithinTheRate(t *testing.T) {
	tenants := defaultTenants(1)
	tenants[0].Extra = "rate_limit: {per_minute: 1200, burst: 20}"
	a := tenants[0]
	h := startHarness(t, tenants, harnessOptions{Args: []string{"--prefetch", "50"}})
	h.fake.SetRand(1)
	h.fake.Behave(a.Phone, fakemeta.Behaviour{
		Latency:   fakemeta.Latency{Median: 200 * time.Millisecond, Sigma: 0.3, Max: time.Second},
		RateLimit: &fakemeta.Rate{PerMinute: 1200, Burst: 20},
	})
	const recipients, each = 20, 8
	var bodies [][]byte
	for n := range each {
		for r := range recipients {
			bodies = append(bodies, job(a.ID, fmt.Sprintf("r%02d-%02d", r, n), fmt.Sprintf("1555100%04d", r)))
		}
	}
	h.publishAll(bodies)
	for id, r := range h.results(recipients*each, 90*time.Second) {
		assert.Equal(t, messages.StatusSent, r.Status, id)
	}

	calls := h.fake.Calls()
	seq := func(c fakemeta.Call) int {
		var body struct {
			Text struct{ Body string } `json:"text"`
		}
		_ = json.Unmarshal(c.Body, &body)
		var r, n int
		_, _ = fmt.Sscanf(strings.TrimPrefix(body.Text.Body, "job "), "r%02d-%02d", &r, &n)
		return n
	}
	assert.Zero(t, calls.OutOfOrder(a.Phone, seq), "each recipient's jobs in publish order")
	assert.Zero(t, calls.Overlaps(a.Phone), "never two sends to one recipient at once")
	// Sends leave on the tenant's own bucket; where Meta counts (on
	// arrival, after each request's own transit) an odd one may look early
	// to a limiter as strict as the fake's, and is retried.
	assert.LessOrEqual(t, h.fake.RateLimited(a.Phone), recipients*each/100, "at most 1 % throttled where Meta counts")
	peak := calls.MaxInFlight(a.Phone)
	t.Logf("peak in flight %d", peak)
	require.Greater(t, peak, 1, "sends overlap: the window")
}
