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
	// MinBusySpacing is the shortest a job deferred because the tenant is
	// busy waits while the tenant's send latency is not known yet, and the
	// shortest spacing of jobs waiting behind their recipient's.
	MinBusySpacing = 50 * time.Millisecond
	// BaseBackoff and MaxBackoff bound Retry's exponential backoff.
	BaseBackoff = time.Second
	MaxBackoff  = 5 * time.Minute
	// PairRateBase is Meta's advice for its pair-rate error (131056: too
	// many messages to the same recipient): retry after 4^X seconds, X
	// counting that recipient's recent 131056 answers (at most
	// maxPairRateExponent).
	PairRateBase        = time.Second
	maxPairRateExponent = 5
)

// DefaultMaxHeld is how many deliveries a tenant holds at least (one
// sending, one next), and all it holds while its sends are stalled, when
// ScheduleConfig.MaxHeld is not set.
const DefaultMaxHeld = 2

// HoldBudget is the shortest time a send may be in flight before the
// tenant counts as stalled (see Stalled): a send taking four times the
// high latency estimate, and at least this long, says the API has stopped
// answering, and the deliveries the tenant holds beyond MaxHeld go back to
// the broker rather than keep prefetch slots for the whole timeout.
const HoldBudget = 100 * time.Millisecond

// DeferReason says why a job was deferred.
type DeferReason int

// The defer reasons. Admit returns the first six; the actor uses the rest
// with Throttled, PairRate and Retry, and InOrder for a job waiting behind
// its recipient's earlier one.
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
	ReasonInOrder

	// LastReason is the last defer reason, for callers that list them.
	LastReason = ReasonInOrder
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
	ReasonInOrder:     "in_order",
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
// 80/min, burst 80, 5 failures, 60s open, MaxHeld 2, MaxInFlight
// DefaultMaxInFlight.
type ScheduleConfig struct {
	PerMinute        float64
	Burst            int
	FailureThreshold int
	OpenFor          time.Duration
	MaxHeld          int
	// MaxInFlight caps the send window (max_in_flight).
	MaxInFlight int
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
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
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
	NextSlot time.Time
	// Latency is the smoothed send latency (0 while unknown).
	Latency time.Duration
	// Window is how many sends may be in flight now; InFlight how many are.
	Window, InFlight int
	Breaker          BreakerStats
}

// Schedule decides, for one job of one tenant, "send now" or "come back at
// T", so that a deferred job is deferred once to the instant it can really
// go rather than bounced blindly. It owns the tenant's bucket, breaker and
// send window, the start times of the sends in flight, the throttle state
// and a virtual time for jobs deferred because the tenant is busy. It is
// not safe for concurrent use.
type Schedule struct {
	cfg     ScheduleConfig
	bucket  *Bucket
	breaker *Breaker
	window  Window
	// starts are the start times of the sends in flight, oldest first.
	starts  []time.Time
	busyTat time.Time // the last slot handed to a busy-deferred job
	// throttledAt is when the rate was last halved for a throttle.
	throttledAt time.Time
	// rateChangedAt is the last throttle or recovery step; the next
	// recovery step waits RecoverAfter from it.
	rateChangedAt time.Time
}

// NewSchedule returns a schedule with a full bucket and a closed breaker.
func NewSchedule(cfg ScheduleConfig, now time.Time) *Schedule {
	s := new(Schedule)
	s.init(cfg, now, new(Bucket), new(Breaker))
	return s
}

// init makes s a new schedule on the bucket and breaker given (zero
// values, which it sets up), so that a tenant's parts can share one
// allocation (see tenantBlock).
func (s *Schedule) init(cfg ScheduleConfig, now time.Time, bucket *Bucket, breaker *Breaker) {
	cfg = cfg.withDefaults()
	*bucket = *NewBucket(cfg.PerMinute, cfg.Burst, now)
	*breaker = *NewBreaker(cfg.FailureThreshold, cfg.OpenFor)
	*s = Schedule{cfg: cfg, bucket: bucket, breaker: breaker, window: NewWindow(cfg.MaxInFlight)}
}

