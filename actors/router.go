package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// AskTimeout bounds how long the router waits for a tenant to answer an
// admin question.
const AskTimeout = 2 * time.Second

// tenantEntry is the router's record of one configured tenant.
type tenantEntry struct {
	cfg   config.Tenant
	state *TenantState // created on first use, kept for the process's life
	pid   *actor.PID
	mb    *mailbox // pid's, while pid is set
	// dispatched counts the messages that change the tenant's state sent
	// to its actors (see counted), to tell whether a passivation request
	// raced one (see passivate).
	dispatched int64
	// stopping is the passivated actor until its Terminated arrives;
	// messages for the tenant wait in pending meanwhile, and listings show
	// stoppingInfo, what the actor reported when it asked to stop (the
	// state is still its own until it has stopped). A pointer: every
	// configured tenant has an entry, and only a stopping one needs it.
	stopping     *actor.PID
	stoppingInfo *messages.TenantInfo
	pending      []pendingMsg
	// shard is the tenant's shard (0 without shards); startEmpty makes
	// its state, when first created, start with a bucket emptied when its
	// shard was acquired: the worker that owned it before may have just
	// spent the tenant's burst.
	shard      int32
	startEmpty bool
}

// pendingMsg is a message for a tenant whose passivated actor has not
// stopped yet; sender is set for an admin question.
type pendingMsg struct {
	msg    any
	sender *actor.PID
}

// routerState is what outlives an incarnation of the router: the
// configuration, every tenant's entry (and so its state), and the pool that
// runs sends and settlements. One per router, created by NewRouterProps.
type routerState struct {
	deps    *Config
	epoch   string
	tenants map[string]*tenantEntry
	ids     []string // sorted
	// owned are the shards this worker owns (with Config.Shards), and
	// when each was acquired.
	owned      map[int]bool
	acquiredAt map[int]time.Time
	// slab is where tenants' states are made (see stateSlab).
	slab stateSlab
	// mb is the router's mailbox, which hands its goroutine on to a
	// tenant's (see sendToTenant).
	mb *mailbox
}

// router is one incarnation of the router actor. Supervision makes a new
// one on every restart, on the same routerState; what belongs to an
// incarnation alone (its children, by PID) starts empty.
type router struct {
	*routerState
	byPID map[string]*tenantEntry
}

// NewRouterProps returns the props of the router actor. The router
// supervises its tenant actors one-for-one and without a limit: a panic
// restarts only that tenant's actor, on the same state, however often. A
// tenant that keeps crashing quarantines itself (Config.QuarantineAfter):
// its jobs are deferred, not sent, until an operator resumes it, so nothing
// is lost to a supervisor giving up. The router's own panics are recovered
// per message (see Receive), so one bad delivery cannot restart it and stop
// every tenant with it.
func NewRouterProps(cfg Config) *actor.Props {
	deps := &cfg
	deps.withDefaults()
	deps.pool = newPool(max(16, 2*deps.Prefetch))
	deps.lanes = newLanes(deps.pool, moveLanes)
	deps.held = new(atomic.Int64)
	deps.holders = new(atomic.Int64)
	deps.crowded = new(atomic.Pointer[map[int32]bool])
	st := &routerState{deps: deps, epoch: newEpoch(), tenants: map[string]*tenantEntry{}, owned: map[int]bool{},
		acquiredAt: map[int]time.Time{}, mb: new(mailbox)}
	for _, t := range cfg.Tenants {
		e := &tenantEntry{cfg: t}
		if deps.Shards != nil {
			e.shard = int32(deps.Shards.ShardOf(t.ID))
		}
		st.tenants[t.ID] = e
		st.ids = append(st.ids, t.ID)
	}
	sort.Strings(st.ids)
	st.countShardMates()
	return actor.PropsFromProducer(func() actor.Actor {
		return &router{routerState: st, byPID: map[string]*tenantEntry{}}
	}, actor.WithSupervisor(actor.NewRestartingStrategy()), actor.WithDispatcher(mailboxes{deps.pool}),
		actor.WithMailbox(func() actor.Mailbox { return st.mb }))
}

