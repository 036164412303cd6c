package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit/localrun"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// throughputCase is one cell of the throughput grid.
type throughputCase struct{ tenants, prefetch int }

// throughputLoad is how many jobs a run drains, and how long it may take.
type throughputLoad struct {
	jobs int
	cap  time.Duration
}

// throughputLoad sizes a run so that the baseline drains it in a few
// seconds. One tenant gets fewer jobs: it was served one job at a time
// before tenants had send windows, and its rows stay comparable with the
// runs of then.
func (e *benchEnv) throughputLoad(c throughputCase) throughputLoad {
	jobs := 6000
	if c.tenants == 1 {
		jobs = 3000
	}
	if e.quick {
		return throughputLoad{jobs: jobs / 3, cap: 3 * time.Second}
	}
	return throughputLoad{jobs: jobs, cap: 7 * time.Second}
}

// throughputDefaults gives every tenant limits the load never reaches.
const throughputDefaults = "rate_limit: {per_minute: 100000000, burst: 1000000}"

// parseThroughputCases reads "TxP,TxP,..." (tenants x prefetch).
func parseThroughputCases(s string) ([]throughputCase, error) {
	var out []throughputCase
	for _, f := range strings.Split(s, ",") {
		ts, ps, ok := strings.Cut(strings.TrimSpace(f), "x")
		t, err1 := strconv.Atoi(ts)
		p, err2 := strconv.Atoi(ps)
		if !ok || err1 != nil || err2 != nil || t < 1 || t > 1000 || p < 1 || p > 1000 {
			return nil, fmt.Errorf("%w: --throughput-cases: %q is not TENANTSxPREFETCH (tenants 1-1000, prefetch 1-1000)", ErrUsage, f)
		}
		out = append(out, throughputCase{t, p})
	}
	return out, nil
}

func (e *benchEnv) throughput(ctx context.Context) ([]benchRow, error) {
	cases := e.throughputCases
	type sample struct {
		worker, baseline []drainResult
		ratio, deferrals []float64
	}
	samples := make([]sample, len(cases))
	for rep := range e.reps {
		for i, c := range cases {
			load := e.throughputLoad(c)
			// Alternate which side goes first, so a trend in the
			// machine's load does not favour one.
			order := []bool{true, false}
			if (rep+i)%2 == 1 {
				order = []bool{false, true}
			}
			var w, b drainResult
			for _, isWorker := range order {
				var err error
				if isWorker {
					var deferred int64
					w, deferred, err = e.workerThroughput(ctx, c, load)
					samples[i].deferrals = append(samples[i].deferrals, float64(deferred))
				} else {
					b, err = e.baselineThroughput(ctx, c, load)
				}
				e.fake.Reset()
				if err != nil {
					return nil, fmt.Errorf("throughput %d tenants prefetch %d: %w", c.tenants, c.prefetch, err)
				}
			}
			e.progress("throughput %4d tenants, prefetch %3d, rep %d: worker %s; baseline %s", c.tenants, c.prefetch, rep+1, w, b)
			samples[i].worker = append(samples[i].worker, w)
			samples[i].baseline = append(samples[i].baseline, b)
			if b.rate > 0 {
				samples[i].ratio = append(samples[i].ratio, w.rate/b.rate)
			}
		}
	}
	var rows []benchRow
	for i, c := range cases {
		w, b := medianDrain(samples[i].worker), medianDrain(samples[i].baseline)
		if e.throughputCPU == nil {
			e.throughputCPU = map[throughputCase]drainResult{}
		}
		e.throughputCPU[c] = w
		r, deferred := benchMedian(samples[i].ratio), benchMedian(samples[i].deferrals)
		value := fmt.Sprintf("worker %.0f/s, baseline %.0f/s, ratio %.2f; CPU/job %s vs %s; first %d results in %s vs %s",
			w.rate, b.rate, r, w.cpu(), b.cpu(), throughputWarmup(w.jobs), benchDur(w.startup), benchDur(b.startup))
		if deferred > 0 {
			value += fmt.Sprintf("; %.0f deferrals", deferred)
		}
		if !w.drained {
			value += fmt.Sprintf("; worker did %d/%d jobs in %s (rate is an upper bound)", w.done, w.jobs, e.throughputLoad(c).cap)
		}
		if !b.drained {
			value += fmt.Sprintf("; baseline did %d/%d jobs", b.done, b.jobs)
		}
		rows = append(rows, benchRow{
			Measure: fmt.Sprintf("throughput %d tenants, prefetch %d", c.tenants, c.prefetch),
			Value:   value,
			Goal:    "ratio >= 0.85",
			Status:  benchMet(r >= 0.85 && (w.drained || !b.drained)),
			Numbers: map[string]float64{"workerJobsPerSec": w.rate, "baselineJobsPerSec": b.rate, "ratio": r,
				"workerDeferrals": deferred, "workerJobsDone": float64(w.done), "jobs": float64(w.jobs),
				"workerSelfCPUMicrosPerJob": w.selfPerJob, "workerBrokerCPUMicrosPerJob": w.brokerPerJob,
				"baselineSelfCPUMicrosPerJob": b.selfPerJob, "baselineBrokerCPUMicrosPerJob": b.brokerPerJob,
				"workerStartupSeconds": w.startup.Seconds(), "baselineStartupSeconds": b.startup.Seconds()},
		})
	}
	return rows, nil
}

