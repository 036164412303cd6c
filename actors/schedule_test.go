package actors

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/whatsapp"
)

// stateSeedConfig is a tenant at 600/min with a small burst, so a
// reservation is 100ms.
var stateSeedConfig = ScheduleConfig{PerMinute: 600, Burst: 20, FailureThreshold: 5, OpenFor: stateOpenFor, MaxHeld: 2}

// emptySchedule returns a schedule whose bucket has no tokens left at stateT0.
func emptySchedule(tb testing.TB, cfg ScheduleConfig) *Schedule {
	tb.Helper()
	s := NewSchedule(cfg, stateT0)
	for range s.Bucket().Max() {
		require.True(tb, s.Bucket().Allow(stateT0))
	}
	return s
}

// openSchedule returns a schedule whose breaker opened at stateT0.
func openSchedule(tb testing.TB) *Schedule {
	tb.Helper()
	s := NewSchedule(stateSeedConfig, stateT0)
	for range stateSeedConfig.FailureThreshold {
		s.Breaker().Failure(stateT0)
	}
	require.Equal(tb, BreakerOpen, s.Breaker().State(stateT0))
	return s
}

func TestDeferReasonString(t *testing.T) {
	tests := []struct {
		reason DeferReason
		want   string
	}{
		{ReasonNone, "none"},
		{ReasonEarly, "early"},
		{ReasonRateLimited, "rate_limited"},
		{ReasonBusy, "busy"},
		{ReasonBreakerOpen, "breaker_open"},
		{ReasonPaused, "paused"},
		{ReasonThrottled, "throttled"},
		{ReasonPairRate, "pair_rate"},
		{ReasonRetry, "retry"},
		{DeferReason(42), "DeferReason(42)"},
		{DeferReason(-1), "DeferReason(-1)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.reason.String())
		})
	}
	t.Run("MarshalsAsName", func(t *testing.T) {
		out, err := json.Marshal(map[string]DeferReason{"r": ReasonBusy})
		require.NoError(t, err)
		assert.JSONEq(t, `{"r":"busy"}`, string(out))
	})
}

