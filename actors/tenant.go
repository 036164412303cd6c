package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// MaxCrashes is how many times a job may be in hand when its tenant actor
// crashes before it is dead-lettered as poison.
const MaxCrashes = 3

// tenantActor is one incarnation of a tenant's actor; its state outlives it.
type tenantActor struct {
	st   *TenantState
	deps *Config
	log  *slog.Logger
	// mb is the actor's mailbox: its sends report to it directly, and
	// its handlers hand their goroutine on to a send or a settlement
	// (mailbox.runNext).
	mb *mailbox
}

// newTenantProps returns the props of one tenant actor's spawn, and the
// mailbox it gets (an incarnation after a restart keeps it).
func newTenantProps(st *TenantState, deps *Config) (*actor.Props, *mailbox) {
	logger := deps.Logger.With(slog.String("tenantId", st.cfg.ID))
	mb := new(mailbox)
	return actor.PropsFromProducer(func() actor.Actor {
		return &tenantActor{st: st, deps: deps, log: logger, mb: mb}
	}, actor.WithDispatcher(mailboxes{deps.pool}), actor.WithMailbox(func() actor.Mailbox { return mb })), mb
}

// run starts t on this goroutine once the mailbox is let go, if it may
// (mailbox.runNext), or else on the pool.
func (a *tenantActor) run(t task) {
	if !a.mb.runNext(t) {
		a.deps.pool.Run(t)
	}
}

func (a *tenantActor) Receive(ctx actor.Context) {
	defer a.noteCrash()
	defer a.reportHeld()
	if counted(ctx.Message()) {
		a.st.received++ // the router counted it too (see passivate)
	}
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		if a.deps.PassivateAfter > 0 {
			a.st.idleGen++
			a.armIdleCheck(ctx, a.deps.PassivateAfter)
		}
		a.pump(ctx, time.Now())
	case *idleCheck:
		a.checkIdle(ctx, msg)
	case *actor.Restarting:
		a.recoverFromCrash()
	case *actor.Stopping:
		a.handBack()
	case *messages.Dispatch:
		// One reading of the clock for the whole message: it is a
		// tenth of the actor's cost a job on a virtual machine.
		now := time.Now()
		a.touch(ctx, now)
		a.st.current = msg
		a.dispatch(ctx, msg, now)
		a.st.current = nil
	case *sendTask:
		now := time.Now()
		a.touch(ctx, now)
		a.st.current = msg.done.Dispatch
		a.sendDone(ctx, &msg.done, now)
		a.st.current = nil
		msg.recycle() // not when sendDone panics: supervision may read it
	case *wake:
		a.st.wakeAt = time.Time{}
		a.pump(ctx, time.Now())
	case *stallCheck:
		a.releaseIfStalled(ctx, msg)
	case *deadLetteredByRouter:
		a.st.deadLettered++
	case *emptyBucket:
		a.st.sched.Bucket().Drain(time.Now())
	case *reconfigureTenant:
		now := time.Now()
		a.st.reconfigure(msg.cfg, msg.tokens, now, a.deps)
		a.pump(ctx, now)
	case *messages.GetTenant:
		a.keepIdleCheck(ctx)
		ctx.Respond(a.info())
	case *messages.ResetBreaker:
		a.keepIdleCheck(ctx)
		now := time.Now()
		if tr := a.st.sched.Breaker().Reset(now); tr.Changed() {
			a.logTransition(tr, now)
		}
		ctx.Respond(a.info())
	case *messages.PauseTenant:
		a.keepIdleCheck(ctx)
		a.st.paused = true
		a.log.Info("tenant_paused")
		ctx.Respond(a.info())
	case *messages.ResumeTenant:
		a.keepIdleCheck(ctx)
		a.st.paused = false
		a.st.quarantine.Lift()
		a.log.Info("tenant_resumed")
		ctx.Respond(a.info())
	}
}

func (a *tenantActor) info() *messages.TenantInfo {
	info := a.st.info(time.Now(), true)
	return &info
}

