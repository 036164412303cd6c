package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wadispatch/wadispatch/testkit/fakemeta"
	"github.com/wadispatch/wadispatch/testkit/localrun"
)

// The window rows: tenants' send windows against a fake Meta that answers
// with Meta's latency and enforces its throughput per number.
const (
	windowSigma      = 0.5
	windowMaxLatency = 3 * time.Second
	// windowOver is how far above its rate a campaign is published in the
	// steady part, and windowRampOver in the ramp (after its burst at once),
	// so that its bucket is empty when the steady part starts and binds all
	// along.
	windowOver     = 1.05
	windowRampOver = 2.0
	// Every windowRepeatEvery-th campaign job goes to one of a few
	// recipients in turn, each of which gets one every windowRepeatGap:
	// those are the recipients whose order is checked.
	windowRepeatEvery = 10
	windowRepeatGap   = 2 * time.Second
	// The conversational tenants of the last row, each sending one job
	// every windowChatEvery, on PREFETCH windowChatPrefetch.
	windowChatTenants  = 200
	windowChatEvery    = 4 * time.Second
	windowChatPrefetch = 100
	windowChatRamp     = 2 * time.Second
	windowChatRate     = 80
	windowChatLatency  = 300 * time.Millisecond
	// windowDefaults is every tenant's rate limit unless a row sets the
	// campaign's: Meta's standard 80 messages a second.
	windowDefaults = "rate_limit: {per_minute: 4800, burst: 80}"
	// Job numbers of the conversational tenants start here, far above any
	// campaign's.
	windowChatBase    = 1_000_000
	windowChatOpening = 2_000_000
	// windowCampaignWarmup is the number of the campaign's warm-up job.
	windowCampaignWarmup = 3_000_000
)

// windowLatency is the fake's latency for a median: log-normal, about Meta's
// spread, capped.
func windowLatency(median time.Duration) fakemeta.Latency {
	return fakemeta.Latency{Median: median, Sigma: windowSigma, Max: windowMaxLatency}
}

// windowCase is one campaign row: one tenant sending at its rate.
type windowCase struct {
	rate   int           // the tenant's rate limit and the fake's, per second; burst the same
	median time.Duration // the fake's median latency
	// prefetch follows the rule PREFETCH >= rate x latency tail: 80/s x
	// about 1 s (the p99 at 300 ms), with room for the jobs that wait for
	// their tokens; 80/s x 3 s (the cap, about the p99 at 1 s); 1,000/s x
	// 0.6 s (about the p95 at 300 ms; the tenant may hold nine tenths).
	prefetch            int
	steady, quickSteady time.Duration
	goal                float64 // achieved rate / rate
	strict              bool    // the goal also asks for 0 inversions and <= 1 % throttled
	cpu                 bool    // report CPU per job
	// enforce makes the fake refuse sends above rate (130429). The
	// 1,000/s row does without: it measures what the worker carries, and
	// the rows at 80/s what throttling does.
	enforce bool
}

var windowCases = []windowCase{
	{rate: 80, median: 300 * time.Millisecond, prefetch: 200, steady: 30 * time.Second, quickSteady: 8 * time.Second, goal: 0.95, strict: true, enforce: true},
	{rate: 80, median: time.Second, prefetch: 300, steady: 30 * time.Second, quickSteady: 5 * time.Second, goal: 0.95, strict: true, enforce: true},
	{rate: 1000, median: 300 * time.Millisecond, prefetch: 600, steady: 15 * time.Second, quickSteady: 3 * time.Second, goal: 0.90, cpu: true},
}

// windowMaxThrottled is the largest share of a campaign's calls that may
// be answered 130429.
const windowMaxThrottled = 0.01

func (c windowCase) name() string {
	return fmt.Sprintf("window 1 tenant at %d/s, Meta %s", c.rate, benchDur(c.median))
}

// windowRamp is the time before the steady part, for the opening burst
// and the window to settle.
func windowRamp(median time.Duration) time.Duration { return max(1500*time.Millisecond, 3*median) }