func TestScheduleAdmit(t *testing.T) {
	t.Run("EarlyJobIsDeferredForTheRemainderWithoutCharge", func(t *testing.T) {
		for _, reserved := range []bool{false, true} {
			s := NewSchedule(stateSeedConfig, stateT0)
			notBefore := stateT0.Add(37 * time.Second)
			d := s.Admit(stateT0, Ticket{NotBefore: notBefore, Reserved: reserved}, 0, false)
			assert.Equal(t, Decision{NotBefore: notBefore, Reserved: reserved, Reason: ReasonEarly}, d)
			assert.Equal(t, 20.0, s.Bucket().Available(stateT0), "bucket untouched")
		}
	})

	t.Run("EarlyWithinSlackIsSent", func(t *testing.T) {
		s := NewSchedule(stateSeedConfig, stateT0)
		d := s.Admit(stateT0, Ticket{NotBefore: stateT0.Add(Slack)}, 0, false)
		assert.True(t, d.Send)
		d = s.Admit(stateT0, Ticket{NotBefore: stateT0.Add(Slack + time.Nanosecond)}, 0, false)
		assert.Equal(t, ReasonEarly, d.Reason)
	})

	t.Run("PausedTenantIsAskedAgainLaterWithoutCharge", func(t *testing.T) {
		for _, reserved := range []bool{false, true} {
			s := NewSchedule(stateSeedConfig, stateT0)
			d := s.Admit(stateT0, Ticket{Reserved: reserved}, 0, true)
			assert.Equal(t, Decision{NotBefore: stateT0.Add(PauseRecheck), Reserved: reserved, Reason: ReasonPaused}, d)
			assert.Equal(t, 20.0, s.Bucket().Available(stateT0))
		}
	})

	t.Run("SendsWhileTokensLastThenReserves", func(t *testing.T) {
		s := NewSchedule(stateSeedConfig, stateT0)
		for i := range 20 {
			d := s.Admit(stateT0, Ticket{}, 0, false)
			require.Equal(t, Decision{Send: true}, d, "job %d", i)
		}
		d := s.Admit(stateT0, Ticket{}, 0, false)
		assert.Equal(t, Decision{NotBefore: stateT0.Add(100 * time.Millisecond), Reserved: true, Reason: ReasonRateLimited}, d)
	})

	t.Run("ReservedJobBackOnTimeIsSentWithoutSecondCharge", func(t *testing.T) {
		s := emptySchedule(t, stateSeedConfig)
		d := s.Admit(stateT0, Ticket{}, 0, false)
		require.Equal(t, ReasonRateLimited, d.Reason)
		back := d.NotBefore
		before := s.Bucket().Available(back)
		d = s.Admit(back, Ticket{NotBefore: d.NotBefore, Reserved: d.Reserved}, 0, false)
		assert.Equal(t, Decision{Send: true, NotBefore: back.Add(SendGuard)}, d)
		assert.Equal(t, before, s.Bucket().Available(back), "no second token")
	})

	t.Run("ReservationDueWithinSlackIsSentWhenDueNotEarly", func(t *testing.T) {
		s := emptySchedule(t, stateSeedConfig)
		now := stateT0.Add(100*time.Millisecond - Slack) // token due in 20ms
		assert.Equal(t, Decision{Send: true, NotBefore: now.Add(Slack + SendGuard)}, s.Admit(now, Ticket{}, 0, false),
			"admitted, to be held until its token is due rather than sent early")
	})

	t.Run("ReservedJobBackWithinSlackIsHeldUntilDue", func(t *testing.T) {
		s := NewSchedule(stateSeedConfig, stateT0)
		due := stateT0.Add(time.Second)
		now := due.Add(-10 * time.Millisecond)
		assert.Equal(t, Decision{Send: true, NotBefore: due.Add(SendGuard)}, s.Admit(now, Ticket{NotBefore: due, Reserved: true}, 0, false))
	})

	t.Run("BurstOf300LeavesInOrderWithOneDeferralEach", func(t *testing.T) {
		s := NewSchedule(stateSeedConfig, stateT0)
		type job struct {
			ticket    Ticket
			deferrals int
		}
		jobs := make([]job, 300)
		var sentAt []time.Time
		var sentOrder []int
		prev := stateT0
		for i := range jobs {
			d := s.Admit(stateT0, Ticket{}, 0, false)
			if d.Send {
				sentAt, sentOrder = append(sentAt, stateT0), append(sentOrder, i)
				continue
			}
			require.Equal(t, ReasonRateLimited, d.Reason)
			require.True(t, d.NotBefore.After(prev), "job %d: NotBefore strictly increasing", i)
			prev = d.NotBefore
			jobs[i] = job{ticket: Ticket{NotBefore: d.NotBefore, Reserved: d.Reserved}, deferrals: 1}
		}
		require.Len(t, sentOrder, 20, "the burst goes at once")
		// Each deferred job comes back exactly at its NotBefore, in that order.
		for i := 20; i < len(jobs); i++ {
			j := &jobs[i]
			d := s.Admit(j.ticket.NotBefore, j.ticket, 0, false)
			require.True(t, d.Send, "job %d back at NotBefore: %+v", i, d)
			sentAt, sentOrder = append(sentAt, j.ticket.NotBefore), append(sentOrder, i)
		}
		for i := range jobs {
			assert.LessOrEqual(t, jobs[i].deferrals, 1)
			assert.Equal(t, i, sentOrder[i], "sent in arrival order")
		}
		assert.Equal(t, stateT0.Add(280*100*time.Millisecond), sentAt[299], "the last at the bucket's rate")
	})

	t.Run("BusyTenantSpacesJobsByLatency", func(t *testing.T) {
		s := NewSchedule(stateSeedConfig, stateT0)
		observe(s, stateT0, 200*time.Millisecond) // a window of one: it sends one every 200ms
		for i := 1; i <= 3; i++ {
			d := s.Admit(stateT0, Ticket{}, 2, false)
			assert.Equal(t, Decision{NotBefore: stateT0.Add(time.Duration(i) * 200 * time.Millisecond), Reason: ReasonBusy}, d)
		}
		assert.Equal(t, 20.0, s.Bucket().Available(stateT0), "a busy job takes no token: it takes one when it is sent")
	})

	t.Run("BusyJobsComeBackTogetherUntilLatencyIsKnownThenSpacedByIt", func(t *testing.T) {
		s := NewSchedule(stateSeedConfig, stateT0)
		for range 3 {
			d := s.Admit(stateT0, Ticket{}, 5, false)
			assert.Equal(t, stateT0.Add(MinBusySpacing), d.NotBefore, "no latency measured yet: not spaced")
		}
		s.SendStarted(stateT0)
		later := stateT0.Add(40 * time.Millisecond)
		d := s.Admit(later, Ticket{}, 5, false)
		assert.Equal(t, later.Add(80*time.Millisecond), d.NotBefore, "twice as long as the first send has been out")
		s.SendEnded(stateT0, 3*time.Millisecond)
		for i := 1; i <= 2; i++ {
			d = s.Admit(later, Ticket{}, 5, false)
			assert.Equal(t, later.Add(time.Duration(i)*3*time.Millisecond), d.NotBefore, "spaced by the latency over a window of one")
		}
	})

	t.Run("BusySpacingHasAOneMillisecondFloor", func(t *testing.T) {
		s := NewSchedule(stateSeedConfig, stateT0)
		observe(s, stateT0, 100*time.Microsecond)
		d := s.Admit(stateT0, Ticket{}, 5, false)
		assert.Equal(t, stateT0.Add(time.Millisecond), d.NotBefore)
	})

	t.Run("BusySlotsRestartAfterIdle", func(t *testing.T) {
		s := NewSchedule(stateSeedConfig, stateT0)
		s.Admit(stateT0, Ticket{}, 2, false)
		later := stateT0.Add(time.Minute)
		d := s.Admit(later, Ticket{}, 2, false)
		assert.Equal(t, later.Add(MinBusySpacing), d.NotBefore)
	})

	t.Run("BusyReservedJobGivesItsTokenBack", func(t *testing.T) {
		// A token held until the window has room would be spent late, in a
		// bunch with others: the sends would exceed the rate where Meta
		// counts them.
		s := emptySchedule(t, stateSeedConfig)
		s.Bucket().Reserve(stateT0) // the job's token
		d := s.Admit(stateT0, Ticket{Reserved: true}, 2, false)
		assert.Equal(t, Decision{NotBefore: stateT0.Add(MinBusySpacing), Reason: ReasonBusy}, d)
		assert.InDelta(t, 0.0, s.Bucket().Available(stateT0), 1e-9, "its token is back")
	})

	t.Run("BreakerOpenDefersToOpenUntilWithoutHoldingAToken", func(t *testing.T) {
		s := openSchedule(t)
		now := stateT0.Add(10 * time.Second)
		d := s.Admit(now, Ticket{}, 0, false)
		assert.Equal(t, Decision{NotBefore: stateT0.Add(stateOpenFor), Reason: ReasonBreakerOpen}, d)
		assert.Equal(t, 20.0, s.Bucket().Available(now), "no token taken")
	})

	t.Run("BreakerOpenGivesAHeldTokenBack", func(t *testing.T) {
		s := openSchedule(t)
		s.Bucket().Reserve(stateT0)
		d := s.Admit(stateT0, Ticket{Reserved: true}, 0, false)
		assert.Equal(t, Decision{NotBefore: stateT0.Add(stateOpenFor), Reason: ReasonBreakerOpen}, d)
		assert.Equal(t, 20.0, s.Bucket().Available(stateT0))
	})

	t.Run("BreakerOpenComesBeforeBusy", func(t *testing.T) {
		s := openSchedule(t)
		d := s.Admit(stateT0, Ticket{}, 2, false)
		assert.Equal(t, ReasonBreakerOpen, d.Reason)
	})

	t.Run("HalfOpenLetsExactlyOneJobThrough", func(t *testing.T) {
		s := openSchedule(t)
		now := stateT0.Add(stateOpenFor)
		d := s.Admit(now, Ticket{NotBefore: now}, 0, false)
		assert.Equal(t, Decision{Send: true, Transition: Transition{From: BreakerOpen, To: BreakerHalfOpen}}, d)

		d = s.Admit(now, Ticket{NotBefore: now}, 1, false)
		assert.Equal(t, Decision{NotBefore: now.Add(ProbeInterval), Reserved: true, Reason: ReasonBreakerOpen}, d)
		assert.Equal(t, 18.0, s.Bucket().Available(now), "the refused job keeps its token and its place")

		require.True(t, s.Breaker().Success(now.Add(200*time.Millisecond)).Changed())
		back := d.NotBefore
		d = s.Admit(back, Ticket{NotBefore: d.NotBefore, Reserved: d.Reserved}, 0, false)
		assert.Equal(t, Decision{Send: true, NotBefore: back.Add(SendGuard)}, d)
	})

	t.Run("DeferredJobsDoNotTakeTheHalfOpenTrial", func(t *testing.T) {
		now := stateT0.Add(stateOpenFor)
		tests := []struct {
			name   string
			ticket Ticket
			held   int
			paused bool
			setup  func(*Schedule)
			want   DeferReason
		}{
			{name: "Early", ticket: Ticket{NotBefore: now.Add(time.Second)}, want: ReasonEarly},
			{name: "Paused", paused: true, want: ReasonPaused},
			{name: "Busy", held: 2, want: ReasonBusy},
			{name: "RateLimited", setup: func(s *Schedule) { s.Bucket().Drain(now) }, want: ReasonRateLimited},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := openSchedule(t)
				if tt.setup != nil {
					tt.setup(s)
				}
				d := s.Admit(now, tt.ticket, tt.held, tt.paused)
				require.Equal(t, tt.want, d.Reason)
				assert.False(t, d.Transition.Changed())
				ok, _, tr := s.Breaker().Allow(now)
				assert.True(t, ok, "the trial is still free")
				assert.True(t, tr.Changed())
			})
		}
	})

	t.Run("SchedulesAreIndependent", func(t *testing.T) {
		a := openSchedule(t)
		b := emptySchedule(t, stateSeedConfig)
		c := NewSchedule(stateSeedConfig, stateT0)
		assert.Equal(t, ReasonBreakerOpen, a.Admit(stateT0, Ticket{}, 0, false).Reason)
		assert.Equal(t, ReasonRateLimited, b.Admit(stateT0, Ticket{}, 0, false).Reason)
		assert.True(t, c.Admit(stateT0, Ticket{}, 0, false).Send)
	})
}