// drainResult is one drain: jobs/s after the first twentieth of the
// results, whether every job was done within the cap, how long that first
// twentieth took, and CPU per job (µs) after it of this process (the worker or the baseline,
// plus the fake Meta and the polling, which are the same for both) and of
// the broker.
type drainResult struct {
	rate                     float64
	jobs, done               int
	drained                  bool
	startup                  time.Duration // until the first twentieth of the results
	selfPerJob, brokerPerJob float64
}

func (d drainResult) String() string {
	s := fmt.Sprintf("%.0f/s, CPU/job %s", d.rate, d.cpu())
	if d.startup > 0 {
		s += ", start " + benchDur(d.startup)
	}
	if !d.drained {
		s += fmt.Sprintf(", only %d of %d done", d.done, d.jobs)
	}
	return s
}

func (d drainResult) cpu() string {
	if d.brokerPerJob == 0 {
		return fmt.Sprintf("%.0fµs", d.selfPerJob)
	}
	return fmt.Sprintf("%.0f+%.0fµs", d.selfPerJob, d.brokerPerJob)
}

// medianDrain takes the median of each measure on its own; it counts as
// drained only when every run drained, and done is the smallest.
func medianDrain(ds []drainResult) drainResult {
	if len(ds) == 0 {
		return drainResult{}
	}
	out := drainResult{jobs: ds[0].jobs, done: ds[0].done, drained: true}
	var rate, self, brk, startup []float64
	for _, d := range ds {
		rate, self, brk = append(rate, d.rate), append(self, d.selfPerJob), append(brk, d.brokerPerJob)
		startup = append(startup, float64(d.startup))
		out.drained = out.drained && d.drained
		out.done = min(out.done, d.done)
	}
	out.rate, out.selfPerJob, out.brokerPerJob = benchMedian(rate), benchMedian(self), benchMedian(brk)
	out.startup = time.Duration(benchMedian(startup))
	return out
}

// throughputBodies spreads n jobs round-robin over the first tenants.
func (e *benchEnv) throughputBodies(tenants, n int) [][]byte {
	now := time.Now()
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = benchJobBody(e.tenants[i%tenants].ID, i, now)
	}
	return bodies
}

// publishToShards publishes throughputBodies(tenants, ...) to each job's
// shard through the shards exchange.
func (e *benchEnv) publishToShards(ctx context.Context, pub *benchPublisher, topo broker.Topology, tenants int, bodies [][]byte) error {
	return publishDirect(ctx, pub, topo, func(i int) string { return e.tenants[i%tenants].ID }, bodies)
}

