package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
)

// neighbourDefaults keep a failing tenant's breaker open for a short while
// and give its jobs attempts enough to outlast the failure.
const neighbourDefaults = "rate_limit: {per_minute: 60000, burst: 1000}\nbreaker: {failure_threshold: 5, open_for: 3s}\nmax_attempts: 100"

// trickle publishes perTenant jobs for each tenant at a steady pace
// (one round every gap) and returns each job's publish time by internal id.
func (h *harness) trickle(tenants []testTenant, perTenant int, gap time.Duration) map[string]time.Time {
	published := map[string]time.Time{}
	for i := range perTenant {
		for _, tn := range tenants {
			id := fmt.Sprintf("%s-%03d", tn.ID, i)
			published[id] = time.Now()
			h.publish(job(tn.ID, id, "15550000002"))
		}
		time.Sleep(gap)
	}
	return published
}

// publishToSend is the p99 of the time from publishing a job to the fake
// Meta receiving its accepted send, over the jobs in published.
func publishToSend(t *testing.T, calls []testkit.Call, published map[string]time.Time) time.Duration {
	t.Helper()
	var lat []time.Duration
	for _, c := range calls {
		if c.Status != 200 {
			continue
		}
		var body struct {
			Text struct{ Body string } `json:"text"`
		}
		require.NoError(t, json.Unmarshal(c.Body, &body))
		id := strings.TrimPrefix(body.Text.Body, "job ")
		if at, ok := published[id]; ok {
			lat = append(lat, c.At.Sub(at))
		}
	}
	require.Len(t, lat, len(published), "every published job was sent once")
	slices.Sort(lat)
	return lat[(len(lat)*99+99)/100-1]
}

// quietRun runs B and C's trickle with A failing as behave says (or idle
// when behave is nil) and returns B and C's p99 publish-to-send time and
// the harness, still running.
func quietRun(t *testing.T, behave *testkit.Behaviour, aJobs int, args ...string) (time.Duration, *harness) {
	t.Helper()
	tenants := defaultTenants(3)
	a := tenants[0]
	h := startHarness(t, tenants, harnessOptions{Defaults: neighbourDefaults, Args: args})
	if behave != nil {
		h.fake.Behave(a.Phone, *behave)
		for i := range aJobs {
			h.publish(job(a.ID, fmt.Sprintf("a-%02d", i), "15550000001"))
		}
	}
	published := h.trickle(tenants[1:], 100, 40*time.Millisecond)
	for id, r := range h.results(200, 60*time.Second) {
		assert.Equal(t, messages.StatusSent, r.Status, id)
		assert.False(t, strings.HasPrefix(id, a.ID), "no result for A while it fails: %s", id)
	}
	return publishToSend(t, h.fake.Calls(), published), h
}

// assertUnaffected checks B and C's p99 against the run without A: within
// 1.5×, plus 50 ms.
func assertUnaffected(t *testing.T, alone, loaded time.Duration) {
	t.Helper()
	t.Logf("B/C publish-to-send p99: alone %v, beside failing A %v (ratio %.2f)",
		alone, loaded, float64(loaded)/float64(alone))
	assert.LessOrEqual(t, loaded, alone*3/2+50*time.Millisecond,
		"B and C's p99 beside a failing A must stay within 1.5x (+50 ms) of their p99 alone")
}

// assertSilentWhileOpen checks the fake's calls for phone: the breaker
// opens after the 5th consecutive failure, and from then on Meta sees at
// most one trial call per open period (open_for 3 s in neighbourDefaults).
func assertSilentWhileOpen(t *testing.T, calls []testkit.Call, phone string) {
	t.Helper()
	var at []time.Time
	for _, c := range calls {
		if c.PhoneNumberID == phone {
			at = append(at, c.At)
		}
	}
	require.GreaterOrEqual(t, len(at), 5, "A was called until its breaker opened")
	for i := 5; i < len(at); i++ {
		assert.GreaterOrEqual(t, at[i].Sub(at[i-1]), 3*time.Second,
			"call %d for A came %v after the previous one, inside the open time", i+1, at[i].Sub(at[i-1]))
	}
	t.Logf("A: %d calls while failing (5 to open, then one trial per open period)", len(at))
}