func TestScheduleThrottle(t *testing.T) {
	cfg := ScheduleConfig{PerMinute: 80, Burst: 80}

	t.Run("ThrottledHalvesRateAndReservesAtIt", func(t *testing.T) {
		s := NewSchedule(cfg, stateT0)
		notBefore := s.Throttled(stateT0)
		assert.Equal(t, 40.0, s.Bucket().PerMinute())
		assert.Equal(t, stateT0.Add(1500*time.Millisecond), notBefore, "unspent burst dropped; one token at 40/min")
		assert.Equal(t, Decision{Send: true, NotBefore: notBefore.Add(SendGuard)}, s.Admit(notBefore, Ticket{NotBefore: notBefore, Reserved: true}, 0, false))
	})

	t.Run("ThrottledHasAFloor", func(t *testing.T) {
		s := NewSchedule(cfg, stateT0)
		for i := range 20 {
			s.Throttled(stateT0.Add(time.Duration(i) * time.Second))
		}
		assert.Equal(t, MinPerMinute, s.Bucket().PerMinute())
	})

	t.Run("ThrottledHalvesOncePerThrottle", func(t *testing.T) {
		// Many sends in flight bring one throttle back as many answers.
		s := NewSchedule(cfg, stateT0)
		for i := range 10 {
			s.Throttled(stateT0.Add(time.Duration(i) * 50 * time.Millisecond))
		}
		assert.Equal(t, 40.0, s.Bucket().PerMinute(), "once within a second")
		s.Throttled(stateT0.Add(time.Second))
		assert.Equal(t, 20.0, s.Bucket().PerMinute(), "a throttle a second later is another one")
	})

	t.Run("RecoverRestoresStepByStep", func(t *testing.T) {
		s := NewSchedule(cfg, stateT0)
		s.Throttled(stateT0.Add(-time.Second))
		s.Throttled(stateT0) // 20/min
		steps := []struct {
			at   time.Duration
			want float64
		}{
			{RecoverAfter - time.Nanosecond, 20},
			{RecoverAfter, 40},
			{RecoverAfter + time.Second, 40},
			{2*RecoverAfter - time.Nanosecond, 40},
			{2 * RecoverAfter, 60},
			{3 * RecoverAfter, 80},
			{4 * RecoverAfter, 80},
			{time.Hour, 80},
		}
		for _, st := range steps {
			s.Recover(stateT0.Add(st.at))
			assert.Equal(t, st.want, s.Bucket().PerMinute(), "at +%s", st.at)
		}
	})

	t.Run("ThrottleRestartsRecovery", func(t *testing.T) {
		s := NewSchedule(cfg, stateT0)
		s.Throttled(stateT0)
		s.Recover(stateT0.Add(RecoverAfter)) // 60
		s.Throttled(stateT0.Add(RecoverAfter + time.Second))
		assert.Equal(t, 30.0, s.Bucket().PerMinute())
		s.Recover(stateT0.Add(2 * RecoverAfter))
		assert.Equal(t, 30.0, s.Bucket().PerMinute(), "RecoverAfter counts from the last throttle")
		s.Recover(stateT0.Add(2*RecoverAfter + time.Second))
		assert.Equal(t, 50.0, s.Bucket().PerMinute())
	})

	t.Run("RecoverWithoutThrottleChangesNothing", func(t *testing.T) {
		s := NewSchedule(cfg, stateT0)
		s.Recover(stateT0.Add(time.Hour))
		assert.Equal(t, 80.0, s.Bucket().PerMinute())
	})
}

