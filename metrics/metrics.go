// Package metrics holds wadispatch's Prometheus metrics, in a registry of
// its own (never the global one), and the handler that serves them.
//
// Metrics is the actors' Observer (job outcomes, deferrals, send latency,
// restarts), holds the gauges the worker sets (prefetch, deliveries held,
// time saturated, queue depth, broker readiness), and at scrape time asks a
// TenantLister for each tenant's breaker, tokens, send window and pause state. Tenant labels are limited to the
// configured tenants; any other id is recorded as "_unknown", so job input
// can never grow the number of series.
//
// It does not serve HTTP itself (the admin server mounts Handler) and
// keeps no tenant state of its own.
package metrics

import (
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wadispatch/wadispatch/actors"
	"github.com/wadispatch/wadispatch/messages"
)

// UnknownTenant is the tenant label of everything recorded for a tenant id
// that is not configured.
const UnknownTenant = "_unknown"

// namespace prefixes every wadispatch metric.
const namespace = "wadispatch"

// sendBuckets span a fast Graph API answer (5 ms) to a send that runs into
// the client timeout (30 s).
var sendBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30}

// outcomes and deferReasons are the label values series are created for
// up front, so that rate() sees them from zero.
var outcomes = []string{messages.StatusSent, messages.StatusFailed, messages.StatusDeadLettered}

// A job back from a delay tier early (actors.ReasonEarly) is only taking the
// next tier, not deferred, and is never counted: it has no series.
func deferReasons() []string {
	var rs []string
	for r := actors.ReasonEarly + 1; r <= actors.LastReason; r++ {
		rs = append(rs, r.String())
	}
	return rs
}

// Metrics is wadispatch's metrics. Its methods are safe for concurrent use.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler
	// tenants is the set of configured tenant ids; read-only after New.
	tenants *tenantSet

	jobs         *prometheus.CounterVec
	deferrals    *prometheus.CounterVec
	sendDuration *prometheus.HistogramVec
	restarts     *prometheus.CounterVec

	prefetch        prometheus.Gauge
	queueDepth      prometheus.Gauge
	prefetchChanges prometheus.Counter
	brokerReady     prometheus.Gauge
	held            prometheus.Gauge
	saturated       prometheus.Counter
	shardsOwned     prometheus.Gauge
	handovers       *prometheus.CounterVec
	moved           *prometheus.CounterVec
	reloadOK        prometheus.Gauge
	reloadAt        prometheus.Gauge
	configInfo      *prometheus.GaugeVec
	buildInfo       *prometheus.GaugeVec

	state *tenantCollector
	// unknown is UnknownTenant's series.
	unknown *tenantSeries
}

// tenantSeries are a tenant's series that every job touches, looked up
// once rather than by their label values on each job (which hashes them
// and takes the vector's lock).
type tenantSeries struct {
	sent prometheus.Counter
	send prometheus.Observer
}

func (m *Metrics) seriesOf(id string) *tenantSeries {
	return &tenantSeries{sent: m.jobs.WithLabelValues(id, messages.StatusSent), send: m.sendDuration.WithLabelValues(id)}
}

// series is the tenant's series, UnknownTenant's if it is not configured.
func (m *Metrics) series(id string) *tenantSeries {
	if s := (*m.tenants.p.Load())[id]; s != nil {
		return s
	}
	return m.unknown
}

var _ actors.Observer = (*Metrics)(nil)

