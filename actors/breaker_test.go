package actors

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const stateOpenFor = 60 * time.Second

// openedBreaker returns a default breaker (5 failures, 60s) opened at stateT0.
func openedBreaker(tb testing.TB) *Breaker {
	tb.Helper()
	b := NewBreaker(5, stateOpenFor)
	for range 5 {
		b.Failure(stateT0)
	}
	require.Equal(tb, BreakerOpen, b.State(stateT0))
	return b
}

// halfOpenBreaker returns a breaker whose half-open trial is in flight at stateT0+stateOpenFor.
func halfOpenBreaker(tb testing.TB) (*Breaker, time.Time) {
	tb.Helper()
	b := openedBreaker(tb)
	now := stateT0.Add(stateOpenFor)
	ok, _, tr := b.Allow(now)
	require.True(tb, ok)
	require.Equal(tb, Transition{From: BreakerOpen, To: BreakerHalfOpen}, tr)
	return b, now
}

func TestBreakerStateString(t *testing.T) {
	tests := []struct {
		state BreakerState
		want  string
	}{
		{BreakerClosed, "CLOSED"},
		{BreakerOpen, "OPEN"},
		{BreakerHalfOpen, "HALF_OPEN"},
		{BreakerState(9), "BreakerState(9)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.state.String())
		})
	}
	t.Run("MarshalsAsName", func(t *testing.T) {
		out, err := json.Marshal(map[string]BreakerState{"s": BreakerHalfOpen})
		require.NoError(t, err)
		assert.JSONEq(t, `{"s":"HALF_OPEN"}`, string(out))
	})
}

func TestTransitionChanged(t *testing.T) {
	assert.False(t, Transition{}.Changed())
	assert.False(t, Transition{From: BreakerOpen, To: BreakerOpen}.Changed())
	assert.True(t, Transition{From: BreakerClosed, To: BreakerOpen}.Changed())
}

