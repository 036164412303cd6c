package worker_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
	"github.com/wadispatch/wadispatch/testkit/localrun"
	"github.com/wadispatch/wadispatch/worker"
)

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func get(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A worker started while the broker is down keeps trying (one
// broker_unreachable line per attempt, no secret in it) with /healthz 200
// and /readyz 503 meanwhile, and serves once the broker is back. /readyz
// needs no token even with one set, and the metrics listener serves
// /metrics without it.
func TestAWorkerStartedBeforeTheBrokerWaitsForIt(t *testing.T) {
	node := testkit.StartRabbitNode(t)
	node.StopApp()
	fake := testkit.StartFakeMeta(t)
	tn := testTenant{ID: "early", Phone: "740000000000001", Token: "EAAtoken-early-s3cr3t"}
	path, getenv, err := localrun.WriteTenants(t.TempDir(), "", []testTenant{tn}, fake, nil)
	require.NoError(t, err)
	adminAddr, metricsAddr := freeAddr(t), freeAddr(t)
	const adminToken = "admin-s3cr3t-token"
	topo := testkit.Topology(t)
	cfg, err := config.Load(getenv, []string{"--amqp-url", node.URL(), "--amqp-queue", topo.Queue,
		"--results-exchange", topo.ResultsExchange, "--tenants-file", path, "--meta-base-url", fake.URL(),
		"--admin-addr", adminAddr, "--admin-token", adminToken, "--metrics-addr", metricsAddr,
		"--tenants-watch", "off"}, io.Discard)
	require.NoError(t, err)
	logs := &testkit.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan *worker.Worker, 1)
	failed := make(chan error, 1)
	go func() {
		w, err := worker.New(ctx, cfg, worker.Options{Logs: logs, Getenv: getenv})
		if err != nil {
			failed <- err
			return
		}
		started <- w
	}()

	require.Eventually(t, func() bool { return strings.Count(logs.String(), `"broker_unreachable"`) >= 2 },
		30*time.Second, 20*time.Millisecond, "it keeps trying")
	status, _ := get(adminAddr, "/healthz")
	assert.Equal(t, http.StatusOK, status, "alive")
	status, body := get(adminAddr, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, status, "not ready, and no token asked")
	assert.Contains(t, body, "connecting to the broker")
	status, _ = get(adminAddr, "/v1/tenants")
	assert.Equal(t, http.StatusUnauthorized, status, "tenants still need the token")
	status, body = get(metricsAddr, "/metrics")
	assert.Equal(t, http.StatusOK, status, "the metrics listener asks no token")
	assert.Contains(t, body, `wadispatch_build_info{goversion="go`)
	status, _ = get(metricsAddr, "/v1/tenants")
	assert.Equal(t, http.StatusNotFound, status, "and serves nothing about tenants")

	node.StartApp()
	var w *worker.Worker
	select {
	case w = <-started:
	case err := <-failed:
		require.FailNow(t, "New failed", "%v", err)
	case <-time.After(60 * time.Second):
		require.FailNow(t, "the worker did not connect after the broker came back")
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	require.Eventually(t, func() bool { s, _ := get(adminAddr, "/readyz"); return s == http.StatusOK }, 30*time.Second,
		20*time.Millisecond, "ready once the broker is there")
	cancel()
	require.NoError(t, <-done)
	out := logs.String()
	assert.NotContains(t, out, adminToken)
	assert.NotContains(t, out, "guest:guest", "no broker password in the lines")
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `"broker_unreachable"`) {
			assert.Contains(t, line, `"retryInMs"`)
		}
	}
}

// /readyz answers 503 from the moment the shutdown starts, while the jobs
// in hand finish.
func TestReadyzIsUnavailableFromTheStartOfTheShutdown(t *testing.T) {
	tn := testTenant{ID: "slowstop", Phone: "750000000000001", Token: "EAAtoken-slowstop-s3cr3t"}
	h := startHarness(t, []testTenant{tn}, harnessOptions{Args: append([]string{"--tenants-watch", "off", "--meta-timeout", "10s"}, adminArgs...)})
	h.fake.Behave(tn.Phone, fakemeta.Behaviour{Hang: true})
	h.publish(job(tn.ID, "held-1", "15550004000"))
	require.Eventually(t, func() bool { return h.adminTenant(tn.ID).InFlight == 1 }, 10*time.Second, 10*time.Millisecond)
	addr := h.worker.AdminAddr()
	status, _ := get(addr, "/readyz")
	require.Equal(t, http.StatusOK, status)
	go h.stop()
	require.Eventually(t, func() bool { s, _ := get(addr, "/readyz"); return s == http.StatusServiceUnavailable },
		10*time.Second, 5*time.Millisecond, "503 while the send in hand is still out")
	_, body := get(addr, "/readyz")
	assert.Contains(t, body, "stopping")
	h.fake.Behave(tn.Phone, fakemeta.Behaviour{})
}
