package actors

import (
	"time"

	"github.com/wadispatch/wadispatch/whatsapp"
)

// BreakerEffect is how one send's outcome counts for the tenant's breaker.
type BreakerEffect int

// The breaker effects (see Breaker's methods of the same names).
const (
	// CountSuccess closes a half-open breaker and clears the failures.
	CountSuccess BreakerEffect = iota
	// CountFailure adds a consecutive failure and may open the breaker.
	CountFailure
	// CountNeutral says Meta is healthy but the job was bad: it ends a
	// half-open trial as a success without counting for or against.
	CountNeutral
	// CountRelease hands a half-open trial back without a verdict (the
	// answer says nothing about the tenant's health: throttling, pair rate).
	CountRelease
)

// JobAction is what becomes of the job after a send.
type JobAction int

// The job actions.
const (
	// JobSent: publish the sent result.
	JobSent JobAction = iota
	// JobDeferred: back to the delay queues, to be tried again.
	JobDeferred
	// JobFailed: a permanent error: the failed result, and the job to the
	// dead letter queue as permanent_error.
	JobFailed
	// JobExhausted: a transient error on the last allowed attempt: the
	// job to the dead letter queue as retries_exhausted.
	JobExhausted
)

// Verdict is what one send's outcome means, by the class of Meta's answer
// (the table "Meta's answers" in docs/contract.md): how the breaker counts
// it, what becomes of the job and, for a deferred job, why.
type Verdict struct {
	Breaker BreakerEffect
	Job     JobAction
	Reason  DeferReason // for JobDeferred: ReasonThrottled, ReasonPairRate or ReasonRetry
	// Congestion says Meta is overloaded or throttling this number
	// (throttled, 5xx, a timeout, a connection error): the send window
	// is cut.
	Congestion bool
}

// Judge returns the verdict on a send whose answer was of class c, after
// attempts calls to Meta for this job (counting this one) out of at most
// maxAttempts. Auth here is an auth error that a fresh token did not cure:
// the token was re-read already, so it is a failure like any other.
func Judge(c whatsapp.Class, attempts, maxAttempts int) Verdict {
	switch c {
	case whatsapp.ClassAccepted:
		return Verdict{Breaker: CountSuccess, Job: JobSent}
	case whatsapp.ClassThrottled:
		return Verdict{Breaker: CountRelease, Job: JobDeferred, Reason: ReasonThrottled, Congestion: true}
	case whatsapp.ClassPairRate:
		return Verdict{Breaker: CountRelease, Job: JobDeferred, Reason: ReasonPairRate}
	case whatsapp.ClassPermanent:
		return Verdict{Breaker: CountNeutral, Job: JobFailed}
	}
	// Auth, tenant blocked, transient.
	congestion := c == whatsapp.ClassTransient
	if attempts >= maxAttempts {
		return Verdict{Breaker: CountFailure, Job: JobExhausted, Congestion: congestion}
	}
	return Verdict{Breaker: CountFailure, Job: JobDeferred, Reason: ReasonRetry, Congestion: congestion}
}

// Apply carries a verdict out on the schedule at now: the breaker counts
// it, the window grows on a success and is cut on congestion (and starts
// small again when the breaker closes), and for a deferred job the
// schedule says when it may be tried again and whether it holds a token
// then. attempts is the job's calls so far; jitter is Retry's; pairHits is
// the recipient's recent pair-rate refusals, this one included. The
// transition is a breaker change it caused.
func (s *Schedule) Apply(now time.Time, v Verdict, attempts, pairHits int, jitter func(time.Duration) time.Duration) (notBefore time.Time, reserved bool, tr Transition) {
	switch v.Breaker {
	case CountSuccess:
		tr = s.breaker.Success(now)
		s.Recover(now)
		s.window.Grow(s.perSecond())
	case CountFailure:
		tr = s.breaker.Failure(now)
	case CountNeutral:
		tr = s.breaker.Neutral(now)
	case CountRelease:
		s.breaker.Release(now)
	}
	if v.Congestion {
		s.window.Cut(now)
	}
	if tr.Changed() && tr.To == BreakerClosed {
		s.window.Restart()
	}
	if v.Job != JobDeferred {
		return time.Time{}, false, tr
	}
	switch v.Reason {
	case ReasonThrottled:
		return s.Throttled(now), true, tr
	case ReasonPairRate:
		return PairRate(now, pairHits), true, tr
	default:
		return s.Retry(now, attempts, jitter), false, tr
	}
}

// Quarantine decides when a crash-looping tenant is quarantined: after
// After restarts within Window. A quarantined tenant's jobs are deferred,
// not sent, until an operator resumes it; supervision keeps restarting its
// actor, so no job in its mailbox is lost. Not safe for concurrent use.
type Quarantine struct {
	After  int
	Window time.Duration

	restarts []time.Time // within the window, oldest first
	on       bool
}

// Restarted records a restart at now and reports whether it put the
// tenant in quarantine (true once, on the restart that crosses the limit).
func (q *Quarantine) Restarted(now time.Time) bool {
	q.restarts = append(q.restarts, now)
	cutoff := now.Add(-q.Window)
	drop := 0
	for drop < len(q.restarts) && q.restarts[drop].Before(cutoff) {
		drop++
	}
	q.restarts = append(q.restarts[:0], q.restarts[drop:]...)
	if q.on || len(q.restarts) < q.After {
		return false
	}
	q.on = true
	return true
}

// On reports whether the tenant is quarantined.
func (q *Quarantine) On() bool { return q.on }

// Recent is the number of restarts within the window at the last restart.
func (q *Quarantine) Recent() int { return len(q.restarts) }

// Lift ends the quarantine and forgets the restarts.
func (q *Quarantine) Lift() {
	q.on = false
	q.restarts = nil
}