// dispatch decides what to do with a job that just arrived.
func (a *tenantActor) dispatch(ctx actor.Context, m *messages.Dispatch, now time.Time) {
	st := a.st
	if !m.State.NotBefore.IsZero() && st.deferred > 0 {
		st.deferred--
	}
	if m.State.FirstSeen.IsZero() {
		m.State.FirstSeen = now
	}
	if m.State.Crashes >= MaxCrashes {
		a.deadLetter(m, messages.ReasonPoison, fmt.Sprintf("tenant actor crashed %d times handling it", m.State.Crashes), nil)
		return
	}
	if maxAge := st.cfg.MaxAge; maxAge > 0 && now.Sub(m.State.FirstSeen) > maxAge {
		a.deadLetter(m, messages.ReasonExpired, fmt.Sprintf("older than max_age %s", maxAge), nil)
		return
	}
	if wamid, ok := st.recent.get(m.Job.InternalID); ok {
		a.log.Info("duplicate_suppressed", slog.String("internalId", m.Job.InternalID), slog.String("wamid", wamid))
		a.complete(m, messages.Result{Status: messages.StatusSent, WAMID: wamid, Attempts: m.State.Attempts}, now)
		return
	}
	l, n := st.placeIn(m.Job.To, m.State.Place)
	m.Place, m.Placed = n, true
	if !l.mayGo(n, now) {
		// Its recipient's earlier job is pending: it waits behind it.
		a.deferJob(m, now, st.followerBack(l, n, now), m.State.Reservation == st.epoch, ReasonInOrder)
		return
	}
	l.busy = true
	ticket := Ticket{NotBefore: m.State.NotBefore, Reserved: m.State.Reservation != "" && m.State.Reservation == st.epoch}
	d := st.sched.Admit(now, ticket, a.heldForAdmission(now), st.sendsStopped())
	if d.Transition.Changed() {
		a.logTransition(d.Transition, now)
	}
	if !d.Send {
		a.deferJob(m, now, d.NotBefore, d.Reserved, d.Reason)
		return
	}
	m.State.Reservation = ""
	st.waiting = append(st.waiting, waitingJob{m: m, due: d.NotBefore})
	a.pump(ctx, now)
	a.watchForStall(ctx)
}

// heldForAdmission is what Admit is told the tenant holds. Two rules
// change it, both only for a tenant that already holds its fair minimum
// (DefaultMaxHeld) in a process with a prefetch window:
//
//   - Sharing: its whole HoldCap, so that it takes no more, when all but
//     fairReserve of the window is held, another tenant's job may be
//     waiting for a slot, and its own slots are slow to come back (see
//     slowToFree), so that one tenant never takes the slots its
//     neighbours' jobs need to reach the worker at all.
//   - Start-up: nothing, so that it holds what reaches it, while no send
//     of it has ended yet (its latency is unknown), its first send has
//     not stalled and the window has more than fairReserve free: all of
//     it while it is the only tenant holding anything, up to startupHold
//     beside others. Before its first answer its window is one send, and
//     its HoldCap two; deferring the rest sent each through a delay queue
//     to come back when that answer was likely in, a broker round trip a
//     job for a tenant that could take them all a few milliseconds later.
//     Beside other busy tenants it holds a few only: if its first send is
//     slow, what it held would be theirs to wait for until its stall
//     check. The reserve stays free for tenants that start meanwhile, and
//     the stall guard (watchForStall) gives back what it holds beyond
//     MaxHeld if that first send hangs.
func (a *tenantActor) heldForAdmission(now time.Time) int {
	st := a.st
	held := st.held()
	p := a.deps.Prefetch
	if p <= 0 || held < DefaultMaxHeld {
		return held
	}
	full := a.deps.held.Load() >= int64(p-fairReserve(p))
	switch {
	case full && a.slowToFree() && a.contended():
		return max(held, st.sched.HoldCap(now))
	case !full && st.sched.Latency() == 0 && !st.sched.Stalled(now) &&
		(held < startupHold || a.deps.holders.Load() <= 1):
		return 0
	}
	return held
}

// slowToFree reports whether the slots this tenant holds may stay held
// for longer than a deferral takes to come back (MinBusySpacing, the
// smallest delay tier): its latency is unknown, or its high estimate is
// at least that. A tenant whose sends answer sooner frees a slot for a
// waiting job sooner than deferring its own would, and the deferral
// would only cost the broker a delay-queue trip.
func (a *tenantActor) slowToFree() bool {
	l := a.st.sched.HighLatency()
	return l <= 0 || l >= MinBusySpacing
}

// contended reports whether another tenant's job may be waiting for one of
// the slots this tenant holds: behind its jobs in its shard's queue
// (another configured tenant shares the shard), or in another shard's,
// waiting at the broker for room in the prefetch window. Deferring a job
// makes room by moving it out of the way; with nobody waiting it would
// only cost the broker a delay-queue trip, and this tenant the job's
// slot in its window.
func (a *tenantActor) contended() bool {
	if (*a.deps.crowded.Load())[a.st.shard] {
		return true
	}
	return a.deps.Shards != nil && a.deps.Shards.WaitingBesides(int(a.st.shard))
}

