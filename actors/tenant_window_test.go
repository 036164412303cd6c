package actors

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
)

// numberTenant is a tenant at Meta's default number limit, 80/s.
func numberTenant(id string) config.Tenant {
	tn := tenant(id)
	tn.RateLimit = config.RateLimit{PerMinute: 4800, Burst: 80}
	tn.MaxAttempts = 10
	return tn
}

// peakInFlight is the most calls of tenant that overlapped in time.
func peakInFlight(calls []call) int {
	type edge struct {
		at    time.Duration
		delta int
	}
	var edges []edge
	for _, c := range calls {
		edges = append(edges, edge{c.Start, 1}, edge{c.End, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at != edges[j].at {
			return edges[i].at < edges[j].at
		}
		return edges[i].delta < edges[j].delta // an end before a start at the same instant
	})
	peak, n := 0, 0
	for _, e := range edges {
		n += e.delta
		peak = max(peak, n)
	}
	return peak
}

// At Meta's latency one send at a time gives a tenant 1/latency messages a
// second; the window lets it send at its rate. Jobs arriving at 80/s to
// distinct recipients, Meta answering in 300 ms: each is sent when it
// arrives, about 24 are in flight at once, and the bucket stays exact.
func TestWindowLetsATenantSendAtItsRateAtMetasLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{numberTenant("a")}, Prefetch: 1000})
		h.answer(always(reply{Delay: 300 * time.Millisecond}))
		const n = 800 // ten seconds at 80/s
		for i := range n {
			h.deliver(jobBody("a", fmt.Sprintf("j%03d", i), ownRecipient), nil)
			h.advance(12500 * time.Microsecond)
		}
		h.advance(5 * time.Second)

		calls := h.callsOf("a")
		require.Len(t, calls, n, "every job sent once")
		assert.Equal(t, n, h.statuses("a")[messages.StatusSent])
		// The window starts at one and doubles every round trip, so the
		// first second or two go through the delay queues; after that
		// every job is sent as it arrives.
		published := map[string]time.Duration{}
		for i := range n {
			published[fmt.Sprintf("j%03d", i)] = time.Duration(i) * 12500 * time.Microsecond
		}
		late := 0
		for _, c := range calls {
			if at := published[c.InternalID]; at >= 3*time.Second && c.Start-at > SendGuard {
				late++
			}
		}
		assert.Zero(t, late, "past the ramp no job waits behind the window: the rate is reached")
		peak := peakInFlight(calls)
		assert.GreaterOrEqual(t, peak, 20, "about rate × latency = 24 in flight")
		assert.LessOrEqual(t, peak, 40)
		// A send whose token is not due yet waits for it plus SendGuard, one
		// whose token is there goes at once, so send times may look up to
		// SendGuard's worth of tokens (4) over an exact bucket's.
		assertWithinRate(t, h.callStarts("a"), 80+4, 80)
		info := h.info("a")
		assert.GreaterOrEqual(t, info.Window, 24, "the window covers rate × latency")
		assert.LessOrEqual(t, info.Window, 80)
	})
}

// Throttling, a 5xx and a timeout each at least halve the window.
func TestWindowIsCutOnThrottlingServerErrorsAndTimeouts(t *testing.T) {
	for name, err := range map[string]error{
		"Throttled":   errThrottled,
		"ServerError": errTransient,
		"Timeout":     errTimeout,
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startHarness(t, Config{Tenants: []config.Tenant{numberTenant("a")}, Prefetch: 1000})
				h.answer(always(reply{Delay: 100 * time.Millisecond}))
				for i := range 200 {
					h.deliver(jobBody("a", fmt.Sprintf("warm%03d", i), ownRecipient), nil)
					h.advance(12500 * time.Microsecond)
				}
				h.advance(time.Second)
				before := h.info("a").Window
				require.Greater(t, before, 4)
				h.answer(always(reply{Err: err}))
				h.publish("a", "bad")
				after := h.info("a").Window
				assert.LessOrEqual(t, after, before/2, "from %d", before)
			})
		})
	}
}

