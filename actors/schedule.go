package actors

import (
	"fmt"
	"time"
)

// Schedule timing.
const (
	// Slack is how far ahead of its due time a job is admitted rather
	// than deferred again: delay queues are not exact, and a job 20 ms
	// early is not worth another hop. It is held until due, never sent
	// early.
	Slack = 20 * time.Millisecond
	// SendGuard is added to a token's due time before a send: the bucket
	// is charged when the job is admitted, Meta counts when the request
	// arrives, and the two clocks' anchors differ by the requests' transit
	// times. Without it a send exactly on its slot can reach a strict
	// limiter a hair early.
	SendGuard = 50 * time.Millisecond
	// PauseRecheck is how long a job of a paused tenant waits before it asks again.
	PauseRecheck = 15 * time.Second
	// RecoverAfter is how long without a throttle before the rate is raised
	// one step (25% of the configured rate), and the spacing between steps.
	RecoverAfter = 30 * time.Second
	// MinBusySpacing is the spacing between jobs deferred because the
	// tenant is busy while its send latency is not known yet.
	MinBusySpacing = 50 * time.Millisecond
	// BaseBackoff and MaxBackoff bound Retry's exponential backoff.
	BaseBackoff = time.Second
	MaxBackoff  = 5 * time.Minute
	// PairRateDelay is how long a job waits after Meta's pair-rate error
	// (131056: too many messages to the same recipient).
	PairRateDelay = 6 * time.Second
)

// DefaultMaxHeld is how many deliveries a tenant holds at once (one sending,
// one next) when ScheduleConfig.MaxHeld is not set.
const DefaultMaxHeld = 2

// HoldBudget is how long a delivery held by a tenant should expect to wait
// for its turn. A tenant whose sends are fast may hold up to
// HoldBudget/latency deliveries (at most MaxHeldFast) instead of MaxHeld:
// holding ten deliveries of a tenant that sends in 2 ms costs the shared
// prefetch window 20 ms, while deferring eight of them costs two publishes,
// a confirm and a delay-queue hop each. Once a send has been in flight for
// HoldBudget the tenant counts as slow again, and the deliveries it holds
// beyond MaxHeld are released (see Unhold).
const HoldBudget = 100 * time.Millisecond

// latencyAlpha weighs the newest sample in the send-latency EWMA.
const latencyAlpha = 0.2

// DeferReason says why a job was deferred.
type DeferReason int

// The defer reasons. Admit returns the first six; the actor uses the rest
// with Throttled, PairRate and Retry.
const (
	ReasonNone DeferReason = iota
	ReasonEarly
	ReasonRateLimited
	ReasonBusy
	ReasonBreakerOpen
	ReasonPaused
	ReasonThrottled
	ReasonPairRate
	ReasonRetry
)

var deferReasonNames = [...]string{
	ReasonNone:        "none",
	ReasonEarly:       "early",
	ReasonRateLimited: "rate_limited",
	ReasonBusy:        "busy",
	ReasonBreakerOpen: "breaker_open",
	ReasonPaused:      "paused",
	ReasonThrottled:   "throttled",
	ReasonPairRate:    "pair_rate",
	ReasonRetry:       "retry",
}

// String returns the snake_case name used in logs and metrics labels.
func (r DeferReason) String() string {
	if r >= 0 && int(r) < len(deferReasonNames) {
		return deferReasonNames[r]
	}
	return fmt.Sprintf("DeferReason(%d)", int(r))
}

// MarshalText encodes the reason as its String, for JSON and logs.
func (r DeferReason) MarshalText() ([]byte, error) {
	return []byte(r.String()), nil
}

// Ticket is the scheduling state a job carries in its headers.
type Ticket struct {
	NotBefore time.Time // zero = none
	// Reserved: the job already holds a token of this schedule. The actor
	// sets it only when the job's epoch header matches this schedule.
	Reserved bool
}