// windowSpec is one run: a campaign (rate > 0) and conversational tenants
// (chat > 0), on a fresh worker.
type windowSpec struct {
	rate         int
	median       time.Duration
	prefetch     int
	ramp, steady time.Duration
	chat         int
	enforce      bool // the fake refuses sends above the rate (80/s without a campaign)
}

// windowResult is what one run measured.
type windowResult struct {
	published, done int
	// The campaign: sends (200 answers) that arrived in the steady part and
	// their rate, the peak in flight, order, throttling.
	sentSteady           int
	rate                 float64
	peak                 int
	outOfOrder, overlaps int
	repeatRecipients     int
	repeatJobs           int
	calls, throttled     int
	// firstThrottle is when the first 130429 answer of the steady part
	// came (zero if none), rateBefore the sends/s of the steady part until
	// then.
	firstThrottle      time.Time
	rateBefore         float64
	from               time.Time // the steady part's start
	tokensAtFrom       float64   // the campaign's bucket then (below 0: reserved ahead)
	deferred           int64
	deferrals          string // the campaign's, by reason
	effectivePerMinute float64
	backlog            int     // job-queue depth at the end of the steady part
	selfPerJob         float64 // µs of this process per campaign send in the steady part
	brokerPerJob       float64 // µs of the broker, the same
	cores              float64 // (this process + broker) CPU / wall time in the steady part
	// The conversational tenants: publish-to-arrival at the fake of the
	// jobs published in the steady part, and how many never arrived.
	chat     []time.Duration
	chatLate int
}

func (e *benchEnv) window(ctx context.Context) ([]benchRow, error) {
	// Whatever this section set, the fake answers at once afterwards.
	defer func() { e.fake.SetDefault(fakemeta.Behaviour{}); e.fake.Reset() }()
	var rows []benchRow
	for _, c := range windowCases {
		s := windowSpec{rate: c.rate, median: c.median, prefetch: c.prefetch, ramp: windowRamp(c.median), steady: c.steady,
			enforce: c.enforce}
		if e.quick {
			s.steady = c.quickSteady
		}
		r, err := e.windowRun(ctx, s)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", c.name(), err)
		}
		e.progress("%s: %.1f/s over %s, peak %d in flight, %d out of order, %d overlapping, %d of %d calls throttled, %d deferrals, %d of %d done",
			c.name(), r.rate, s.steady, r.peak, r.outOfOrder, r.overlaps, r.throttled, r.calls, r.deferred, r.done, r.published)
		rows = append(rows, e.windowRow(c, s, r))
	}
	row, err := e.windowChat(ctx)
	if err != nil {
		return rows, err
	}
	return append(rows, row), nil
}

