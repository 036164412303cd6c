package actors

import (
	"fmt"
	"time"
)

// ProbeInterval is how long a job waits while the breaker's single
// half-open trial is in flight before it asks again.
const ProbeInterval = time.Second

// BreakerState is the state of a circuit breaker.
type BreakerState int

// The breaker states, by the names the admin API and logs use.
const (
	BreakerClosed BreakerState = iota
	BreakerOpen
	BreakerHalfOpen
)

// String returns the state's name: CLOSED, OPEN or HALF_OPEN.
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "CLOSED"
	case BreakerOpen:
		return "OPEN"
	case BreakerHalfOpen:
		return "HALF_OPEN"
	default:
		return fmt.Sprintf("BreakerState(%d)", int(s))
	}
}

// MarshalText encodes the state as its String, for JSON and logs.
func (s BreakerState) MarshalText() ([]byte, error) {
	return []byte(s.String()), nil
}

// Transition is a breaker state change caused by one call; From == To (the
// zero value included) means none.
type Transition struct{ From, To BreakerState }

// Changed reports whether the state changed.
func (t Transition) Changed() bool { return t.From != t.To }

// BreakerStats is a snapshot of a Breaker for the admin API and logs.
type BreakerStats struct {
	State               BreakerState
	ConsecutiveFailures int
	LastFailure         time.Time // zero = never failed
	OpenedCount         int       // times opened since creation
	OpenUntil           time.Time // set only while OPEN
}

// Breaker is a tenant's circuit breaker: it opens after threshold
// consecutive failures, turns half-open once openFor has passed, lets one
// trial call through, and closes on its success or reopens (timer restarted)
// on its failure. It is not safe for concurrent use.
//
// Verdicts that arrive while OPEN (calls admitted before it opened) count
// failures but change no state: only the trial decides.
type Breaker struct {
	threshold   int
	openFor     time.Duration
	state       BreakerState // stored; OPEN reads as HALF_OPEN once openFor passed
	consecutive int
	lastFailure time.Time
	openedAt    time.Time
	openedCount int
	trial       bool // the half-open trial is in flight
}

// NewBreaker returns a closed breaker. A threshold below 1 is 1; a negative
// openFor is 0.
func NewBreaker(threshold int, openFor time.Duration) *Breaker {
	return &Breaker{threshold: max(threshold, 1), openFor: max(openFor, 0)}
}

// State reports the state at now. It does not change the breaker: an OPEN
// breaker whose openFor has passed reads as HALF_OPEN.
func (b *Breaker) State(now time.Time) BreakerState {
	if b.state == BreakerOpen && !now.Before(b.openUntil()) {
		return BreakerHalfOpen
	}
	return b.state
}

// Allow asks to make one call at now. CLOSED allows it. OPEN refuses it
// until the open time ends (retryAt). After that the first Allow takes the
// single half-open trial (reporting OPEN→HALF_OPEN); while the trial is in
// flight every other call is refused with retryAt = now + ProbeInterval.
func (b *Breaker) Allow(now time.Time) (ok bool, retryAt time.Time, t Transition) {
	switch b.state {
	case BreakerOpen:
		if until := b.openUntil(); now.Before(until) {
			return false, until, Transition{}
		}
		b.state = BreakerHalfOpen
		b.trial = true
		return true, time.Time{}, Transition{From: BreakerOpen, To: BreakerHalfOpen}
	case BreakerHalfOpen:
		if b.trial {
			return false, now.Add(ProbeInterval), Transition{}
		}
		b.trial = true
		return true, time.Time{}, Transition{}
	default:
		return true, time.Time{}, Transition{}
	}
}

// Success records a successful call: the consecutive count resets, and a
// half-open trial's success closes the breaker.
func (b *Breaker) Success(now time.Time) Transition {
	b.consecutive = 0
	return b.closeIfHalfOpen()
}

// Failure records a failed call. CLOSED opens when the consecutive count
// reaches the threshold; a half-open trial's failure reopens the breaker
// with its timer restarted.
func (b *Breaker) Failure(now time.Time) Transition {
	b.consecutive++
	b.lastFailure = now
	switch b.state {
	case BreakerClosed:
		if b.consecutive >= b.threshold {
			return b.open(now)
		}
	case BreakerHalfOpen:
		return b.open(now)
	}
	return Transition{}
}

// Neutral records a call the API answered but the job was bad (a permanent
// per-job error): the API works, so the consecutive count resets and a
// half-open trial closes the breaker.
func (b *Breaker) Neutral(now time.Time) Transition {
	b.consecutive = 0
	return b.closeIfHalfOpen()
}

// Release ends a half-open trial without a verdict (throttled, pair rate):
// the trial slot is freed and the state kept.
func (b *Breaker) Release(now time.Time) {
	if b.state == BreakerHalfOpen {
		b.trial = false
	}
}

// Reset is the operator's reset: CLOSED, with the consecutive count and any
// trial cleared. LastFailure and OpenedCount are history and stay.
func (b *Breaker) Reset(now time.Time) Transition {
	from := b.State(now)
	b.state = BreakerClosed
	b.consecutive = 0
	b.trial = false
	b.openedAt = time.Time{}
	return Transition{From: from, To: BreakerClosed}
}

// Stats returns a snapshot at now.
func (b *Breaker) Stats(now time.Time) BreakerStats {
	st := BreakerStats{
		State:               b.State(now),
		ConsecutiveFailures: b.consecutive,
		LastFailure:         b.lastFailure,
		OpenedCount:         b.openedCount,
	}
	if st.State == BreakerOpen {
		st.OpenUntil = b.openUntil()
	}
	return st
}

// openUntilAt reports the end of the open time when the breaker is OPEN at
// now (a pure read, like State).
func (b *Breaker) openUntilAt(now time.Time) (time.Time, bool) {
	if b.state != BreakerOpen {
		return time.Time{}, false
	}
	until := b.openUntil()
	return until, now.Before(until)
}

func (b *Breaker) openUntil() time.Time { return b.openedAt.Add(b.openFor) }

// Configure takes a new threshold and open time (a reload) without changing
// the state: an open breaker stays open until the instant it was to end,
// the new open time counts from its next opening, and failures counted so
// far are compared with the new threshold from the next one.
func (b *Breaker) Configure(threshold int, openFor time.Duration) {
	openFor = max(openFor, 0)
	if b.state == BreakerOpen {
		// Keep openUntil where it is: openedAt + openFor stays the same.
		b.openedAt = b.openedAt.Add(b.openFor - openFor)
	}
	b.threshold, b.openFor = max(threshold, 1), openFor
}

func (b *Breaker) open(now time.Time) Transition {
	from := b.state
	b.state = BreakerOpen
	b.openedAt = now
	b.openedCount++
	b.trial = false
	return Transition{From: from, To: BreakerOpen}
}

func (b *Breaker) closeIfHalfOpen() Transition {
	if b.state != BreakerHalfOpen {
		return Transition{}
	}
	b.state = BreakerClosed
	b.trial = false
	return Transition{From: BreakerHalfOpen, To: BreakerClosed}
}