// startupHold is how many deliveries a tenant whose latency is unknown
// holds beside other busy tenants (heldForAdmission).
const startupHold = 8

// fairReserve is how many of the prefetch slots are kept for tenants that
// hold less than their fair minimum: a tenth of them, at least two.
func fairReserve(prefetch int) int { return max(DefaultMaxHeld, prefetch/10) }

// wake asks the tenant to look at its waiting jobs again.
type wake struct{}

// The actor's timer messages may reach it after it stopped (passivation,
// shutdown); that is expected, and protoactor need not log them.
func (*wake) IgnoreDeadLetterLogging()       {}
func (*idleCheck) IgnoreDeadLetterLogging()  {}
func (*stallCheck) IgnoreDeadLetterLogging() {}

// pump starts waiting jobs, in order, while the window has room; now is
// when the message that called it arrived.
func (a *tenantActor) pump(ctx actor.Context, now time.Time) {
	st := a.st
	for st.sched.CanStart() && len(st.waiting) > 0 {
		if due := st.waiting[0].due; due.After(now) {
			a.wakeUpAt(ctx, due)
			return
		}
		m := st.waiting[0].m
		st.waiting[0] = waitingJob{}
		if len(st.waiting) == 1 {
			st.waiting = st.waiting[:0] // its capacity serves the next job
		} else {
			st.waiting = st.waiting[1:]
		}
		if st.sendsStopped() {
			a.deferJob(m, now, now.Add(PauseRecheck), true, ReasonPaused)
			continue
		}
		if ok, until := st.sched.Recheck(now); !ok {
			a.deferJob(m, now, until, false, ReasonBreakerOpen)
			continue
		}
		if m.Delivery.Stale() {
			// Its channel died while it waited: the broker hands it out
			// again, and sending this copy too would send it twice.
			_ = m.Delivery.Requeue()
			a.st.comingBack(m, now)
			a.log.Info("stale_delivery_dropped", slog.String("internalId", m.Job.InternalID))
			continue
		}
		a.startSend(ctx, m, now)
	}
}

// idleCheck asks the tenant whether it has been idle for PassivateAfter.
// gen tells a check armed by an earlier incarnation (before a restart),
// which is dropped. protoactor's ReceiveTimeout is not used: a request
// (an admin question, a metrics scrape) arrives in an envelope, which
// resets the timeout whatever its message says, so watching a tenant
// would keep it from ever being passivated.
type idleCheck struct{ gen int }

func (a *tenantActor) armIdleCheck(ctx actor.Context, after time.Duration) {
	a.st.idleArmed = true
	self, root, msg := ctx.Self(), ctx.ActorSystem().Root, &idleCheck{a.st.idleGen}
	time.AfterFunc(after, func() { root.Send(self, msg) })
}

// checkIdle asks the router to stop this actor when no job has come or
// gone for PassivateAfter and the tenant has nothing in hand (no send in
// flight, no job waiting, no wake-up due); otherwise it looks again later.
func (a *tenantActor) checkIdle(ctx actor.Context, c *idleCheck) {
	st := a.st
	if c.gen != st.idleGen {
		return
	}
	st.idleArmed = false
	now := time.Now()
	if quiet := now.Sub(st.lastActive); quiet < a.deps.PassivateAfter {
		a.armIdleCheck(ctx, a.deps.PassivateAfter-quiet)
		return
	}
	st.compact(now)
	if len(st.sending) > 0 || len(st.waiting) > 0 || st.wakeAt.After(now) {
		a.armIdleCheck(ctx, a.deps.PassivateAfter)
		return
	}
	// No check stays armed: a stopped actor's timer would only reach a
	// dead letter. If the router declines (a job is on its way), that job
	// arms the next check.
	info := st.info(now, false)
	ctx.Send(ctx.Parent(), &passivate{pid: ctx.Self(), received: st.received, info: &info})
}

// keepIdleCheck is called for an admin question or command. It is not
// activity: watching a tenant must not keep it from being passivated. But
// a passivation request it raced was declined, so an idle check must be
// armed again; it passivates the tenant PassivateAfter after its last job,
// or at the check after that.
func (a *tenantActor) keepIdleCheck(ctx actor.Context) {
	if a.deps.PassivateAfter > 0 && !a.st.idleArmed {
		a.armIdleCheck(ctx, a.deps.PassivateAfter)
	}
}