func TestFailingTenantOpensItsBreakerAndRecovers(t *testing.T) {
	alone, base := quietRun(t, nil, 0)
	base.stop()

	a := defaultTenants(1)[0]
	loaded, h := quietRun(t, &testkit.Behaviour{FailRaw: 500}, 20)
	assertUnaffected(t, alone, loaded)

	info := h.tenantInfo(a.ID)
	assert.Equal(t, "OPEN", info.CircuitState)
	opened := h.events("circuit_breaker_opened")
	require.NotEmpty(t, opened)
	assert.EqualValues(t, 5, opened[0]["failureCount"])
	// Wait for one more open period to end with its trial call, then
	// check that nothing reached Meta for A inside any open period.
	seen := countCalls(h.fake.Calls(), a.Phone)
	require.Eventually(t, func() bool { return countCalls(h.fake.Calls(), a.Phone) > max(seen, 5) },
		10*time.Second, 20*time.Millisecond, "a half-open trial call after the open time")
	assertSilentWhileOpen(t, h.fake.Calls(), a.Phone)

	h.fake.Behave(a.Phone, testkit.Behaviour{}) // A's API recovers
	for id, r := range h.results(20, 60*time.Second) {
		assert.Equal(t, messages.StatusSent, r.Status, id)
	}
	assert.Equal(t, "CLOSED", h.tenantInfo(a.ID).CircuitState)
	assert.NotEmpty(t, h.events("circuit_breaker_half_open"))
	assert.NotEmpty(t, h.events("circuit_breaker_closed"))
	assert.Zero(t, h.depth(h.topo.DLQ()), "nothing dead-lettered because a breaker was open")
}

func TestHangingTenantTimesOutWithoutDelayingOthers(t *testing.T) {
	const timeout = "500ms"
	alone, base := quietRun(t, nil, 0, "--meta-timeout", timeout)
	base.stop()

	a := defaultTenants(1)[0]
	loaded, h := quietRun(t, &testkit.Behaviour{Hang: true}, 10, "--meta-timeout", timeout)
	assertUnaffected(t, alone, loaded)

	assert.Equal(t, "OPEN", h.tenantInfo(a.ID).CircuitState, "A's breaker opens on timeouts")
	opened := h.events("circuit_breaker_opened")
	require.NotEmpty(t, opened)
	assert.Equal(t, a.ID, opened[0]["tenantId"])
	assert.EqualValues(t, 5, opened[0]["failureCount"])
	calls := h.fake.Calls()
	assertSilentWhileOpen(t, calls, a.Phone)
	var timeouts int
	for _, e := range h.events("meta_api_error") {
		if e["tenantId"] == a.ID {
			timeouts++
		}
	}
	var aTotal int
	for _, c := range calls {
		if c.PhoneNumberID == a.Phone {
			aTotal++
			assert.Zero(t, c.Status, "A's calls all hung until the client gave up")
		}
	}
	assert.Equal(t, aTotal, timeouts, "each timed-out call is logged as a meta_api_error")

	h.fake.Behave(a.Phone, testkit.Behaviour{})
	for id, r := range h.results(10, 60*time.Second) {
		assert.Equal(t, messages.StatusSent, r.Status, id)
	}
	assert.Zero(t, h.depth(h.topo.DLQ()))
}

// A fast tenant may hold more than two deliveries (actors.HoldBudget); when
// its API then starts hanging it must hand the extra ones back at once
// rather than keep prefetch slots for the whole META_TIMEOUT.
func TestFastTenantThatStartsHangingGivesBackWhatItHolds(t *testing.T) {
	tenants := defaultTenants(2)
	a, b := tenants[0], tenants[1]
	h := startHarness(t, tenants, harnessOptions{Defaults: neighbourDefaults, Args: []string{"--meta-timeout", "10s"}})
	for i := range 20 {
		h.publish(job(a.ID, fmt.Sprintf("fast-%02d", i), "15550000030"))
	}
	h.results(20, 30*time.Second) // A is known to be fast now

	h.fake.Behave(a.Phone, testkit.Behaviour{Hang: true})
	var bodies [][]byte
	for i := range 30 {
		bodies = append(bodies, job(a.ID, fmt.Sprintf("slow-%02d", i), "15550000030"))
	}
	h.publishAll(bodies)
	waitCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.fake.WaitInFlight(waitCtx, 1), "A's send is hanging")
	require.Eventually(t, func() bool {
		info := h.tenantInfo(a.ID)
		return info.InFlight == 1 && info.Held <= 2
	}, 3*time.Second, 10*time.Millisecond, "A holds at most 2 deliveries while its send hangs")

	for i := range 10 {
		h.publish(job(b.ID, fmt.Sprintf("b-%02d", i), "15550000031"))
	}
	for id, r := range h.results(10, 5*time.Second) {
		assert.Equal(t, messages.StatusSent, r.Status, id)
		assert.True(t, strings.HasPrefix(id, "b-"), id)
	}
	h.fake.Behave(a.Phone, testkit.Behaviour{})
}
