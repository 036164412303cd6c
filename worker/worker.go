package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/wadispatch/wadispatch/actors"
	"github.com/wadispatch/wadispatch/admin"
	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/logging"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/metrics"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// Options are the seams the binary, the tests, the demo and the benchmark
// suite use; the zero value runs the real thing with its logs discarded.
type Options struct {
	// Logs is where the JSON log lines go (nil discards them; the binary
	// passes stdout).
	Logs io.Writer
	// Sender replaces the Graph API client (nil: whatsapp.NewClient with the
	// configured base URL, version and timeout).
	Sender whatsapp.Sender
	// Getenv reads the tenants' token variables (nil reads none).
	Getenv func(string) string
	// Secrets is the log redactor's set; nil starts an empty one. The
	// broker password, the admin token and every tenant token read are
	// added to it.
	Secrets *logging.Secrets
	// Version is the build's version, logged on every line ("dev" when
	// empty).
	Version string
	// Reloads, when set, asks for a reload of the tenants file on every
	// value (the binary sends one for each SIGHUP).
	Reloads <-chan struct{}
	// Unsharded makes this worker take every shard non-exclusively, as
	// workers did before shards: for the tests' control runs only (see
	// broker.Options.Unsharded).
	Unsharded bool
}

// Worker is one wadispatch process: broker, actor system, router.
type Worker struct {
	cfg     config.Config
	logger  *slog.Logger
	secrets *logging.Secrets
	broker  *broker.Broker
	system  *actor.ActorSystem
	router  *actor.PID
	sender  whatsapp.Sender
	tenants actors.Directory
	metrics *metrics.Metrics
	admin   *admin.Server // nil when ADMIN_ADDR is off
	// scrape serves /metrics and the probes without a token (nil when
	// METRICS_ADDR is off).
	scrape *admin.Server
	// work bounds sends and settlements; it is cancelled only when the
	// shutdown timeout has passed.
	work       context.Context
	cancelWork context.CancelFunc
	getenv     func(string) string
	config     *configState
	reloads    <-chan struct{}
	// stopping is set when the shutdown starts: /readyz answers 503 from
	// then on.
	stopping atomic.Bool
}

