package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// Supervision limits: one-for-one, at most maxRestarts within restartWindow.
const (
	maxRestarts   = 10
	restartWindow = 10 * time.Second
)

// AskTimeout bounds how long the router waits for a tenant to answer an
// admin question.
const AskTimeout = 2 * time.Second

// tenantEntry is the router's record of one configured tenant.
type tenantEntry struct {
	cfg      config.Tenant
	state    *TenantState // created on first use, kept for the process's life
	pid      *actor.PID
	restarts int
	// dispatched counts the Dispatch messages sent to the tenant's actors,
	// to tell whether a passivation request raced a job (see passivate).
	dispatched int64
	// stopping is the passivated actor until its Terminated arrives;
	// messages for the tenant wait in pending meanwhile.
	stopping *actor.PID
	pending  []pendingMsg
}

// pendingMsg is a message for a tenant whose passivated actor has not
// stopped yet; sender is set for an admin question.
type pendingMsg struct {
	msg    any
	sender *actor.PID
}

// router is the one router actor of a process.
type router struct {
	deps    *Config
	epoch   string
	tenants map[string]*tenantEntry
	byPID   map[string]*tenantEntry
	ids     []string
}

// NewRouterProps returns the props of the router actor. The router
// supervises its tenant actors one-for-one: a panic restarts only that
// tenant's actor, keeping its state.
func NewRouterProps(cfg Config) *actor.Props {
	deps := &cfg
	deps.withDefaults()
	deps.pool = newPool(deps.Context, max(16, 2*deps.MaxHeldFast))
	r := &router{deps: deps, epoch: newEpoch(), tenants: map[string]*tenantEntry{}, byPID: map[string]*tenantEntry{}}
	for _, t := range cfg.Tenants {
		r.tenants[t.ID] = &tenantEntry{cfg: t}
		r.ids = append(r.ids, t.ID)
	}
	sort.Strings(r.ids)
	supervisor := &tenantSupervisor{r: r, inner: actor.NewOneForOneStrategy(maxRestarts, restartWindow, actor.DefaultDecider)}
	return actor.PropsFromProducer(func() actor.Actor { return r }, actor.WithSupervisor(supervisor))
}

func (r *router) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		r.deps.Logger.Debug("router_started", slog.Int("tenants", len(r.ids)))
	case *messages.Deliver:
		r.deliver(ctx, msg)
	case *messages.ListTenants:
		r.listTenants(ctx)
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

// passivate is a tenant actor's request to be stopped because it has been
// idle for PassivateAfter. Its state stays with the router and the next job
// or admin question starts a new actor on it, so nothing is lost but the
// actor's own memory (mailbox, context, logger): about 1.3 KB a tenant.
type passivate struct {
	pid      *actor.PID
	received int64 // Dispatch messages the actor had handled when it asked
}

// passivate stops an idle tenant's actor unless a job was sent to it after
// it asked (the counts differ); it will ask again.
func (r *router) passivate(ctx actor.Context, msg *passivate) {
	e, ok := r.byPID[msg.pid.Id]
	if !ok || e.pid == nil || !e.pid.Equal(msg.pid) || e.dispatched != msg.received {
		return
	}
	e.pid, e.stopping = nil, msg.pid
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
	if e.stopping == nil || !e.stopping.Equal(who) {
		return
	}
	e.stopping = nil
	pending := e.pending
	e.pending = nil
	for _, p := range pending {
		r.sendToTenant(ctx, e, p.msg, p.sender)
	}
}

// sendToTenant sends msg to the tenant's actor, starting it if needed, or
// keeps it while a passivated actor is still stopping. A sender makes it a
// request that the tenant answers directly.
func (r *router) sendToTenant(ctx actor.Context, e *tenantEntry, msg any, sender *actor.PID) {
	if e.stopping != nil {
		e.pending = append(e.pending, pendingMsg{msg, sender})
		return
	}
	pid := r.spawn(ctx, e)
	if _, ok := msg.(*messages.Dispatch); ok {
		e.dispatched++
	}
	if sender != nil {
		ctx.RequestWithCustomSender(pid, msg, sender)
		return
	}
	ctx.Send(pid, msg)
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
		r.reject(msg, inv.Reason, inv.Detail, inv.Identity)
		return
	}
	e, ok := r.tenants[job.TenantID]
	if !ok {
		r.reject(msg, messages.ReasonUnknownTenant, fmt.Sprintf("tenant %q is not configured", job.TenantID),
			&messages.Identity{TenantID: job.TenantID, InternalID: job.InternalID, Metadata: job.Metadata})
		return
	}
	r.sendToTenant(ctx, e, &messages.Dispatch{Job: job, Delivery: msg.Delivery, State: messages.ReadJobState(msg.Headers)}, nil)
}

// spawn returns the tenant's actor, spawning it on first use. Only
// configured tenants get one, so random tenant ids cannot grow memory.
func (r *router) spawn(ctx actor.Context, e *tenantEntry) *actor.PID {
	if e.pid != nil {
		return e.pid
	}
	if e.state == nil {
		var tokens whatsapp.TokenSource
		if r.deps.Tokens != nil {
			tokens = r.deps.Tokens[e.cfg.ID]
		}
		if tokens == nil {
			tokens = missingToken(e.cfg.ID)
		}
		e.state = newTenantState(&e.cfg, tokens, r.epoch, time.Now(), r.deps.MaxHeld, r.deps.MaxHeldFast)
	}
	pid, err := ctx.SpawnNamed(newTenantProps(e.state, r.deps), "tenant-"+e.cfg.ID)
	if err != nil {
		// The name is taken only if an actor of this tenant still exists.
		pid = ctx.Spawn(newTenantProps(e.state, r.deps))
	}
	e.pid = pid
	r.byPID[pid.Id] = e
	return pid
}