func TestBreaker(t *testing.T) {
	t.Run("StartsClosedAndAllows", func(t *testing.T) {
		b := NewBreaker(5, stateOpenFor)
		ok, retryAt, tr := b.Allow(stateT0)
		assert.True(t, ok)
		assert.True(t, retryAt.IsZero())
		assert.False(t, tr.Changed())
		assert.Equal(t, BreakerClosed, b.State(stateT0))
	})

	t.Run("OpensAfterExactlyFiveConsecutiveFailures", func(t *testing.T) {
		b := NewBreaker(5, stateOpenFor)
		for i := 1; i <= 4; i++ {
			require.False(t, b.Failure(stateT0).Changed(), "failure %d", i)
			require.Equal(t, BreakerClosed, b.State(stateT0))
		}
		assert.Equal(t, Transition{From: BreakerClosed, To: BreakerOpen}, b.Failure(stateT0))
		assert.Equal(t, BreakerOpen, b.State(stateT0))
	})

	t.Run("StaysClosedAfterFourFailuresSuccessFourFailures", func(t *testing.T) {
		b := NewBreaker(5, stateOpenFor)
		for range 4 {
			b.Failure(stateT0)
		}
		assert.False(t, b.Success(stateT0).Changed())
		for range 4 {
			assert.False(t, b.Failure(stateT0).Changed())
		}
		assert.Equal(t, BreakerClosed, b.State(stateT0))
		assert.Equal(t, 4, b.Stats(stateT0).ConsecutiveFailures)
	})

	t.Run("NeutralResetsTheCount", func(t *testing.T) {
		b := NewBreaker(5, stateOpenFor)
		for range 4 {
			b.Failure(stateT0)
		}
		assert.False(t, b.Neutral(stateT0).Changed())
		for range 4 {
			b.Failure(stateT0)
		}
		assert.Equal(t, BreakerClosed, b.State(stateT0))
	})

	t.Run("OpenRefusesUntilOpenTimeEnds", func(t *testing.T) {
		b := openedBreaker(t)
		for _, at := range []time.Duration{0, time.Second, stateOpenFor - time.Nanosecond} {
			ok, retryAt, tr := b.Allow(stateT0.Add(at))
			assert.False(t, ok, "at +%s", at)
			assert.Equal(t, stateT0.Add(stateOpenFor), retryAt, "at +%s", at)
			assert.False(t, tr.Changed())
		}
	})

	t.Run("HalfOpenAfterExactlyOpenForNotBefore", func(t *testing.T) {
		b := openedBreaker(t)
		assert.Equal(t, BreakerOpen, b.State(stateT0.Add(stateOpenFor-time.Nanosecond)))
		assert.Equal(t, BreakerHalfOpen, b.State(stateT0.Add(stateOpenFor)))
		assert.Equal(t, BreakerHalfOpen, b.State(stateT0.Add(stateOpenFor)), "State is a pure read")
	})

	t.Run("HalfOpenLetsExactlyOneTrialThrough", func(t *testing.T) {
		b, now := halfOpenBreaker(t)
		for i := range 3 {
			at := now.Add(time.Duration(i) * time.Millisecond)
			ok, retryAt, tr := b.Allow(at)
			assert.False(t, ok)
			assert.Equal(t, at.Add(ProbeInterval), retryAt)
			assert.False(t, tr.Changed())
		}
	})

	t.Run("TrialSuccessCloses", func(t *testing.T) {
		b, now := halfOpenBreaker(t)
		assert.Equal(t, Transition{From: BreakerHalfOpen, To: BreakerClosed}, b.Success(now))
		assert.Equal(t, BreakerClosed, b.State(now))
		ok, _, _ := b.Allow(now)
		assert.True(t, ok)
		assert.Equal(t, 0, b.Stats(now).ConsecutiveFailures)
	})

	t.Run("TrialNeutralCloses", func(t *testing.T) {
		b, now := halfOpenBreaker(t)
		assert.Equal(t, Transition{From: BreakerHalfOpen, To: BreakerClosed}, b.Neutral(now))
	})

	t.Run("TrialFailureReopensWithRestartedTimer", func(t *testing.T) {
		b, now := halfOpenBreaker(t)
		failedAt := now.Add(200 * time.Millisecond)
		assert.Equal(t, Transition{From: BreakerHalfOpen, To: BreakerOpen}, b.Failure(failedAt))
		assert.Equal(t, BreakerOpen, b.State(failedAt.Add(stateOpenFor-time.Nanosecond)))
		ok, retryAt, _ := b.Allow(failedAt)
		assert.False(t, ok)
		assert.Equal(t, failedAt.Add(stateOpenFor), retryAt)
		assert.Equal(t, BreakerHalfOpen, b.State(failedAt.Add(stateOpenFor)))
		assert.Equal(t, 2, b.Stats(failedAt).OpenedCount)
	})

	t.Run("ReleaseFreesTheTrialAndKeepsHalfOpen", func(t *testing.T) {
		b, now := halfOpenBreaker(t)
		b.Release(now)
		assert.Equal(t, BreakerHalfOpen, b.State(now))
		ok, _, tr := b.Allow(now)
		assert.True(t, ok, "a new trial")
		assert.False(t, tr.Changed(), "already half-open")
		ok, _, _ = b.Allow(now)
		assert.False(t, ok, "still one trial at a time")
	})

	t.Run("ReleaseOutsideHalfOpenChangesNothing", func(t *testing.T) {
		b := openedBreaker(t)
		b.Release(stateT0)
		assert.Equal(t, BreakerOpen, b.State(stateT0))
	})

	t.Run("LateVerdictsWhileOpenDoNotChangeState", func(t *testing.T) {
		b := openedBreaker(t)
		now := stateT0.Add(time.Second)
		assert.False(t, b.Success(now).Changed())
		assert.False(t, b.Failure(now).Changed())
		assert.Equal(t, BreakerOpen, b.State(now))
		assert.Equal(t, stateT0.Add(stateOpenFor), b.Stats(now).OpenUntil, "timer not restarted")
	})

	t.Run("ResetClosesFromEveryState", func(t *testing.T) {
		tests := []struct {
			name  string
			setup func(tb testing.TB) (*Breaker, time.Time)
			from  BreakerState
		}{
			{"FromClosed", func(testing.TB) (*Breaker, time.Time) { return NewBreaker(5, stateOpenFor), stateT0 }, BreakerClosed},
			{"FromOpen", func(tb testing.TB) (*Breaker, time.Time) { return openedBreaker(tb), stateT0 }, BreakerOpen},
			{"FromHalfOpen", halfOpenBreaker, BreakerHalfOpen},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				b, now := tt.setup(t)
				assert.Equal(t, Transition{From: tt.from, To: BreakerClosed}, b.Reset(now))
				assert.Equal(t, BreakerClosed, b.State(now))
				assert.Zero(t, b.Stats(now).ConsecutiveFailures)
				ok, _, _ := b.Allow(now)
				assert.True(t, ok)
				for range 4 {
					b.Failure(now)
				}
				assert.Equal(t, BreakerClosed, b.State(now), "count starts over")
			})
		}
	})

	t.Run("StatsReportState", func(t *testing.T) {
		b := NewBreaker(5, stateOpenFor)
		assert.Equal(t, BreakerStats{State: BreakerClosed}, b.Stats(stateT0))
		failedAt := stateT0.Add(time.Second)
		for range 5 {
			b.Failure(failedAt)
		}
		assert.Equal(t, BreakerStats{
			State:               BreakerOpen,
			ConsecutiveFailures: 5,
			LastFailure:         failedAt,
			OpenedCount:         1,
			OpenUntil:           failedAt.Add(stateOpenFor),
		}, b.Stats(failedAt))
		st := b.Stats(failedAt.Add(stateOpenFor))
		assert.Equal(t, BreakerHalfOpen, st.State)
		assert.True(t, st.OpenUntil.IsZero(), "only set while open")
	})

	t.Run("BreakersAreIndependent", func(t *testing.T) {
		a := openedBreaker(t)
		b := NewBreaker(5, stateOpenFor)
		ok, _, _ := b.Allow(stateT0)
		assert.True(t, ok)
		b.Reset(stateT0)
		assert.Equal(t, BreakerOpen, a.State(stateT0))
	})

	t.Run("ThresholdBelowOneOpensOnFirstFailure", func(t *testing.T) {
		b := NewBreaker(0, stateOpenFor)
		assert.True(t, b.Failure(stateT0).Changed())
	})
}

func BenchmarkBreakerAllow(b *testing.B) {
	br := NewBreaker(5, stateOpenFor)
	now := stateT0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Millisecond)
		if ok, _, _ := br.Allow(now); ok {
			br.Success(now)
		}
	}
}