// New connects to the broker, declares the topology, starts the actors and,
// when ADMIN_ADDR is not off, the admin API. Consuming starts with Run. An
// error wrapping config.ErrConfig means the configuration (e.g. a tenant's
// token) is at fault.
func New(ctx context.Context, cfg config.Config, opts Options) (*Worker, error) {
	if opts.Logs == nil {
		opts.Logs = io.Discard
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.Getenv == nil {
		opts.Getenv = func(string) string { return "" }
	}
	secrets := opts.Secrets
	if secrets == nil {
		secrets = logging.NewSecrets()
	}
	secrets.Add(logging.URLPasswords(cfg.AMQPURL)...)
	if cfg.AdminToken != "" {
		secrets.Add(cfg.AdminToken)
	}
	tokens := make(map[string]whatsapp.TokenSource, len(cfg.Tenants))
	for _, t := range cfg.Tenants {
		src := registeringToken{whatsapp.NewTokenSource(func() (string, error) { return t.ReadToken(opts.Getenv) }), secrets}
		if _, err := src.Token(); err != nil {
			return nil, fmt.Errorf("%w: tenant %q: %v", config.ErrConfig, t.ID, err)
		}
		tokens[t.ID] = src
	}
	logger := logging.New(opts.Logs, logging.Options{Level: cfg.LogLevel, Version: opts.Version, Secrets: secrets})
	sender := opts.Sender
	if sender == nil {
		sender = whatsapp.NewClient(cfg.MetaBaseURL, cfg.MetaAPIVersion, cfg.MetaTimeout)
	}
	topo := broker.NewTopology(cfg.Queue, cfg.ResultsExchange)
	if cfg.Shards > 0 {
		topo.Shards = cfg.Shards
	}
	// The router is spawned after the broker is dialled, but the broker
	// reports shards only once Run starts, after both exist.
	var onShards func(broker.ShardEvent)
	b := broker.New(broker.Options{
		URL:       cfg.AMQPURL,
		Topology:  topo,
		Logger:    logger,
		Prefetch:  cfg.Prefetch,
		Unsharded: opts.Unsharded,
		OnShards:  func(e broker.ShardEvent) { onShards(e) },
	})
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return logger.With(slog.String("component", "protoactor"))
	}))
	ids := make([]string, len(cfg.Tenants))
	for i, t := range cfg.Tenants {
		ids[i] = t.ID
	}
	m := metrics.New(ids)
	m.SetPrefetch(cfg.Prefetch)
	work, cancelWork := context.WithCancel(context.Background())
	m.SetBuildInfo(opts.Version)
	router, err := system.Root.SpawnNamed(actors.NewRouterProps(actors.Config{
		Tenants:  cfg.Tenants,
		Tokens:   tokens,
		Sender:   sender,
		Broker:   b,
		Logger:   logger,
		Context:  work,
		Observer: m,
		// Every tenant's window shares the prefetch window.
		Prefetch: cfg.Prefetch,
		Shards:   b,
	}), "router")
	if err != nil {
		cancelWork()
		_ = b.Close()
		return nil, fmt.Errorf("spawn router: %w", err)
	}
	onShards = func(e broker.ShardEvent) {
		system.Root.Send(router, &messages.ShardsChanged{Shard: e.Shard, Acquired: e.Acquired, Owned: e.Owned})
		m.ShardChanged(e.Acquired, e.Reason, len(e.Owned))
	}
	tenants := actors.Directory{Root: system.Root, Router: router}
	w := &Worker{cfg: cfg, logger: logger, secrets: secrets, broker: b, system: system,
		router: router, sender: sender, tenants: tenants, metrics: m, work: work, cancelWork: cancelWork,
		getenv: opts.Getenv, config: newConfigState(cfg), reloads: opts.Reloads}
	m.ConfigLoaded(true, time.Now(), cfg.TenantsHash)
	m.SetTenants(tenants)
	if cfg.AdminEnabled() {
		w.admin, err = admin.New(admin.Options{
			Addr: cfg.AdminAddr, Token: cfg.AdminToken,
			Tenants: tenants, Ready: w.Ready, Metrics: m.Handler(), Logger: logger,
			Role: w.Role, Shards: func() any { return b.Ownership() },
			Config: func() any { return w.ConfigStatus() },
			Reload: func(ctx context.Context) (any, error) { return w.Reload(ctx, "api") },
		})
		if err == nil {
			err = w.admin.Start() // logs admin_listening with its address
		}
		if err != nil {
			w.stopActors()
			_ = b.Close()
			return nil, fmt.Errorf("admin API on %s: %w", cfg.AdminAddr, err)
		}
	}
	if cfg.MetricsAddr != "" {
		w.scrape, err = admin.New(admin.Options{Addr: cfg.MetricsAddr, MetricsOnly: true, Ready: w.Ready, Role: w.Role,
			Metrics: m.Handler(), Logger: logger})
		if err == nil {
			err = w.scrape.Start() // logs metrics_listening
		}
		if err != nil {
			w.stopActors()
			_ = b.Close()
			w.shutdownListeners()
			return nil, fmt.Errorf("metrics listener on %s: %w", cfg.MetricsAddr, err)
		}
	}
	// The admin API answers meanwhile: /healthz 200, /readyz 503.
	if err := w.connect(ctx); err != nil {
		w.stopActors()
		_ = b.Close()
		w.shutdownListeners()
		return nil, err
	}
	return w, nil
}

// shutdownListeners stops the admin API and the metrics listener, within a
// second.
func (w *Worker) shutdownListeners() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, srv := range []*admin.Server{w.admin, w.scrape} {
		if srv != nil {
			_ = srv.Shutdown(ctx)
		}
	}
}

