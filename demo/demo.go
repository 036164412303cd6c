// Package demo is `wadispatch demo`: it runs the worker against the local
// RabbitMQ and an in-process fake Graph API, publishes a mixed batch of
// sample jobs for four sample tenants (plain sends, retried 500s, a rate
// limit that binds, a permanent rejection) plus three bad ones, and prints
// what became of each job, the dead letters and the tenants' state.
package demo

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/wadispatch/wadispatch/admin"
	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
	"github.com/wadispatch/wadispatch/testkit/localrun"
	"github.com/wadispatch/wadispatch/worker"
)

// demoTenant is one sample tenant of the demo and how the fake Meta treats it.
type demoTenant struct {
	id, phone, note string
	jobs            int
	behave          fakemeta.Behaviour
	rate            string
}

var demoTenants = []demoTenant{
	{id: "acme", phone: "100000000000001", jobs: 4, note: "plain sends"},
	{id: "globex", phone: "100000000000002", jobs: 3, note: "Meta answers HTTP 500 twice: retried with backoff",
		behave: fakemeta.Behaviour{FailRaw: 500, FailTimes: 2}},
	{id: "initech", phone: "100000000000003", jobs: 5, note: "60/min, burst 3, empty at start: one a second",
		rate: "rate_limit: {per_minute: 60, burst: 3}"},
	{id: "umbrella", phone: "100000000000004", jobs: 2, note: "Meta rejects the first job permanently (131026)",
		behave: fakemeta.Behaviour{FailCode: 131026, FailTimes: 1}},
}

// Run runs the worker against the local RabbitMQ and an in-process fake
// Meta, publishes a mixed batch of sample jobs and prints what became of
// each, then shuts the worker down. args are the demo's flags (usage and
// flag errors go to stderr; --help returns flag.ErrHelp); getenv is read
// for AMQP_URL. A configuration error wraps config.ErrConfig.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wadispatch demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	amqpURL := fs.String("amqp-url", firstNonEmpty(getenv("AMQP_URL"), "amqp://guest:guest@127.0.0.1:5672/"), "broker URL (env AMQP_URL)")
	queue := fs.String("queue", "demo.whatsapp.outbound", "job queue for the demo (deleted afterwards unless --keep)")
	keep := fs.Bool("keep", false, "keep the demo's queues and their messages afterwards")
	logsTo := fs.String("logs", filepath.Join(os.TempDir(), "wadispatch-demo.log"), `where the worker's JSON logs go ("-" for stderr)`)
	timeout := fs.Duration("timeout", 60*time.Second, "give up waiting for results after this long")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: wadispatch demo [flags]")
		fmt.Fprintln(stderr, "\nStarts a fake Meta Graph API and the worker on a local RabbitMQ, publishes sample")
		fmt.Fprintln(stderr, "jobs for four tenants plus three bad ones, and prints what became of each job.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	fake, dir, cleanup, err := localrun.StartMeta("wadispatch-demo-")
	if err != nil {
		return err
	}
	defer cleanup()
	tenants := make([]localrun.Tenant, len(demoTenants))
	for i, t := range demoTenants {
		tenants[i] = localrun.Tenant{ID: t.id, Phone: t.phone, Token: "demo-token-" + t.id + "-0123456789", Extra: t.rate}
	}
	tenantsFile, demoEnv, err := localrun.WriteTenants(dir,
		"rate_limit: {per_minute: 600, burst: 20}\nbreaker: {failure_threshold: 5, open_for: 10s}\nmax_attempts: 5",
		tenants, fake, getenv)
	if err != nil {
		return err
	}
	for _, t := range demoTenants {
		fake.Behave(t.phone, t.behave)
	}
	cfg, err := config.Load(demoEnv, []string{
		"--amqp-url", *amqpURL, "--amqp-queue", *queue, "--results-exchange", *queue + ".results",
		"--tenants-file", tenantsFile, "--meta-base-url", fake.URL(), "--admin-addr", "off",
		"--shutdown-timeout", "5s",
	}, stderr)
	if err != nil {
		return err
	}
	logs := stderr
	if *logsTo != "-" {
		f, err := os.Create(*logsTo)
		if err != nil {
			return err
		}
		defer f.Close()
		logs = f
	}
	fmt.Fprintf(stdout, "fake Meta Graph API on %s; worker logs in %s\n", fake.URL(), *logsTo)
	w, err := worker.New(ctx, cfg, worker.Options{Logs: logs, Getenv: demoEnv})
	if err != nil {
		return fmt.Errorf("start worker (is RabbitMQ running? try: go tool task rabbitmq): %w", err)
	}
	topo := broker.NewTopology(cfg.Queue, cfg.ResultsExchange)
	conn, ch, err := localrun.DialChannel(cfg.AMQPURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, q := range []string{topo.Queue, topo.DLQ(), topo.ResultsQueue()} {
		if _, err := ch.QueuePurge(q, false); err != nil {
			return fmt.Errorf("purge %s: %w", q, err)
		}
	}
	if !*keep {
		defer func() { _ = topo.Delete(cfg.AMQPURL) }()
	}

	jobs := demoJobs()
	fmt.Fprintf(stdout, "publishing %d jobs to %s\n", len(jobs), cfg.Queue)
	for _, j := range jobs {
		if err := ch.PublishWithContext(ctx, "", cfg.Queue, false, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: j.body,
		}); err != nil {
			return err
		}
	}
	runCtx, stopWorker := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(runCtx) }()

	wantResults, wantDLQ := 0, 0
	for _, j := range jobs {
		if j.result {
			wantResults++
		}
		if j.dlq {
			wantDLQ++
		}
	}
	results, dlq, waitErr := collectDemo(ctx, ch, topo, wantResults, wantDLQ)
	// What "wadispatch tenants" would show for this worker, asked the same way.
	tenantsCtx, cancelTenants := context.WithTimeout(ctx, 5*time.Second)
	tenantsNow, tenantsErr := w.Tenants(tenantsCtx)
	cancelTenants()
	stopWorker()
	if err := <-stopped; err != nil {
		return err
	}
	printDemo(stdout, jobs, results, dlq)
	if waitErr != nil {
		return fmt.Errorf("demo incomplete: %w", waitErr)
	}
	if tenantsErr == nil {
		fmt.Fprintln(stdout, "\ntenants, as `wadispatch tenants` shows them on a running worker:")
		if err := admin.WriteTable(stdout, tenantsNow); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "\nall %d jobs accounted for: %d results, %d dead letters; fake Meta saw %d calls\n",
		len(jobs), len(results), len(dlq), len(fake.Calls()))
	return nil
}

