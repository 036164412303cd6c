package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

// neighbourDefaults keep a failing tenant's breaker open for a short while
// and give its jobs attempts enough to outlast the failure.
const neighbourDefaults = "rate_limit: {per_minute: 60000, burst: 1000}\nbreaker: {failure_threshold: 5, open_for: 3s}\nmax_attempts: 100"

// trickle publishes perTenant jobs for each tenant at a steady pace (one
// round every gap), so they arrive while a neighbour is failing.
func (h *harness) trickle(tenants []testTenant, perTenant int, gap time.Duration) {
	for i := range perTenant {
		for _, tn := range tenants {
			h.publish(job(tn.ID, fmt.Sprintf("%s-%03d", tn.ID, i), "15550000002"))
		}
		time.Sleep(gap)
	}
}

// quietRun starts a worker for tenants A, B and C with A's Meta behaving
// as behave says, publishes aJobs jobs for A, then trickles 100 jobs each
// for B and C and requires all of those sent, and none of A's, while A
// fails. It returns the harness, still running. (How much a failing
// neighbour delays the others is measured by the benchmark suite's
// fairness rows, not here.)
func quietRun(t *testing.T, behave fakemeta.Behaviour, aJobs int, args ...string) *harness {
	t.Helper()
	tenants := defaultTenants(3)
	a := tenants[0]
	h := startHarness(t, tenants, harnessOptions{Defaults: neighbourDefaults, Args: args})
	h.fake.Behave(a.Phone, behave)
	for i := range aJobs {
		h.publish(job(a.ID, fmt.Sprintf("a-%02d", i), "15550000001"))
	}
	h.trickle(tenants[1:], 100, 40*time.Millisecond)
	for id, r := range h.results(200, 60*time.Second) {
		assert.Equal(t, messages.StatusSent, r.Status, id)
		assert.False(t, strings.HasPrefix(id, a.ID), "no result for A while it fails: %s", id)
	}
	sent := 0
	for _, c := range h.fake.Calls() {
		if c.PhoneNumberID != a.Phone && c.Status == 200 {
			sent++
		}
	}
	assert.Equal(t, 200, sent, "every B and C job was sent once")
	return h
}

// assertSilentWhileOpen checks the fake's calls for phone: the breaker
// opens after the 5th consecutive failure, and from then on Meta sees at
// most one trial call per open period (open_for 3 s in neighbourDefaults).
func assertSilentWhileOpen(t *testing.T, calls []fakemeta.Call, phone string) {
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
	a := defaultTenants(1)[0]
	h := quietRun(t, fakemeta.Behaviour{FailRaw: 500}, 20)

	// Each open period ends in HALF_OPEN until a trial call fails and
	// opens it again, so ask until it reads OPEN rather than once, at
	// whatever point of its cycle the trickle happened to end.
	require.Eventually(t, func() bool { return h.tenantInfo(a.ID).CircuitState == "OPEN" },
		10*time.Second, 20*time.Millisecond, "A's breaker is open while its Meta fails")
	opened := h.events("circuit_breaker_opened")
	require.NotEmpty(t, opened)
	assert.EqualValues(t, 5, opened[0]["failureCount"])
	// Wait for one more open period to end with its trial call, then
	// check that nothing reached Meta for A inside any open period.
	seen := countCalls(h.fake.Calls(), a.Phone)
	require.Eventually(t, func() bool { return countCalls(h.fake.Calls(), a.Phone) > max(seen, 5) },
		10*time.Second, 20*time.Millisecond, "a half-open trial call after the open time")
	assertSilentWhileOpen(t, h.fake.Calls(), a.Phone)

	h.fake.Behave(a.Phone, fakemeta.Behaviour{}) // A's API recovers
	for id, r := range h.results(20, 60*time.Second) {
		assert.Equal(t, messages.StatusSent, r.Status, id)
	}
	assert.Equal(t, "CLOSED", h.tenantInfo(a.ID).CircuitState)
	assert.NotEmpty(t, h.events("circuit_breaker_half_open"))
	assert.NotEmpty(t, h.events("circuit_breaker_closed"))
	assert.Zero(t, h.depth(h.topo.DLQ()), "nothing dead-lettered because a breaker was open")
}

func TestHangingTenantTimesOutWithoutDelayingOthers(t *testing.T) {
	a := defaultTenants(1)[0]
	h := quietRun(t, fakemeta.Behaviour{Hang: true}, 10, "--meta-timeout", "500ms")

	require.Eventually(t, func() bool { return h.tenantInfo(a.ID).CircuitState == "OPEN" },
		10*time.Second, 20*time.Millisecond, "A's breaker opens on timeouts")
	opened := h.events("circuit_breaker_opened")
	require.NotEmpty(t, opened)
	assert.Equal(t, a.ID, opened[0]["tenantId"])
	assert.EqualValues(t, 5, opened[0]["failureCount"])
	// The fake logs a hung call once the client has given up, about when
	// the worker logs the timeout: right after a trial call failed, one
	// may be a moment behind the other.
	counts := func() (calls []fakemeta.Call, aTotal, timeouts int) {
		calls = h.fake.Calls()
		for _, e := range h.events("meta_api_error") {
			if e["tenantId"] == a.ID {
				timeouts++
			}
		}
		return calls, countCalls(calls, a.Phone), timeouts
	}
	assert.Eventually(t, func() bool { _, n, e := counts(); return n == e }, 5*time.Second, 20*time.Millisecond)
	calls, aTotal, timeouts := counts()
	assert.Equal(t, aTotal, timeouts, "each timed-out call is logged as a meta_api_error")
	assertSilentWhileOpen(t, calls, a.Phone)
	for _, c := range calls {
		if c.PhoneNumberID == a.Phone {
			assert.Zero(t, c.Status, "A's calls all hung until the client gave up")
		}
	}

	h.fake.Behave(a.Phone, fakemeta.Behaviour{})
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

	h.fake.Behave(a.Phone, fakemeta.Behaviour{Hang: true})
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
	h.fake.Behave(a.Phone, fakemeta.Behaviour{})
}