// Reconfigure takes a tenant's new limits (a reload). The bucket keeps its
// tokens (capped at the new burst) and refills at the new rate from now; an
// adaptive throttle in force stays in force, as the same fraction of the
// new rate; the breaker keeps its state (see Breaker.Configure); the window
// keeps what it learnt under its new cap.
func (s *Schedule) Reconfigure(cfg ScheduleConfig, now time.Time) {
	cfg = cfg.withDefaults()
	fraction := s.bucket.PerMinute() / s.cfg.PerMinute
	s.cfg = cfg
	s.bucket.SetLimits(cfg.PerMinute*min(fraction, 1), cfg.Burst, now)
	s.breaker.Configure(cfg.FailureThreshold, cfg.OpenFor)
	s.window.SetMax(cfg.MaxInFlight)
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
		if t.Reserved {
			s.bucket.Cancel(now)
		}
		return Decision{NotBefore: s.busySlot(now), Reason: ReasonBusy}
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

// HoldCap is how many deliveries the tenant may hold at now: its window
// and one next (at least MaxHeld), or MaxHeld while its sends are stalled.
func (s *Schedule) HoldCap(now time.Time) int {
	if s.Stalled(now) {
		return s.cfg.MaxHeld
	}
	return max(s.Window()+1, s.cfg.MaxHeld)
}

// Window is how many sends may be in flight at the current rate.
func (s *Schedule) Window() int { return s.window.Size(s.perSecond()) }

// CanStart reports whether the window has room for another send.
func (s *Schedule) CanStart() bool { return len(s.starts) < s.Window() }

// Latency is the smoothed send latency (0 while unknown).
func (s *Schedule) Latency() time.Duration { return s.window.Latency() }

// HighLatency is the high latency estimate (smoothed latency plus twice
// its mean deviation; 0 while unknown).
func (s *Schedule) HighLatency() time.Duration { return s.window.High() }

// InFlight is how many sends are in flight.
func (s *Schedule) InFlight() int { return len(s.starts) }

// SendStarted records that a send began at now; SendEnded ends it.
func (s *Schedule) SendStarted(now time.Time) { s.starts = append(s.starts, now) }

// SendEnded ends the send that started at start, after d, and feeds d into
// the latency estimate.
func (s *Schedule) SendEnded(start time.Time, d time.Duration) {
	for i, t := range s.starts {
		if t.Equal(start) {
			s.starts = append(s.starts[:i], s.starts[i+1:]...)
			break
		}
	}
	s.window.Observe(d)
}

// compact lets go of the memory of sends in flight once none is (an idle
// tenant's check; a busy one keeps it for its next sends).
func (s *Schedule) compact() {
	if len(s.starts) == 0 {
		s.starts = nil
	}
}

// Stalled reports whether the oldest send in flight has run past StallAt.
func (s *Schedule) Stalled(now time.Time) bool {
	at := s.StallAt()
	return !at.IsZero() && !now.Before(at)
}

// StallAt is when the oldest send in flight makes the tenant stalled: four
// times the high latency estimate after it started, at least HoldBudget.
// Zero when no send is in flight.
func (s *Schedule) StallAt() time.Time {
	if len(s.starts) == 0 {
		return time.Time{}
	}
	return s.starts[0].Add(max(HoldBudget, 4*s.window.High()))
}

// Unhold returns when a delivery the tenant admitted but can no longer
// hold (its sends stalled, so HoldCap fell) should come back: the next busy
// slot. It gives back the token it was charged, like a busy job's: a token
// held until the window has room again would be spent late, in a bunch
// with others, and the sends would exceed the rate where Meta counts them.
func (s *Schedule) Unhold(now time.Time) time.Time {
	s.bucket.Cancel(now)
	return s.busySlot(now)
}

// busySlot is when a job deferred because the tenant is busy comes back.
// Once the latency is known, busy jobs are spaced by busySpacing, the
// pace at which the window frees slots. Before any send has answered, how
// many the tenant can carry is unknown, and the window opens to its
// ceiling with the first answer: the jobs are not spaced (a backlog of a
// hundred spaced by MinBusySpacing came back over five seconds, to a
// tenant that could take them all after one answer) but all come back
// when that answer is likely in, twice as long from now as the oldest send
// has been out (at least MinBusySpacing). A job back before it is asked
// again with that longer wait, so a tenant whose first send hangs sees
// its jobs back a few times, not every MinBusySpacing.
func (s *Schedule) busySlot(now time.Time) time.Time {
	if s.window.Latency() <= 0 {
		wait := MinBusySpacing
		if len(s.starts) > 0 {
			wait = max(wait, 2*now.Sub(s.starts[0]))
		}
		return now.Add(wait)
	}
	s.busyTat = laterTime(s.busyTat, now).Add(s.busySpacing())
	return s.busyTat
}

func (s *Schedule) perSecond() float64 { return s.bucket.PerMinute() / 60 }

// Throttled records that Meta throttled this tenant: the bucket's rate is
// halved (floor MinPerMinute) and its unspent tokens dropped, since Meta
// just said the tenant sends too fast. It returns the throttled job's new
// NotBefore, a fresh reservation at the lowered rate: the job then holds a
// token (Ticket.Reserved = true).
//
// The rate is halved at most once per round trip (Window.RoundTrip): with
// many sends in flight, one burst that Meta found too fast comes back as
// many 130429 answers at once, and halving for each would cut the rate to
// nothing for one event (TCP, likewise, cuts once per round trip).
func (s *Schedule) Throttled(now time.Time) time.Time {
	if s.throttledAt.IsZero() || now.Sub(s.throttledAt) >= s.window.RoundTrip() {
		s.bucket.SetRate(s.bucket.PerMinute()/2, now)
		s.bucket.Drain(now)
		s.throttledAt = now
	}
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
// should be tried again, Meta's 4^X seconds for the recipient's hits-th
// recent refusal (hits ≥ 1). The tenant's state is not touched: the limit
// is the recipient's, not the number's.
func PairRate(now time.Time, hits int) time.Time {
	x := min(max(hits, 1), maxPairRateExponent)
	return now.Add(PairRateBase << (2 * x))
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
		Latency:            s.window.Latency(),
		Window:             s.Window(),
		InFlight:           len(s.starts),
		Breaker:            s.breaker.Stats(now),
	}
}

// busySpacing is the spacing of busy-deferred jobs once the latency is
// known: the tenant's window frees a slot every latency/window, so that is
// the rate at which it can take them back.
func (s *Schedule) busySpacing() time.Duration {
	return max(s.window.Latency()/time.Duration(s.Window()), time.Millisecond)
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