func TestScheduleRetry(t *testing.T) {
	s := NewSchedule(stateSeedConfig, stateT0)
	full := func(max time.Duration) time.Duration { return max }
	tests := []struct {
		name    string
		attempt int
		want    time.Duration
	}{
		{"FirstRetryAfterOneSecond", 1, time.Second},
		{"SecondDoubles", 2, 2 * time.Second},
		{"ThirdDoublesAgain", 3, 4 * time.Second},
		{"NinthIs256s", 9, 256 * time.Second},
		{"TenthIsCapped", 10, MaxBackoff},
		{"HugeAttemptIsCapped", 1000, MaxBackoff},
		{"ZeroCountsAsFirst", 0, time.Second},
		{"NegativeCountsAsFirst", -3, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked time.Duration
			jitter := func(max time.Duration) time.Duration { asked = max; return full(max) }
			assert.Equal(t, stateT0.Add(tt.want), s.Retry(stateT0, tt.attempt, jitter))
			assert.Equal(t, tt.want, asked, "jitter gets the backoff as its bound")
		})
	}
	t.Run("FullJitterCanRetryAtOnce", func(t *testing.T) {
		zero := func(time.Duration) time.Duration { return 0 }
		assert.Equal(t, stateT0, s.Retry(stateT0, 5, zero))
	})
	t.Run("OutOfRangeJitterIsClamped", func(t *testing.T) {
		tooLong := func(max time.Duration) time.Duration { return 2 * max }
		negative := func(time.Duration) time.Duration { return -time.Hour }
		assert.Equal(t, stateT0.Add(4*time.Second), s.Retry(stateT0, 3, tooLong))
		assert.Equal(t, stateT0, s.Retry(stateT0, 3, negative))
	})
	t.Run("NilJitterWaitsTheWholeBackoff", func(t *testing.T) {
		assert.Equal(t, stateT0.Add(MaxBackoff), s.Retry(stateT0, 20, nil))
	})
	t.Run("RetryLeavesTenantStateAlone", func(t *testing.T) {
		s := NewSchedule(stateSeedConfig, stateT0)
		s.Retry(stateT0, 3, full)
		assert.Equal(t, 20.0, s.Bucket().Available(stateT0))
	})
}