// touch records activity (at now) and makes sure an idle check is armed.
func (a *tenantActor) touch(ctx actor.Context, now time.Time) {
	a.st.lastActive = now
	if a.deps.PassivateAfter > 0 && !a.st.idleArmed {
		a.armIdleCheck(ctx, a.deps.PassivateAfter)
	}
}

// stallCheck asks the tenant whether its oldest send in flight has
// stalled (Schedule.StallAt).
type stallCheck struct{ at time.Time }

// watchForStall arranges one stallCheck for the oldest send in flight
// while the tenant holds more than MaxHeld: holding more is only right
// while its sends answer.
func (a *tenantActor) watchForStall(ctx actor.Context) {
	st := a.st
	at := st.sched.StallAt()
	if at.IsZero() || st.stallAt.Equal(at) || st.held() <= a.deps.MaxHeld {
		return
	}
	st.stallAt = at
	self, root := ctx.Self(), ctx.ActorSystem().Root
	time.AfterFunc(max(time.Until(at), 0), func() { root.Send(self, &stallCheck{at}) })
}

// releaseIfStalled defers the deliveries the tenant holds beyond its
// HoldCap when its sends have stalled: a tenant whose API stopped
// answering must not keep prefetch slots for the whole timeout. The
// newest go, giving their tokens back (Schedule.Unhold), in order.
func (a *tenantActor) releaseIfStalled(ctx actor.Context, c *stallCheck) {
	st := a.st
	if !st.stallAt.Equal(c.at) {
		return
	}
	st.stallAt = time.Time{}
	now := time.Now()
	if !st.sched.Stalled(now) {
		a.watchForStall(ctx) // the oldest send ended; watch the next
		return
	}
	excess := min(st.held()-st.sched.HoldCap(now), len(st.waiting))
	if excess <= 0 {
		return
	}
	keep := len(st.waiting) - excess
	released := slices.Clone(st.waiting[keep:])
	clear(st.waiting[keep:])
	st.waiting = st.waiting[:keep]
	for _, w := range released {
		a.deferJob(w.m, now, st.sched.Unhold(now), false, ReasonBusy)
	}
}

// wakeUpAt arranges a wake message at t (at most Slack + SendGuard ahead),
// unless one is already due by then.
func (a *tenantActor) wakeUpAt(ctx actor.Context, t time.Time) {
	st := a.st
	now := time.Now()
	if !st.wakeAt.IsZero() && !st.wakeAt.After(t) && st.wakeAt.After(now) {
		return
	}
	st.wakeAt = t
	self, root := ctx.Self(), ctx.ActorSystem().Root
	time.AfterFunc(t.Sub(now), func() { root.Send(self, &wake{}) })
}

// startSend runs the Meta call on the pool and reports back with a
// sendTask (its SendDone), so the mailbox keeps answering while the call
// runs.
func (a *tenantActor) startSend(ctx actor.Context, m *messages.Dispatch, started time.Time) {
	st := a.st
	st.sending = append(st.sending, inFlight{m, started})
	st.sched.SendStarted(started)
	a.watchForStall(ctx)
	t := sendTasks.Get().(*sendTask)
	t.done = messages.SendDone{Dispatch: m, Started: started}
	t.sender, t.tokens, t.phone, t.base, t.mb = a.deps.Sender, st.tokens, st.cfg.PhoneNumberID, a.deps.Context, a.mb
	a.run(t)
}

// sendTask is one Meta call on the pool, and then the message that
// reports its outcome (done) to the tenant actor. What the call needs is
// copied in when it starts: the tenant's state is the actor's alone. The
// actor hands the task back to sendTasks once it has applied the outcome,
// so a send allocates nothing of its own.
type sendTask struct {
	done   messages.SendDone
	sender whatsapp.Sender
	tokens whatsapp.TokenSource
	phone  string
	base   context.Context
	mb     *mailbox // the tenant's, to which the outcome goes
}

var sendTasks = sync.Pool{New: func() any { return new(sendTask) }}

// recycle clears t (it must not keep a job, a token source or an error
// alive) and hands it back for another send.
func (t *sendTask) recycle() {
	*t = sendTask{}
	sendTasks.Put(t)
}

func (t *sendTask) run() { runChain(t) }