func (r *router) Receive(ctx actor.Context) {
	defer r.recoverMessage(ctx)
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		r.started(ctx)
	case *actor.Stopped:
		// Nothing is sent or settled after the router: wait for what
		// runs (bounded by Config.Context) and end the pool's goroutines.
		// This one is among them: it ends after this burst.
		r.deps.pool.CloseFromTask()
	case *messages.Deliver:
		r.deliver(ctx, msg)
	case *messages.ListTenants:
		r.listTenants(ctx)
	case *messages.ShardsChanged:
		r.shardsChanged(ctx, msg)
	case *Reconfigure:
		r.reconfigure(ctx, msg)
	case *messages.GetTenant:
		r.forwardAdmin(ctx, msg.TenantID)
	case *messages.ResetBreaker:
		r.forwardAdmin(ctx, msg.TenantID)
	case *messages.PauseTenant:
		r.forwardAdmin(ctx, msg.TenantID)
	case *messages.ResumeTenant:
		r.forwardAdmin(ctx, msg.TenantID)
	case *passivate:
		r.passivate(ctx, msg)
	case *actor.Terminated:
		r.terminated(ctx, msg.Who)
	}
}

// started makes a new incarnation consistent with the state it inherits:
// its predecessor's children were stopped by the restart (their states
// are kept), so every tenant starts a new actor on its next message.
func (r *router) started(ctx actor.Context) {
	for _, e := range r.tenants {
		e.pid, e.mb, e.stopping, e.stoppingInfo = nil, nil, nil, nil
		if e.state != nil {
			e.dispatched = e.state.received
		}
		pending := e.pending
		e.pending = nil
		for _, p := range pending {
			r.sendToTenant(ctx, e, p.msg, p.sender)
		}
	}
	r.deps.Logger.Debug("router_started", slog.Int("tenants", len(r.ids)))
}

// recoverMessage keeps a panic in the router from restarting it (which
// would stop every tenant's actor): the delivery being handled is
// dead-lettered as poison, an admin question is answered with an error.
func (r *router) recoverMessage(ctx actor.Context) {
	p := recover()
	if p == nil {
		return
	}
	r.deps.Logger.Error("router_panic", slog.String("message", fmt.Sprintf("%T", ctx.Message())), slog.String("reason", fmt.Sprint(p)))
	switch msg := ctx.Message().(type) {
	case *messages.Deliver:
		r.reject(ctx, msg, messages.ReasonPoison, fmt.Sprintf("the router panicked on it: %v", p), nil)
	default:
		if ctx.Sender() != nil {
			ctx.Respond(fmt.Errorf("router panicked: %v", p))
		}
	}
}

// passivate is a tenant actor's request to be stopped because it has been
// idle for PassivateAfter. Its state stays with the router and the next job
// or admin question starts a new actor on it, so nothing is lost but the
// actor's own memory (mailbox, context, logger): about 1.3 KB a tenant.
type passivate struct {
	pid      *actor.PID
	received int64 // counted messages the actor had handled when it asked
	// info is the tenant as the actor saw it then, shown by listings
	// while it stops.
	info *messages.TenantInfo
}

// passivate stops an idle tenant's actor unless a job was sent to it after
// it asked (the counts differ); it will ask again.
func (r *router) passivate(ctx actor.Context, msg *passivate) {
	e, ok := r.byPID[msg.pid.Id]
	if !ok || e.pid == nil || !e.pid.Equal(msg.pid) || e.dispatched != msg.received {
		return
	}
	e.pid, e.mb, e.stopping, e.stoppingInfo = nil, nil, msg.pid, msg.info
	ctx.Stop(msg.pid)
}

// terminated forgets a stopped tenant actor and, when messages arrived for
// the tenant while it stopped, starts a new one for them.
func (r *router) terminated(ctx actor.Context, who *actor.PID) {
	e, ok := r.byPID[who.Id]
	if !ok {
		return
	}
	delete(r.byPID, who.Id)
	ctx.Send(who, forgetProcess{})
	if e.stopping == nil || !e.stopping.Equal(who) {
		return
	}
	e.stopping, e.stoppingInfo = nil, nil
	pending := e.pending
	e.pending = nil
	for _, p := range pending {
		r.sendToTenant(ctx, e, p.msg, p.sender)
	}
}

// forgetProcess is sent to a tenant actor that has terminated, for what
// sending does on the way: a PID caches its process, and sending to a
// dead one clears that cache (the message itself goes to the dead
// letters, unlogged). The router's set of children keeps the PIDs of
// stopped children in its backing array (protoactor's PIDSet.Remove
// truncates without clearing), and each would otherwise keep its whole
// stopped actor reachable: mailbox, context, logger — about a kilobyte
// per passivated tenant.
type forgetProcess struct{}