// failFirstCallOf answers every call after delay, the first call of job id
// with HTTP 500 (a transient error: the job is retried).
func failFirstCallOf(id string, delay time.Duration) metaFunc {
	failed := false
	return func(c call) reply {
		if c.InternalID == id && !failed {
			failed = true
			return reply{Delay: delay, Err: errTransient}
		}
		return reply{Delay: delay}
	}
}

// A tenant's jobs to one recipient reach Meta one at a time, in publish
// order, through a retry of the first: the later ones wait behind it.
// Other recipients' jobs are sent meanwhile.
func TestJobsToOneRecipientAreSentOneAtATimeInOrderThroughRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{numberTenant("a")}, Prefetch: 100})
		h.answer(failFirstCallOf("x1", 100*time.Millisecond))
		h.publish("a", "warm") // the window opens once a latency is known
		h.advance(time.Second)
		t0 := h.now()
		const x = "15550000001"
		for i := 1; i <= 5; i++ {
			h.deliver(jobBody("a", fmt.Sprintf("x%d", i), x), nil)
		}
		h.deliver(jobBody("a", "y1", "15550000002"), nil)
		h.advanceTo(5 * time.Minute)

		var order []string
		var last time.Duration
		for _, c := range h.callsOf("a") {
			if c.To != x {
				continue
			}
			order = append(order, c.InternalID)
			assert.GreaterOrEqual(t, c.Start, last, "%s started before the previous call to %s was answered", c.InternalID, x)
			last = c.End
		}
		assert.Equal(t, []string{"x1", "x1", "x2", "x3", "x4", "x5"}, order)
		assert.Equal(t, []time.Duration{t0}, starts(h.callsFor("y1")), "another recipient is not held up")
		for i := 1; i <= 5; i++ {
			assert.Equal(t, messages.StatusSent, h.result(fmt.Sprintf("x%d", i)).Status)
		}
		assert.Zero(t, h.info("a").RecipientsWaiting)
	})
}

// A permanent failure ends the head of the line: the next job goes.
func TestPermanentFailureReleasesTheRecipientsLaterJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{numberTenant("a")}})
		h.answer(func(c call) reply {
			if c.InternalID == "x1" {
				return reply{Err: errPermanent}
			}
			return reply{}
		})
		const x = "15550000001"
		for i := 1; i <= 3; i++ {
			h.deliver(jobBody("a", fmt.Sprintf("x%d", i), x), nil)
		}
		h.advanceTo(time.Minute)
		assert.Equal(t, messages.StatusFailed, h.result("x1").Status)
		assert.Equal(t, messages.StatusSent, h.result("x2").Status)
		assert.Equal(t, messages.StatusSent, h.result("x3").Status)
		var order []string
		for _, c := range h.callsOf("a") {
			order = append(order, c.InternalID)
		}
		assert.Equal(t, []string{"x1", "x2", "x3"}, order)
	})
}

// Meta's pair rate (131056) defers that recipient's job by 4^X s, X
// counting the recipient's refusals, and its later jobs wait behind it;
// the tenant's other recipients and its rate are untouched.
func TestPairRateHoldsTheRecipientsLineAndBacksOffByPowersOfFour(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{numberTenant("a")}})
		refusals := 0
		h.answer(func(c call) reply {
			if c.InternalID == "x1" && refusals < 2 {
				refusals++
				return reply{Err: errPairRate}
			}
			return reply{}
		})
		const x = "15550000001"
		h.deliver(jobBody("a", "x1", x), nil)
		h.deliver(jobBody("a", "x2", x), nil)
		h.deliver(jobBody("a", "y1", "15550000002"), nil)
		h.advanceTo(time.Minute)

		assert.Equal(t, []time.Duration{0, 4*time.Second + SendGuard, 20*time.Second + 2*SendGuard}, starts(h.callsFor("x1")),
			"4^1 s, then 4^2 s after the second refusal")
		x2 := starts(h.callsFor("x2"))
		require.Len(t, x2, 1)
		assert.Greater(t, x2[0], 20*time.Second, "x2 waited behind x1")
		assert.Equal(t, []time.Duration{0}, starts(h.callsFor("y1")))
		info := h.info("a")
		assert.Equal(t, info.RatePerMinute, info.EffectivePerMinute)
		assert.Zero(t, info.ConsecutiveFailures)
	})
}