// Decision is Admit's answer for one job.
type Decision struct {
	Send bool
	// NotBefore is when a deferred job should come back; for a job to send,
	// a non-zero NotBefore (at most Slack + SendGuard ahead) is when it is
	// due: the caller holds it until then.
	NotBefore time.Time
	// Reserved is whether the job holds a token after this decision; the
	// actor carries it in the job's header.
	Reserved bool
	Reason   DeferReason
	// Transition is a breaker change this decision caused (OPEN→HALF_OPEN).
	Transition Transition
}

// ScheduleConfig configures a Schedule. Zero fields take the defaults:
// 80/min, burst 80, 5 failures, 60s open, MaxHeld 2.
type ScheduleConfig struct {
	PerMinute        float64
	Burst            int
	FailureThreshold int
	OpenFor          time.Duration
	MaxHeld          int
	// MaxHeldFast caps HoldCap for a tenant whose sends are fast; below
	// MaxHeld it is MaxHeld (no adaptive holding).
	MaxHeldFast int
}

func (c ScheduleConfig) withDefaults() ScheduleConfig {
	if c.PerMinute <= 0 {
		c.PerMinute = 80
	}
	if c.Burst <= 0 {
		c.Burst = 80
	}
	if c.FailureThreshold <= 0 {
		c.FailureThreshold = 5
	}
	if c.OpenFor <= 0 {
		c.OpenFor = 60 * time.Second
	}
	if c.MaxHeld <= 0 {
		c.MaxHeld = DefaultMaxHeld
	}
	c.MaxHeldFast = max(c.MaxHeldFast, c.MaxHeld)
	c.PerMinute = clampPerMinute(c.PerMinute)
	return c
}

// ScheduleStats is a snapshot of a Schedule for the admin API and logs.
type ScheduleStats struct {
	TokensAvailable    float64
	TokensMax          int
	EffectivePerMinute float64
	// NextSlot is the earliest a new job could be sent: the bucket's next
	// token, or the end of the breaker's open time if later.
	NextSlot    time.Time
	LatencyEWMA time.Duration
	Breaker     BreakerStats
}

// Schedule decides, for one job of one tenant, "send now" or "come back at
// T", so that a deferred job is deferred once to the instant it can really
// go rather than bounced blindly. It owns the tenant's bucket and breaker, a
// send-latency EWMA, the throttle state and a virtual time for jobs deferred
// because the tenant is busy. It is not safe for concurrent use.
type Schedule struct {
	cfg     ScheduleConfig
	bucket  *Bucket
	breaker *Breaker
	latency time.Duration // EWMA of send latency; 0 = no sample yet
	// sendStart is when the send in flight started (zero: none), so a
	// hanging send counts as slow before it ends.
	sendStart time.Time
	busyTat   time.Time // the last slot handed to a busy-deferred job
	// rateChangedAt is the last throttle or recovery step; the next
	// recovery step waits RecoverAfter from it.
	rateChangedAt time.Time
}

// NewSchedule returns a schedule with a full bucket and a closed breaker.
func NewSchedule(cfg ScheduleConfig, now time.Time) *Schedule {
	cfg = cfg.withDefaults()
	return &Schedule{
		cfg:     cfg,
		bucket:  NewBucket(cfg.PerMinute, cfg.Burst, now),
		breaker: NewBreaker(cfg.FailureThreshold, cfg.OpenFor),
	}
}

// Bucket returns the schedule's token bucket.
func (s *Schedule) Bucket() *Bucket { return s.bucket }

// Breaker returns the schedule's circuit breaker; the actor reports each
// send's verdict to it (Success, Failure, Neutral, Release).
func (s *Schedule) Breaker() *Breaker { return s.breaker }

