package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
	"github.com/wadispatch/wadispatch/worker"
)

// adminArgs turn the admin API on, on a free loopback port.
var adminArgs = []string{"--admin-addr", "127.0.0.1:0"}

// call makes one admin API request and decodes a JSON answer into out
// (when out is not nil), returning the status.
func (h *harness) call(method, path, token string, out any) int {
	h.tb.Helper()
	req, err := http.NewRequest(method, "http://"+h.worker.AdminAddr()+path, nil)
	require.NoError(h.tb, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(h.tb, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(h.tb, err)
	if out != nil && resp.StatusCode < 300 {
		require.NoError(h.tb, json.Unmarshal(body, out), "answer to %s %s: %s", method, path, body)
	}
	return resp.StatusCode
}

func (h *harness) adminTenant(id string) messages.TenantInfo {
	h.tb.Helper()
	var info messages.TenantInfo
	require.Equal(h.tb, http.StatusOK, h.call(http.MethodGet, "/v1/tenants/"+id, "", &info))
	return info
}

func countCalls(calls []fakemeta.Call, phone string) int {
	n := 0
	for _, c := range calls {
		if c.PhoneNumberID == phone {
			n++
		}
	}
	return n
}

func TestAdminAnswersWhileTheTenantsMetaCallHangs(t *testing.T) {
	tenants := defaultTenants(1)
	a := tenants[0]
	h := startHarness(t, tenants, harnessOptions{Args: append([]string{"--meta-timeout", "10s"}, adminArgs...)})
	h.fake.Behave(a.Phone, fakemeta.Behaviour{Hang: true})
	h.publish(job(a.ID, "hang-1", "15550000020"))
	waitCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.fake.WaitInFlight(waitCtx, 1), "the send is hanging at the fake Meta")

	// The answer comes from the tenant's actor while its call hangs (the
	// actors' tests show it takes no time; here it must simply come).
	for range 5 {
		assert.Equal(t, 1, h.adminTenant(a.ID).InFlight, "the hanging send is in flight")
	}
	h.fake.Behave(a.Phone, fakemeta.Behaviour{})
}

func TestAdminPauseResumeAndBreakerReset(t *testing.T) {
	t.Parallel() // waits out a pause recheck (15 s) beside the other slow test
	paused := testTenant{ID: "paused", Phone: "700000000000001", Token: "EAAtoken-paused-s3cr3t"}
	broken := testTenant{ID: "broken", Phone: "700000000000002", Token: "EAAtoken-broken-s3cr3t",
		Extra: "breaker: {failure_threshold: 2, open_for: 600s}"}
	h := startHarness(t, []testTenant{paused, broken}, harnessOptions{Args: adminArgs})

	var info messages.TenantInfo
	require.Equal(t, http.StatusOK, h.call(http.MethodPost, "/v1/tenants/paused/pause", "", &info))
	assert.True(t, info.Paused)
	for i := range 5 {
		h.publish(job(paused.ID, fmt.Sprintf("paused-%d", i), "15550000021"))
	}
	require.Eventually(t, func() bool { return h.adminTenant(paused.ID).Deferred == 5 }, 10*time.Second, 20*time.Millisecond,
		"a paused tenant's jobs are deferred")
	assert.Zero(t, countCalls(h.fake.Calls(), paused.Phone), "a paused tenant sends nothing")

	h.fake.Behave(broken.Phone, fakemeta.Behaviour{FailRaw: 500})
	h.publish(job(broken.ID, "broken-0", "15550000022"))
	h.publish(job(broken.ID, "broken-1", "15550000022"))
	require.Eventually(t, func() bool { return h.adminTenant(broken.ID).CircuitState == "OPEN" }, 10*time.Second, 20*time.Millisecond)
	h.fake.Behave(broken.Phone, fakemeta.Behaviour{})
	require.Equal(t, http.StatusOK, h.call(http.MethodPost, "/v1/tenants/broken/breaker/reset", "", &info))
	assert.Equal(t, "CLOSED", info.CircuitState)
	h.publish(job(broken.ID, "broken-2", "15550000022"))
	// With the breaker still open this would wait 600 s; reset, it is sent now
	// (and the two failed jobs on their 1–2 s retry).
	for id, r := range h.results(3, 20*time.Second) {
		assert.Equal(t, messages.StatusSent, r.Status, id)
		assert.True(t, strings.HasPrefix(id, "broken-"), id)
	}

	require.Equal(t, http.StatusOK, h.call(http.MethodPost, "/v1/tenants/paused/resume", "", &info))
	assert.False(t, info.Paused)
	for id, r := range h.results(5, 40*time.Second) {
		assert.Equal(t, messages.StatusSent, r.Status, id)
	}
	assert.Equal(t, 5, countCalls(h.fake.Calls(), paused.Phone))
	assert.Equal(t, http.StatusNotFound, h.call(http.MethodPost, "/v1/tenants/nobody/pause", "", nil))
	assert.Equal(t, http.StatusNotFound, h.call(http.MethodGet, "/v1/tenants/nobody", "", nil))
}

func TestAdminSecurity(t *testing.T) {
	t.Run("RefusesNonLoopbackWithoutToken", func(t *testing.T) {
		// cmd/wadispatch's tests check that this exits with code 2.
		err := worker.Main(context.Background(), []string{"--admin-addr", "0.0.0.0:8081"}, io.Discard, worker.Options{})
		assert.ErrorIs(t, err, config.ErrConfig)
		assert.ErrorContains(t, err, "ADMIN_TOKEN is required")
	})

	const token = "admin-s3cr3t-token-value"
	tenants := defaultTenants(2)
	h := startHarness(t, tenants, harnessOptions{Args: []string{"--admin-addr", "0.0.0.0:0", "--admin-token", token}})
	h.publish(job(tenants[0].ID, "m-1", "15550000025"))
	h.results(1, 10*time.Second)

	t.Run("NeedsTheToken", func(t *testing.T) {
		for _, path := range []string{"/v1/tenants", "/v1/tenants/tenant00", "/v1/shards", "/v1/config", "/metrics"} {
			assert.Equal(t, http.StatusUnauthorized, h.call(http.MethodGet, path, "", nil), "%s without a token", path)
			assert.Equal(t, http.StatusUnauthorized, h.call(http.MethodGet, path, "wrong", nil), "%s with a wrong token", path)
			assert.Equal(t, http.StatusOK, h.call(http.MethodGet, path, token, nil), "%s with the token", path)
		}
		assert.Equal(t, http.StatusUnauthorized, h.call(http.MethodPost, "/v1/tenants/tenant00/pause", "wrong", nil))
		assert.Equal(t, http.StatusUnauthorized, h.call(http.MethodPost, "/v1/reload", "", nil))
		assert.Equal(t, http.StatusOK, h.call(http.MethodGet, "/healthz", "", nil), "/healthz is open")
		assert.Equal(t, http.StatusOK, h.call(http.MethodGet, "/readyz", "", nil), "/readyz is open: probes keep no secret")
	})

	t.Run("MetricsParseAndCarryNoSecret", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodGet, "http://"+h.worker.AdminAddr()+"/metrics", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		for _, tn := range tenants {
			assert.NotContains(t, string(body), tn.Token)
		}
		assert.NotContains(t, string(body), token)
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
		require.NoError(t, err, "/metrics is Prometheus text")
		for _, name := range []string{"wadispatch_jobs_total", "wadispatch_deferrals_total", "wadispatch_breaker_state",
			"wadispatch_tokens_available", "wadispatch_send_duration_seconds", "wadispatch_prefetch",
			"wadispatch_queue_depth", "wadispatch_tenant_restarts_total"} {
			assert.Contains(t, families, name)
		}
		sent := 0.0
		for _, m := range families["wadispatch_jobs_total"].GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["tenant"] == "tenant00" && labels["outcome"] == messages.StatusSent {
				sent = m.GetCounter().GetValue()
			}
		}
		assert.EqualValues(t, 1, sent, "tenant00's sent job is counted")
	})
}