// With sends in flight when the breaker opens, those finish but no new one
// starts; half-open lets exactly one trial through; the window starts
// small again once the breaker closes.
func TestBreakerWithSendsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tn := numberTenant("a")
		tn.Breaker = config.Breaker{FailureThreshold: 5, OpenFor: 30 * time.Second}
		h := startHarness(t, Config{Tenants: []config.Tenant{tn}, Prefetch: 1000})
		h.answer(always(reply{Delay: 200 * time.Millisecond}))
		for i := range 100 {
			h.deliver(jobBody("a", fmt.Sprintf("warm%03d", i), ownRecipient), nil)
			h.advance(12500 * time.Microsecond)
		}
		h.advance(time.Second)
		require.Greater(t, h.info("a").Window, 10)

		h.answer(always(reply{Delay: 200 * time.Millisecond, Err: errTransient}))
		for i := range 20 {
			h.deliver(jobBody("a", fmt.Sprintf("bad%02d", i), ownRecipient), nil)
		}
		h.advance(time.Second)
		info := h.info("a")
		require.Equal(t, "OPEN", info.CircuitState)
		assert.Zero(t, info.InFlight, "the sends in flight finished")
		badCalls := 0
		for _, c := range h.callsOf("a") {
			if c.Err != nil {
				badCalls++
			}
		}
		calls := len(h.callsOf("a"))
		h.advanceTo(h.now() + 25*time.Second)
		assert.Equal(t, calls, len(h.callsOf("a")), "nothing starts while open")

		h.answer(always(reply{Delay: 200 * time.Millisecond}))
		opened := h.logs("circuit_breaker_half_open", "a")
		h.advanceTo(h.now() + 10*time.Second)
		require.NotEmpty(t, h.logs("circuit_breaker_half_open", "a"))
		halfOpenAt := h.logs("circuit_breaker_half_open", "a")[len(opened)].At(h)
		var during int
		for _, c := range h.callsOf("a") {
			if c.Start >= halfOpenAt && c.Start < halfOpenAt+200*time.Millisecond {
				during++
			}
		}
		assert.Equal(t, 1, during, "one trial while half-open")
		assert.Equal(t, "CLOSED", h.info("a").CircuitState)
		t.Logf("%d calls failed before the breaker opened", badCalls)
	})
}

// The process's prefetch window is shared: a campaign that could use all
// of it leaves room for the others' jobs, which are taken in and sent at
// once.
func TestACampaignLeavesPrefetchSlotsForQuietTenants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		campaign := numberTenant("campaign")
		campaign.RateLimit = config.RateLimit{PerMinute: 60000, Burst: 1000}
		h := startHarness(t, Config{Tenants: []config.Tenant{campaign, tenant("quiet")}, Prefetch: 20})
		h.answer(always(reply{Delay: time.Second}))
		for i := range 200 { // a backlog far beyond the prefetch window
			h.deliver(jobBody("campaign", fmt.Sprintf("c%03d", i), ownRecipient), nil)
			h.advance(time.Millisecond)
		}
		h.advance(3 * time.Second) // the window has grown toward the campaign's need
		held := h.info("campaign").Held
		assert.LessOrEqual(t, held, 20-fairReserve(20), "the campaign leaves the reserve")
		h.publish("quiet", "q1")
		assert.Equal(t, []time.Duration{h.now()}, starts(h.callsFor("q1")), "the quiet tenant's job is sent at once")
	})
}

// gateShards is testShards with a broker gate the test sets: whether
// another shard's delivery waits for room in the prefetch window.
type gateShards struct {
	testShards
	waiting *atomic.Bool
}

func (g gateShards) WaitingBesides(int) bool { return g.waiting.Load() }