func (e *benchEnv) windowRow(c windowCase, s windowSpec, r windowResult) benchRow {
	ratio := r.rate / float64(c.rate)
	share := float64(r.throttled) / float64(max(r.calls, 1))
	inversions := r.outOfOrder + r.overlaps
	value := fmt.Sprintf("%.1f/s, %.3f of %d/s; peak %d in flight; %d inversions (%d recipients x ~%d jobs); "+
		"%d of %d calls throttled (%.2f%%); %d deferrals (%s)",
		r.rate, ratio, c.rate, r.peak, inversions, r.repeatRecipients, r.repeatJobs/max(r.repeatRecipients, 1),
		r.throttled, r.calls, 100*share, r.deferred, r.deferrals)
	if inversions > 0 {
		value += fmt.Sprintf(" (%d out of order, %d overlapping)", r.outOfOrder, r.overlaps)
	}
	if r.effectivePerMinute > 0 && r.effectivePerMinute < float64(c.rate*60) {
		value += fmt.Sprintf("; rate cut to %.0f/min by throttling", r.effectivePerMinute)
	}
	if !r.firstThrottle.IsZero() {
		value += fmt.Sprintf("; %.1f/s until the first 130429 answer, %s into the steady part",
			r.rateBefore, benchDur(r.firstThrottle.Sub(r.from)))
	}
	if c.cpu {
		value += fmt.Sprintf("; CPU/job %.0f+%.0fµs, %.1f cores busy", r.selfPerJob, r.brokerPerJob, r.cores)
		if name, d, ok := e.zeroLatencyCPU(); ok {
			value += fmt.Sprintf(" (zero-latency throughput %s: worker %s)", name, d.cpu())
		}
	}
	if left := r.tokensAtFrom; left > 0.05*float64(c.rate)*s.steady.Seconds() {
		value += fmt.Sprintf("; the bucket still held %.0f tokens when the steady part began", left)
	}
	if r.backlog > c.rate {
		value += fmt.Sprintf("; job queue %d deep at the end", r.backlog)
	}
	if r.done < r.published {
		value += fmt.Sprintf("; %d of %d jobs done %s after", r.done, r.published, e.windowDrainCap())
	}
	goal := fmt.Sprintf(">= %.2f of %d/s", c.goal, c.rate)
	ok := ratio >= c.goal
	if c.strict {
		goal += ", 0 inversions, <= 1% throttled"
		ok = ok && inversions == 0 && share <= windowMaxThrottled
	}
	numbers := map[string]float64{"sendsPerSec": r.rate, "ratio": ratio, "peakInFlight": float64(r.peak),
		"outOfOrder": float64(r.outOfOrder), "overlaps": float64(r.overlaps), "calls": float64(r.calls),
		"throttled": float64(r.throttled), "throttledShare": share, "deferrals": float64(r.deferred),
		"prefetch": float64(s.prefetch), "steadySeconds": s.steady.Seconds(), "jobs": float64(r.published),
		"jobsDone": float64(r.done), "jobQueueAtEnd": float64(r.backlog), "sendsPerSecBeforeThrottle": r.rateBefore,
		"tokensAtSteadyStart": r.tokensAtFrom}
	if c.cpu {
		numbers["selfCPUMicrosPerJob"], numbers["brokerCPUMicrosPerJob"], numbers["coresBusy"] = r.selfPerJob, r.brokerPerJob, r.cores
	}
	return benchRow{Measure: c.name(), Value: value, Goal: goal, Status: benchMet(ok), Numbers: numbers}
}

// zeroLatencyCPU is the worker's drain in the throughput row with one
// tenant at the largest prefetch, when this invocation measured it.
func (e *benchEnv) zeroLatencyCPU() (name string, d drainResult, ok bool) {
	best := 0
	for c, r := range e.throughputCPU {
		if c.tenants == 1 && c.prefetch > best {
			best, d = c.prefetch, r
		}
	}
	return fmt.Sprintf("1 tenant, prefetch %d", best), d, best > 0
}