// drain publishes the jobs, starts the consumer and measures results/s
// from the start until every job has its result, or until the cap.
func (e *benchEnv) drain(ctx context.Context, side string, topo broker.Topology, tenants int, load throughputLoad, start func() error) (drainResult, error) {
	pub, err := dialBenchPublisher(e.amqpURL, true)
	if err != nil {
		return drainResult{}, err
	}
	defer pub.close()
	bodies := e.throughputBodies(tenants, load.jobs)
	if side == "worker" {
		// Straight to the shards, as a producer on the direct path
		// publishes: the intake's extra hop is the shards section's row.
		err = e.publishToShards(ctx, pub, topo, tenants, bodies)
	} else {
		err = pub.publishAll(ctx, topo.Queue, bodies)
	}
	if err != nil {
		return drainResult{}, err
	}
	t0 := time.Now()
	// The label marks the side's goroutines (they inherit it) in a
	// --cpuprofile.
	var startErr error
	pprof.Do(ctx, pprof.Labels("side", side), func(context.Context) { startErr = start() })
	if startErr != nil {
		return drainResult{}, startErr
	}
	// The clock and the CPU counters start once the first twentieth of
	// the results is in: a side's start-up (dialling, and for the worker
	// acquiring its shards and starting its tenants) is a cost of the
	// process's life, not of each job, and is reported on its own.
	deadline := t0.Add(load.cap)
	first, err := benchWaitDepth(ctx, pub.ch, topo.ResultsQueue(), throughputWarmup(load.jobs), deadline, 5*time.Millisecond)
	tk, selfK, brokerK := time.Now(), selfCPU(), brokerCPU(e.brokerPID)
	if err != nil || first == 0 {
		return drainResult{jobs: load.jobs}, err
	}
	done, err := benchWaitDepth(ctx, pub.ch, topo.ResultsQueue(), load.jobs, deadline, 5*time.Millisecond)
	t1, self1, broker1 := time.Now(), selfCPU(), brokerCPU(e.brokerPID)
	if err != nil {
		return drainResult{jobs: load.jobs}, err
	}
	measured := done - first
	if measured <= 0 || !t1.After(tk) {
		// Not even the first twentieth came in before the cap.
		return drainResult{rate: float64(done) / t1.Sub(t0).Seconds(), jobs: load.jobs, done: done, startup: tk.Sub(t0)}, nil
	}
	return drainResult{
		rate:         float64(measured) / t1.Sub(tk).Seconds(),
		jobs:         load.jobs,
		done:         done,
		drained:      done >= load.jobs,
		startup:      tk.Sub(t0),
		selfPerJob:   float64((self1 - selfK).Microseconds()) / float64(measured),
		brokerPerJob: float64((broker1 - brokerK).Microseconds()) / float64(measured),
	}, nil
}

// throughputWarmup is how many results of a drain of n jobs are in when
// its clock starts: a twentieth, at least one.
func throughputWarmup(n int) int { return max(1, n/20) }

// workerThroughput returns the worker's drain and how many deferrals its
// tenants made meanwhile.
func (e *benchEnv) workerThroughput(ctx context.Context, c throughputCase, load throughputLoad) (drainResult, int64, error) {
	p := strconv.Itoa(c.prefetch)
	// Made under the side's label too: the goroutines it starts now (the
	// actors' pool, the broker's) are the worker's in a --cpuprofile.
	var bw *benchWorker
	var err error
	pprof.Do(ctx, pprof.Labels("side", "worker"), func(ctx context.Context) {
		bw, err = e.newBenchWorker(ctx, "throughput", e.tenants[:c.tenants], throughputDefaults, io.Discard,
			"--prefetch", p, "--prefetch-reduced", p, "--backpressure-high", "100000000", "--backpressure-low", "1")
	})
	if err != nil {
		return drainResult{}, 0, err
	}
	defer bw.close()
	d, err := e.drain(ctx, "worker", bw.topo, c.tenants, load, func() error { bw.start(); return nil })
	if err != nil {
		return d, 0, err
	}
	deferred, err := bw.deferredTotal()
	return d, deferred, err
}

// deferredTotal sums the deferrals of every tenant.
func (b *benchWorker) deferredTotal() (int64, error) {
	tenants, err := b.w.Tenants(context.Background())
	if err != nil {
		return 0, err
	}
	var n int64
	for _, t := range tenants {
		n += t.DeferredTotal
	}
	return n, nil
}

func (e *benchEnv) baselineThroughput(ctx context.Context, c throughputCase, load throughputLoad) (drainResult, error) {
	topo := broker.NewTopology(benchQueueName("baseline"), "")
	topo.ResultsExchange = topo.Queue + ".results"
	topo.Tiers = nil
	if err := declareBaselineTopology(e.amqpURL, topo); err != nil {
		return drainResult{}, err
	}
	defer func() { _ = topo.Delete(e.amqpURL) }()
	b := &benchBaseline{url: e.amqpURL, topo: topo, metaURL: e.fake.URL() + "/v23.0/", prefetch: c.prefetch,
		workers: c.prefetch, tenants: map[string]localrun.Tenant{}}
	for _, t := range e.tenants[:c.tenants] {
		b.tenants[t.ID] = t
	}
	defer b.stop()
	return e.drain(ctx, "baseline", topo, c.tenants, load, b.start)
}