// New returns metrics for the given configured tenant ids, with the Go
// runtime and process collectors in the same registry.
func New(tenants []string) *Metrics {
	m := &Metrics{
		reg:     prometheus.NewRegistry(),
		tenants: &tenantSet{},
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "jobs_total",
			Help: "Jobs that reached a terminal outcome (sent, failed, dead_lettered), by tenant.",
		}, []string{"tenant", "outcome"}),
		deferrals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "deferrals_total",
			Help: "Jobs deferred to a delay queue, by tenant and reason.",
		}, []string{"tenant", "reason"}),
		sendDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "send_duration_seconds",
			Help:    "Duration of sends to the WhatsApp Cloud API, by tenant.",
			Buckets: sendBuckets,
		}, []string{"tenant"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "tenant_restarts_total",
			Help: "Supervision restarts of a tenant's actor.",
		}, []string{"tenant"}),
		prefetch: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "prefetch",
			Help: "The consumer's current prefetch count.",
		}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "queue_depth",
			Help: "Ready messages in the job queue at the last check.",
		}),
		prefetchChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "prefetch_changes_total",
			Help: "Times the consumer's prefetch was changed for backpressure.",
		}),
		brokerReady: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "broker_ready",
			Help: "1 while the worker is connected and consuming, else 0.",
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "prefetch_held",
			Help: "Deliveries the worker holds unacked now, out of the prefetch.",
		}),
		saturated: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "prefetch_saturated_seconds_total",
			Help: "Time spent with every prefetch slot held, so that no new delivery could arrive.",
		}),
		shardsOwned: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "shards_owned",
			Help: "Shards this worker owns now.",
		}),
		handovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "shard_handovers_total",
			Help: "Shards this worker acquired or released, by direction and (released) reason.",
		}, []string{"direction", "reason"}),
		moved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "jobs_moved_total",
			Help: "Jobs moved to their tenant's shard: from the intake, or misrouted to another shard.",
		}, []string{"reason"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "config_last_reload_successful",
			Help: "1 if the last load of the tenants file succeeded (at start it must), 0 if it failed.",
		}),
		reloadAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "config_last_reload_success_timestamp_seconds",
			Help: "When the tenants file was last loaded successfully, in Unix seconds.",
		}),
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "build_info",
			Help: "1 for the build running: its version and the Go version it was built with.",
		}, []string{"version", "goversion"}),
		configInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "config_info",
			Help: "1 for the SHA-256 of the tenants file in force: replicas that disagree show different hashes.",
		}, []string{"hash"}),
	}
	for _, r := range []string{"intake", "misrouted"} {
		m.moved.WithLabelValues(r)
	}
	m.handovers.WithLabelValues("acquired", "")
	for _, r := range []string{"rebalance", "shutdown", "connection_lost"} {
		m.handovers.WithLabelValues("released", r)
	}
	m.state = newTenantCollector(m.tenants)
	for _, id := range append(append([]string(nil), tenants...), UnknownTenant) {
		m.addTenant(id)
	}
	m.unknown = m.seriesOf(UnknownTenant)
	m.tenants.set(tenants, m.seriesOf)

	m.reg.MustRegister(
		m.jobs, m.deferrals, m.sendDuration, m.restarts,
		m.prefetch, m.queueDepth, m.prefetchChanges, m.brokerReady, m.held, m.saturated,
		m.shardsOwned, m.handovers, m.moved, m.reloadOK, m.reloadAt, m.configInfo, m.buildInfo,
		m.state,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A failing collector costs its own series, not the whole scrape.
		ErrorHandling: promhttp.ContinueOnError,
		// Counts the handler's own errors as promhttp_metric_handler_errors_total.
		Registry: m.reg,
		// Each scrape asks every tenant actor; do not let scrapers pile up.
		MaxRequestsInFlight: 4,
		Timeout:             2 * ScrapeTimeout,
	})
	return m
}

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler { return m.handler }

// tenant is id if it is configured, else UnknownTenant. Every Observer
// method maps its tenant id through it, so callers (the actors) pass ids as
// they are and need no mapping of their own.
func (m *Metrics) tenant(id string) string {
	if m.tenants.has(id) {
		return id
	}
	return UnknownTenant
}

// addTenant creates a tenant's series at zero, so they exist before its
// first job.
func (m *Metrics) addTenant(id string) {
	for _, o := range outcomes {
		m.jobs.WithLabelValues(id, o)
	}
	for _, r := range deferReasons() {
		m.deferrals.WithLabelValues(id, r)
	}
	m.sendDuration.WithLabelValues(id)
	m.restarts.WithLabelValues(id)
}

// SetBuildInfo records the build's version.
func (m *Metrics) SetBuildInfo(version string) {
	m.buildInfo.Reset()
	m.buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
}

// ConfigLoaded records a load of the tenants file: ok with the hash of the
// file now in force, or a failure (the file in force stays).
func (m *Metrics) ConfigLoaded(ok bool, at time.Time, hash string) {
	if !ok {
		m.reloadOK.Set(0)
		return
	}
	m.reloadOK.Set(1)
	m.reloadAt.Set(float64(at.UnixNano()) / 1e9)
	m.configInfo.Reset()
	m.configInfo.WithLabelValues(hash).Set(1)
}