// connect connects to the broker and declares the topology, trying again
// with capped exponential backoff while the broker cannot be reached (one
// broker_unreachable line per attempt) until ctx ends. A topology or SHARDS
// mismatch stops at once: trying again would not change it.
func (w *Worker) connect(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	const maxBackoff = 30 * time.Second
	for attempt := 1; ; attempt++ {
		err := w.broker.Connect(ctx)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, broker.ErrShardsMismatch):
			return fmt.Errorf("%w: %v", config.ErrConfig, err)
		case errors.Is(err, broker.ErrTopologyMismatch):
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		w.logger.Warn("broker_unreachable", slog.String("error", err.Error()), slog.Int("attempt", attempt),
			slog.Int64("retryInMs", wait.Milliseconds()))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// Tenants asks the router for every tenant's state, as the admin API's
// GET /v1/tenants and the metrics report it.
func (w *Worker) Tenants(ctx context.Context) ([]messages.TenantInfo, error) {
	return w.tenants.List(ctx)
}

// stopActors cancels sends in progress and stops the router and its
// tenants.
func (w *Worker) stopActors() {
	w.cancelWork()
	_ = w.system.Root.PoisonFuture(w.router).Wait()
	w.system.Shutdown()
}

// Run consumes jobs until ctx ends, then shuts down: it stops consuming,
// lets the jobs in hand finish within the shutdown timeout (whatever is not
// settled by then goes back to the queue unacked), stops the actors and
// closes the broker connections.
func (w *Worker) Run(ctx context.Context) error {
	consume, stopConsume := context.WithCancel(context.Background())
	root := w.system.Root
	consumed := make(chan error, 1)
	go func() {
		// Straight from each consumer's goroutine into the router's
		// mailbox, which never blocks: the prefetch bounds what waits there.
		consumed <- w.broker.RunFunc(consume, func(d *broker.Delivery) {
			root.Send(w.router, &messages.Deliver{Body: d.Body, Headers: d.Headers, Delivery: d,
				Intake: d.Shard < 0, Shard: d.Shard})
		})
	}()
	backpressure := make(chan struct{})
	go func() {
		defer close(backpressure)
		w.runBackpressure(consume)
	}()
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		if w.cfg.TenantsWatch > 0 {
			w.watchTenants(consume, w.cfg.TenantsWatch)
		}
	}()
	w.logger.Info("worker_started", slog.Int("tenants", len(w.cfg.Tenants)), slog.String("queue", w.cfg.Queue))
	sample := time.NewTicker(time.Second)
	defer sample.Stop()
	saturation := time.NewTicker(saturationTick)
	defer saturation.Stop()
	sat := saturationWatch{}
loop:
	for {
		select {
		case now := <-saturation.C:
			w.watchSaturation(&sat, now)
		case <-w.reloads:
			// Off the loop: deliveries keep flowing while the file loads.
			go func() { _, _ = w.Reload(consume, "sighup") }()
		case <-sample.C:
			w.metrics.SetReady(w.broker.Ready())
			w.metrics.SetPrefetch(w.broker.Prefetch())
		case <-ctx.Done():
			break loop
		}
	}
	start := time.Now()
	w.stopping.Store(true)
	w.logger.Info("worker_stopping", slog.Int("unsettled", w.broker.Unsettled()))
	stopConsume()
	<-consumed
	<-backpressure
	<-watching
	drain, cancel := context.WithTimeout(context.Background(), w.cfg.ShutdownTimeout)
	defer cancel()
	settleErr := w.broker.WaitSettled(drain)
	w.stopActors()
	if c, ok := w.sender.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections() // their read/write loops are goroutines too
	}
	err := w.broker.Close()
	// The admin API answers until the end, so an operator can watch the
	// shutdown; it goes last.
	w.shutdownListeners()
	w.logger.Info("worker_stopped", slog.Int64("duration", time.Since(start).Milliseconds()),
		slog.Int("handedBack", w.broker.Unsettled()))
	if settleErr != nil {
		w.logger.Warn("shutdown_timeout", slog.String("error", settleErr.Error()))
	}
	return err
}

// saturationTick is how often the worker looks whether every prefetch slot
// is held.
const saturationTick = 100 * time.Millisecond

// saturationWarnEvery bounds prefetch_saturated to one line a minute.
const saturationWarnEvery = time.Minute

// saturationWatch is the worker's record of time spent with every
// prefetch slot held.
type saturationWatch struct {
	sinceWarn time.Duration // saturated time since the last warning
	warnedAt  time.Time
}