// windowChat is the last row: the conversational tenants' publish-to-arrival
// p99 beside a campaign, over the same alone, in interleaved runs: the
// median of each pair's ratio (a p99 of 500 jobs is their fifth largest,
// and one scheduling hiccup in one run would decide a ratio of the pooled
// p99s), with the pooled figures beside it.
func (e *benchEnv) windowChat(ctx context.Context) (benchRow, error) {
	name := fmt.Sprintf("window %d conversational tenants beside an %d/s campaign", windowChatTenants, windowChatRate)
	pairs, steady := 3, 10*time.Second
	if e.quick {
		pairs, steady = 1, 3*time.Second
	}
	var alone, beside []time.Duration
	lateAlone, lateBeside := 0, 0
	var campaign, ratios []float64
	for rep := range pairs {
		var pair [2]time.Duration // p99 alone, beside
		order := []bool{false, true}
		if rep%2 == 1 {
			order = []bool{true, false}
		}
		for _, withCampaign := range order {
			s := windowSpec{median: windowChatLatency, prefetch: windowChatPrefetch, ramp: windowChatRamp, steady: steady,
				chat: windowChatTenants, enforce: true}
			if withCampaign {
				s.rate = windowChatRate
			}
			r, err := e.windowRun(ctx, s)
			if err != nil {
				return benchRow{}, fmt.Errorf("%s: %w", name, err)
			}
			e.progress("%s, rep %d, campaign %v: publish-to-arrival p50 %s p99 %s (n=%d, late %d), campaign %.1f/s",
				name, rep+1, withCampaign, benchDur(pct(r.chat, 50)), benchDur(pct(r.chat, 99)), len(r.chat), r.chatLate, r.rate)
			if withCampaign {
				beside, lateBeside = append(beside, r.chat...), lateBeside+r.chatLate
				campaign = append(campaign, r.rate)
				pair[1] = pct(r.chat, 99)
			} else {
				alone, lateAlone = append(alone, r.chat...), lateAlone+r.chatLate
				pair[0] = pct(r.chat, 99)
			}
		}
		ratios = append(ratios, float64(pair[1])/float64(max(pair[0], time.Microsecond)))
	}
	a99, b99 := pct(alone, 99), pct(beside, 99)
	ratio := benchMedian(ratios)
	value := fmt.Sprintf("publish-to-arrival p99 ratio %.2f (median of %d interleaved pairs: %s); pooled p99 %s beside vs %s alone, "+
		"p50 %s vs %s, n=%d+%d; campaign %.1f/s",
		ratio, len(ratios), benchRatios(ratios), benchDur(b99), benchDur(a99), benchDur(pct(beside, 50)), benchDur(pct(alone, 50)),
		len(beside), len(alone), benchMedian(campaign))
	if lateAlone+lateBeside > 0 {
		value += fmt.Sprintf("; never sent (counted with the wait for the backlog): %d beside, %d alone", lateBeside, lateAlone)
	}
	return benchRow{Measure: name, Value: value, Goal: "p99 ratio <= 1.5", Status: benchMet(ratio <= 1.5 && lateBeside+lateAlone == 0),
		Numbers: map[string]float64{"p99MsBeside": benchMs(b99), "p99MsAlone": benchMs(a99), "p99Ratio": ratio,
			"p50MsBeside": benchMs(pct(beside, 50)), "p50MsAlone": benchMs(pct(alone, 50)),
			"jobsBeside": float64(len(beside)), "jobsAlone": float64(len(alone)), "campaignSendsPerSec": benchMedian(campaign),
			"pooledP99Ratio": float64(b99) / float64(max(a99, time.Microsecond))}}, nil
}

// windowRecipient is the recipient of campaign job n of a campaign at rate
// per second: every windowRepeatEvery-th job goes to one of the repeat
// recipients in turn (repeat says so), every other job to one of its own.
func windowRecipient(n, rate int) (to string, repeat bool) {
	if n%windowRepeatEvery != 0 {
		return fmt.Sprintf("1555%07d", n%10_000_000), false
	}
	return fmt.Sprintf("1666%07d", (n/windowRepeatEvery)%windowRepeatRecipients(rate)), true
}

// windowRepeatRecipients is how many repeat recipients a campaign at rate
// has: so many that each gets a job every windowRepeatGap.
func windowRepeatRecipients(rate int) int {
	return max(1, int(windowOver*float64(rate)*windowRepeatGap.Seconds())/windowRepeatEvery)
}

// windowKey is a call's place in its recipient's sequence: the job number.
func windowKey(c fakemeta.Call) int {
	n, _, _ := benchStamp(c.Body)
	return n
}