func (forgetProcess) IgnoreDeadLetterLogging() {}

// sendToTenant sends msg to the tenant's actor, starting it if needed, or
// keeps it while a passivated actor is still stopping. A sender makes it a
// request that the tenant answers directly.
func (r *router) sendToTenant(ctx actor.Context, e *tenantEntry, msg any, sender *actor.PID) {
	if e.stopping != nil {
		e.pending = append(e.pending, pendingMsg{msg, sender})
		return
	}
	pid := r.spawn(ctx, e)
	if counted(msg) {
		e.dispatched++
	}
	if sender != nil {
		ctx.RequestWithCustomSender(pid, msg, sender)
		return
	}
	// What ctx.Send(pid, msg) does, but when the tenant's mailbox was
	// idle and nothing waits in the router's, this goroutine runs it once
	// the router's is let go, rather than waking another: one hand-off
	// less a job (mailbox.runNext).
	if t := e.mb.claim(msg); t != nil && !r.mb.runNext(t) {
		r.deps.pool.Run(t)
	}
}

// deliver decodes and validates one delivery and forwards it to its tenant,
// or dead-letters it with the reason.
func (r *router) deliver(ctx actor.Context, msg *messages.Deliver) {
	job, err := messages.DecodeJob(msg.Body)
	if err != nil {
		var inv *messages.InvalidJobError
		if !errors.As(err, &inv) {
			inv = &messages.InvalidJobError{Reason: messages.ReasonInvalidJob, Detail: err.Error()}
		}
		r.reject(ctx, msg, inv.Reason, inv.Detail, inv.Identity)
		return
	}
	e, ok := r.tenants[job.TenantID]
	if r.deps.Shards != nil {
		// Moved by the hash alone, known here or not: whether the tenant
		// is configured is for its shard's owner to say (replicas may
		// disagree for a moment after a reload).
		shard := r.shardOf(job.TenantID, e)
		if msg.Intake || msg.Shard != shard {
			r.move(msg, job, shard)
			return
		}
	}
	if !ok {
		r.reject(ctx, msg, messages.ReasonUnknownTenant, fmt.Sprintf("tenant %q is not configured", job.TenantID),
			&messages.Identity{TenantID: job.TenantID, InternalID: job.InternalID, Metadata: job.Metadata})
		return
	}
	r.sendToTenant(ctx, e, &messages.Dispatch{Job: job, Delivery: msg.Delivery, State: messages.ReadJobState(msg.Headers)}, nil)
}

// countShardMates finds the shards that more than one configured tenant
// shares (shard 0 holds them all without Config.Shards), for the tenants'
// sharing rule: a job of a tenant alone in its shard has no other
// tenant's job behind it in that shard's queue.
func (st *routerState) countShardMates() {
	seen := make(map[int32]bool, 64)
	crowded := map[int32]bool{}
	for _, e := range st.tenants {
		if seen[e.shard] {
			crowded[e.shard] = true
		}
		seen[e.shard] = true
	}
	st.deps.crowded.Store(&crowded)
}

// shardOf is the shard of a tenant, configured (e) or not (nil).
func (r *router) shardOf(id string, e *tenantEntry) int {
	if e != nil {
		return int(e.shard)
	}
	return r.deps.Shards.ShardOf(id)
}

// moveLanes is how many moves of the intake may be confirmed at a time (in
// order within each lane, shard modulo moveLanes).
const moveLanes = 8

