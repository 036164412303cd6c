package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

// Fairness load: 20 quiet tenants at 2 jobs/s each beside one noisy
// neighbour, against a fake Meta with Meta's latency (as in the window
// rows). What is measured is the delay the worker adds to a quiet job:
// from its publish to the fake receiving its send, the fake's own latency
// left out.
const (
	fairQuietTenants = 20
	fairQuietRate    = 2 // jobs/s per quiet tenant
	// fairNoisyLimit is the noisy tenant's rate limit (the defaults'
	// 600/min) in (b)-(d), per second; it floods at 10x that in (b).
	fairNoisyLimit = 10
	// fairCampaignRate is the campaign's in (e): Meta's standard 80/s, its
	// rate limit (burst the same), published at windowOver it after a
	// burst and a ramp (as in the window rows), so that its bucket binds.
	fairCampaignRate = 80
	fairLatency      = 300 * time.Millisecond
	// fairPrefetch follows the README's rule, PREFETCH >= the sum over
	// busy tenants of rate x Meta latency, at the heaviest case: 80/s x 1 s
	// for the campaign (1 s about the p99 at 300 ms) + 40/s x 1 s for the
	// quiet tenants. Every case runs with it, so that they differ only in
	// the neighbour.
	fairPrefetch = 120
	// fairMetaTimeout is above the fake's largest latency (3 s), so that no
	// quiet send times out, and short enough that the hung sends of (c)
	// time out within the measured part.
	fairMetaTimeout = 4 * time.Second
	// A quiet job whose send the fake has not answered fairGrace after the
	// load (its largest latency and 2 s more) counts as unsent.
	fairGrace = windowMaxLatency + 2*time.Second
	// The goal: the p99 beside a neighbour at most fairMaxRatio x alone,
	// or fairSlack more, whichever is larger.
	fairMaxRatio = 1.5
	fairSlack    = 20 * time.Millisecond
	fairDefaults = "rate_limit: {per_minute: 600, burst: 80}\nbreaker: {failure_threshold: 5, open_for: 5s}"
	// The noisy tenant's job numbers start here, far above the quiet ones'.
	fairNoisyBase = 1_000_000
)

// fairWarmup is the time before the measured part: the quiet tenants'
// first jobs give their windows a latency, and the campaign's burst and
// ramp empty its bucket.
var fairWarmup = windowRamp(fairLatency)

// fairCase is what the noisy tenant does while the quiet ones trickle.
type fairCase struct {
	name string
	rate int // noisy jobs per second, at a steady pace; 0 = none (or a campaign)
	// campaign makes the noisy tenant a campaign at fairCampaignRate.
	campaign bool
	// outage is how the noisy tenant's Meta answers from the measured part
	// on (healthy before, with the latency); zero = healthy throughout.
	outage fakemeta.Behaviour
}

var fairCases = []fairCase{
	{name: "(a) alone"},
	{name: "(b) one tenant floods at 10x its limit", rate: 10 * fairNoisyLimit},
	{name: "(c) one tenant's Meta hangs until timeout", rate: fairNoisyLimit, outage: fakemeta.Behaviour{Hang: true}},
	{name: "(d) one tenant's Meta answers 500", rate: fairNoisyLimit,
		outage: fakemeta.Behaviour{FailRaw: 500, Latency: windowLatency(fairLatency)}},
	{name: fmt.Sprintf("(e) one tenant's campaign at its full rate (%d/s)", fairCampaignRate), campaign: true},
}

// fairMeta is every fairness tenant's fake Meta: Meta's latency and its
// standard throughput per number.
func fairMeta() fakemeta.Behaviour {
	return fakemeta.Behaviour{Latency: windowLatency(fairLatency),
		RateLimit: &fakemeta.Rate{PerMinute: float64(fairCampaignRate * 60), Burst: fairCampaignRate}}
}

// fairResult is one case's quiet added delays and what the neighbour did
// in the measured part.
type fairResult struct {
	p50, p99 time.Duration
	n, late  int
	// The neighbour's calls that arrived in the measured part: answered
	// 200 per second, and the others (5xx, hung, throttled).
	noisySends  float64
	noisyFailed int
}

// fairLimit is the goal for a p99 beside a neighbour: fairMaxRatio x the
// p99 alone, or fairSlack more than it, whichever is larger.
func fairLimit(alone time.Duration) time.Duration {
	return max(time.Duration(fairMaxRatio*float64(alone)), alone+fairSlack)
}