// runThen makes the call, then hands the outcome to the tenant's mailbox
// and, when that was idle, runs it on this goroutine (mailbox.postHere):
// the goroutine is free anyway, and waking another would be one more
// hand-off a job. It returns what the mailbox left to run next.
func (t *sendTask) runThen() (next task) {
	done := &t.done
	defer func() {
		if r := recover(); r != nil {
			done.Panic = r
		}
		if t.base.Err() != nil && done.Panic == nil {
			// The worker is stopping: nothing can settle this job
			// now (settlements share the context), and its actor may
			// be gone. Its delivery returns to the queue unacked.
			return
		}
		next = t.mb.postHere(t)
	}()
	// Timed from when the actor started the send: the task runs at once
	// (runNext, or a pool goroutine that never waits), so a reading of
	// the clock here would only cost one more.
	m, sender, tokens, base, start := done.Dispatch, t.sender, t.tokens, t.base, done.Started
	token, err := tokens.Token()
	if err != nil {
		done.Err, done.Duration = err, time.Since(start)
		return
	}
	done.Calls = 1 // counted even if the call panics
	resp, err := sender.Send(base, whatsapp.Request{PhoneNumberID: t.phone, Token: token, Payload: m.Job.Payload})
	if err != nil && whatsapp.Classify(err) == whatsapp.ClassAuth {
		done.AuthErr = err
		changed, rerr := tokens.Refresh()
		if rerr == nil && changed {
			done.TokenChanged = true
			if token, terr := tokens.Token(); terr == nil {
				resp, err = sender.Send(base, whatsapp.Request{PhoneNumberID: t.phone, Token: token, Payload: m.Job.Payload})
				done.Calls = 2
			}
		}
	}
	done.WAMID, done.Err, done.Duration = resp.WAMID, err, time.Since(start)
	return nil // the deferred function posts the outcome
}

// sendDone applies a send's outcome to the tenant's state and settles the job.
func (a *tenantActor) sendDone(ctx actor.Context, r *messages.SendDone, now time.Time) {
	st := a.st
	if st.dropSending(r.Dispatch) {
		st.sched.SendEnded(r.Started, r.Duration)
	}
	m := r.Dispatch
	m.State.Attempts += r.Calls
	if r.Panic != nil {
		panic(fmt.Sprintf("send for %s panicked: %v", m.Job.InternalID, r.Panic))
	}
	defer a.pump(ctx, now)
	a.deps.Observer.SendLatency(st.cfg.ID, r.Duration)
	if r.AuthErr != nil {
		a.log.Error("meta_api_auth_error",
			slog.String("internalId", m.Job.InternalID),
			slog.Int("errorCode", apiCode(r.AuthErr)),
			slog.Int("errorSubcode", apiSubcode(r.AuthErr)),
			slog.String("fbtrace", apiTrace(r.AuthErr)),
			slog.Bool("cacheInvalidated", true),
			slog.Bool("tokenChanged", r.TokenChanged))
	}
	class := whatsapp.Classify(r.Err)
	if class != whatsapp.ClassAccepted {
		st.lastError, st.lastErrorAt = errorSummary(r.Err), now
		a.logAPIError(m, r)
	}
	v := Judge(class, m.State.Attempts, st.cfg.MaxAttempts)
	pairHits := 0
	if l := st.lines[m.Job.To]; l != nil {
		switch {
		case v.Reason == ReasonPairRate:
			l.pairHits++
		case v.Job == JobSent:
			l.pairHits = 0
		}
		pairHits = l.pairHits
	}
	notBefore, reserved, tr := st.sched.Apply(now, v, m.State.Attempts, pairHits, a.deps.Jitter)
	if tr.Changed() {
		a.logTransition(tr, now)
	}
	switch v.Job {
	case JobSent:
		if st.recent.max == 0 {
			st.recent.max = a.deps.DedupeSize
		}
		st.recent.add(m.Job.InternalID, r.WAMID)
		// LogAttrs: the one line of every job, without boxing each
		// attribute into an interface (four allocations a job).
		a.log.LogAttrs(a.deps.Context, slog.LevelInfo, "message_delivered",
			slog.String("internalId", m.Job.InternalID),
			slog.String("wamid", r.WAMID),
			slog.Int64("duration", r.Duration.Milliseconds()),
			slog.Int("retryCount", m.State.Attempts-1))
		a.complete(m, messages.Result{Status: messages.StatusSent, WAMID: r.WAMID, Attempts: m.State.Attempts}, now)
	case JobDeferred:
		a.deferJob(m, now, notBefore, reserved, v.Reason)
	case JobFailed:
		a.fail(m, r.Err)
	case JobExhausted:
		a.deadLetter(m, messages.ReasonRetriesExhausted,
			fmt.Sprintf("%d attempts, last: %s", m.State.Attempts, errorSummary(r.Err)), r.Err)
	}
}