// move publishes a job to its tenant's shard with a confirm and then acks
// it: a job from the intake, or one a producer published to another shard
// (whose owner would otherwise hold a second state of its tenant).
func (r *router) move(msg *messages.Deliver, job messages.Job, shard int) {
	reason := "intake"
	if !msg.Intake {
		reason = "misrouted"
		r.deps.Logger.Warn("job_rerouted", slog.String("tenantId", job.TenantID), slog.String("internalId", job.InternalID),
			slog.Int("fromShard", msg.Shard), slog.Int("shard", shard))
	}
	if o, ok := r.deps.Observer.(MoveObserver); ok {
		o.JobMoved(reason)
	}
	d, m := msg.Delivery, r.deps.Shards.MoveMessage(msg.Delivery, shard)
	b, work, log, pool := r.deps.Broker, r.deps.Context, r.deps.Logger, r.deps.pool
	failed := func(err error) {
		if err != nil {
			log.Error("move_failed", slog.Int("shard", shard), slog.String("error", err.Error()))
		}
	}
	mover, pipelined := b.(interface {
		Move(ctx context.Context, d messages.Delivery, m broker.Message) func() error
	})
	r.deps.lanes.Go(shard, func() {
		if !pipelined {
			failed(b.Settle(work, d, m))
			return
		}
		// The lane orders the publishes; their confirms are waited for
		// side by side.
		wait := mover.Move(work, d, m)
		pool.Go(func() { failed(wait()) })
	})
}

// shardsChanged records what this worker owns. The tenants of a shard just
// acquired get an empty bucket: the worker that owned it before may have
// spent their burst a moment ago.
func (r *router) shardsChanged(ctx actor.Context, msg *messages.ShardsChanged) {
	owned := make(map[int]bool, len(msg.Owned))
	for _, s := range msg.Owned {
		owned[s] = true
	}
	r.owned = owned
	if !msg.Acquired {
		return
	}
	now := time.Now()
	r.acquiredAt[msg.Shard] = now
	for _, id := range r.ids {
		e := r.tenants[id]
		if int(e.shard) != msg.Shard {
			continue
		}
		switch {
		case e.state == nil:
			e.startEmpty = true
		case e.pid != nil || e.stopping != nil:
			r.sendToTenant(ctx, e, &emptyBucket{}, nil)
		default:
			e.state.sched.Bucket().Drain(now)
		}
	}
}

// Reconfigure changes the router's tenants, after a reload of the tenants
// file, in one message, so the change is atomic for every delivery: Added
// tenants start serving; Changed ones take their new settings from now on,
// with their state kept (TenantState.reconfigure); Removed ones are no
// longer known (their later jobs are dead-lettered as unknown_tenant), and
// an actor of theirs finishes what it holds. Tokens holds the token source
// of every added and changed tenant. The answer is *Reconfigured.
type Reconfigure struct {
	Added, Changed []config.Tenant
	Removed        []string
	Tokens         map[string]whatsapp.TokenSource
}

// Reconfigured answers Reconfigure once it is applied.
type Reconfigured struct{ Added, Changed, Removed int }

// reconfigureTenant hands a running tenant actor its new settings.
type reconfigureTenant struct {
	cfg    *config.Tenant
	tokens whatsapp.TokenSource
}

func (r *router) reconfigure(ctx actor.Context, msg *Reconfigure) {
	now := time.Now()
	if r.deps.Tokens == nil {
		r.deps.Tokens = map[string]whatsapp.TokenSource{}
	}
	done := &Reconfigured{}
	for _, id := range msg.Removed {
		if _, ok := r.tenants[id]; !ok {
			continue
		}
		delete(r.tenants, id)
		delete(r.deps.Tokens, id)
		done.Removed++
	}
	for _, t := range msg.Added {
		if _, ok := r.tenants[t.ID]; ok {
			msg.Changed = append(msg.Changed, t)
			continue
		}
		e := &tenantEntry{cfg: t}
		if r.deps.Shards != nil {
			e.shard = int32(r.deps.Shards.ShardOf(t.ID))
		}
		r.tenants[t.ID] = e
		r.deps.Tokens[t.ID] = msg.Tokens[t.ID]
		done.Added++
	}
	for _, t := range msg.Changed {
		e, ok := r.tenants[t.ID]
		if !ok {
			continue
		}
		tokens := msg.Tokens[t.ID]
		if tokens != nil {
			r.deps.Tokens[t.ID] = tokens
		}
		switch {
		case e.state == nil:
			e.cfg = t
		case e.pid != nil || e.stopping != nil:
			// The actor reads its settings through its state; they
			// change in its own goroutine.
			cfg := new(config.Tenant)
			*cfg = t
			r.sendToTenant(ctx, e, &reconfigureTenant{cfg: cfg, tokens: tokens}, nil)
		default:
			e.cfg = t
			e.state.reconfigure(&e.cfg, tokens, now, r.deps)
		}
		done.Changed++
	}
	if done.Added > 0 || done.Removed > 0 {
		r.ids = r.ids[:0]
		for id := range r.tenants {
			r.ids = append(r.ids, id)
		}
		sort.Strings(r.ids)
		r.countShardMates()
	}
	ctx.Respond(done)
}