// The sharing rule makes room only for a job that may be waiting for it: a
// campaign alone in its shard (shard 0) keeps its jobs while no other
// shard's delivery waits at the broker's gate, and leaves the reserve as
// soon as one does, or when another tenant shares its shard and so its
// queue.
func TestTheSharingRuleMakesRoomOnlyForAJobThatMayBeWaiting(t *testing.T) {
	for _, c := range []struct {
		name          string
		quietShard    int
		waiting       bool
		latency       time.Duration
		leavesReserve bool
	}{
		{"AloneAndNobodyWaits", 1, false, time.Second, false},
		{"AloneAndAnotherShardWaits", 1, true, time.Second, true},
		{"SharingItsShard", 0, false, time.Second, true},
		{"SharingItsShardWithSendsFasterThanADeferral", 0, true, MinBusySpacing / 5, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				campaign := numberTenant("campaign")
				// A rate whose window (at either latency) holds all 30.
				campaign.RateLimit = config.RateLimit{PerMinute: 600_000, Burst: 1000}
				waiting := new(atomic.Bool)
				waiting.Store(c.waiting)
				shards := gateShards{testShards{"campaign": 0, "quiet": c.quietShard}, waiting}
				h := startHarness(t, Config{Tenants: []config.Tenant{campaign, tenant("quiet")}, Prefetch: 20, Shards: shards})
				h.root.Send(h.router, &messages.ShardsChanged{Shard: 0, Acquired: true, Owned: []int{0, 1}})
				h.answer(always(reply{Delay: c.latency}))
				h.advance(time.Second)           // the bucket, empty when the shard was acquired, fills
				h.publish("campaign", "warm-up") // its answer gives the window a latency
				h.advance(time.Second)
				for i := range 30 {
					h.deliver(jobBody("campaign", fmt.Sprintf("c%03d", i), ownRecipient), nil)
				}
				h.settle()
				info := h.info("campaign")
				if c.leavesReserve {
					assert.Equal(t, 20-fairReserve(20), info.Held, "the campaign leaves the reserve")
					assert.Equal(t, int64(30-info.Held), info.DeferredTotal, "the rest go back to the broker")
				} else {
					assert.Equal(t, 30, info.Held, "nothing deferred for nobody")
					assert.Zero(t, info.DeferredTotal)
				}
			})
		})
	}
}

func TestWindowSizing(t *testing.T) {
	t.Run("StartsAtOneUntilALatencyIsKnown", func(t *testing.T) {
		w := NewWindow(0)
		assert.Equal(t, 1, w.Size(80))
		w.Grow(80)
		assert.Equal(t, 1, w.Size(80), "no latency, no growth")
	})
	t.Run("OpensToLittlesLawOnTheFirstSuccessThenGrowsByOne", func(t *testing.T) {
		w := NewWindow(0)
		w.Observe(300 * time.Millisecond)
		w.Grow(80)
		// 80/s × (300 ms + 2 × 150 ms deviation of the first sample) × 1.25 + 1.
		assert.Equal(t, 61, w.Size(80))
		for range 200 { // the deviation decays (to a few ns): the ceiling comes down to ⌈80 × 0.3 × 1.25⌉ + 1
			w.Observe(300 * time.Millisecond)
			w.Grow(80)
		}
		assert.Equal(t, 32, w.Size(80), "30, rounded up, and one")
		w.Cut(stateT0)
		assert.Equal(t, 16, w.Size(80))
		w.Observe(300 * time.Millisecond)
		w.Grow(80)
		assert.Equal(t, 17, w.Size(80), "after a cut it grows by one a success")
	})
	t.Run("IsCappedByMaxInFlight", func(t *testing.T) {
		w := NewWindow(16)
		for range 100 {
			w.Observe(time.Second)
			w.Grow(1000)
		}
		assert.Equal(t, 16, w.Size(1000))
	})
	t.Run("LetsAThousandPerSecondNumberReachItsRateByDefault", func(t *testing.T) {
		w := NewWindow(0)
		for range 2000 {
			w.Observe(time.Second)
			w.Grow(1000)
		}
		assert.GreaterOrEqual(t, w.Size(1000), 1000)
	})
	t.Run("CutHalvesRestartGoesBackToOne", func(t *testing.T) {
		w := NewWindow(0)
		for range 20 {
			w.Observe(100 * time.Millisecond)
			w.Grow(1000)
		}
		before := w.Size(1000)
		w.Cut(stateT0)
		assert.Equal(t, before/2, w.Size(1000))
		w.Cut(stateT0.Add(time.Second - time.Nanosecond))
		assert.Equal(t, before/2, w.Size(1000), "the same event's answers cut once")
		w.Cut(stateT0.Add(time.Second))
		assert.Equal(t, before/4, w.Size(1000), "a round trip later it is another one")
		w.Restart()
		assert.Equal(t, 1, w.Size(1000))
		assert.Equal(t, 100*time.Millisecond, w.Latency(), "the latency estimate is kept")
	})
}