// Admit decides for one job. held is how many deliveries the tenant already
// holds (sending or waiting), not counting this one; paused is an operator
// pause or quarantine. In order:
//
//  1. A job back before its NotBefore (beyond Slack) is deferred for the
//     remainder; nothing is charged.
//  2. A paused tenant's job is asked again after PauseRecheck.
//  3. While the breaker is OPEN the job waits for the open time to end
//     without holding a token: a token held through the open time would be
//     spent in one burst when it closes. A token it held is given back.
//  4. A busy tenant (held >= HoldCap) spaces jobs by its measured send
//     latency, and reserves a token so the job keeps its place.
//  5. A job without a token reserves one and waits for it when it is not
//     due yet; a job with a due token is not charged twice.
//  6. Last, the breaker is asked, so a half-open trial is only taken by a
//     job that would be sent. Refused (the trial is in flight), the job
//     keeps its token and asks again after ProbeInterval.
func (s *Schedule) Admit(now time.Time, t Ticket, held int, paused bool) Decision {
	if t.NotBefore.After(now.Add(Slack)) {
		return Decision{NotBefore: t.NotBefore, Reserved: t.Reserved, Reason: ReasonEarly}
	}
	if paused {
		return Decision{NotBefore: now.Add(PauseRecheck), Reserved: t.Reserved, Reason: ReasonPaused}
	}
	if until, open := s.breaker.openUntilAt(now); open {
		if t.Reserved {
			s.bucket.Cancel(now)
		}
		return Decision{NotBefore: until, Reason: ReasonBreakerOpen}
	}
	if held >= s.HoldCap(now) {
		slot := s.busySlot(now)
		notBefore := slot
		if !t.Reserved {
			notBefore = laterTime(slot, s.bucket.Reserve(now))
		}
		return Decision{NotBefore: notBefore, Reserved: true, Reason: ReasonBusy}
	}
	due := t.NotBefore
	if !t.Reserved {
		r := s.bucket.Reserve(now)
		if r.After(now.Add(Slack)) {
			return Decision{NotBefore: r, Reserved: true, Reason: ReasonRateLimited}
		}
		due = time.Time{}
		if r.After(now) {
			due = r
		}
	}
	ok, retryAt, tr := s.breaker.Allow(now)
	if !ok {
		return Decision{NotBefore: retryAt, Reserved: true, Reason: ReasonBreakerOpen, Transition: tr}
	}
	d := Decision{Send: true, Transition: tr}
	if !due.IsZero() && due.Add(SendGuard).After(now) {
		// The caller holds the job until then rather than send it early
		// or bounce it through the smallest delay tier.
		d.NotBefore = due.Add(SendGuard)
	}
	return d
}

// Recheck is asked when an admitted job that waited its turn in the
// tenant is about to be sent: if the breaker has opened since, the job
// gives its token back (as Admit's rule 3 would have it) and waits until
// the open time ends. It does not ask Breaker.Allow again: the job already
// has the breaker's leave, which in HALF_OPEN is the one trial, and asking
// again would refuse the trial its own send.
func (s *Schedule) Recheck(now time.Time) (ok bool, until time.Time) {
	if until, open := s.breaker.openUntilAt(now); open {
		s.bucket.Cancel(now)
		return false, until
	}
	return true, time.Time{}
}

// HoldCap is how many deliveries the tenant may hold at now: MaxHeld while
// its send latency is unknown or HoldBudget or more (counting a send in
// flight for its time so far), else HoldBudget/latency, at most MaxHeldFast.
//
// A send in flight only ever makes the tenant slower: its time so far is a
// lower bound on its latency, not a measurement. While no send has ended
// the latency is unknown, however young the send in flight is; taking its
// few microseconds for the latency would let a tenant whose very first
// send hangs hold the whole prefetch window (MaxHeldFast) for HoldBudget,
// and every other tenant's jobs would wait in the queue meanwhile.
func (s *Schedule) HoldCap(now time.Time) int {
	if s.latency <= 0 || s.cfg.MaxHeldFast <= s.cfg.MaxHeld {
		return s.cfg.MaxHeld
	}
	lat := s.latency
	if !s.sendStart.IsZero() {
		lat = max(lat, now.Sub(s.sendStart))
	}
	return min(max(int(HoldBudget/lat), s.cfg.MaxHeld), s.cfg.MaxHeldFast)
}

// SendStarted records that a send began at now; ObserveLatency ends it.
func (s *Schedule) SendStarted(now time.Time) { s.sendStart = now }

// SlowAt is when the send in flight makes the tenant slow (HoldCap falls
// to MaxHeld): HoldBudget after it started. Zero when no send is in flight.
func (s *Schedule) SlowAt() time.Time {
	if s.sendStart.IsZero() {
		return time.Time{}
	}
	return s.sendStart.Add(HoldBudget)
}