// SetTenantIDs changes the configured tenants after a reload: added ones get
// their series, removed ones lose theirs (what they counted is gone with
// them, as after a restart).
func (m *Metrics) SetTenantIDs(ids []string) {
	old := m.tenants.set(ids, func(id string) *tenantSeries {
		m.addTenant(id) // before its series are looked up: they exist from then on
		return m.seriesOf(id)
	})
	for _, id := range ids {
		delete(old, id)
	}
	for id := range old {
		m.jobs.DeletePartialMatch(prometheus.Labels{"tenant": id})
		m.deferrals.DeletePartialMatch(prometheus.Labels{"tenant": id})
		m.sendDuration.DeleteLabelValues(id)
		m.restarts.DeleteLabelValues(id)
	}
}

// tenantSet is the configured tenant ids with their series, replaced whole
// on a reload and read by every Observer call.
type tenantSet struct {
	p atomic.Pointer[map[string]*tenantSeries]
}

func (s *tenantSet) has(id string) bool {
	_, ok := (*s.p.Load())[id]
	return ok
}

// set replaces the ids, keeping the series of those already there and
// making the others' with add, and returns the previous ids.
func (s *tenantSet) set(ids []string, add func(id string) *tenantSeries) map[string]struct{} {
	var old map[string]*tenantSeries
	if p := s.p.Load(); p != nil {
		old = *p
	}
	m := make(map[string]*tenantSeries, len(ids))
	for _, id := range ids {
		if ts := old[id]; ts != nil {
			m[id] = ts
		} else {
			m[id] = add(id)
		}
	}
	s.p.Store(&m)
	prev := make(map[string]struct{}, len(old))
	for id := range old {
		prev[id] = struct{}{}
	}
	return prev
}

// JobOutcome counts a job's terminal outcome.
func (m *Metrics) JobOutcome(tenantID, outcome string) {
	if outcome == messages.StatusSent {
		m.series(tenantID).sent.Inc()
		return
	}
	m.jobs.WithLabelValues(m.tenant(tenantID), outcome).Inc()
}

// Deferred counts a deferral.
func (m *Metrics) Deferred(tenantID, reason string) {
	m.deferrals.WithLabelValues(m.tenant(tenantID), reason).Inc()
}

// SendLatency observes the duration of one send to Meta.
func (m *Metrics) SendLatency(tenantID string, d time.Duration) {
	m.series(tenantID).send.Observe(d.Seconds())
}

// TenantRestarted counts a restart of a tenant's actor.
func (m *Metrics) TenantRestarted(tenantID string) {
	m.restarts.WithLabelValues(m.tenant(tenantID)).Inc()
}

// SetPrefetch records the consumer's current prefetch count.
func (m *Metrics) SetPrefetch(n int) { m.prefetch.Set(float64(n)) }

// SetQueueDepth records the job queue's ready-message count.
func (m *Metrics) SetQueueDepth(n int) { m.queueDepth.Set(float64(n)) }

// ShardChanged counts a shard acquired or released and records how many
// are owned after it.
func (m *Metrics) ShardChanged(acquired bool, reason string, owned int) {
	if acquired {
		m.handovers.WithLabelValues("acquired", "").Inc()
	} else {
		m.handovers.WithLabelValues("released", reason).Inc()
	}
	m.shardsOwned.Set(float64(owned))
}

// JobMoved counts a job moved to its shard (actors.MoveObserver).
func (m *Metrics) JobMoved(reason string) { m.moved.WithLabelValues(reason).Inc() }

// PrefetchChanged counts a backpressure change of the prefetch.
func (m *Metrics) PrefetchChanged() { m.prefetchChanges.Inc() }

// SetHeld records how many deliveries the worker holds unacked now.
func (m *Metrics) SetHeld(n int) { m.held.Set(float64(n)) }

// AddSaturated adds d to the time spent with every prefetch slot held. A
// d of zero or less adds nothing.
func (m *Metrics) AddSaturated(d time.Duration) {
	if d > 0 {
		m.saturated.Add(d.Seconds())
	}
}

// SetReady records whether the worker is connected and consuming.
func (m *Metrics) SetReady(ready bool) {
	v := 0.0
	if ready {
		v = 1
	}
	m.brokerReady.Set(v)
}

// SetTenants sets where scrapes read each tenant's state from (the worker's
// actors.Directory). Until it is set, the per-tenant state gauges are absent.
func (m *Metrics) SetTenants(src TenantLister) { m.state.setSource(src) }