// emptyBucket tells a tenant's actor that its shard was just acquired.
type emptyBucket struct{}

// elsewhere reports whether e's shard is owned by another worker.
func (r *router) elsewhere(e *tenantEntry) bool {
	return r.deps.Shards != nil && !r.owned[int(e.shard)]
}

// spawn returns the tenant's actor, spawning it on first use. Only
// configured tenants get one, so random tenant ids cannot grow memory.
func (r *router) spawn(ctx actor.Context, e *tenantEntry) *actor.PID {
	if e.pid != nil {
		return e.pid
	}
	st := r.ensureState(e)
	props, mb := newTenantProps(st, r.deps)
	pid, err := ctx.SpawnNamed(props, "tenant-"+e.cfg.ID)
	if err != nil {
		// The name is taken only if an actor of this tenant still exists.
		props, mb = newTenantProps(st, r.deps)
		pid = ctx.Spawn(props)
	}
	e.pid, e.mb = pid, mb
	r.byPID[pid.Id] = e
	return pid
}

// ensureState returns the tenant's state, creating it on first use.
func (r *router) ensureState(e *tenantEntry) *TenantState {
	if e.state == nil {
		var tokens whatsapp.TokenSource
		if r.deps.Tokens != nil {
			tokens = r.deps.Tokens[e.cfg.ID]
		}
		if tokens == nil {
			tokens = missingToken(e.cfg.ID)
		}
		now := time.Now()
		e.state = newTenantState(&r.slab, &e.cfg, tokens, r.epoch, now, r.deps)
		e.state.shard = e.shard
		if e.startEmpty {
			// Empty when the shard was acquired, refilled since.
			e.state.sched.Bucket().EmptiedAt(r.acquiredAt[int(e.shard)])
			e.startEmpty = false
		}
	}
	return e.state
}

// reject dead-letters a delivery that is not a job the worker can handle,
// publishing a dead_lettered result when its identity is readable.
func (r *router) reject(ctx actor.Context, msg *messages.Deliver, reason, detail string, id *messages.Identity) {
	d := msg.Delivery
	attrs := []slog.Attr{slog.String("reason", reason), slog.String("detail", detail), slog.Int("bytes", len(msg.Body))}
	if id != nil {
		attrs = append(attrs, slog.String("tenantId", id.TenantID), slog.String("internalId", id.InternalID))
	}
	r.deps.Logger.LogAttrs(r.deps.Context, slog.LevelWarn, "message_dead_lettered", attrs...)
	b := r.deps.Broker
	state := messages.ReadJobState(msg.Headers)
	headers := map[string]any{messages.HeaderDLQReason: reason, messages.HeaderDLQDetail: detail}
	msgs := []broker.Message{b.DeadLetterMessage(d, headers)}
	if id != nil {
		if e, ok := r.tenants[id.TenantID]; ok {
			r.countDeadLetter(ctx, e)
		}
		r.deps.Observer.JobOutcome(id.TenantID, messages.StatusDeadLettered)
		now := time.Now()
		res := messages.Result{
			TenantID: id.TenantID, InternalID: id.InternalID, Metadata: id.Metadata,
			Status: messages.StatusDeadLettered, Reason: reason, Attempts: state.Attempts,
			At: messages.FormatTime(now),
		}
		msgs = append(msgs, b.ResultMessage(res.Status, res.Marshal(), now))
	}
	work, log := r.deps.Context, r.deps.Logger
	r.deps.pool.Go(func() {
		if err := b.Settle(work, d, msgs...); err != nil {
			log.Error("settle_failed", slog.String("reason", reason), slog.String("error", err.Error()))
		}
	})
}

// countDeadLetter counts a job the router dead-lettered for the tenant
// whose id it carried. Only one goroutine may touch a tenant's state: the
// actor's while it has one (it is told), the router's otherwise.
func (r *router) countDeadLetter(ctx actor.Context, e *tenantEntry) {
	if e.pid != nil || e.stopping != nil {
		r.sendToTenant(ctx, e, &deadLetteredByRouter{}, nil)
		return
	}
	r.ensureState(e).deadLettered++
}