func declareBaselineTopology(url string, topo broker.Topology) error {
	conn, ch, err := localrun.DialChannel(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, q := range []string{topo.Queue, topo.ResultsQueue()} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			return err
		}
	}
	if err := ch.ExchangeDeclare(topo.ResultsExchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return err
	}
	return ch.QueueBind(topo.ResultsQueue(), "#", topo.ResultsExchange, false, nil)
}

// benchBaseline is the bare consumer the worker is compared with: no actors, no
// rate limits, no isolation; workers goroutines share one consumer and one
// confirming publisher, like the worker's two connections.
type benchBaseline struct {
	url      string
	topo     broker.Topology
	metaURL  string // base URL with the API version, ending in /
	prefetch int
	workers  int
	tenants  map[string]localrun.Tenant

	consConn, pubConn *amqp.Connection
	wg                sync.WaitGroup
}

func (b *benchBaseline) start() error {
	var err error
	if b.pubConn, err = amqp.Dial(b.url); err != nil {
		return err
	}
	pub, err := b.pubConn.Channel()
	if err != nil {
		return err
	}
	if err := pub.Confirm(false); err != nil {
		return err
	}
	if b.consConn, err = amqp.Dial(b.url); err != nil {
		return err
	}
	cons, err := b.consConn.Channel()
	if err != nil {
		return err
	}
	if err := cons.Qos(b.prefetch, 0, false); err != nil {
		return err
	}
	deliveries, err := cons.Consume(b.topo.Queue, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	// A time limit on each call, as the worker's META_TIMEOUT (and as any
	// consumer needs: without one a call Meta never answers holds its
	// goroutine for ever). It is part of the work: net/http then watches
	// each request's context, a few microseconds a call.
	client := &http.Client{Timeout: whatsapp.DefaultTimeout, Transport: &http.Transport{MaxIdleConns: 1024,
		MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}}
	for range b.workers {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			for d := range deliveries {
				if err := b.handle(client, pub, d); err != nil {
					_ = d.Nack(false, true)
				}
			}
		}()
	}
	return nil
}

func (b *benchBaseline) handle(client *http.Client, pub *amqp.Channel, d amqp.Delivery) error {
	var job struct {
		Metadata json.RawMessage `json:"metadata"`
		Payload  json.RawMessage `json:"wabaPayload"`
	}
	var id struct {
		TenantID   string `json:"tenantId"`
		InternalID string `json:"internalId"`
	}
	if err := json.Unmarshal(d.Body, &job); err != nil {
		return err
	}
	if err := json.Unmarshal(job.Metadata, &id); err != nil {
		return err
	}
	t, ok := b.tenants[id.TenantID]
	if !ok {
		return errors.New("unknown tenant")
	}
	start := time.Now()
	req, err := http.NewRequest(http.MethodPost, b.metaURL+t.Phone+"/messages", bytes.NewReader(job.Payload))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+t.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	var answer struct {
		Messages []struct {
			ID string `json:"id"`
		} `json:"messages"`
	}
	err = json.NewDecoder(resp.Body).Decode(&answer)
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || len(answer.Messages) == 0 {
		return fmt.Errorf("meta answered %d", resp.StatusCode)
	}
	now := time.Now()
	res := messages.Result{TenantID: id.TenantID, InternalID: id.InternalID, Metadata: job.Metadata,
		Status: messages.StatusSent, WAMID: answer.Messages[0].ID, Attempts: 1,
		DurationMs: now.Sub(start).Milliseconds(), At: messages.FormatTime(now)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dc, err := pub.PublishWithDeferredConfirmWithContext(ctx, b.topo.ResultsExchange, res.Status, false, false,
		amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, Timestamp: now, Body: res.Marshal()})
	if err != nil {
		return err
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		return fmt.Errorf("result not confirmed: %v", err)
	}
	return d.Ack(false)
}

// stop closes both connections (unacked jobs go back to the queue) and
// waits for the goroutines.
func (b *benchBaseline) stop() {
	if b.consConn != nil {
		_ = b.consConn.Close()
	}
	if b.pubConn != nil {
		_ = b.pubConn.Close()
	}
	b.wg.Wait()
}