// A head of line that never comes back (its deferral failed to settle and
// its delivery came back without its place) does not stall its
// recipient's line for ever: the next job goes LostPlaceGrace after the
// head was due, and meanwhile does not go round the delay tiers a send at
// a time.
func TestALostHeadOfLineIsSkippedAfterTheGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{tenant("a")}})
		lost := false
		h.broker.SettleFn = func(_ context.Context, _ messages.Delivery, msgs ...broker.Message) error {
			for _, m := range msgs {
				if testkit.KindOf(m) == testkit.KindDeferred && !lost {
					lost = true
					return errors.New("test: the deferral is lost")
				}
			}
			return nil
		}
		h.answer(func(c call) reply {
			if c.InternalID == "x1" {
				return reply{Err: errTransient} // retried after 1 s: that deferral is lost
			}
			return reply{}
		})
		const x = "15550000001"
		h.publishTo("a", "x1", x)
		h.publishTo("a", "x2", x)
		h.advanceTo(time.Minute)
		x2 := starts(h.callsFor("x2"))
		require.Len(t, x2, 1, "x2 is not stuck behind the lost head")
		assert.GreaterOrEqual(t, x2[0], BaseBackoff+LostPlaceGrace, "but waited for it first")
		assert.Equal(t, messages.StatusSent, h.result("x2").Status)
		assert.LessOrEqual(t, x2[0], BaseBackoff+LostPlaceGrace+2*MinBusySpacing, "and went soon after the grace")
		// It comes back as late again as the head is, not a send later:
		// a few trips, where one every MinBusySpacing made 201.
		assert.LessOrEqual(t, len(h.deferReasons("x2")), 12, "trips through the delay tiers while it waited")
	})
}

// One burst that Meta found too fast comes back as many 130429 answers at
// once when many sends were in flight: the rate is halved once for them,
// not once each.
func TestManyThrottledAnswersInFlightHalveTheRateOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{numberTenant("a")}, Prefetch: 1000})
		h.answer(always(reply{Delay: 300 * time.Millisecond}))
		h.publish("a", "warm")
		h.advance(time.Second)
		h.answer(always(reply{Delay: 300 * time.Millisecond, Err: errThrottled}))
		for i := range 30 {
			h.deliver(jobBody("a", fmt.Sprintf("j%02d", i), ownRecipient), nil)
		}
		h.advance(400 * time.Millisecond)
		require.GreaterOrEqual(t, len(h.callsOf("a")), 10, "many sends were in flight when they were throttled")
		assert.Equal(t, 2400.0, h.info("a").EffectivePerMinute, "halved once, from 4800")
	})
}

// A job waiting behind its recipient's earlier one comes back once that
// one is likely answered: when the head is deferred, after the head is due
// back and has had its send's latency (the high estimate), not at the
// moment the head itself comes back and is still sending.
func TestFollowerComesBackAfterTheDeferredHeadIsAnswered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{numberTenant("a")}, Prefetch: 100})
		h.answer(failFirstCallOf("x1", 100*time.Millisecond))
		h.publish("a", "warm")
		h.advance(time.Second)
		const x = "15550000001"
		h.deliver(jobBody("a", "x1", x), nil)
		h.advance(10 * time.Millisecond)
		h.deliver(jobBody("a", "x2", x), nil)
		h.advanceTo(time.Minute)

		assert.Equal(t, messages.StatusSent, h.result("x2").Status)
		x1, x2 := h.callsFor("x1"), h.callsFor("x2")
		require.Len(t, x1, 2)
		require.Len(t, x2, 1)
		assert.GreaterOrEqual(t, x2[0].Start, x1[1].End, "x2 after x1's retry was answered")
		assert.Len(t, h.copies(testkit.KindDeferred, "x2"), 2,
			"once while x1 was sending, once while x1 waited for its retry")
	})
}
