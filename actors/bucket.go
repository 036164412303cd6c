package actors

import (
	"math"
	"time"
)

// MinPerMinute is the lowest refill rate a Bucket runs at. A rate of zero
// would never refill, so a reservation could never be honoured.
const MinPerMinute = 1.0

// tokenEpsilon absorbs float rounding, so that a bucket refilled to
// 0.9999999999 tokens by an exact-looking elapsed time still gives one.
const tokenEpsilon = 1e-9

// Bucket is a token bucket with reservations, equivalent to GCRA: tokens may
// go negative, and each negative token is a reservation that a later job
// holds, so jobs deferred now leave in the order they were reserved.
//
// Tokens are kept as a float64 count at the instant last and refilled from
// the elapsed time on each mutation, never accumulated tick by tick, so no
// rounding drift builds up. A Bucket is not safe for concurrent use; its
// owning actor is its only caller.
type Bucket struct {
	perMinute float64
	burst     int
	tokens    float64
	last      time.Time
}

// NewBucket returns a full bucket (tokens = burst) refilling at perMinute.
// A rate below MinPerMinute (or NaN) runs at MinPerMinute; a burst below 1
// is 1.
func NewBucket(perMinute float64, burst int, now time.Time) *Bucket {
	burst = max(burst, 1)
	return &Bucket{
		perMinute: clampPerMinute(perMinute),
		burst:     burst,
		tokens:    float64(burst),
		last:      now,
	}
}

// EmptiedAt makes a bucket that has not been used yet empty as of at, an
// earlier instant: it refills from then (its shard was acquired at at).
func (b *Bucket) EmptiedAt(at time.Time) {
	b.tokens = 0
	if at.Before(b.last) {
		b.last = at
	}
}

// Available reports the tokens at now after refill; a negative count means
// reservations are outstanding. It does not change the bucket.
func (b *Bucket) Available(now time.Time) float64 {
	return b.refilled(now)
}

// Max reports the burst, the most tokens the bucket holds.
func (b *Bucket) Max() int { return b.burst }

// PerMinute reports the current refill rate.
func (b *Bucket) PerMinute() float64 { return b.perMinute }

// Allow takes one token if at least one is available at now.
func (b *Bucket) Allow(now time.Time) bool {
	b.advance(now)
	if b.tokens < 1-tokenEpsilon {
		return false
	}
	b.tokens--
	return true
}

// Reserve always takes one token and returns when that token is (was)
// available: now when a whole token was there, else the instant the refill
// covers it. Successive reservations are spaced 60/perMinute seconds apart.
func (b *Bucket) Reserve(now time.Time) time.Time {
	b.advance(now)
	before := b.tokens
	b.tokens--
	if before >= 1-tokenEpsilon {
		return now
	}
	return now.Add(b.refillTime(1 - before))
}

// Next reports when a reservation made at now would be due, without making
// it.
func (b *Bucket) Next(now time.Time) time.Time {
	avail := b.refilled(now)
	if avail >= 1-tokenEpsilon {
		return now
	}
	return now.Add(b.refillTime(1 - avail))
}

// Cancel gives one reserved token back, capped at the burst.
func (b *Bucket) Cancel(now time.Time) {
	b.advance(now)
	b.tokens = min(b.tokens+1, float64(b.burst))
}

// Drain drops the tokens on hand (but keeps outstanding reservations), so
// the next reservation waits for the refill. Used when Meta says we already
// send too fast, and when the tenant's shard was just acquired: the unspent
// burst must not be spent at once.
func (b *Bucket) Drain(now time.Time) {
	b.advance(now)
	b.tokens = min(b.tokens, 0)
}

// SetRate refills at the old rate up to now, then refills at perMinute
// (clamped like NewBucket's).
func (b *Bucket) SetRate(perMinute float64, now time.Time) {
	b.advance(now)
	b.perMinute = clampPerMinute(perMinute)
}

// SetLimits changes the rate and the burst (a reload) without refilling:
// tokens refill at the old rate up to now, then at the new one, and are
// capped at the new burst.
func (b *Bucket) SetLimits(perMinute float64, burst int, now time.Time) {
	b.advance(now)
	b.perMinute = clampPerMinute(perMinute)
	b.burst = max(burst, 1)
	b.tokens = min(b.tokens, float64(b.burst))
}

// refilled is the token count at now; a now before last (an out-of-order
// caller) refills nothing. Sub uses the monotonic clock when both instants
// carry it, so a wall-clock step does not refill or stall the bucket.
func (b *Bucket) refilled(now time.Time) float64 {
	return b.refill(now.Sub(b.last))
}

func (b *Bucket) refill(elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return b.tokens
	}
	// Multiply before dividing: 3s at 80/min is 3e9*80/6e10 = 4 exactly.
	added := float64(elapsed) * b.perMinute / float64(time.Minute)
	return min(b.tokens+added, float64(b.burst))
}

func (b *Bucket) advance(now time.Time) {
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = b.refill(elapsed)
		b.last = now
	}
}

// refillTime is how long the refill takes to add tokens, rounded up to the
// nanosecond so a job back at the returned instant finds its token covered.
func (b *Bucket) refillTime(tokens float64) time.Duration {
	ns := math.Ceil(tokens * float64(time.Minute) / b.perMinute)
	if ns >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ns)
}

func clampPerMinute(perMinute float64) float64 {
	if !(perMinute >= MinPerMinute) { // also catches NaN
		return MinPerMinute
	}
	return perMinute
}