// windowRun runs one spec on a fresh worker and queues: warm-up jobs, the
// campaign's burst at once, then the campaign at windowRampOver its rate for
// the ramp and windowOver it for the steady part, and the conversational
// tenants at one job every windowChatEvery each all along; then it waits (at
// most windowDrainCap) for the backlog, and for the conversational jobs'
// calls.
func (e *benchEnv) windowRun(ctx context.Context, s windowSpec) (windowResult, error) {
	campaign := e.tenants[0]
	campaign.Extra = fmt.Sprintf("rate_limit: {per_minute: %d, burst: %d}", s.rate*60, s.rate)
	chat := e.tenants[1 : 1+s.chat]
	var tenants []localrun.Tenant
	if s.rate > 0 {
		tenants = append(tenants, campaign)
	}
	tenants = append(tenants, chat...)
	// Every number gets Meta's latency and, when enforced, the campaign's
	// rate (80/s, Meta's standard, without one); a fresh bucket each, full.
	behaviour := fakemeta.Behaviour{Latency: windowLatency(s.median)}
	if limit := max(s.rate, windowChatRate); s.enforce {
		behaviour.RateLimit = &fakemeta.Rate{PerMinute: float64(limit * 60), Burst: limit}
	}
	for _, t := range tenants {
		e.fake.UseDefault(t.Phone)
	}
	e.fake.SetDefault(behaviour)
	e.fake.SetRand(uint64(s.rate*1000 + s.chat))
	e.fake.Reset()
	defer e.fake.Reset()

	p := strconv.Itoa(s.prefetch)
	deferrals := &windowDeferrals{tenant: campaign.ID}
	bw, err := e.newBenchWorker(ctx, "window", tenants, windowDefaults, deferrals,
		"--prefetch", p, "--prefetch-reduced", p, "--backpressure-high", "100000000", "--backpressure-low", "1")
	if err != nil {
		return windowResult{}, err
	}
	defer bw.close()
	pub, err := dialBenchPublisher(e.amqpURL, false)
	if err != nil {
		return windowResult{}, err
	}
	defer pub.close()
	bw.start()
	for ready := time.Now().Add(5 * time.Second); !bw.w.Ready() && time.Now().Before(ready); {
		time.Sleep(10 * time.Millisecond)
	}

	var r windowResult
	chatPublished := map[int]time.Time{} // counted conversational jobs by number
	campaignN, chatN := 0, 0
	publish := func(tenant string, n int, to string) (time.Time, error) {
		now := time.Now()
		_, err := pub.publish(ctx, bw.topo.Queue, benchJobBodyTo(tenant, n, to, now))
		return now, err
	}
	publishCampaign := func() error {
		to, repeat := windowRecipient(campaignN, s.rate)
		if _, err := publish(campaign.ID, campaignN, to); err != nil {
			return err
		}
		if repeat {
			r.repeatJobs++
		}
		campaignN++
		return nil
	}
	// Warm-up, not counted: one job per conversational tenant, which starts
	// its actor and gives its window a latency, and one campaign job, whose
	// answer gives the campaign's window its latency before the load (a
	// burst on a window that does not know it yet is a start-up measure of
	// its own). Then the campaign's burst, so that its bucket binds from the
	// start, and the load.
	for i, t := range chat {
		if _, err := publish(t.ID, windowChatOpening+i, fmt.Sprintf("1778%07d", i)); err != nil {
			return r, err
		}
	}
	if s.rate > 0 {
		if _, err := publish(campaign.ID, windowCampaignWarmup, "17790000000"); err != nil {
			return r, err
		}
		if err := e.windowAnswered(ctx, campaign.Phone, 5*time.Second); err != nil {
			return r, err
		}
	}
	t0 := time.Now()
	from, end := t0.Add(s.ramp), t0.Add(s.ramp+s.steady)
	for range s.rate {
		if err := publishCampaign(); err != nil {
			return r, err
		}
	}
	chatRate := float64(s.chat) / windowChatEvery.Seconds()
	var (
		self0, broker0 time.Duration
		measuredFrom   time.Time
	)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		now := time.Now()
		if measuredFrom.IsZero() && !now.Before(from) {
			self0, broker0, measuredFrom = selfCPU(), brokerCPU(e.brokerPID), now
			if s.rate > 0 {
				info, err := bw.w.TenantInfo(campaign.ID)
				if err != nil {
					return r, err
				}
				r.tokensAtFrom = info.TokensAvailable
			}
		}
		if !now.Before(end) {
			break
		}
		elapsed := now.Sub(t0).Seconds()
		for due := s.rate + windowCampaignDue(s.rate, now.Sub(t0), s.ramp); campaignN < due; {
			if err := publishCampaign(); err != nil {
				return r, err
			}
		}
		for due := int(chatRate * elapsed); chatN < due; chatN++ {
			n := windowChatBase + chatN
			at, err := publish(chat[chatN%len(chat)].ID, n, fmt.Sprintf("1777%07d", chatN))
			if err != nil {
				return r, err
			}
			if !at.Before(from) {
				chatPublished[n] = at
			}
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-tick.C:
		}
	}
	t1, self1, broker1 := time.Now(), selfCPU(), brokerCPU(e.brokerPID)
	r.published = campaignN + s.chat + chatN
	r.from = from
	if s.rate > 0 {
		r.published++ // the warm-up
	}
	if s.rate > 0 {
		info, err := bw.w.TenantInfo(campaign.ID)
		if err != nil {
			return r, err
		}
		r.effectivePerMinute = info.EffectivePerMinute
	}
	if r.backlog, err = benchQueueDepth(pub.ch, bw.topo.Queue); err != nil {
		return r, err
	}
	if r.done, err = benchWaitDepth(ctx, pub.ch, bw.topo.ResultsQueue(), r.published, t1.Add(e.windowDrainCap()), 50*time.Millisecond); err != nil {
		return r, err
	}
	if r.deferred, err = bw.deferredTotal(); err != nil {
		return r, err
	}
	r.deferrals = deferrals.String()

	// A call is logged once answered: wait for the conversational jobs'
	// (at most the fake's largest latency more).
	chatPhones := map[string]bool{}
	for _, t := range chat {
		chatPhones[t.Phone] = true
	}
	calls := e.fake.Calls()
	arrived := windowArrivals(calls, chatPhones)
	for deadline := time.Now().Add(windowMaxLatency + time.Second); len(chatPublished) > 0; {
		missing := 0
		for n := range chatPublished {
			if _, ok := arrived[n]; !ok {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		calls = e.fake.Calls()
		arrived = windowArrivals(calls, chatPhones)
	}
	waited := time.Now()
	for _, c := range calls {
		if c.PhoneNumberID == campaign.Phone && s.rate > 0 {
			r.calls++
			if c.Status == 200 && !c.At.Before(from) && c.At.Before(end) {
				r.sentSteady++
			}
		}
	}
	for n, at := range chatPublished {
		got, ok := arrived[n]
		if !ok {
			r.chatLate++
			got = waited
		}
		r.chat = append(r.chat, got.Sub(at))
	}
	slices.Sort(r.chat)
	if s.rate > 0 {
		r.rate = float64(r.sentSteady) / s.steady.Seconds()
		r.firstThrottle, r.rateBefore = windowBeforeThrottle(calls, campaign.Phone, from, end)
		r.peak = calls.MaxInFlight(campaign.Phone)
		r.overlaps = calls.Overlaps(campaign.Phone)
		r.outOfOrder = calls.OutOfOrder(campaign.Phone, windowKey)
		r.throttled = e.fake.RateLimited(campaign.Phone)
		r.repeatRecipients = min(windowRepeatRecipients(s.rate), r.repeatJobs)
		if r.sentSteady > 0 {
			r.selfPerJob = float64((self1 - self0).Microseconds()) / float64(r.sentSteady)
			r.brokerPerJob = float64((broker1 - broker0).Microseconds()) / float64(r.sentSteady)
		}
		r.cores = (self1 - self0 + broker1 - broker0).Seconds() / t1.Sub(measuredFrom).Seconds()
	}
	return r, nil
}

// windowAnswered waits until the fake has answered phone once, or timeout.
func (e *benchEnv) windowAnswered(ctx context.Context, phone string, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); ; {
		for _, c := range e.fake.Calls() {
			if c.PhoneNumberID == phone && c.Status != 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer to the warm-up job of %s within %s", phone, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// windowDeferrals is a log writer that counts the campaign tenant's
// message_deferred lines (every tenant's when tenant is "") by reason and
// keeps the longest delay; the handler writes each line with one Write.
type windowDeferrals struct {
	tenant string

	mu            sync.Mutex
	byReason      map[string]int
	longest       time.Duration
	longestReason string
}

func (w *windowDeferrals) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(p, []byte("\n")) {
		if !bytes.Contains(line, []byte(`"event":"message_deferred"`)) {
			continue
		}
		var l struct {
			TenantID string `json:"tenantId"`
			Reason   string `json:"reason"`
			DelayMs  int64  `json:"delayMs"`
		}
		if json.Unmarshal(line, &l) != nil || (w.tenant != "" && l.TenantID != w.tenant) {
			continue
		}
		w.mu.Lock()
		if w.byReason == nil {
			w.byReason = map[string]int{}
		}
		w.byReason[l.Reason]++
		if d := time.Duration(l.DelayMs) * time.Millisecond; d > w.longest {
			w.longest, w.longestReason = d, l.Reason
		}
		w.mu.Unlock()
	}
	return len(p), nil
}

// String is e.g. "rate_limited 800, busy 12; longest 1.2s (busy)", the
// most frequent reason first.
func (w *windowDeferrals) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	reasons := slices.Collect(maps.Keys(w.byReason))
	slices.SortFunc(reasons, func(a, b string) int {
		return cmp.Or(cmp.Compare(w.byReason[b], w.byReason[a]), cmp.Compare(a, b))
	})
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%s %d", r, w.byReason[r])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ") + "; longest " + benchDur(w.longest) + " (" + w.longestReason + ")"
}

