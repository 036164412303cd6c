package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
	"github.com/wadispatch/wadispatch/testkit/localrun"
	"github.com/wadispatch/wadispatch/whatsapp"
	"github.com/wadispatch/wadispatch/worker"
)

// testTenant is a tenant of a harness.
type testTenant = localrun.Tenant

// harness runs a whole worker against the real broker and the fake Meta
// server, on queues of its own.
type harness struct {
	tb      testing.TB
	fake    *fakemeta.Server
	topo    broker.Topology
	cfg     config.Config
	worker  *worker.Worker
	conn    *amqp.Connection // the test's own, for ch
	ch      *amqp.Channel
	logs    *testkit.SyncBuffer
	tenants map[string]testTenant
	stop    func()
	// defaults is the tenants file's defaults block, for files written
	// later (tenantsFile).
	defaults string
}

type harnessOptions struct {
	Defaults string          // YAML of the defaults block
	Sender   whatsapp.Sender // wraps the real client when set by wrapSender
	Args     []string        // extra flags for config.Load
	// WrapSender, when set, wraps the Graph client (to inject panics).
	WrapSender func(whatsapp.Sender) whatsapp.Sender
	// Prepublish jobs are in the queue before the worker starts consuming.
	Prepublish [][]byte
	// BeforeRun runs after the worker is built, before it consumes.
	BeforeRun func(*harness)
	// BeforeConfig, when set, is given the tenants file written and
	// returns the path the worker is to read instead (a symlink to it).
	BeforeConfig func(h *harness, path string) string
	// AMQPURL is the broker (default the shared test broker), e.g. a
	// testkit.RabbitNode's for a test that disrupts it.
	AMQPURL string
}

func defaultTenants(n int) []testTenant {
	out := make([]testTenant, n)
	for i := range out {
		id := fmt.Sprintf("tenant%02d", i)
		out[i] = testTenant{ID: id, Phone: fmt.Sprintf("1000000000%05d", i), Token: "EAAtoken-" + id + "-s3cr3t"}
	}
	return out
}

// startHarness starts the fake Meta and a worker for tenants; both stop
// when the test ends.
func startHarness(tb testing.TB, tenants []testTenant, opts harnessOptions) *harness {
	tb.Helper()
	h := &harness{tb: tb, fake: testkit.StartFakeMeta(tb), topo: testkit.Topology(tb), logs: &testkit.SyncBuffer{},
		tenants: map[string]testTenant{}}
	defaults := opts.Defaults
	if defaults == "" {
		defaults = "rate_limit: {per_minute: 60000, burst: 1000}\nbreaker: {failure_threshold: 5, open_for: 60s}\nmax_attempts: 10"
	}
	for _, t := range tenants {
		h.tenants[t.ID] = t
	}
	h.defaults = defaults
	path, getenv, err := localrun.WriteTenants(tb.TempDir(), defaults, tenants, h.fake, nil)
	require.NoError(tb, err)
	if opts.BeforeConfig != nil {
		path = opts.BeforeConfig(h, path)
	}
	url := testkit.AMQPURL()
	if opts.AMQPURL != "" {
		url = opts.AMQPURL
	}
	args := append([]string{
		"--amqp-url", url, "--amqp-queue", h.topo.Queue, "--results-exchange", h.topo.ResultsExchange,
		"--tenants-file", path, "--meta-base-url", h.fake.URL(), "--meta-timeout", "2s",
		"--admin-addr", "off", "--log-level", "debug", "--shutdown-timeout", "5s",
	}, opts.Args...)
	cfg, err := config.Load(getenv, args, &bytes.Buffer{})
	require.NoError(tb, err)
	h.cfg = cfg
	var sender whatsapp.Sender
	if opts.WrapSender != nil {
		sender = opts.WrapSender(whatsapp.NewClient(cfg.MetaBaseURL, cfg.MetaAPIVersion, cfg.MetaTimeout))
	}
	w, err := worker.New(context.Background(), cfg, worker.Options{Logs: h.logs, Getenv: getenv, Sender: sender})
	require.NoError(tb, err)
	h.worker = w
	h.conn, err = amqp.Dial(url)
	require.NoError(tb, err, "connect to RabbitMQ (run: go tool task rabbitmq)")
	tb.Cleanup(func() { _ = h.conn.Close() })
	h.ch, err = h.conn.Channel()
	require.NoError(tb, err)
	h.publishAll(opts.Prepublish)
	if opts.BeforeRun != nil {
		opts.BeforeRun(h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// Ready once it has claimed its shards: before, the admin API answers
	// for every tenant that another worker owns it.
	require.Eventually(tb, w.Ready, 30*time.Second, 5*time.Millisecond, "the worker got ready")
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				assert.NoError(tb, err, "worker run")
			case <-time.After(30 * time.Second):
				tb.Errorf("worker did not stop within 30s")
			}
		})
	}
	tb.Cleanup(func() {
		h.stop()
		h.checkLogs()
	})
	return h
}