func TestPairRate(t *testing.T) {
	for hits, want := range map[int]time.Duration{
		0: 4 * time.Second, 1: 4 * time.Second, 2: 16 * time.Second, 3: 64 * time.Second,
		5: 1024 * time.Second, 9: 1024 * time.Second,
	} {
		assert.Equal(t, stateT0.Add(want), PairRate(stateT0, hits), "refusal %d", hits)
	}
}

func TestScheduleStats(t *testing.T) {
	t.Run("FreshSchedule", func(t *testing.T) {
		s := NewSchedule(stateSeedConfig, stateT0)
		assert.Equal(t, ScheduleStats{
			TokensAvailable:    20,
			TokensMax:          20,
			EffectivePerMinute: 600,
			NextSlot:           stateT0,
			Window:             InitialWindow,
			Breaker:            BreakerStats{State: BreakerClosed},
		}, s.Stats(stateT0))
	})
	t.Run("NextSlotFollowsReservations", func(t *testing.T) {
		s := emptySchedule(t, stateSeedConfig)
		s.Admit(stateT0, Ticket{}, 0, false)
		st := s.Stats(stateT0)
		assert.Equal(t, -1.0, st.TokensAvailable)
		assert.Equal(t, stateT0.Add(200*time.Millisecond), st.NextSlot)
	})
	t.Run("NextSlotWaitsForOpenBreaker", func(t *testing.T) {
		s := openSchedule(t)
		st := s.Stats(stateT0)
		assert.Equal(t, stateT0.Add(stateOpenFor), st.NextSlot)
		assert.Equal(t, BreakerOpen, st.Breaker.State)
	})
	t.Run("ZeroConfigTakesSeedDefaults", func(t *testing.T) {
		s := NewSchedule(ScheduleConfig{}, stateT0)
		st := s.Stats(stateT0)
		assert.Equal(t, 80, st.TokensMax)
		assert.Equal(t, 80.0, st.EffectivePerMinute)
		for range 4 {
			s.Breaker().Failure(stateT0)
		}
		assert.True(t, s.Breaker().Failure(stateT0).Changed(), "fifth failure opens")
		assert.Equal(t, stateT0.Add(60*time.Second), s.Stats(stateT0).Breaker.OpenUntil)
		s.Breaker().Reset(stateT0)
		assert.Equal(t, ReasonBusy, s.Admit(stateT0, Ticket{}, DefaultMaxHeld, false).Reason)
	})
}