// deferJob hands the job back to the broker through the delay tier that
// returns it at notBefore, then acks the original.
func (a *tenantActor) deferJob(m *messages.Dispatch, now, notBefore time.Time, reserved bool, reason DeferReason) {
	st := a.st
	st.comingBack(m, notBefore)
	state := m.State
	state.NotBefore = notBefore
	state.Reservation = ""
	state.Place = st.placeOf(m)
	if reserved {
		state.Reservation = st.epoch
	}
	wait := notBefore.Sub(now)
	if reason != ReasonEarly {
		state.Deferrals++
		st.deferredTotal++
		a.deps.Observer.Deferred(st.cfg.ID, reason.String())
	}
	st.deferred++
	// A job back early is only taking the next delay tier: not a deferral.
	level, event := slog.LevelInfo, "message_deferred"
	if reason == ReasonEarly {
		level, event = slog.LevelDebug, "message_rescheduled"
	}
	if reason == ReasonRateLimited {
		stats := st.sched.Stats(now)
		a.log.Warn("rate_limit_exceeded",
			slog.String("internalId", m.Job.InternalID),
			slog.Group("rateLimit", slog.Float64("available", max(0, stats.TokensAvailable)), slog.Int("max", stats.TokensMax)),
			slog.Int64("delayMs", wait.Milliseconds()))
	}
	a.log.LogAttrs(a.deps.Context, level, event,
		slog.String("internalId", m.Job.InternalID),
		slog.String("reason", reason.String()),
		slog.Int64("delayMs", wait.Milliseconds()),
		slog.Int("retryCount", state.Attempts))
	headers := map[string]any{messages.HeaderDeferReason: reason.String()}
	state.WriteTo(headers)
	b := a.deps.Broker
	a.settle(m, b.DeferMessage(m.Delivery, wait, headers))
}

// complete publishes a terminal result for a job and acks it.
func (a *tenantActor) complete(m *messages.Dispatch, res messages.Result, now time.Time) {
	a.leftLine(m)
	if res.Status == messages.StatusSent {
		a.st.sent++
	}
	a.deps.Observer.JobOutcome(a.st.cfg.ID, res.Status)
	a.settle(m, a.resultMessage(m, res, now))
}

func (a *tenantActor) resultMessage(m *messages.Dispatch, res messages.Result, now time.Time) broker.Message {
	if !m.State.FirstSeen.IsZero() {
		res.DurationMs = now.Sub(m.State.FirstSeen).Milliseconds()
	}
	return a.deps.Broker.ResultMessage(res.Status, res.MarshalFor(&m.Job, now), now)
}

// fail reports a permanent error: a failed result, and the job to the DLQ.
func (a *tenantActor) fail(m *messages.Dispatch, err error) {
	a.leftLine(m)
	now := time.Now()
	a.st.failed++
	res := messages.Result{Status: messages.StatusFailed, Attempts: m.State.Attempts}
	var apiErr *whatsapp.APIError
	if errors.As(err, &apiErr) {
		res.ErrorCode, res.ErrorMessage, res.FBTraceID = apiErr.Code, apiErr.Message, apiErr.FBTraceID
	} else if err != nil {
		res.ErrorMessage = err.Error()
	}
	a.log.Warn("message_failed",
		slog.String("internalId", m.Job.InternalID),
		slog.Int("errorCode", res.ErrorCode),
		slog.Int("errorSubcode", apiSubcode(err)),
		slog.String("fbtrace", res.FBTraceID),
		slog.Int("retryCount", m.State.Attempts-1))
	a.deps.Observer.JobOutcome(a.st.cfg.ID, messages.StatusFailed)
	headers := a.dlqHeaders(m, messages.ReasonPermanentError, res.ErrorMessage, err)
	a.settle(m, a.resultMessage(m, res, now), a.deps.Broker.DeadLetterMessage(m.Delivery, headers))
}