type demoJob struct {
	label       string
	tenant, id  string
	body        []byte
	result, dlq bool
}

func demoJobs() []demoJob {
	var jobs []demoJob
	for _, t := range demoTenants {
		for i := 1; i <= t.jobs; i++ {
			id := fmt.Sprintf("%s-order-%d", t.id, 1000+i)
			jobs = append(jobs, demoJob{label: t.note, tenant: t.id, id: id, result: true,
				dlq:  t.behave.FailCode == 131026 && i == 1,
				body: jobBody(t.id, id, fmt.Sprintf("1555000%04d", i), fmt.Sprintf("Your order %d is confirmed", 1000+i))})
		}
	}
	jobs = append(jobs,
		demoJob{label: "not JSON", body: []byte(`{"metadata": {"tenantId": "acme"`), dlq: true},
		demoJob{label: "tenant not configured", tenant: "hooli", id: "hooli-1", result: true, dlq: true,
			body: jobBody("hooli", "hooli-1", "15550000001", "hello")},
		demoJob{label: "wabaPayload without to", tenant: "acme", id: "acme-bad-1", result: true, dlq: true,
			body: []byte(`{"metadata":{"tenantId":"acme","internalId":"acme-bad-1"},"wabaPayload":{"messaging_product":"whatsapp","type":"text","text":{"body":"hi"}}}`)},
	)
	return jobs
}

func jobBody(tenant, id, to, text string) []byte {
	b, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"tenantId": tenant, "internalId": id, "source": "demo"},
		"wabaPayload": map[string]any{"messaging_product": "whatsapp", "recipient_type": "individual",
			"to": to, "type": "text", "text": map[string]any{"body": text}},
	})
	return b
}

type dlqEntry struct{ reason, detail string }

func collectDemo(ctx context.Context, ch *amqp.Channel, topo broker.Topology, wantResults, wantDLQ int) (map[string]messages.Result, []dlqEntry, error) {
	results := map[string]messages.Result{}
	var dlq []dlqEntry
	for len(results) < wantResults || len(dlq) < wantDLQ {
		got := false
		if d, ok, err := ch.Get(topo.ResultsQueue(), true); err != nil {
			return results, dlq, err
		} else if ok {
			var r messages.Result
			if json.Unmarshal(d.Body, &r) == nil {
				results[r.InternalID] = r
			}
			got = true
		}
		if d, ok, err := ch.Get(topo.DLQ(), true); err != nil {
			return results, dlq, err
		} else if ok {
			reason, _ := d.Headers[messages.HeaderDLQReason].(string)
			detail, _ := d.Headers[messages.HeaderDLQDetail].(string)
			dlq = append(dlq, dlqEntry{reason, detail})
			got = true
		}
		if got {
			continue
		}
		select {
		case <-ctx.Done():
			return results, dlq, fmt.Errorf("%d of %d results and %d of %d dead letters arrived: %w",
				len(results), wantResults, len(dlq), wantDLQ, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return results, dlq, nil
}

func printDemo(w io.Writer, jobs []demoJob, results map[string]messages.Result, dlq []dlqEntry) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tTENANT\tSTATUS\tATTEMPTS\tMS\tDETAIL\tSCENARIO")
	for _, j := range jobs {
		if !j.result {
			continue
		}
		r, ok := results[j.id]
		if !ok {
			fmt.Fprintf(tw, "%s\t%s\t(no result)\t\t\t\t%s\n", j.id, j.tenant, j.label)
			continue
		}
		detail := r.WAMID
		switch r.Status {
		case messages.StatusFailed:
			detail = fmt.Sprintf("code %d: %s", r.ErrorCode, r.ErrorMessage)
		case messages.StatusDeadLettered:
			detail = "reason " + r.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", j.id, j.tenant, r.Status, r.Attempts, r.DurationMs, detail, j.label)
	}
	tw.Flush()
	sort.Slice(dlq, func(i, k int) bool { return dlq[i].reason < dlq[k].reason })
	fmt.Fprintf(w, "\ndead letter queue (%d):\n", len(dlq))
	for _, e := range dlq {
		fmt.Fprintf(w, "  %-16s %s\n", e.reason, e.detail)
	}
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