// deadLetteredByRouter tells a tenant's actor that the router
// dead-lettered one of its jobs (an invalid one).
type deadLetteredByRouter struct{}

// counted reports whether msg is one the tenant's actor must handle: a
// job, a count, or an admin question or command. A passivation request
// that raced one must be declined (see passivate): a stopping actor never
// handles what is left in its mailbox, so a pause would be lost and a
// listing would wait AskTimeout for an answer. The router counts what it
// sends, the actor what it handles, both with this one list.
func counted(msg any) bool {
	switch msg.(type) {
	case *messages.Dispatch, *deadLetteredByRouter, *emptyBucket, *reconfigureTenant,
		*messages.GetTenant, *messages.ResetBreaker, *messages.PauseTenant, *messages.ResumeTenant:
		return true
	}
	return false
}

func (r *router) forwardAdmin(ctx actor.Context, id string) {
	e, ok := r.tenants[id]
	if !ok {
		ctx.Respond(&messages.TenantNotFound{TenantID: id})
		return
	}
	if r.elsewhere(e) {
		if _, get := ctx.Message().(*messages.GetTenant); get {
			ctx.Respond(&messages.TenantInfo{ID: id, Shard: int(e.shard), OwnedElsewhere: true})
			return
		}
		ctx.Respond(&messages.TenantElsewhere{TenantID: id, Shard: int(e.shard)})
		return
	}
	r.sendToTenant(ctx, e, ctx.Message(), ctx.Sender())
}

// listTenants answers with every configured tenant: the idle ones from
// their entries here, the running ones from their actors, asked by a
// lister off the router's mailbox.
func (r *router) listTenants(ctx actor.Context) {
	sender := ctx.Sender()
	if sender == nil {
		return
	}
	now := time.Now()
	infos := make([]messages.TenantInfo, 0, len(r.ids))
	asks := make(map[string]*actor.PID)
	for _, id := range r.ids {
		e := r.tenants[id]
		switch {
		case r.elsewhere(e):
			infos = append(infos, messages.TenantInfo{ID: id, Shard: int(e.shard), OwnedElsewhere: true})
		case e.pid == nil:
			infos = append(infos, e.inactiveInfo(now, r.acquiredAt[int(e.shard)]))
		default:
			e.dispatched++ // counted: see passivate
			asks[id] = e.pid
		}
	}
	ctx.ActorSystem().Root.Spawn(newListerProps(infos, asks, sender, AskTimeout))
}

// inactiveInfo is the listing of a tenant without a running actor. A
// passivated tenant's state is read directly: no actor touches it until
// the next one starts. While its actor is still stopping, the state is
// that actor's, and the listing shows what it reported when it asked to
// stop (a listing in that window used to show a never-started tenant:
// no jobs sent, a full bucket).
// emptiedAt is when its shard was acquired, for a tenant not started since
// (startEmpty).
func (e *tenantEntry) inactiveInfo(now, emptiedAt time.Time) messages.TenantInfo {
	switch {
	case e.stopping != nil:
		if e.stoppingInfo != nil {
			return *e.stoppingInfo
		}
		return idleInfo(e, now, emptiedAt)
	case e.state != nil:
		return e.state.info(now, false)
	}
	return idleInfo(e, now, emptiedAt)
}

func idleInfo(e *tenantEntry, now, emptiedAt time.Time) messages.TenantInfo {
	tokens := float64(e.cfg.RateLimit.Burst)
	if e.startEmpty {
		b := NewBucket(e.cfg.RateLimit.PerMinute, e.cfg.RateLimit.Burst, now)
		b.EmptiedAt(emptiedAt)
		tokens = b.Available(now)
	}
	return messages.TenantInfo{
		ID:                 e.cfg.ID,
		Shard:              int(e.shard),
		CircuitState:       BreakerClosed.String(),
		TokensAvailable:    tokens,
		TokensMax:          e.cfg.RateLimit.Burst,
		RatePerMinute:      e.cfg.RateLimit.PerMinute,
		EffectivePerMinute: e.cfg.RateLimit.PerMinute,
	}
}

// missingToken is the token source of a tenant configured without one; it
// exists so a wiring mistake fails that tenant's sends, not the process.
type missingToken string

func (m missingToken) Token() (string, error) {
	return "", fmt.Errorf("tenant %q has no token source", string(m))
}

func (m missingToken) Refresh() (bool, error) { return false, nil }
