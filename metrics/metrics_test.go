package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/metrics"
)

var configured = []string{"acme", "globex"}

type scrape struct {
	raw      string
	families map[string]*dto.MetricFamily
}

// scrapeOver serves m's handler over real HTTP, scrapes it once and parses
// the text exposition.
func scrapeOver(tb testing.TB, m *metrics.Metrics) scrape {
	tb.Helper()
	srv := httptest.NewServer(m.Handler())
	tb.Cleanup(srv.Close)
	return scrapeURL(tb, srv.URL)
}

func scrapeURL(tb testing.TB, url string) scrape {
	tb.Helper()
	resp, err := http.Get(url)
	require.NoError(tb, err)
	defer resp.Body.Close()
	require.Equal(tb, http.StatusOK, resp.StatusCode)
	raw, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(raw)))
	require.NoError(tb, err, "exposition:\n%s", raw)
	return scrape{raw: string(raw), families: families}
}

// metric finds the series of family name whose labels include labels.
func (s scrape) metric(name string, labels map[string]string) (*dto.Metric, bool) {
	f, ok := s.families[name]
	if !ok {
		return nil, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		return m, true
	}
	return nil, false
}

// value is the counter, gauge or untyped value of one series; absent
// series fail the test.
func (s scrape) value(tb testing.TB, name string, labels map[string]string) float64 {
	tb.Helper()
	m, ok := s.metric(name, labels)
	require.True(tb, ok, "no series %s%v in:\n%s", name, labels, s.raw)
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	return m.GetUntyped().GetValue()
}

// tenantLabels is every value of a "tenant" label in the scrape.
func (s scrape) tenantLabels() map[string]bool {
	seen := map[string]bool{}
	for _, f := range s.families {
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "tenant" {
					seen[lp.GetValue()] = true
				}
			}
		}
	}
	return seen
}

