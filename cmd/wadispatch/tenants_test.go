package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/testkit/localrun"
	"github.com/wadispatch/wadispatch/worker"
)

// startAdminWorker runs a worker with the admin API on a free loopback
// port, on queues of its own, against a fake Meta; it stops when the test
// ends. (The worker's own end-to-end tests are in package worker.)
func startAdminWorker(t *testing.T, tenants []localrun.Tenant) (*worker.Worker, broker.Topology) {
	t.Helper()
	fake := testkit.StartFakeMeta(t)
	topo := testkit.Topology(t)
	path, getenv, err := localrun.WriteTenants(t.TempDir(), "rate_limit: {per_minute: 60000, burst: 1000}", tenants, fake, nil)
	require.NoError(t, err)
	cfg, err := config.Load(getenv, []string{
		"--amqp-url", testkit.AMQPURL(), "--amqp-queue", topo.Queue, "--results-exchange", topo.ResultsExchange,
		"--tenants-file", path, "--meta-base-url", fake.URL(), "--admin-addr", "127.0.0.1:0", "--shutdown-timeout", "5s",
	}, io.Discard)
	require.NoError(t, err)
	w, err := worker.New(context.Background(), cfg, worker.Options{Getenv: getenv})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "worker run")
		case <-time.After(30 * time.Second):
			t.Errorf("worker did not stop within 30s")
		}
	})
	return w, topo
}

func TestTenantsCommandPrintsEveryTenant(t *testing.T) {
	tenants := make([]localrun.Tenant, 3)
	for i := range tenants {
		id := fmt.Sprintf("tenant%02d", i)
		tenants[i] = localrun.Tenant{ID: id, Phone: fmt.Sprintf("1000000000%05d", i), Token: "EAAtoken-" + id + "-s3cr3t"}
	}
	w, topo := startAdminWorker(t, tenants)
	ch := testkit.Channel(t)
	testkit.Publish(t, ch, topo.Queue, fmt.Appendf(nil, `{"metadata":{"tenantId":%q,"internalId":"t-1"},`+
		`"wabaPayload":{"messaging_product":"whatsapp","to":"15550000026","type":"text","text":{"body":"hi"}}}`, tenants[1].ID), nil)
	testkit.Collect(t, ch, topo.ResultsQueue(), 1, 10*time.Second)
	env := func(k string) string {
		if k == "ADMIN_ADDR" {
			return w.AdminAddr()
		}
		return ""
	}

	var out, errOut bytes.Buffer
	require.Equal(t, exitOK, run(context.Background(), []string{"tenants"}, env, &out, &errOut), errOut.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 1+len(tenants), out.String())
	assert.Contains(t, lines[0], "BREAKER")
	for i, tn := range tenants {
		assert.True(t, strings.HasPrefix(lines[i+1], tn.ID+" "), "row %d: %s", i+1, lines[i+1])
	}

	out.Reset()
	require.Equal(t, exitOK, run(context.Background(), []string{"tenants", "--json", tenants[1].ID}, env, &out, &errOut))
	var info messages.TenantInfo
	require.NoError(t, json.Unmarshal(out.Bytes(), &info))
	assert.Equal(t, tenants[1].ID, info.ID)
	assert.EqualValues(t, 1, info.Sent)

	errOut.Reset()
	code := run(context.Background(), []string{"tenants", "--admin-addr", "127.0.0.1:1"}, env, io.Discard, &errOut)
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, errOut.String(), "worker not reachable at http://127.0.0.1:1")
}