// deadLetter sends the job to the DLQ with a dead_lettered result.
func (a *tenantActor) deadLetter(m *messages.Dispatch, reason, detail string, err error) {
	a.leftLine(m)
	now := time.Now()
	a.st.deadLettered++
	a.log.Warn("message_dead_lettered",
		slog.String("internalId", m.Job.InternalID),
		slog.String("reason", reason),
		slog.String("detail", detail),
		slog.Int("retryCount", max(0, m.State.Attempts-1)))
	a.deps.Observer.JobOutcome(a.st.cfg.ID, messages.StatusDeadLettered)
	res := messages.Result{Status: messages.StatusDeadLettered, Attempts: m.State.Attempts, Reason: reason}
	var apiErr *whatsapp.APIError
	if errors.As(err, &apiErr) {
		res.ErrorCode, res.ErrorMessage, res.FBTraceID = apiErr.Code, apiErr.Message, apiErr.FBTraceID
	}
	headers := a.dlqHeaders(m, reason, detail, err)
	a.settle(m, a.resultMessage(m, res, now), a.deps.Broker.DeadLetterMessage(m.Delivery, headers))
}

func (a *tenantActor) dlqHeaders(m *messages.Dispatch, reason, detail string, err error) map[string]any {
	h := map[string]any{messages.HeaderDLQReason: reason}
	if detail != "" {
		h[messages.HeaderDLQDetail] = detail
	}
	var apiErr *whatsapp.APIError
	if errors.As(err, &apiErr) {
		h[messages.HeaderErrorCode] = int64(apiErr.Code)
		if apiErr.FBTraceID != "" {
			h[messages.HeaderFBTraceID] = apiErr.FBTraceID
		}
	}
	state := m.State
	state.NotBefore, state.Reservation, state.Place = time.Time{}, "", ""
	state.WriteTo(h)
	return h
}

// settle publishes what replaces a job (one or two messages) and acks
// it, off the actor.
func (a *tenantActor) settle(m *messages.Dispatch, msgs ...broker.Message) {
	t := settleTasks.Get().(*settleTask)
	t.b, t.ctx, t.log, t.m = a.deps.Broker, a.deps.Context, a.log, m
	t.msgs = append(t.msgs, msgs...)
	a.run(t)
}

// settleTask is one settlement on the pool, recycled once it is done
// (see sendTask), with the capacity of its list of messages.
type settleTask struct {
	b    Broker
	ctx  context.Context
	log  *slog.Logger
	m    *messages.Dispatch
	msgs []broker.Message
}

var settleTasks = sync.Pool{New: func() any { return new(settleTask) }}

func (t *settleTask) run() {
	if err := t.b.Settle(t.ctx, t.m.Delivery, t.msgs...); err != nil {
		t.log.Error("settle_failed", slog.String("internalId", t.m.Job.InternalID), slog.String("error", err.Error()))
	}
	clear(t.msgs)
	*t = settleTask{msgs: t.msgs[:0]}
	settleTasks.Put(t)
}

// reportHeld adds what the tenant's held deliveries changed by to the
// process's count, and counts it among the holders while it holds any.
func (a *tenantActor) reportHeld() {
	h := a.st.held()
	if h == a.st.reported {
		return
	}
	a.deps.held.Add(int64(h - a.st.reported))
	switch {
	case a.st.reported == 0:
		a.deps.holders.Add(1)
	case h == 0:
		a.deps.holders.Add(-1)
	}
	a.st.reported = h
}

// leftLine is told that m reached its outcome (sent, failed, dead-lettered):
// when m was its recipient's head, the next job of the line may go.
func (a *tenantActor) leftLine(m *messages.Dispatch) {
	if l, n, ok := a.st.lineOf(m); ok && n == l.head {
		a.st.endHead(m.Job.To)
	}
}

// noteCrash keeps what the actor panicked with for the restart's log line,
// and lets the panic go on to supervision.
func (a *tenantActor) noteCrash() {
	if p := recover(); p != nil {
		a.st.crash = p
		panic(p)
	}
}