// Unhold returns when a delivery the tenant admitted but can no longer
// hold (its send in flight turned slow, so HoldCap fell) should come back.
// It keeps the token it was charged, and takes the next busy slot.
func (s *Schedule) Unhold(now time.Time) time.Time { return s.busySlot(now) }

func (s *Schedule) busySlot(now time.Time) time.Time {
	s.busyTat = laterTime(s.busyTat, now).Add(s.busySpacing())
	return s.busyTat
}

// ObserveLatency feeds one send's latency into the EWMA (α = 0.2; the first
// sample is taken as is) and ends the send in flight.
func (s *Schedule) ObserveLatency(d time.Duration) {
	s.sendStart = time.Time{}
	if d < 0 {
		return
	}
	if s.latency == 0 {
		s.latency = d
		return
	}
	s.latency += time.Duration(latencyAlpha * float64(d-s.latency))
}

// Throttled records that Meta throttled this tenant: the bucket's rate is
// halved (floor MinPerMinute) and its unspent tokens dropped, since Meta
// just said the tenant sends too fast. It returns the throttled job's new
// NotBefore, a fresh reservation at the lowered rate: the job then holds a
// token (Ticket.Reserved = true).
func (s *Schedule) Throttled(now time.Time) time.Time {
	s.bucket.SetRate(s.bucket.PerMinute()/2, now)
	s.bucket.Drain(now)
	s.rateChangedAt = now
	return s.bucket.Reserve(now)
}

// Recover is called on every success: once RecoverAfter has passed since the
// last throttle or step, a lowered rate goes up by 25% of the configured
// rate, one step per RecoverAfter, never above the configured rate.
func (s *Schedule) Recover(now time.Time) {
	cur := s.bucket.PerMinute()
	if cur >= s.cfg.PerMinute || now.Sub(s.rateChangedAt) < RecoverAfter {
		return
	}
	s.bucket.SetRate(min(s.cfg.PerMinute, cur+s.cfg.PerMinute/4), now)
	s.rateChangedAt = now
}

// Retry returns when a job that failed transiently for the attempt-th time
// (1-based) should be tried again: exponential backoff from BaseBackoff,
// capped at MaxBackoff, with full jitter: now + jitter(backoff). jitter
// returns a duration in [0, max]; out-of-range results are clamped, and a
// nil jitter waits the whole backoff. The tenant's state is not touched.
func (s *Schedule) Retry(now time.Time, attempt int, jitter func(max time.Duration) time.Duration) time.Time {
	d := retryBackoff(attempt)
	if jitter != nil {
		d = min(max(jitter(d), 0), d)
	}
	return now.Add(d)
}

// PairRate returns when a job refused by Meta's pair rate (same recipient)
// should be tried again. The tenant's state is not touched.
func (s *Schedule) PairRate(now time.Time) time.Time {
	return now.Add(PairRateDelay)
}

// Stats returns a snapshot at now.
func (s *Schedule) Stats(now time.Time) ScheduleStats {
	next := s.bucket.Next(now)
	if until, open := s.breaker.openUntilAt(now); open {
		next = laterTime(next, until)
	}
	return ScheduleStats{
		TokensAvailable:    s.bucket.Available(now),
		TokensMax:          s.bucket.Max(),
		EffectivePerMinute: s.bucket.PerMinute(),
		NextSlot:           next,
		LatencyEWMA:        s.latency,
		Breaker:            s.breaker.Stats(now),
	}
}

// busySpacing is the spacing of busy-deferred jobs: the tenant sends one
// job per latency, so that is the rate at which it can take them back;
// MinBusySpacing while no latency is known.
func (s *Schedule) busySpacing() time.Duration {
	if s.latency <= 0 {
		return MinBusySpacing
	}
	return max(s.latency, time.Millisecond)
}

func retryBackoff(attempt int) time.Duration {
	shift := max(attempt, 1) - 1
	// 1s<<9 already exceeds the cap; larger shifts would overflow.
	if shift >= 9 {
		return MaxBackoff
	}
	return min(BaseBackoff<<shift, MaxBackoff)
}

func laterTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