// windowBeforeThrottle finds the first 130429 answer to phone in [from,
// end) (by when it was answered: when the sender learnt of it) and the
// sends/s from from until then; zero when there is none, or it came in the
// steady part's first second.
func windowBeforeThrottle(calls fakemeta.CallLog, phone string, from, end time.Time) (time.Time, float64) {
	var first time.Time
	for _, c := range calls {
		if c.PhoneNumberID == phone && c.ErrorCode == 130429 && !c.AnsweredAt.Before(from) && c.AnsweredAt.Before(end) &&
			(first.IsZero() || c.AnsweredAt.Before(first)) {
			first = c.AnsweredAt
		}
	}
	if first.IsZero() || first.Sub(from) < time.Second {
		return time.Time{}, 0
	}
	n := 0
	for _, c := range calls {
		if c.PhoneNumberID == phone && c.Status == 200 && !c.At.Before(from) && c.At.Before(first) {
			n++
		}
	}
	return first, float64(n) / first.Sub(from).Seconds()
}

// windowDrainCap bounds the wait for a run's backlog after the load.
func (e *benchEnv) windowDrainCap() time.Duration {
	if e.quick {
		return time.Second
	}
	return 8 * time.Second
}

// windowCampaignDue is how many campaign jobs at rate are due after d (the
// burst not counted): windowRampOver the rate for the ramp, windowOver it
// after.
func windowCampaignDue(rate int, d, ramp time.Duration) int {
	inRamp := min(d, ramp).Seconds()
	after := max(d-ramp, 0).Seconds()
	return int(float64(rate) * (windowRampOver*inRamp + windowOver*after))
}

// windowArrivals is when each job to phones was first answered 200, by its
// number: the arrival of its send.
func windowArrivals(calls fakemeta.CallLog, phones map[string]bool) map[int]time.Time {
	arrived := map[int]time.Time{}
	for _, c := range calls {
		if !phones[c.PhoneNumberID] || c.Status != 200 {
			continue
		}
		if n, _, ok := benchStamp(c.Body); ok {
			if _, seen := arrived[n]; !seen {
				arrived[n] = c.At
			}
		}
	}
	return arrived
}

// benchRatios lists ratios for a row's value: "1.21, 0.98, 1.40".
func benchRatios(rs []float64) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = strconv.FormatFloat(r, 'f', 2, 64)
	}
	return strings.Join(s, ", ")
}
