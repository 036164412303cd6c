package metrics

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wadispatch/wadispatch/actors"
	"github.com/wadispatch/wadispatch/messages"
)

// ScrapeTimeout bounds how long a scrape waits for the tenants' state: as
// long as the worker's list of tenants may take (actors.ListTimeout), so one
// stuck tenant costs its own gauges rather than everyone's.
const ScrapeTimeout = actors.ListTimeout

// TenantLister is what a scrape asks about tenants: every configured
// tenant's state (the worker's is actors.Directory). It should honour ctx,
// but a scrape does not wait for it past ScrapeTimeout either way.
type TenantLister interface {
	List(ctx context.Context) ([]messages.TenantInfo, error)
}

// breakerStates are the label values of wadispatch_breaker_state, in the
// lower case of actors.BreakerState's names.
var breakerStates = []string{"closed", "open", "half_open"}

// errNoAnswer marks tenants the source listed without their state (the
// router fills in a tenant whose actor did not answer that way).
var errNoAnswer = errors.New("tenant state missing")

// tenantCollector emits per-tenant state gauges at scrape time.
type tenantCollector struct {
	tenants *tenantSet

	mu      sync.Mutex
	source  TenantLister
	timeout time.Duration

	breakerState    *prometheus.Desc
	tokensAvailable *prometheus.Desc
	tokensMax       *prometheus.Desc
	paused          *prometheus.Desc
	quarantined     *prometheus.Desc
	window          *prometheus.Desc
	inFlight        *prometheus.Desc
	waiting         *prometheus.Desc
	scrapeErrors    prometheus.Counter
}

func newTenantCollector(tenants *tenantSet) *tenantCollector {
	name := func(n string) string { return prometheus.BuildFQName(namespace, "", n) }
	return &tenantCollector{
		tenants: tenants,
		timeout: ScrapeTimeout,
		breakerState: prometheus.NewDesc(name("breaker_state"),
			"1 for the tenant's current circuit breaker state, 0 for the others.",
			[]string{"tenant", "state"}, nil),
		tokensAvailable: prometheus.NewDesc(name("tokens_available"),
			"Tokens in the tenant's rate-limit bucket.", []string{"tenant"}, nil),
		tokensMax: prometheus.NewDesc(name("tokens_max"),
			"Capacity of the tenant's rate-limit bucket.", []string{"tenant"}, nil),
		paused: prometheus.NewDesc(name("tenant_paused"),
			"1 while an operator has paused the tenant's sends.", []string{"tenant"}, nil),
		quarantined: prometheus.NewDesc(name("tenant_quarantined"),
			"1 while the tenant's sends are stopped after repeated actor crashes.", []string{"tenant"}, nil),
		window: prometheus.NewDesc(name("send_window"),
			"The tenant's send window: how many sends it may have in flight now.", []string{"tenant"}, nil),
		inFlight: prometheus.NewDesc(name("sends_in_flight"),
			"The tenant's sends to Meta in flight now.", []string{"tenant"}, nil),
		waiting: prometheus.NewDesc(name("recipients_waiting"),
			"Recipients with a job waiting behind an earlier job to the same recipient.", []string{"tenant"}, nil),
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "tenant_scrape_errors_total",
			Help: "Scrapes that could not read every tenant's state in time.",
		}),
	}
}

func (c *tenantCollector) setSource(src TenantLister) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.source = src
}

func (c *tenantCollector) setTimeout(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timeout = d
}

// Describe implements prometheus.Collector.
func (c *tenantCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.breakerState
	ch <- c.tokensAvailable
	ch <- c.tokensMax
	ch <- c.paused
	ch <- c.quarantined
	ch <- c.window
	ch <- c.inFlight
	ch <- c.waiting
	c.scrapeErrors.Describe(ch)
}

// Collect implements prometheus.Collector: it reads the tenants' state and
// emits what it got, counting a scrape error when the source failed, timed
// out or left a tenant out.
func (c *tenantCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	src, timeout := c.source, c.timeout
	c.mu.Unlock()
	if src != nil {
		infos, err := c.read(src, timeout)
		if c.emit(ch, infos) != nil || err != nil {
			c.scrapeErrors.Inc()
		}
	}
	c.scrapeErrors.Collect(ch)
}

type readResult struct {
	infos []messages.TenantInfo
	err   error
}

// read calls src.List on its own goroutine so that a source ignoring ctx still
// cannot hold the scrape past timeout.
func (c *tenantCollector) read(src TenantLister, timeout time.Duration) ([]messages.TenantInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan readResult, 1)
	go func() {
		infos, err := src.List(ctx)
		done <- readResult{infos, err}
	}()
	select {
	case r := <-done:
		return r.infos, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// emit sends the gauges of every configured tenant in infos, once each;
// ids that are not configured are dropped, so they cannot become labels.
func (c *tenantCollector) emit(ch chan<- prometheus.Metric, infos []messages.TenantInfo) error {
	var err error
	seen := make(map[string]bool, len(infos))
	for _, t := range infos {
		if !c.tenants.has(t.ID) || seen[t.ID] {
			continue
		}
		seen[t.ID] = true
		if t.CircuitState == "" {
			err = errNoAnswer
			continue
		}
		state := strings.ToLower(t.CircuitState)
		for _, s := range breakerStates {
			ch <- prometheus.MustNewConstMetric(c.breakerState, prometheus.GaugeValue, boolValue(s == state), t.ID, s)
		}
		ch <- prometheus.MustNewConstMetric(c.tokensAvailable, prometheus.GaugeValue, t.TokensAvailable, t.ID)
		ch <- prometheus.MustNewConstMetric(c.tokensMax, prometheus.GaugeValue, float64(t.TokensMax), t.ID)
		ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, boolValue(t.Paused), t.ID)
		ch <- prometheus.MustNewConstMetric(c.quarantined, prometheus.GaugeValue, boolValue(t.Quarantined), t.ID)
		ch <- prometheus.MustNewConstMetric(c.window, prometheus.GaugeValue, float64(t.Window), t.ID)
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(t.InFlight), t.ID)
		ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(t.RecipientsWaiting), t.ID)
	}
	return err
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