func l(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestObserver(t *testing.T) {
	m := metrics.New(configured)
	for range 3 {
		m.JobOutcome("acme", messages.StatusSent)
	}
	m.JobOutcome("acme", messages.StatusFailed)
	m.JobOutcome("globex", messages.StatusDeadLettered)
	m.Deferred("acme", "rate_limited")
	m.Deferred("acme", "rate_limited")
	m.Deferred("globex", "breaker_open")
	m.SendLatency("acme", 200*time.Millisecond)
	m.SendLatency("acme", 40*time.Millisecond)
	m.TenantRestarted("globex")
	s := scrapeOver(t, m)

	t.Run("JobsAreCountedByTenantAndOutcome", func(t *testing.T) {
		assert.Equal(t, 3.0, s.value(t, "wadispatch_jobs_total", l("tenant", "acme", "outcome", "sent")))
		assert.Equal(t, 1.0, s.value(t, "wadispatch_jobs_total", l("tenant", "acme", "outcome", "failed")))
		assert.Equal(t, 1.0, s.value(t, "wadispatch_jobs_total", l("tenant", "globex", "outcome", "dead_lettered")))
		assert.Equal(t, 0.0, s.value(t, "wadispatch_jobs_total", l("tenant", "globex", "outcome", "sent")))
	})

	t.Run("DeferralsAreCountedByTenantAndReason", func(t *testing.T) {
		assert.Equal(t, 2.0, s.value(t, "wadispatch_deferrals_total", l("tenant", "acme", "reason", "rate_limited")))
		assert.Equal(t, 1.0, s.value(t, "wadispatch_deferrals_total", l("tenant", "globex", "reason", "breaker_open")))
		assert.Equal(t, 0.0, s.value(t, "wadispatch_deferrals_total", l("tenant", "acme", "reason", "throttled")))
		_, early := s.metric("wadispatch_deferrals_total", l("tenant", "acme", "reason", "early"))
		assert.False(t, early, "a job back early is not a deferral: no series")
	})

	t.Run("SendDurationIsAHistogramInSeconds", func(t *testing.T) {
		series, ok := s.metric("wadispatch_send_duration_seconds", l("tenant", "acme"))
		require.True(t, ok)
		h := series.GetHistogram()
		assert.Equal(t, uint64(2), h.GetSampleCount())
		assert.InDelta(t, 0.24, h.GetSampleSum(), 1e-9)
		buckets := map[float64]uint64{}
		for _, b := range h.GetBucket() {
			buckets[b.GetUpperBound()] = b.GetCumulativeCount()
		}
		assert.Equal(t, uint64(0), buckets[0.005], "the lowest bucket is 5 ms")
		assert.Equal(t, uint64(1), buckets[0.05])
		assert.Equal(t, uint64(2), buckets[0.25])
		assert.Contains(t, buckets, 30.0, "the highest bucket is 30 s")
	})

	t.Run("RestartsAreCountedByTenant", func(t *testing.T) {
		assert.Equal(t, 1.0, s.value(t, "wadispatch_tenant_restarts_total", l("tenant", "globex")))
		assert.Equal(t, 0.0, s.value(t, "wadispatch_tenant_restarts_total", l("tenant", "acme")))
	})
}

func TestUnconfiguredTenant(t *testing.T) {
	m := metrics.New(configured)
	const intruder = "tenant-from-a-forged-job-7d1c"
	m.JobOutcome(intruder, messages.StatusDeadLettered)
	m.JobOutcome("", messages.StatusDeadLettered)
	m.Deferred(intruder, "busy")
	m.SendLatency(intruder, time.Second)
	m.TenantRestarted(intruder)
	m.SetTenants(listFunc(func(context.Context) ([]messages.TenantInfo, error) {
		return []messages.TenantInfo{{ID: intruder, CircuitState: "OPEN", TokensMax: 1}}, nil
	}))
	s := scrapeOver(t, m)

	t.Run("IsRecordedUnderUnknown", func(t *testing.T) {
		assert.Equal(t, 2.0, s.value(t, "wadispatch_jobs_total", l("tenant", "_unknown", "outcome", "dead_lettered")))
		assert.Equal(t, 1.0, s.value(t, "wadispatch_deferrals_total", l("tenant", "_unknown", "reason", "busy")))
		assert.Equal(t, 1.0, s.value(t, "wadispatch_tenant_restarts_total", l("tenant", "_unknown")))
		h, ok := s.metric("wadispatch_send_duration_seconds", l("tenant", "_unknown"))
		require.True(t, ok)
		assert.Equal(t, uint64(1), h.GetHistogram().GetSampleCount())
	})

	t.Run("NeverBecomesALabel", func(t *testing.T) {
		assert.Equal(t, map[string]bool{"acme": true, "globex": true, "_unknown": true}, s.tenantLabels())
		assert.NotContains(t, s.raw, intruder)
	})
}

func TestPreinitialisedSeries(t *testing.T) {
	s := scrapeOver(t, metrics.New(configured))
	for _, tenant := range append([]string{"_unknown"}, configured...) {
		for _, outcome := range []string{"sent", "failed", "dead_lettered"} {
			assert.Equal(t, 0.0, s.value(t, "wadispatch_jobs_total", l("tenant", tenant, "outcome", outcome)))
		}
		assert.Equal(t, 0.0, s.value(t, "wadispatch_deferrals_total", l("tenant", tenant, "reason", "rate_limited")))
		assert.Equal(t, 0.0, s.value(t, "wadispatch_tenant_restarts_total", l("tenant", tenant)))
		_, ok := s.metric("wadispatch_send_duration_seconds", l("tenant", tenant))
		assert.True(t, ok, tenant)
	}
}

func TestWorkerGauges(t *testing.T) {
	m := metrics.New(configured)

	t.Run("ReflectTheLastValues", func(t *testing.T) {
		m.SetPrefetch(10)
		m.SetPrefetch(5)
		m.SetQueueDepth(1234)
		m.PrefetchChanged()
		m.PrefetchChanged()
		m.SetReady(true)
		s := scrapeOver(t, m)
		assert.Equal(t, 5.0, s.value(t, "wadispatch_prefetch", nil))
		assert.Equal(t, 1234.0, s.value(t, "wadispatch_queue_depth", nil))
		assert.Equal(t, 2.0, s.value(t, "wadispatch_prefetch_changes_total", nil))
		assert.Equal(t, 1.0, s.value(t, "wadispatch_broker_ready", nil))
	})

	t.Run("PrefetchHeldIsTheLastValue", func(t *testing.T) {
		m.SetHeld(7)
		m.SetHeld(10)
		s := scrapeOver(t, m)
		assert.Equal(t, 10.0, s.value(t, "wadispatch_prefetch_held", nil))
		assert.Equal(t, dto.MetricType_GAUGE, s.families["wadispatch_prefetch_held"].GetType())
		m.SetHeld(0)
		assert.Equal(t, 0.0, scrapeOver(t, m).value(t, "wadispatch_prefetch_held", nil))
	})

	t.Run("SaturatedSecondsAddUp", func(t *testing.T) {
		m := metrics.New(configured)
		m.AddSaturated(1500 * time.Millisecond)
		m.AddSaturated(250 * time.Millisecond)
		m.AddSaturated(0)
		m.AddSaturated(-time.Second) // a clock step back adds nothing, and does not panic
		s := scrapeOver(t, m)
		assert.InDelta(t, 1.75, s.value(t, "wadispatch_prefetch_saturated_seconds_total", nil), 1e-9)
		assert.Equal(t, dto.MetricType_COUNTER, s.families["wadispatch_prefetch_saturated_seconds_total"].GetType())
	})

	t.Run("PrefetchHeldAndSaturatedStartAtZero", func(t *testing.T) {
		s := scrapeOver(t, metrics.New(configured))
		assert.Equal(t, 0.0, s.value(t, "wadispatch_prefetch_held", nil))
		assert.Equal(t, 0.0, s.value(t, "wadispatch_prefetch_saturated_seconds_total", nil))
	})

	t.Run("ReadyFalseIsZero", func(t *testing.T) {
		m.SetReady(false)
		assert.Equal(t, 0.0, scrapeOver(t, m).value(t, "wadispatch_broker_ready", nil))
	})

	t.Run("RuntimeAndProcessCollectorsAreRegistered", func(t *testing.T) {
		s := scrapeOver(t, m)
		assert.Contains(t, s.families, "go_goroutines")
		assert.Contains(t, s.families, "process_cpu_seconds_total")
	})
}

func TestTenantState(t *testing.T) {
	const secret = "EAAG-never-in-metrics"

	t.Run("GaugesFollowTheSource", func(t *testing.T) {
		m := metrics.New(configured)
		m.SetTenants(listFunc(func(context.Context) ([]messages.TenantInfo, error) {
			return []messages.TenantInfo{
				{ID: "acme", CircuitState: "OPEN", TokensAvailable: 12.5, TokensMax: 80, Paused: true,
					InFlight: 37, Window: 64, RecipientsWaiting: 5,
					LastError: "auth: token " + secret + " rejected"},
				{ID: "globex", CircuitState: "HALF_OPEN", TokensAvailable: 0, TokensMax: 20, Quarantined: true,
					InFlight: 3, Window: 2, RecipientsWaiting: 0},
				{ID: "acme", CircuitState: "CLOSED"}, // a duplicate is ignored, not a scrape failure
			}, nil
		}))
		s := scrapeOver(t, m)
		for _, c := range []struct {
			tenant, state string
			want          float64
		}{
			{"acme", "closed", 0}, {"acme", "open", 1}, {"acme", "half_open", 0},
			{"globex", "closed", 0}, {"globex", "open", 0}, {"globex", "half_open", 1},
		} {
			assert.Equal(t, c.want, s.value(t, "wadispatch_breaker_state", l("tenant", c.tenant, "state", c.state)), "%s %s", c.tenant, c.state)
		}
		assert.Equal(t, 12.5, s.value(t, "wadispatch_tokens_available", l("tenant", "acme")))
		assert.Equal(t, 80.0, s.value(t, "wadispatch_tokens_max", l("tenant", "acme")))
		assert.Equal(t, 0.0, s.value(t, "wadispatch_tokens_available", l("tenant", "globex")))
		assert.Equal(t, 20.0, s.value(t, "wadispatch_tokens_max", l("tenant", "globex")))
		assert.Equal(t, 1.0, s.value(t, "wadispatch_tenant_paused", l("tenant", "acme")))
		assert.Equal(t, 0.0, s.value(t, "wadispatch_tenant_paused", l("tenant", "globex")))
		assert.Equal(t, 0.0, s.value(t, "wadispatch_tenant_quarantined", l("tenant", "acme")))
		assert.Equal(t, 1.0, s.value(t, "wadispatch_tenant_quarantined", l("tenant", "globex")))
		assert.Equal(t, 64.0, s.value(t, "wadispatch_send_window", l("tenant", "acme")))
		assert.Equal(t, 37.0, s.value(t, "wadispatch_sends_in_flight", l("tenant", "acme")))
		assert.Equal(t, 5.0, s.value(t, "wadispatch_recipients_waiting", l("tenant", "acme")))
		assert.Equal(t, 2.0, s.value(t, "wadispatch_send_window", l("tenant", "globex")))
		assert.Equal(t, 3.0, s.value(t, "wadispatch_sends_in_flight", l("tenant", "globex")))
		assert.Equal(t, 0.0, s.value(t, "wadispatch_recipients_waiting", l("tenant", "globex")))
		for _, name := range []string{"wadispatch_send_window", "wadispatch_sends_in_flight", "wadispatch_recipients_waiting"} {
			assert.Equal(t, dto.MetricType_GAUGE, s.families[name].GetType(), name)
			assert.Len(t, s.families[name].GetMetric(), 2, "one series per configured tenant: %s", name)
		}
		assert.Equal(t, 0.0, s.value(t, "wadispatch_tenant_scrape_errors_total", nil))
		assert.NotContains(t, s.raw, secret)
	})

	t.Run("AbsentWithoutASource", func(t *testing.T) {
		s := scrapeOver(t, metrics.New(configured))
		assert.NotContains(t, s.families, "wadispatch_breaker_state")
		assert.NotContains(t, s.families, "wadispatch_send_window")
		assert.NotContains(t, s.families, "wadispatch_sends_in_flight")
		assert.NotContains(t, s.families, "wadispatch_recipients_waiting")
		assert.Equal(t, 0.0, s.value(t, "wadispatch_tenant_scrape_errors_total", nil))
	})

	t.Run("SourceErrorEmitsWhatItGotAndCountsAnError", func(t *testing.T) {
		m := metrics.New(configured)
		m.SetTenants(listFunc(func(context.Context) ([]messages.TenantInfo, error) {
			return []messages.TenantInfo{{ID: "acme", CircuitState: "CLOSED", TokensMax: 80}}, errors.New("globex did not answer")
		}))
		s := scrapeOver(t, m)
		assert.Equal(t, 1.0, s.value(t, "wadispatch_breaker_state", l("tenant", "acme", "state", "closed")))
		_, ok := s.metric("wadispatch_breaker_state", l("tenant", "globex"))
		assert.False(t, ok)
		assert.Equal(t, 1.0, s.value(t, "wadispatch_tenant_scrape_errors_total", nil))
	})

	t.Run("TenantWithoutStateIsLeftOutAndCounted", func(t *testing.T) {
		m := metrics.New(configured)
		m.SetTenants(listFunc(func(context.Context) ([]messages.TenantInfo, error) {
			return []messages.TenantInfo{
				{ID: "acme", CircuitState: "CLOSED", TokensMax: 80},
				{ID: "globex", Active: true, LastError: "no answer from tenant actor"},
			}, nil
		}))
		s := scrapeOver(t, m)
		_, ok := s.metric("wadispatch_tokens_max", l("tenant", "globex"))
		assert.False(t, ok)
		_, ok = s.metric("wadispatch_send_window", l("tenant", "globex"))
		assert.False(t, ok, "no made-up window of 0 for a tenant that did not answer")
		assert.Equal(t, 80.0, s.value(t, "wadispatch_tokens_max", l("tenant", "acme")))
		assert.Equal(t, 1.0, s.value(t, "wadispatch_tenant_scrape_errors_total", nil))
	})

	t.Run("BlockingSourceIsCutOffByTheTimeout", func(t *testing.T) {
		m := metrics.New(configured)
		m.SetScrapeTimeout(100 * time.Millisecond)
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		m.SetTenants(listFunc(func(context.Context) ([]messages.TenantInfo, error) {
			<-release // ignores ctx on purpose
			return nil, nil
		}))
		m.JobOutcome("acme", messages.StatusSent)

		start := time.Now()
		s := scrapeOver(t, m)
		elapsed := time.Since(start)
		assert.Less(t, elapsed, time.Second)
		assert.GreaterOrEqual(t, elapsed, 100*time.Millisecond)
		assert.NotContains(t, s.families, "wadispatch_breaker_state")
		assert.Equal(t, 1.0, s.value(t, "wadispatch_tenant_scrape_errors_total", nil))
		assert.Equal(t, 1.0, s.value(t, "wadispatch_jobs_total", l("tenant", "acme", "outcome", "sent")),
			"the rest of the scrape is intact")
	})

	t.Run("SourceGetsADeadline", func(t *testing.T) {
		m := metrics.New(configured)
		deadlines := make(chan time.Time, 1)
		m.SetTenants(listFunc(func(ctx context.Context) ([]messages.TenantInfo, error) {
			d, _ := ctx.Deadline()
			deadlines <- d
			return nil, nil
		}))
		scrapeOver(t, m)
		deadline := <-deadlines
		require.False(t, deadline.IsZero(), "the source's context has a deadline")
		d := time.Until(deadline)
		assert.LessOrEqual(t, d, metrics.ScrapeTimeout)
		assert.Greater(t, d, metrics.ScrapeTimeout-time.Second)
	})
}

// Observer methods are called from every tenant actor's goroutine, and
// scrapes run beside them.
func TestConcurrentUse(t *testing.T) {
	m := metrics.New(configured)
	m.SetTenants(listFunc(func(context.Context) ([]messages.TenantInfo, error) {
		return []messages.TenantInfo{{ID: "acme", CircuitState: "CLOSED"}}, nil
	}))
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)

	const workers, each = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			tenant := configured[w%len(configured)]
			for range each {
				m.JobOutcome(tenant, messages.StatusSent)
				m.Deferred(tenant, "busy")
				m.SendLatency(tenant, 10*time.Millisecond)
				m.TenantRestarted("someone-else")
				m.SetQueueDepth(w)
				m.SetReady(w%2 == 0)
				m.PrefetchChanged()
				m.SetHeld(w)
				m.AddSaturated(time.Millisecond)
			}
		})
	}
	for range 3 {
		wg.Go(func() {
			resp, err := http.Get(srv.URL)
			if assert.NoError(t, err) {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				assert.Equal(t, http.StatusOK, resp.StatusCode)
			}
		})
	}
	wg.Wait()

	s := scrapeURL(t, srv.URL)
	perTenant := float64(workers / len(configured) * each)
	assert.Equal(t, perTenant, s.value(t, "wadispatch_jobs_total", l("tenant", "acme", "outcome", "sent")))
	assert.Equal(t, perTenant, s.value(t, "wadispatch_jobs_total", l("tenant", "globex", "outcome", "sent")))
	assert.Equal(t, float64(workers*each), s.value(t, "wadispatch_tenant_restarts_total", l("tenant", "_unknown")))
	assert.Equal(t, float64(workers*each), s.value(t, "wadispatch_prefetch_changes_total", nil))
	assert.InDelta(t, float64(workers*each)/1000, s.value(t, "wadispatch_prefetch_saturated_seconds_total", nil), 1e-6)
}