// watchSaturation samples the deliveries held against the prefetch: time
// with every slot held is time the prefetch window, not Meta or the
// tenants' limits, decides throughput. It is counted, and said at WARN at
// most once a minute.
func (w *Worker) watchSaturation(sat *saturationWatch, now time.Time) {
	held, prefetch := w.broker.Unsettled(), w.broker.Prefetch()
	w.metrics.SetHeld(held)
	if prefetch <= 0 || held < prefetch {
		return
	}
	w.metrics.AddSaturated(saturationTick)
	sat.sinceWarn += saturationTick
	if now.Sub(sat.warnedAt) < saturationWarnEvery {
		return
	}
	w.logger.Warn("prefetch_saturated", slog.Int("prefetch", prefetch), slog.Int("held", held),
		slog.Int64("saturatedMs", sat.sinceWarn.Milliseconds()))
	sat.sinceWarn, sat.warnedAt = 0, now
}

// runBackpressure adjusts the consumer's prefetch to the queue's depth
// until ctx ends.
func (w *Worker) runBackpressure(ctx context.Context) {
	w.broker.RunBackpressure(ctx, broker.BackpressureOptions{
		Interval: w.cfg.BackpressureInterval,
		High:     w.cfg.BackpressureHigh,
		Low:      w.cfg.BackpressureLow,
		Normal:   w.cfg.Prefetch,
		Reduced:  w.cfg.PrefetchReduced,
		OnDepth:  w.metrics.SetQueueDepth,
		OnChange: func(_, _, to int) {
			w.metrics.PrefetchChanged()
			w.metrics.SetPrefetch(to)
		},
	})
}

// TenantInfo asks the router, and through it the tenant's actor, for one
// tenant's state.
func (w *Worker) TenantInfo(id string) (messages.TenantInfo, error) {
	return w.tenants.Get(context.Background(), id)
}

// AdminAddr is the admin API's listening address, "" when it is off.
func (w *Worker) AdminAddr() string {
	if w.admin == nil {
		return ""
	}
	return w.admin.Addr()
}

// Ready reports whether the worker is connected and taking part: owning
// shards, or standing by to take some over. It is false from the moment
// the shutdown starts.
func (w *Worker) Ready() bool { return w.broker.Ready() && !w.stopping.Load() }

// Role says what the worker does now, for /readyz: how many shards it
// owns, whether it moves the intake, or that it stands by.
func (w *Worker) Role() string {
	o := w.broker.Ownership()
	switch {
	case w.stopping.Load():
		return "stopping"
	case !w.broker.Ready():
		return "connecting to the broker"
	}
	role := fmt.Sprintf("owns %d of %d shards (rank %d of %d workers)", len(o.Owned), o.Shards, o.Rank, o.Members)
	if len(o.Owned) == 0 {
		role = fmt.Sprintf("standby: owns none of %d shards (%d workers)", o.Shards, o.Members)
	}
	if o.Intake {
		role += "; moves the intake"
	}
	return role
}

// Ownership is what the worker owns (see broker.Ownership).
func (w *Worker) Ownership() broker.Ownership { return w.broker.Ownership() }

// registeringToken registers every token it hands out with the log
// redactor, so a rotated token is scrubbed as soon as it is read.
type registeringToken struct {
	whatsapp.TokenSource
	secrets *logging.Secrets
}

func (r registeringToken) Token() (string, error) {
	tok, err := r.TokenSource.Token()
	if err == nil {
		r.secrets.Add(tok)
	}
	return tok, err
}

// Main is `wadispatch run`: it loads the configuration from opts.Getenv and
// args (flag errors and --help go to stderr), starts the worker with opts
// and runs it until ctx ends. A configuration error wraps config.ErrConfig.
func Main(ctx context.Context, args []string, stderr io.Writer, opts Options) error {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	cfg, err := config.Load(getenv, args, stderr)
	if err != nil {
		return err
	}
	w, err := New(ctx, cfg, opts)
	if err != nil {
		switch {
		case errors.Is(err, config.ErrConfig):
			return err
		case ctx.Err() != nil:
			return nil // stopped while waiting for the broker
		}
		return fmt.Errorf("start: %w", err)
	}
	return w.Run(ctx)
}

// MetricsAddr is the metrics listener's address, "" when it is off.
func (w *Worker) MetricsAddr() string {
	if w.scrape == nil {
		return ""
	}
	return w.scrape.Addr()
}