// recoverFromCrash runs on the crashed incarnation before its replacement
// starts: the restart is counted (and may quarantine the tenant), and the
// job in hand goes back to the queue with its crash counted, or to the DLQ
// as poison after MaxCrashes, and is dropped from the state.
func (a *tenantActor) recoverFromCrash() {
	st := a.st
	now := time.Now()
	st.restarts++
	a.deps.Observer.TenantRestarted(st.cfg.ID)
	a.log.Error("tenant_actor_restarted",
		slog.String("reason", fmt.Sprint(st.crash)),
		slog.Int("restarts", st.restarts))
	st.crash = nil
	if st.quarantine.Restarted(now) {
		a.log.Error("tenant_quarantined", slog.Int("restarts", st.quarantine.Recent()),
			slog.String("window", st.quarantine.Window.String()))
	}
	m := st.current
	st.current = nil
	if m == nil {
		return
	}
	for _, f := range st.sending {
		if f.m == m {
			st.dropSending(m)
			st.sched.SendEnded(f.start, time.Since(f.start))
			break
		}
	}
	a.st.comingBack(m, now)
	for i, w := range st.waiting {
		if w.m == m {
			st.waiting = append(st.waiting[:i], st.waiting[i+1:]...)
			break
		}
	}
	m.State.Crashes++
	if m.State.Crashes >= MaxCrashes {
		a.deadLetter(m, messages.ReasonPoison, fmt.Sprintf("tenant actor crashed %d times handling it", m.State.Crashes), nil)
		return
	}
	a.log.Warn("message_requeued", slog.String("internalId", m.Job.InternalID),
		slog.Int("crashes", m.State.Crashes))
	a.requeue(m)
}

// handBack runs when the actor stops with jobs it admitted but has not
// sent (passivation stops only an idle actor; a restart of the router
// stops them all): each goes back to the job queue, keeping its history.
func (a *tenantActor) handBack() {
	st := a.st
	waiting := st.waiting
	st.waiting, st.wakeAt = nil, time.Time{}
	now := time.Now()
	for _, w := range waiting {
		a.st.comingBack(w.m, now)
		a.requeue(w.m)
	}
}

// requeue puts the job back in the job queue with the history it carries
// (attempts, crashes) but no schedule of this process's.
func (a *tenantActor) requeue(m *messages.Dispatch) {
	headers := map[string]any{}
	state := m.State
	state.NotBefore, state.Reservation, state.Place = time.Time{}, "", a.st.placeOf(m)
	state.WriteTo(headers)
	a.settle(m, a.deps.Broker.RequeueMessage(m.Delivery, headers))
}

func (a *tenantActor) logTransition(tr Transition, now time.Time) {
	stats := a.st.sched.Breaker().Stats(now)
	switch tr.To {
	case BreakerOpen:
		a.log.Warn("circuit_breaker_opened",
			slog.Int("failureCount", stats.ConsecutiveFailures),
			slog.String("circuitState", tr.To.String()),
			slog.Time("openUntil", stats.OpenUntil))
	case BreakerHalfOpen:
		a.log.Info("circuit_breaker_half_open", slog.String("circuitState", tr.To.String()))
	case BreakerClosed:
		a.log.Info("circuit_breaker_closed", slog.String("circuitState", tr.To.String()))
	}
}

func (a *tenantActor) logAPIError(m *messages.Dispatch, r *messages.SendDone) {
	attrs := []slog.Attr{
		slog.String("internalId", m.Job.InternalID),
		slog.String("class", whatsapp.Classify(r.Err).String()),
		slog.Int("retryCount", m.State.Attempts-1),
		slog.Int64("duration", r.Duration.Milliseconds()),
		slog.String("error", r.Err.Error()),
	}
	var apiErr *whatsapp.APIError
	if errors.As(r.Err, &apiErr) {
		attrs = append(attrs,
			slog.Int("errorCode", apiErr.Code),
			slog.Int("errorSubcode", apiErr.Subcode),
			slog.String("fbtrace", apiErr.FBTraceID),
			slog.Int("httpStatus", apiErr.HTTPStatus))
	}
	a.log.LogAttrs(a.deps.Context, slog.LevelWarn, "meta_api_error", attrs...)
}

func apiCode(err error) int {
	var apiErr *whatsapp.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code
	}
	return 0
}

func apiSubcode(err error) int {
	var apiErr *whatsapp.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Subcode
	}
	return 0
}

func apiTrace(err error) string {
	var apiErr *whatsapp.APIError
	if errors.As(err, &apiErr) {
		return apiErr.FBTraceID
	}
	return ""
}

func errorSummary(err error) string {
	if err == nil {
		return ""
	}
	var apiErr *whatsapp.APIError
	if errors.As(err, &apiErr) {
		if !apiErr.HasCode && apiErr.Code == 0 {
			return "HTTP " + strconv.Itoa(apiErr.HTTPStatus) + ": " + apiErr.Message
		}
		return "code " + strconv.Itoa(apiErr.Code) + ": " + apiErr.Message
	}
	return err.Error()
}