// reject dead-letters a delivery that is not a job the worker can handle,
// publishing a dead_lettered result when its identity is readable.
func (r *router) reject(msg *messages.Deliver, reason, detail string, id *messages.Identity) {
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
		if e, ok := r.tenants[id.TenantID]; ok && e.state != nil {
			e.state.deadLettered++
		}
		r.deps.Observer.JobOutcome(observedTenant(r.tenants, id.TenantID), messages.StatusDeadLettered)
		now := time.Now()
		res := messages.Result{
			TenantID: id.TenantID, InternalID: id.InternalID, Metadata: id.Metadata,
			Status: messages.StatusDeadLettered, Reason: reason, Attempts: state.Attempts,
			At: messages.FormatTime(now),
		}
		msgs = append(msgs, b.ResultMessage(res.Status, res.Marshal()))
	}
	ctx, log := r.deps.Context, r.deps.Logger
	r.deps.pool.Go(func() {
		if err := b.Settle(ctx, d, msgs...); err != nil {
			log.Error("settle_failed", slog.String("reason", reason), slog.String("error", err.Error()))
		}
	})
}

// observedTenant keeps metrics labels to configured tenants.
func observedTenant(tenants map[string]*tenantEntry, id string) string {
	if _, ok := tenants[id]; ok {
		return id
	}
	return "_unknown"
}

func (r *router) forwardAdmin(ctx actor.Context, id string) {
	e, ok := r.tenants[id]
	if !ok {
		ctx.Respond(&messages.TenantNotFound{TenantID: id})
		return
	}
	r.sendToTenant(ctx, e, ctx.Message(), ctx.Sender())
}

// listTenants asks every active tenant for its state, off the router's
// mailbox, and answers with configured-but-idle tenants filled in.
func (r *router) listTenants(ctx actor.Context) {
	sender := ctx.Sender()
	if sender == nil {
		return
	}
	root := ctx.ActorSystem().Root
	now := time.Now()
	type ask struct {
		id     string
		future *actor.Future
	}
	infos := make([]messages.TenantInfo, 0, len(r.ids))
	var asks []ask
	for _, id := range r.ids {
		e := r.tenants[id]
		if e.pid == nil {
			if e.state != nil && e.stopping == nil {
				// Passivated: no actor touches the state until the next
				// one starts, so the router may read it.
				infos = append(infos, e.state.info(now, false))
				continue
			}
			infos = append(infos, idleInfo(e, now))
			continue
		}
		asks = append(asks, ask{id, root.RequestFuture(e.pid, &messages.GetTenant{TenantID: id}, AskTimeout)})
	}
	go func() {
		for _, a := range asks {
			res, err := a.future.Result()
			if info, ok := res.(*messages.TenantInfo); ok && err == nil {
				infos = append(infos, *info)
				continue
			}
			infos = append(infos, messages.TenantInfo{ID: a.id, Active: true, LastError: "no answer from tenant actor"})
		}
		slices.SortFunc(infos, func(a, b messages.TenantInfo) int {
			switch {
			case a.ID < b.ID:
				return -1
			case a.ID > b.ID:
				return 1
			}
			return 0
		})
		root.Send(sender, &messages.TenantList{Tenants: infos})
	}()
}

func idleInfo(e *tenantEntry, now time.Time) messages.TenantInfo {
	return messages.TenantInfo{
		ID:                 e.cfg.ID,
		CircuitState:       BreakerClosed.String(),
		TokensAvailable:    float64(e.cfg.RateLimit.Burst),
		TokensMax:          e.cfg.RateLimit.Burst,
		RatePerMinute:      e.cfg.RateLimit.PerMinute,
		EffectivePerMinute: e.cfg.RateLimit.PerMinute,
	}
}

// tenantSupervisor is the router's strategy for its tenants: one-for-one
// restarts (10 within 10 s), with a log line per restart naming the tenant,
// the panic and the count.
type tenantSupervisor struct {
	r     *router
	inner actor.SupervisorStrategy
}

func (s *tenantSupervisor) HandleFailure(system *actor.ActorSystem, sup actor.Supervisor, child *actor.PID,
	rs *actor.RestartStatistics, reason any, message any) {
	tenantID := "?"
	restarts := 0
	if e, ok := s.r.byPID[child.Id]; ok {
		e.restarts++
		tenantID, restarts = e.cfg.ID, e.restarts
	}
	s.r.deps.Logger.Error("tenant_actor_restarted",
		slog.String("tenantId", tenantID),
		slog.String("reason", fmt.Sprint(reason)),
		slog.Int("restarts", restarts))
	if rs.NumberOfFailures(restartWindow) >= maxRestarts {
		// Past the limit one-for-one would stop the actor, and the jobs in
		// its mailbox would be lost. The tenant has quarantined itself by
		// now (QuarantineAfter < maxRestarts), so restart it anyway.
		rs.Fail()
		sup.RestartChildren(child)
		return
	}
	s.inner.HandleFailure(system, sup, child, rs, reason, message)
}

// missingToken is the token source of a tenant configured without one; it
// exists so a wiring mistake fails that tenant's sends, not the process.
type missingToken string

func (m missingToken) Token() (string, error) {
	return "", fmt.Errorf("tenant %q has no token source", string(m))
}

func (m missingToken) Refresh() (bool, error) { return false, nil }