// job builds a valid job body for a tenant.
func job(tenant, internalID, to string) []byte {
	b, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"tenantId": tenant, "internalId": internalID, "extra": map[string]any{"k": 1}},
		"wabaPayload": map[string]any{"messaging_product": "whatsapp", "recipient_type": "individual",
			"to": to, "type": "text", "text": map[string]any{"body": "job " + internalID}},
	})
	return b
}

func (h *harness) publish(body []byte) { testkit.Publish(h.tb, h.ch, h.topo.Queue, body, nil) }

// publishAll publishes bodies back to back and then waits for all their
// confirms, which is much faster than one confirm round trip each.
func (h *harness) publishAll(bodies [][]byte) {
	h.tb.Helper()
	if len(bodies) == 0 {
		return
	}
	require.NoError(h.tb, h.ch.Confirm(false))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	confirms := make([]*amqp.DeferredConfirmation, 0, len(bodies))
	for _, body := range bodies {
		dc, err := h.ch.PublishWithDeferredConfirmWithContext(ctx, "", h.topo.Queue, true, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body,
		})
		require.NoError(h.tb, err)
		confirms = append(confirms, dc)
	}
	for _, dc := range confirms {
		ok, err := dc.WaitContext(ctx)
		require.NoError(h.tb, err)
		require.True(h.tb, ok, "broker nacked a publish")
	}
}

// results collects n results, keyed by internal id, failing on a duplicate.
func (h *harness) results(n int, timeout time.Duration) map[string]messages.Result {
	h.tb.Helper()
	out := map[string]messages.Result{}
	for _, d := range testkit.Collect(h.tb, h.ch, h.topo.ResultsQueue(), n, timeout) {
		var r messages.Result
		require.NoError(h.tb, json.Unmarshal(d.Body, &r), "result body %s", d.Body)
		_, dup := out[r.InternalID]
		assert.False(h.tb, dup, "two results for %s", r.InternalID)
		assert.Equal(h.tb, r.Status, d.RoutingKey, "routing key is the status")
		out[r.InternalID] = r
	}
	return out
}

// dlq collects n dead letters.
func (h *harness) dlq(n int, timeout time.Duration) []amqp.Delivery {
	h.tb.Helper()
	return testkit.Collect(h.tb, h.ch, h.topo.DLQ(), n, timeout)
}

func (h *harness) depth(queue string) int { return testkit.Depth(h.tb, h.ch, queue) }

// queued is how many jobs wait in the intake and the shard queues.
func (h *harness) queued() int {
	n := 0
	for _, q := range h.topo.JobQueues() {
		n += h.depth(q)
	}
	return n
}

// checkLogs asserts what every test's logs must satisfy: each line is a
// JSON object with the required keys, and no tenant token or broker
// password appears anywhere.
func (h *harness) checkLogs() {
	h.tb.Helper()
	out := h.logs.String()
	for _, t := range h.tenants {
		assert.NotContains(h.tb, out, t.Token, "a tenant token reached the logs")
	}
	if pw := h.cfg.AMQPPassword(); len(pw) > 3 {
		assert.NotContains(h.tb, out, pw, "the broker password reached the logs")
	}
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if !assert.NoError(h.tb, json.Unmarshal([]byte(line), &m), "log line %d is not JSON: %s", i, line) {
			continue
		}
		for _, k := range []string{"timestamp", "level", "service", "version", "event"} {
			assert.Contains(h.tb, m, k, "log line %d lacks %q: %s", i, k, line)
		}
	}
}

// events returns the parsed log lines whose event is name.
func (h *harness) events(name string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(h.logs.String(), "\n") {
		if !strings.Contains(line, `"`+name+`"`) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["event"] == name {
			out = append(out, m)
		}
	}
	return out
}