// listFunc is a metrics.TenantLister answering with a function.
type listFunc func(ctx context.Context) ([]messages.TenantInfo, error)

func (f listFunc) List(ctx context.Context) ([]messages.TenantInfo, error) { return f(ctx) }

// After a reload, an added tenant has its series and a removed one loses
// them; what a removed id counts afterwards is _unknown.
func TestReloadedTenantsChangeTheLabels(t *testing.T) {
	m := metrics.New([]string{"acme", "globex"})
	m.JobOutcome("globex", "sent")
	m.SetTenantIDs([]string{"acme", "initech"})
	m.JobOutcome("initech", "sent")
	m.JobOutcome("globex", "sent")
	s := scrapeOver(t, m)
	assert.Equal(t, 1.0, s.value(t, "wadispatch_jobs_total", l("tenant", "initech", "outcome", "sent")))
	assert.Equal(t, 1.0, s.value(t, "wadispatch_jobs_total", l("tenant", metrics.UnknownTenant, "outcome", "sent")))
	_, ok := s.metric("wadispatch_jobs_total", l("tenant", "globex", "outcome", "sent"))
	assert.False(t, ok, "a removed tenant's series are gone")

	m.ConfigLoaded(true, time.Unix(1700000000, 0), "abc")
	m.ConfigLoaded(false, time.Unix(1700000100, 0), "")
	s = scrapeOver(t, m)
	assert.Equal(t, 0.0, s.value(t, "wadispatch_config_last_reload_successful", nil))
	assert.Equal(t, 1700000000.0, s.value(t, "wadispatch_config_last_reload_success_timestamp_seconds", nil))
	assert.Equal(t, 1.0, s.value(t, "wadispatch_config_info", l("hash", "abc")))
}
