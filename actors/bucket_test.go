package actors

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stateT0 is the fixed start of every time-logic test; tests advance it by hand.
var stateT0 = time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)

// drainedBucket returns a bucket with no tokens left at stateT0.
func drainedBucket(tb testing.TB, perMinute float64, burst int) *Bucket {
	tb.Helper()
	b := NewBucket(perMinute, burst, stateT0)
	for range burst {
		require.True(tb, b.Allow(stateT0))
	}
	require.Zero(tb, b.Available(stateT0))
	return b
}

func TestBucket(t *testing.T) {
	t.Run("StartsFull", func(t *testing.T) {
		b := NewBucket(80, 80, stateT0)
		assert.Equal(t, 80.0, b.Available(stateT0))
		assert.Equal(t, 80, b.Max())
		assert.Equal(t, 80.0, b.PerMinute())
	})

	t.Run("RefillsAtSeedRate", func(t *testing.T) {
		tests := []struct {
			name    string
			elapsed time.Duration
			want    float64
		}{
			{"NothingAtOnce", 0, 0},
			{"OneTokenAfter750ms", 750 * time.Millisecond, 1},
			{"FourTokensAfter3s", 3 * time.Second, 4},
			{"FortyTokensAfter30s", 30 * time.Second, 40},
			{"FullAfterOneMinute", time.Minute, 80},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				b := drainedBucket(t, 80, 80)
				assert.Equal(t, tt.want, b.Available(stateT0.Add(tt.elapsed)))
			})
		}
	})

	t.Run("RefillDoesNotDriftAcrossManySmallSteps", func(t *testing.T) {
		b := drainedBucket(t, 80, 80)
		now := stateT0
		for range 3000 { // 3000 mutations 1ms apart
			now = now.Add(time.Millisecond)
			b.SetRate(80, now)
		}
		assert.InDelta(t, 4.0, b.Available(now), 1e-9)
	})

	t.Run("NeverExceedsBurstAfterLongIdle", func(t *testing.T) {
		b := drainedBucket(t, 80, 80)
		for _, idle := range []time.Duration{2 * time.Minute, time.Hour, 365 * 24 * time.Hour} {
			assert.Equal(t, 80.0, b.Available(stateT0.Add(idle)), "idle %s", idle)
		}
		b = NewBucket(80, 80, stateT0)
		b.Cancel(stateT0.Add(time.Hour))
		assert.Equal(t, 80.0, b.Available(stateT0.Add(time.Hour)))
	})

	t.Run("AllowTakesOnlyWholeTokens", func(t *testing.T) {
		b := drainedBucket(t, 80, 80)
		assert.False(t, b.Allow(stateT0.Add(749*time.Millisecond)))
		assert.True(t, b.Allow(stateT0.Add(750*time.Millisecond)))
		assert.False(t, b.Allow(stateT0.Add(750*time.Millisecond)))
		assert.InDelta(t, 0, b.Available(stateT0.Add(750*time.Millisecond)), 1e-12)
	})

	t.Run("BucketsAreIndependent", func(t *testing.T) {
		a := drainedBucket(t, 80, 80)
		b := NewBucket(80, 80, stateT0)
		assert.False(t, a.Allow(stateT0))
		assert.Equal(t, 80.0, b.Available(stateT0))
		assert.True(t, b.Allow(stateT0))
		assert.Equal(t, 0.0, a.Available(stateT0))
	})

	t.Run("ReserveReturnsNowWhileTokensLast", func(t *testing.T) {
		b := NewBucket(80, 3, stateT0)
		for range 3 {
			assert.Equal(t, stateT0, b.Reserve(stateT0))
		}
		assert.Equal(t, stateT0.Add(750*time.Millisecond), b.Reserve(stateT0))
		assert.Equal(t, -1.0, b.Available(stateT0))
	})

	t.Run("ReservationsAreSpacedAndOrdered", func(t *testing.T) {
		b := drainedBucket(t, 600, 20)
		prev := stateT0
		for i := 1; i <= 100; i++ {
			r := b.Reserve(stateT0)
			require.Equal(t, stateT0.Add(time.Duration(i)*100*time.Millisecond), r, "reservation %d", i)
			require.True(t, r.After(prev))
			prev = r
		}
		assert.Equal(t, -100.0, b.Available(stateT0))
		assert.Equal(t, -99.0, b.Available(stateT0.Add(100*time.Millisecond)))
	})

	t.Run("ReserveCoversPartialToken", func(t *testing.T) {
		b := drainedBucket(t, 80, 80)
		now := stateT0.Add(300 * time.Millisecond) // 0.4 token
		assert.Equal(t, stateT0.Add(750*time.Millisecond), b.Reserve(now))
		assert.Equal(t, stateT0.Add(1500*time.Millisecond), b.Reserve(now))
	})

	t.Run("NextPredictsReserveWithoutTaking", func(t *testing.T) {
		b := drainedBucket(t, 600, 20)
		b.Reserve(stateT0)
		next := b.Next(stateT0)
		assert.Equal(t, -1.0, b.Available(stateT0))
		assert.Equal(t, next, b.Reserve(stateT0))
		assert.Equal(t, stateT0, NewBucket(600, 1, stateT0).Next(stateT0))
	})

	t.Run("CancelGivesOneTokenBack", func(t *testing.T) {
		b := drainedBucket(t, 600, 20)
		b.Reserve(stateT0)
		b.Reserve(stateT0)
		b.Cancel(stateT0)
		assert.Equal(t, -1.0, b.Available(stateT0))
		assert.Equal(t, stateT0.Add(200*time.Millisecond), b.Reserve(stateT0), "the freed slot is reused")
	})

	t.Run("CancelIsCappedAtBurst", func(t *testing.T) {
		b := NewBucket(600, 20, stateT0)
		b.Cancel(stateT0)
		assert.Equal(t, 20.0, b.Available(stateT0))
	})

	t.Run("DrainDropsTokensButKeepsReservations", func(t *testing.T) {
		b := NewBucket(600, 20, stateT0)
		b.Drain(stateT0)
		assert.Equal(t, 0.0, b.Available(stateT0))
		b.Reserve(stateT0)
		b.Drain(stateT0)
		assert.Equal(t, -1.0, b.Available(stateT0))
	})

	t.Run("SetRateRefillsAtOldRateUntilNow", func(t *testing.T) {
		b := drainedBucket(t, 80, 80)
		b.SetRate(40, stateT0.Add(3*time.Second)) // 4 tokens at 80/min
		assert.Equal(t, 40.0, b.PerMinute())
		assert.Equal(t, 4.0, b.Available(stateT0.Add(3*time.Second)))
		assert.Equal(t, 6.0, b.Available(stateT0.Add(6*time.Second)), "then 2 more at 40/min")
	})

	t.Run("SetRateChangesReservationSpacing", func(t *testing.T) {
		b := drainedBucket(t, 600, 20)
		b.SetRate(60, stateT0)
		assert.Equal(t, stateT0.Add(time.Second), b.Reserve(stateT0))
		assert.Equal(t, stateT0.Add(2*time.Second), b.Reserve(stateT0))
	})

	t.Run("RateBelowFloorRunsAtFloor", func(t *testing.T) {
		for _, rate := range []float64{0, -5, 0.001} {
			b := NewBucket(rate, 1, stateT0)
			assert.Equal(t, MinPerMinute, b.PerMinute(), "rate %v", rate)
			b.SetRate(rate, stateT0)
			assert.Equal(t, MinPerMinute, b.PerMinute(), "rate %v", rate)
		}
		assert.Equal(t, 1, NewBucket(80, 0, stateT0).Max())
	})

	t.Run("OutOfOrderTimeRefillsNothing", func(t *testing.T) {
		b := drainedBucket(t, 80, 80)
		later := stateT0.Add(3 * time.Second)
		for range 4 {
			require.True(t, b.Allow(later))
		}
		assert.False(t, b.Allow(stateT0.Add(time.Second)), "no refill backwards")
		assert.Equal(t, 0.0, b.Available(later))
		assert.Equal(t, 1.0, b.Available(later.Add(750*time.Millisecond)))
	})
}

func BenchmarkBucketAllow(b *testing.B) {
	bucket := NewBucket(600, 100, stateT0)
	now := stateT0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Millisecond)
		bucket.Allow(now)
	}
}

func BenchmarkBucketReserve(b *testing.B) {
	bucket := NewBucket(600, 100, stateT0)
	now := stateT0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(100 * time.Millisecond) // one refill per reservation
		bucket.Reserve(now)
	}
}
