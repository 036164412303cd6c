package actors

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/whatsapp"
)

func TestJudge(t *testing.T) {
	cases := []struct {
		name     string
		class    whatsapp.Class
		attempts int
		want     Verdict
	}{
		{"AcceptedIsSentAndASuccess", whatsapp.ClassAccepted, 1, Verdict{Breaker: CountSuccess, Job: JobSent}},
		{"ThrottledIsDeferredWithoutAVerdictAndCutsTheWindow", whatsapp.ClassThrottled, 1, Verdict{Breaker: CountRelease, Job: JobDeferred, Reason: ReasonThrottled, Congestion: true}},
		{"ThrottledOnTheLastAttemptIsStillDeferred", whatsapp.ClassThrottled, 3, Verdict{Breaker: CountRelease, Job: JobDeferred, Reason: ReasonThrottled, Congestion: true}},
		{"PairRateIsDeferredWithoutAVerdict", whatsapp.ClassPairRate, 1, Verdict{Breaker: CountRelease, Job: JobDeferred, Reason: ReasonPairRate}},
		{"PermanentFailsTheJobNotTheTenant", whatsapp.ClassPermanent, 1, Verdict{Breaker: CountNeutral, Job: JobFailed}},
		{"TransientIsRetriedAFailureAndCutsTheWindow", whatsapp.ClassTransient, 1, Verdict{Breaker: CountFailure, Job: JobDeferred, Reason: ReasonRetry, Congestion: true}},
		{"TransientOnTheLastAttemptIsExhausted", whatsapp.ClassTransient, 3, Verdict{Breaker: CountFailure, Job: JobExhausted, Congestion: true}},
		{"TransientPastTheLastAttemptIsExhausted", whatsapp.ClassTransient, 4, Verdict{Breaker: CountFailure, Job: JobExhausted, Congestion: true}},
		{"UncuredAuthIsRetriedAndAFailure", whatsapp.ClassAuth, 2, Verdict{Breaker: CountFailure, Job: JobDeferred, Reason: ReasonRetry}},
		{"TenantBlockedIsRetriedAndAFailure", whatsapp.ClassTenantBlocked, 1, Verdict{Breaker: CountFailure, Job: JobDeferred, Reason: ReasonRetry}},
		{"TenantBlockedOnTheLastAttemptIsExhausted", whatsapp.ClassTenantBlocked, 3, Verdict{Breaker: CountFailure, Job: JobExhausted}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, Judge(c.class, c.attempts, 3))
		})
	}
}

func TestScheduleApply(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	newSched := func() *Schedule {
		return NewSchedule(ScheduleConfig{PerMinute: 60, Burst: 10, FailureThreshold: 2, OpenFor: time.Minute}, t0)
	}
	noJitter := func(max time.Duration) time.Duration { return max }

	t.Run("FailuresOpenTheBreakerAndRetryWithBackoff", func(t *testing.T) {
		s := newSched()
		v := Judge(whatsapp.ClassTransient, 1, 10)
		nb, reserved, tr := s.Apply(t0, v, 1, 1, noJitter)
		assert.Equal(t, t0.Add(BaseBackoff), nb)
		assert.False(t, reserved, "a retry takes a fresh token when it comes back")
		assert.False(t, tr.Changed())
		nb, _, tr = s.Apply(t0, v, 2, 1, noJitter)
		assert.Equal(t, t0.Add(2*BaseBackoff), nb)
		assert.Equal(t, BreakerOpen, tr.To)
	})
	t.Run("ThrottlingHalvesTheRateAndReservesAToken", func(t *testing.T) {
		s := newSched()
		nb, reserved, _ := s.Apply(t0, Judge(whatsapp.ClassThrottled, 1, 10), 1, 1, noJitter)
		assert.True(t, reserved)
		assert.Equal(t, 30.0, s.Stats(t0).EffectivePerMinute)
		assert.Equal(t, t0.Add(2*time.Second), nb, "the next token at the halved rate, the bucket drained")
		assert.Zero(t, s.Breaker().Stats(t0).ConsecutiveFailures)
	})
	t.Run("PairRateWaitsForTheRecipientOnly", func(t *testing.T) {
		s := newSched()
		nb, reserved, _ := s.Apply(t0, Judge(whatsapp.ClassPairRate, 1, 10), 1, 1, noJitter)
		assert.True(t, reserved)
		assert.Equal(t, t0.Add(4*time.Second), nb, "Meta's 4^X s for the first refusal")
		assert.Equal(t, 60.0, s.Stats(t0).EffectivePerMinute, "the tenant's rate is untouched")
	})
	// halfOpen opens a schedule's breaker with two failures at t0 and
	// takes its half-open trial a minute later, the time it returns.
	halfOpen := func(t *testing.T, s *Schedule) time.Time {
		fail := Judge(whatsapp.ClassTransient, 1, 10)
		s.Apply(t0, fail, 1, 1, noJitter)
		s.Apply(t0, fail, 1, 1, noJitter)
		later := t0.Add(time.Minute)
		ok, _, tr := s.Breaker().Allow(later)
		require.True(t, ok)
		require.Equal(t, BreakerHalfOpen, tr.To)
		return later
	}
	t.Run("SuccessClosesAHalfOpenBreaker", func(t *testing.T) {
		s := newSched()
		later := halfOpen(t, s)
		_, _, tr := s.Apply(later, Judge(whatsapp.ClassAccepted, 1, 10), 1, 1, noJitter)
		assert.Equal(t, BreakerClosed, tr.To)
	})
	t.Run("APermanentErrorEndsAHalfOpenTrialWithoutOpening", func(t *testing.T) {
		s := newSched()
		later := halfOpen(t, s)
		nb, _, tr := s.Apply(later, Judge(whatsapp.ClassPermanent, 1, 10), 1, 1, noJitter)
		assert.True(t, nb.IsZero())
		assert.Equal(t, BreakerClosed, tr.To)
	})
}

func TestQuarantine(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	t.Run("QuarantinesOnTheRestartThatReachesTheLimit", func(t *testing.T) {
		q := Quarantine{After: 3, Window: 10 * time.Second}
		assert.False(t, q.Restarted(t0))
		assert.False(t, q.Restarted(t0.Add(time.Second)))
		assert.True(t, q.Restarted(t0.Add(2*time.Second)))
		assert.True(t, q.On())
		assert.False(t, q.Restarted(t0.Add(3*time.Second)), "reported once")
		assert.True(t, q.On())
	})
	t.Run("RestartsOutsideTheWindowDoNotCount", func(t *testing.T) {
		q := Quarantine{After: 3, Window: 10 * time.Second}
		q.Restarted(t0)
		q.Restarted(t0.Add(5 * time.Second))
		assert.False(t, q.Restarted(t0.Add(11*time.Second)), "the first one has left the window")
		assert.Equal(t, 2, q.Recent())
		assert.True(t, q.Restarted(t0.Add(12*time.Second)))
	})
	t.Run("LiftForgetsTheRestarts", func(t *testing.T) {
		q := Quarantine{After: 2, Window: 10 * time.Second}
		q.Restarted(t0)
		require.True(t, q.Restarted(t0))
		q.Lift()
		assert.False(t, q.On())
		assert.False(t, q.Restarted(t0.Add(time.Second)))
		assert.True(t, q.Restarted(t0.Add(time.Second)))
	})
}