func (e *benchEnv) fairness(ctx context.Context) ([]benchRow, error) {
	// Whatever this section set, the fake answers at once afterwards.
	defer func() { e.fake.SetDefault(fakemeta.Behaviour{}); e.fake.Reset() }()
	d := 6 * time.Second
	if e.quick {
		d = 3 * time.Second
	}
	results := make([][]fairResult, len(fairCases))
	for rep := range e.reps {
		// Interleaved, and each repetition starts with another case, so
		// that neither drift nor a cold start always hits the same one.
		for k := range fairCases {
			i := (k + rep) % len(fairCases)
			c := fairCases[i]
			r, err := e.fairRun(ctx, c, d)
			if err != nil {
				return nil, fmt.Errorf("fairness %s: %w", c.name, err)
			}
			e.progress("fairness %s, rep %d: quiet added p50 %s p99 %s (n=%d, unsent %d); neighbour %.1f sends/s, %d calls failed or hung",
				c.name, rep+1, benchDur(r.p50), benchDur(r.p99), r.n, r.late, r.noisySends, r.noisyFailed)
			results[i] = append(results[i], r)
		}
	}
	// Each p50 and p99 is the median over the repetitions, and so is (a)'s:
	// a stall of the machine in one run moves neither.
	var rows []benchRow
	var alone time.Duration
	for i, c := range fairCases {
		var p50s, p99s, sends, failed []float64
		n, late := 0, 0
		for _, r := range results[i] {
			p50s, p99s = append(p50s, float64(r.p50)), append(p99s, float64(r.p99))
			sends, failed = append(sends, r.noisySends), append(failed, float64(r.noisyFailed))
			n, late = n+r.n, late+r.late
		}
		p50, p99 := time.Duration(benchMedian(p50s)), time.Duration(benchMedian(p99s))
		row := benchRow{Measure: "fairness " + c.name,
			Numbers: map[string]float64{"p50Ms": benchMs(p50), "p99Ms": benchMs(p99), "jobs": float64(n), "late": float64(late)}}
		value := fmt.Sprintf("quiet added delay p50 %s, p99 %s (n=%d", benchDur(p50), benchDur(p99), n)
		if len(p99s) > 1 {
			value += "; p99s " + fairDurs(p99s)
		}
		if late > 0 {
			value += fmt.Sprintf(", %d unsent %s after the load", late, fairGrace)
		}
		value += ")"
		if i == 0 {
			alone = p99
			row.Value, row.Goal, row.Status = value, "reference for (b)-(e)", statusInfo
			rows = append(rows, row)
			continue
		}
		limit := fairLimit(alone)
		ratio := float64(p99) / float64(max(alone, time.Microsecond))
		diff := p99 - alone
		row.Value = fmt.Sprintf("%s; p99 %.2fx (a), %+.1fms; neighbour %.1f sends/s, %.0f calls failed or hung",
			value, ratio, benchMs(diff), benchMedian(sends), benchMedian(failed))
		row.Goal = fmt.Sprintf("p99 <= max(%gx, +%s) of (a) = %s", fairMaxRatio, benchDur(fairSlack), benchDur(limit))
		row.Status = benchMet(p99 <= limit && late == 0)
		row.Numbers["p99Ratio"], row.Numbers["p99DiffMs"], row.Numbers["p99LimitMs"] = ratio, benchMs(diff), benchMs(limit)
		row.Numbers["noisySendsPerSec"], row.Numbers["noisyFailedCalls"] = benchMedian(sends), benchMedian(failed)
		rows = append(rows, row)
	}
	return rows, nil
}

func benchMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fairRun runs one case on a fresh worker: warm-up, then d of load, then
// waits for the quiet jobs' sends.
func (e *benchEnv) fairRun(ctx context.Context, c fairCase, d time.Duration) (fairResult, error) {
	quiet := e.tenants[:fairQuietTenants]
	noisy := e.tenants[fairQuietTenants]
	if c.campaign {
		noisy.Extra = fmt.Sprintf("rate_limit: {per_minute: %d, burst: %d}", fairCampaignRate*60, fairCampaignRate)
	}
	tenants := append(slices.Clone(quiet), noisy)
	for _, t := range tenants {
		e.fake.UseDefault(t.Phone)
	}
	e.fake.SetDefault(fairMeta())
	defer e.fake.UseDefault(noisy.Phone)

	p := strconv.Itoa(fairPrefetch)
	bw, err := e.newBenchWorker(ctx, "fairness", tenants, fairDefaults, io.Discard, "--meta-timeout", fairMetaTimeout.String(),
		"--prefetch", p, "--prefetch-reduced", p, "--backpressure-high", "100000000", "--backpressure-low", "1",
		"--shutdown-timeout", "1s")
	if err != nil {
		return fairResult{}, err
	}
	defer bw.close()
	pub, err := dialBenchPublisher(e.amqpURL, false)
	if err != nil {
		return fairResult{}, err
	}
	defer pub.close()
	bw.start()
	for ready := time.Now().Add(5 * time.Second); !bw.w.Ready() && time.Now().Before(ready); {
		time.Sleep(10 * time.Millisecond)
	}
	e.fake.Reset()

	t0 := time.Now()
	measureFrom, end := t0.Add(fairWarmup), t0.Add(fairWarmup+d)
	counted := map[int]time.Time{} // quiet job number -> publish time
	quietN, noisyN := 0, 0
	publish := func(tenant string, n int) (time.Time, error) {
		now := time.Now()
		_, err := pub.publish(ctx, bw.topo.Queue, benchJobBody(tenant, n, now))
		return now, err
	}
	outage := c.outage != (fakemeta.Behaviour{})
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		now := time.Now()
		if !now.Before(end) {
			break
		}
		if outage && !now.Before(measureFrom) {
			e.fake.Behave(noisy.Phone, c.outage)
			outage = false
		}
		elapsed := now.Sub(t0)
		for due := int(fairQuietTenants * fairQuietRate * elapsed.Seconds()); quietN < due; quietN++ {
			at, err := publish(quiet[quietN%len(quiet)].ID, quietN)
			if err != nil {
				return fairResult{}, err
			}
			if !at.Before(measureFrom) {
				counted[quietN] = at
			}
		}
		due := int(float64(c.rate) * elapsed.Seconds())
		if c.campaign {
			due = fairCampaignRate + windowCampaignDue(fairCampaignRate, elapsed, fairWarmup)
		}
		for ; noisyN < due; noisyN++ {
			if _, err := publish(noisy.ID, fairNoisyBase+noisyN); err != nil {
				return fairResult{}, err
			}
		}
		select {
		case <-ctx.Done():
			return fairResult{}, ctx.Err()
		case <-tick.C:
		}
	}

	// A call is logged once answered: wait for the quiet jobs' (at most
	// the fake's largest latency after their send).
	quietPhones := map[string]bool{}
	for _, t := range quiet {
		quietPhones[t.Phone] = true
	}
	deadline := time.Now().Add(fairGrace)
	var calls fakemeta.CallLog
	for {
		calls = e.fake.Calls()
		arrived := windowArrivals(calls, quietPhones)
		missing := 0
		for n := range counted {
			if _, ok := arrived[n]; !ok {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return fairResult{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	added, late := fairAdded(counted, windowArrivals(calls, quietPhones), deadline)
	r := fairResult{p50: pct(added, 50), p99: pct(added, 99), n: len(added), late: late}
	sends := 0
	for _, call := range calls {
		if call.PhoneNumberID != noisy.Phone || call.At.Before(measureFrom) || !call.At.Before(end) {
			continue
		}
		if call.Status == 200 {
			sends++
		} else {
			r.noisyFailed++
		}
	}
	if c.outage.Hang {
		// A hung call is logged only once abandoned: count those still
		// hanging too (every other send has been answered by now).
		r.noisyFailed += e.fake.InFlight()
	}
	r.noisySends = float64(sends) / d.Seconds()
	return r, ctx.Err()
}

// fairAdded is each counted job's added delay, sorted: from its publish to
// its send's arrival at the fake (when the request came in, before the
// fake's latency), or to deadline for one that never arrived (late).
func fairAdded(published, arrived map[int]time.Time, deadline time.Time) (added []time.Duration, late int) {
	for n, at := range published {
		got, ok := arrived[n]
		if !ok {
			late++
			got = deadline
		}
		added = append(added, got.Sub(at))
	}
	slices.Sort(added)
	return added, late
}

// fairDurs lists the repetitions' durations (nanoseconds) for a row's
// value: "4.1ms, 36ms, 5ms".
func fairDurs(ds []float64) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = benchDur(time.Duration(d))
	}
	return strings.Join(s, ", ")
}