func BenchmarkScheduleAdmit(b *testing.B) {
	s := NewSchedule(ScheduleConfig{PerMinute: 600, Burst: 100}, stateT0)
	now := stateT0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(100 * time.Millisecond) // one token per job: the send path
		s.Admit(now, Ticket{}, 0, false)
	}
}

func TestScheduleRecheck(t *testing.T) {
	t.Run("AdmittedJobGoesAheadWhileTheBreakerStaysClosed", func(t *testing.T) {
		s := NewSchedule(stateSeedConfig, stateT0)
		require.True(t, s.Admit(stateT0, Ticket{}, 0, false).Send)
		ok, _ := s.Recheck(stateT0)
		assert.True(t, ok)
	})

	t.Run("BreakerOpenedSinceAdmissionDefersAndGivesTheTokenBack", func(t *testing.T) {
		s := NewSchedule(stateSeedConfig, stateT0)
		require.True(t, s.Admit(stateT0, Ticket{}, 0, false).Send)
		before := s.Bucket().Available(stateT0)
		for range stateSeedConfig.FailureThreshold {
			s.Breaker().Failure(stateT0)
		}
		ok, until := s.Recheck(stateT0)
		assert.False(t, ok)
		assert.Equal(t, stateT0.Add(stateOpenFor), until)
		assert.Equal(t, before+1, s.Bucket().Available(stateT0), "the token it held is given back")
	})

	t.Run("HalfOpenTrialIsNotRefusedItsOwnSend", func(t *testing.T) {
		s := openSchedule(t)
		later := stateT0.Add(stateOpenFor)
		d := s.Admit(later, Ticket{}, 0, false)
		require.True(t, d.Send, "the trial is admitted")
		ok, _ := s.Recheck(later)
		assert.True(t, ok, "and may still be sent when its turn comes")
	})
}

// observe records one whole send of latency d, started at t0.
func observe(s *Schedule, t0 time.Time, d time.Duration) {
	s.SendStarted(t0)
	s.SendEnded(t0, d)
}

func TestScheduleHoldCap(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	cfg := ScheduleConfig{PerMinute: 60000, Burst: 1000, MaxHeld: 2, MaxInFlight: 64}
	t.Run("IsMaxHeldWhileLatencyIsUnknown", func(t *testing.T) {
		s := NewSchedule(cfg, t0)
		assert.Equal(t, 1, s.Window())
		assert.Equal(t, 2, s.HoldCap(t0), "one sending, one next")
	})
	t.Run("IsMaxHeldWhileTheFirstSendIsInFlight", func(t *testing.T) {
		// The first send's time so far says nothing about how fast the
		// tenant is; it must not count as a fast latency sample.
		s := NewSchedule(cfg, t0)
		s.SendStarted(t0)
		for _, after := range []time.Duration{0, time.Microsecond, 5 * time.Millisecond, HoldBudget} {
			assert.Equal(t, 2, s.HoldCap(t0.Add(after)), "%v into the first send", after)
		}
		assert.False(t, s.CanStart(), "the window of one is full")
		d := s.Admit(t0.Add(time.Millisecond), Ticket{}, 2, false)
		assert.False(t, d.Send, "a tenant holding MaxHeld takes no third while its first send is out")
		assert.Equal(t, ReasonBusy, d.Reason)
	})
	t.Run("IsTheWindowAndOneNext", func(t *testing.T) {
		s := NewSchedule(cfg, t0)
		observe(s, t0, 100*time.Millisecond)
		s.Apply(t0, Judge(whatsapp.ClassAccepted, 1, 10), 1, 0, nil)
		assert.Equal(t, 64, s.Window(), "1,000/s at 100 ms needs more than max_in_flight 64")
		assert.Equal(t, 65, s.HoldCap(t0))
	})
	t.Run("AStalledSendMakesItHoldMaxHeld", func(t *testing.T) {
		s := NewSchedule(cfg, t0)
		for range 5 {
			observe(s, t0, 10*time.Millisecond)
			s.Apply(t0, Judge(whatsapp.ClassAccepted, 1, 10), 1, 0, nil)
		}
		assert.True(t, s.StallAt().IsZero(), "no send in flight")
		s.SendStarted(t0)
		stall := s.StallAt()
		assert.Equal(t, t0.Add(max(HoldBudget, 4*s.window.High())), stall)
		open := s.HoldCap(stall.Add(-time.Nanosecond))
		assert.Greater(t, open, 2)
		assert.Equal(t, 2, s.HoldCap(stall), "stalled")
		s.SendEnded(t0, 10*time.Millisecond)
		assert.Greater(t, s.HoldCap(stall), 2, "the send ended")
	})
	t.Run("AdmitDefersOnlyAtTheCap", func(t *testing.T) {
		s := NewSchedule(cfg, t0)
		assert.True(t, s.Admit(t0, Ticket{}, 1, false).Send)
		d := s.Admit(t0, Ticket{}, 2, false)
		assert.False(t, d.Send)
		assert.Equal(t, ReasonBusy, d.Reason)
	})
	t.Run("UnholdHandsOutBusySlotsInOrder", func(t *testing.T) {
		s := NewSchedule(cfg, t0)
		observe(s, t0, 10*time.Millisecond)
		first, second := s.Unhold(t0), s.Unhold(t0)
		assert.True(t, first.After(t0))
		assert.True(t, second.After(first))
	})
}

// A throttle in force when the tenant's rate is reloaded stays in force, as
// the same fraction of the new rate; the window keeps what it learnt under
// its new cap.
func TestReconfigureKeepsAThrottleRelativeToTheNewRate(t *testing.T) {
	now := time.Unix(1000, 0)
	s := NewSchedule(ScheduleConfig{PerMinute: 600, Burst: 10, MaxInFlight: 64}, now)
	s.Throttled(now)
	require.Equal(t, 300.0, s.Bucket().PerMinute(), "halved")
	s.Reconfigure(ScheduleConfig{PerMinute: 1200, Burst: 20, MaxInFlight: 4}, now)
	assert.Equal(t, 600.0, s.Bucket().PerMinute(), "still half, of the new rate")
	assert.Equal(t, 20, s.Bucket().Max())
	assert.LessOrEqual(t, s.window.Size(1e6), 4, "under the new cap")
}
