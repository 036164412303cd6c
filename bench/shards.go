package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
	"github.com/wadispatch/wadispatch/testkit/localrun"
	"github.com/wadispatch/wadispatch/worker"
)

// The shards rows: several workers on one queue, each owning a share of its
// shard queues.
const (
	shardsTenants  = 100
	shardsPrefetch = 100
	shardsLatency  = 300 * time.Millisecond
	// shardsMaxWorkers is the largest cluster the throughput rows run.
	shardsMaxWorkers = 3
	// shardsSettleTimeout bounds every wait for the workers to own their
	// shares.
	shardsSettleTimeout = 30 * time.Second
	// shardsHandoverGoal is the longest a handover (or a join) may take.
	shardsHandoverGoal = 5 * time.Second
	// shardsIntakeGoal is the least intake/direct ratio at Meta's latency.
	shardsIntakeGoal = 0.85
	// shardsLoadRate is the jobs/s published during a handover.
	shardsLoadRate = 100
	// shardsLoadBase numbers the handover's jobs, far above the backlogs'.
	shardsLoadBase = 5_000_000
)

// shardsLoad is how many jobs each drain has, at Meta's latency and at
// none, and how long one may take.
func (e *benchEnv) shardsLoad() (slow, fast int, cap time.Duration) {
	if e.quick {
		return 1000, 1500, 20 * time.Second
	}
	return 2000, 3000, 30 * time.Second
}

// shardsPath is where a drain's backlog is published.
type shardsPath int

const (
	shardsDirect shardsPath = iota // the shards exchange, keyed by the tenant's shard
	shardsIntake                   // the intake, moved to the shards by a worker
)

// shardsCluster is a set of workers on one queue: the same tenants file and
// flags for every one, in-process (each worker.New with connections of its
// own) or, for the victim of a kill, a child process.
type shardsCluster struct {
	e      *benchEnv
	topo   broker.Topology
	args   []string            // the worker's flags
	getenv func(string) string // serves the tenants' tokens
	env    []string            // the same tokens, for a child's environment
	queue  string
	next   int // the next job number
	// deferrals counts the in-process workers' deferrals by reason.
	deferrals *windowDeferrals
}

func (e *benchEnv) newShardsCluster() (*shardsCluster, error) {
	dir, err := os.MkdirTemp(e.dir, "shards-")
	if err != nil {
		return nil, err
	}
	tenants := e.tenants[:shardsTenants]
	path, getenv, err := localrun.WriteTenants(dir, throughputDefaults, tenants, e.fake, nil)
	if err != nil {
		return nil, err
	}
	queue := benchQueueName("shards")
	p := strconv.Itoa(shardsPrefetch)
	c := &shardsCluster{e: e, getenv: getenv, queue: queue, deferrals: &windowDeferrals{},
		args: []string{"--amqp-url", e.amqpURL, "--amqp-queue", queue, "--results-exchange", queue + ".results",
			"--tenants-file", path, "--meta-base-url", e.fake.URL(), "--admin-addr", "off", "--shutdown-timeout", "2s",
			"--prefetch", p, "--prefetch-reduced", p, "--backpressure-high", "100000000", "--backpressure-low", "1"}}
	// The token variables localrun named (WA_TOKEN_<ID>), for a child.
	for _, t := range tenants {
		name := "WA_TOKEN_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(t.ID))
		if getenv(name) == "" {
			return nil, fmt.Errorf("no token variable %s for tenant %s", name, t.ID)
		}
		c.env = append(c.env, name+"="+getenv(name))
	}
	cfg, err := config.Load(getenv, c.args, io.Discard)
	if err != nil {
		return nil, err
	}
	c.topo = broker.NewTopology(cfg.Queue, cfg.ResultsExchange)
	if cfg.Shards > 0 {
		c.topo.Shards = cfg.Shards
	}
	return c, nil
}

// newWorker creates an in-process worker of the cluster (it declares the
// topology); start starts it.
func (c *shardsCluster) newWorker(ctx context.Context) (*benchWorker, error) {
	cfg, err := config.Load(c.getenv, c.args, io.Discard)
	if err != nil {
		return nil, err
	}
	w, err := worker.New(ctx, cfg, worker.Options{Getenv: c.getenv, Logs: c.deferrals})
	if err != nil {
		return nil, err
	}
	return &benchWorker{w: w, cfg: cfg, topo: c.topo}, nil
}

// halt stops a worker without deleting its queues (a worker never started
// is stopped by running it on a cancelled context).
func (b *benchWorker) halt() {
	if b.stop == nil {
		b.start()
	}
	b.stop()
	<-b.done
}

// haltAll stops workers at once.
func haltAll(ws []*benchWorker) {
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); w.halt() }()
	}
	wg.Wait()
}

// purge empties the job queues, the delay tiers and the results queue.
func (c *shardsCluster) purge() error {
	conn, ch, err := localrun.DialChannel(c.e.amqpURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	queues := append(append(c.topo.JobQueues(), c.topo.WaitQueues()...), c.topo.ResultsQueue())
	for _, q := range queues {
		if _, err := ch.QueuePurge(q, false); err != nil {
			return fmt.Errorf("purge %s: %w", q, err)
		}
	}
	return nil
}

func (c *shardsCluster) delete() { _ = c.topo.Delete(c.e.amqpURL) }

// shardsView is one worker's ownership as the bench sees it.
type shardsView struct {
	rank    int
	members int // -1: not known (a child's)
	owned   []int
	intake  bool
}

func viewOf(w *benchWorker) shardsView {
	o := w.w.Ownership()
	return shardsView{rank: o.Rank, members: o.Members, owned: o.Owned, intake: o.Intake}
}

// shardsShare is the shards rank r of n owns: s mod n = r.
func shardsShare(r, n, shards int) []int {
	var owned []int
	for s := r; s < shards; s += n {
		owned = append(owned, s)
	}
	return owned
}

// shardsSettled reports whether views are n workers that own exactly their
// shares: distinct ranks below n, each owning the shards of its rank (so
// every shard is owned once), every one counting n members where it says,
// and one of them moving the intake.
func shardsSettled(n, shards int, views []shardsView) bool {
	if len(views) != n {
		return false
	}
	ranks := map[int]bool{}
	intakes := 0
	for _, v := range views {
		if v.rank < 0 || v.rank >= n || ranks[v.rank] || (v.members >= 0 && v.members != n) {
			return false
		}
		ranks[v.rank] = true
		if v.intake {
			intakes++
		}
		if !slices.Equal(v.owned, shardsShare(v.rank, n, shards)) {
			return false
		}
	}
	return intakes == 1
}

// waitSettled polls views until they are settled, or the timeout; it
// returns how long that took.
func (c *shardsCluster) waitSettled(ctx context.Context, views func() []shardsView, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	var last []shardsView
	for {
		last = views()
		if shardsSettled(len(last), c.topo.Shards, last) {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("%d workers did not own their shares within %s: %s", len(last), timeout, describeViews(last))
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func describeViews(views []shardsView) string {
	parts := make([]string, len(views))
	for i, v := range views {
		parts[i] = fmt.Sprintf("rank %d of %d, %d shards, intake %v", v.rank, v.members, len(v.owned), v.intake)
	}
	return strings.Join(parts, "; ")
}

// startWorkers creates and starts n in-process workers, one after the
// other, each once it holds a rank, and waits until they own their shares.
func (c *shardsCluster) startWorkers(ctx context.Context, n int) ([]*benchWorker, time.Duration, error) {
	var ws []*benchWorker
	start := time.Now()
	for range n {
		w, err := c.newWorker(ctx)
		if err != nil {
			haltAll(ws)
			return nil, 0, err
		}
		w.start()
		ws = append(ws, w)
		for deadline := time.Now().Add(shardsSettleTimeout); viewOf(w).rank < 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if _, err := c.waitSettled(ctx, func() []shardsView { return viewsOf(ws) }, shardsSettleTimeout); err != nil {
		haltAll(ws)
		return nil, 0, err
	}
	return ws, time.Since(start), nil
}

func viewsOf(ws []*benchWorker) []shardsView {
	views := make([]shardsView, len(ws))
	for i, w := range ws {
		views[i] = viewOf(w)
	}
	return views
}

// publishRouted publishes bodies to exchange, each with its key, in windows
// of 500, and waits for every confirm.
func (p *benchPublisher) publishRouted(ctx context.Context, exchange string, keys []string, bodies [][]byte) error {
	const window = 500
	for len(bodies) > 0 {
		n := min(window, len(bodies))
		confirms := make([]*amqp.DeferredConfirmation, 0, n)
		for i, b := range bodies[:n] {
			dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, keys[i], false, false, amqp.Publishing{
				ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: b})
			if err != nil {
				return err
			}
			confirms = append(confirms, dc)
		}
		for _, dc := range confirms {
			if ok, err := dc.WaitContext(ctx); err != nil || !ok {
				return fmt.Errorf("publish to %s not confirmed: %v", exchange, err)
			}
		}
		bodies, keys = bodies[n:], keys[n:]
	}
	return nil
}

// route is where a job of tenant goes on path: the exchange and key.
func (c *shardsCluster) route(path shardsPath, tenant string) (exchange, key string) {
	if path == shardsIntake {
		return "", c.topo.Queue
	}
	return c.topo.ShardsExchange(), broker.ShardKey(c.topo.ShardOf(tenant))
}

// drain publishes jobs round-robin over the cluster's tenants on path to
// workers that own their shares already, and measures results/s from the
// first publish until every job has its result (or the cap).
func (c *shardsCluster) drain(ctx context.Context, ws []*benchWorker, path shardsPath, jobs int, cap time.Duration) (shardsDrain, error) {
	if err := c.purge(); err != nil {
		return shardsDrain{}, err
	}
	c.e.fake.Reset()
	pub, err := dialBenchPublisher(c.e.amqpURL, true)
	if err != nil {
		return shardsDrain{}, err
	}
	defer pub.close()
	now := time.Now()
	bodies, keys := make([][]byte, jobs), make([]string, jobs)
	exchange := ""
	// Numbers (and so internalIds) never repeat within the section: a
	// worker remembers the ids it sent and would answer a repeat as a
	// duplicate without sending it.
	for i := range bodies {
		t := c.e.tenants[i%shardsTenants].ID
		bodies[i] = benchJobBody(t, c.next+i, now)
		exchange, keys[i] = c.route(path, t)
	}
	c.next += jobs
	deferred0 := deferredOf(ws)
	c.deferrals.reset()
	t0, self0, broker0 := time.Now(), selfCPU(), brokerCPU(c.e.brokerPID)
	if err := pub.publishRouted(ctx, exchange, keys, bodies); err != nil {
		return shardsDrain{}, err
	}
	done, err := benchWaitDepth(ctx, pub.ch, c.topo.ResultsQueue(), jobs, t0.Add(cap), 5*time.Millisecond)
	t1, self1, broker1 := time.Now(), selfCPU(), brokerCPU(c.e.brokerPID)
	if err != nil || done == 0 {
		return shardsDrain{drainResult: drainResult{jobs: jobs}}, err
	}
	calls := c.e.fake.Calls()
	sent := 0
	for _, call := range calls {
		if call.Status == 200 {
			sent++
		}
	}
	return shardsDrain{
		drainResult: drainResult{rate: float64(done) / t1.Sub(t0).Seconds(), jobs: jobs, done: done, drained: done >= jobs,
			selfPerJob:   float64((self1 - self0).Microseconds()) / float64(done),
			brokerPerJob: float64((broker1 - broker0).Microseconds()) / float64(done)},
		peak:      calls.MaxInFlight(""),
		sent:      sent,
		deferrals: float64(deferredOf(ws)-deferred0) / float64(jobs),
		reasons:   c.deferrals.String(),
	}, nil
}

// shardsDrain is a drain with the peak of sends in flight at the fake (all
// numbers) and the workers' deferrals per job.
type shardsDrain struct {
	drainResult
	peak      int
	sent      int // the fake's 200 answers
	deferrals float64
	reasons   string
}

func (d shardsDrain) String() string {
	return fmt.Sprintf("%s, %.1f cores busy, %d sends, peak %d in flight, %.2f deferrals/job (%s)", d.drainResult, d.cores(),
		d.sent, d.peak, d.deferrals, d.reasons)
}

// deferredOf sums the workers' tenants' deferrals.
func deferredOf(ws []*benchWorker) int64 {
	var n int64
	for _, w := range ws {
		d, _ := w.deferredTotal()
		n += d
	}
	return n
}

// cores is how many cores this process and the broker kept busy in a drain.
func (d drainResult) cores() float64 { return (d.selfPerJob + d.brokerPerJob) * d.rate / 1e6 }

// shardsLatencies are the two Meta latencies of the throughput rows.
var shardsLatencies = []time.Duration{shardsLatency, 0}

func shardsLatencyName(l time.Duration) string {
	if l == 0 {
		return "zero latency"
	}
	return "Meta " + benchDur(l)
}

// setLatency makes the fake answer every tenant's number after l (log-normal
// as in the window rows), or at once.
func (c *shardsCluster) setLatency(l time.Duration) {
	b := fakemeta.Behaviour{}
	if l > 0 {
		b.Latency = windowLatency(l)
	}
	for _, t := range c.e.tenants[:shardsTenants] {
		c.e.fake.UseDefault(t.Phone)
	}
	c.e.fake.SetDefault(b)
}

// shardsSamples are one configuration's drains over the repetitions, and
// its ratios to the reference drain of the same repetition.
type shardsSamples struct {
	drains []shardsDrain
	ratios []float64
}

// median is the median of each measure of the drains on its own.
func (s shardsSamples) median() shardsDrain {
	var d shardsDrain
	var plain []drainResult
	var peak, deferrals []float64
	for _, x := range s.drains {
		plain = append(plain, x.drainResult)
		peak, deferrals = append(peak, float64(x.peak)), append(deferrals, x.deferrals)
	}
	d.drainResult = medianDrain(plain)
	d.peak, d.deferrals = int(benchMedian(peak)), benchMedian(deferrals)
	return d
}

func (e *benchEnv) shards(ctx context.Context) ([]benchRow, error) {
	defer func() { e.fake.SetDefault(fakemeta.Behaviour{}); e.fake.Reset() }()
	c, err := e.newShardsCluster()
	if err != nil {
		return nil, err
	}
	defer c.delete()
	slow, fast, cap := e.shardsLoad()
	// direct[l][n-1] are the drains of n workers at latency l; intake[l]
	// one worker's through the intake.
	direct := map[time.Duration][]shardsSamples{}
	intake := map[time.Duration]*shardsSamples{}
	for _, l := range shardsLatencies {
		direct[l] = make([]shardsSamples, shardsMaxWorkers)
		intake[l] = &shardsSamples{}
	}
	var settle [shardsMaxWorkers][]float64
	for rep := range e.reps {
		got := map[time.Duration][]shardsDrain{}
		gotIntake := map[time.Duration]shardsDrain{}
		for _, l := range shardsLatencies {
			got[l] = make([]shardsDrain, shardsMaxWorkers)
		}
		// Interleaved: the cluster sizes in a rotating order, the
		// latencies alternating, the intake before or after the direct
		// path.
		for k := range shardsMaxWorkers {
			n := (rep+k)%shardsMaxWorkers + 1
			ws, took, err := c.startWorkers(ctx, n)
			if err != nil {
				return nil, fmt.Errorf("shards %d workers: %w", n, err)
			}
			settle[n-1] = append(settle[n-1], took.Seconds())
			lats := slices.Clone(shardsLatencies)
			if rep%2 == 1 {
				slices.Reverse(lats)
			}
			for _, l := range lats {
				c.setLatency(l)
				jobs := fast
				if l > 0 {
					jobs = slow
				}
				paths := []shardsPath{shardsDirect}
				if n == 1 {
					paths = []shardsPath{shardsDirect, shardsIntake}
					if rep%2 == 1 {
						paths = []shardsPath{shardsIntake, shardsDirect}
					}
				}
				for _, path := range paths {
					d, err := c.drain(ctx, ws, path, jobs, cap)
					if err != nil {
						haltAll(ws)
						return nil, fmt.Errorf("shards %d workers, %s: %w", n, shardsLatencyName(l), err)
					}
					via := "direct"
					if path == shardsIntake {
						via = "intake"
						gotIntake[l] = d
					} else {
						got[l][n-1] = d
					}
					e.progress("shards %d worker(s), %s, %s, rep %d: %s", n, shardsLatencyName(l), via, rep+1, d)
				}
			}
			haltAll(ws)
		}
		for _, l := range shardsLatencies {
			one := got[l][0].rate
			for n := range shardsMaxWorkers {
				s := &direct[l][n]
				s.drains = append(s.drains, got[l][n])
				if one > 0 {
					s.ratios = append(s.ratios, got[l][n].rate/one)
				}
			}
			intake[l].drains = append(intake[l].drains, gotIntake[l])
			if one > 0 {
				intake[l].ratios = append(intake[l].ratios, gotIntake[l].rate/one)
			}
		}
	}
	var rows []benchRow
	for _, l := range shardsLatencies {
		for n := 1; n <= shardsMaxWorkers; n++ {
			rows = append(rows, e.shardsThroughputRow(l, n, direct[l][n-1], benchMedian(settle[n-1])))
		}
	}
	for _, l := range shardsLatencies {
		rows = append(rows, e.shardsIntakeRow(l, *intake[l]))
	}
	c.setLatency(shardsLatency)
	handover, err := e.shardsHandover(ctx, c)
	return append(rows, handover...), err
}

func (e *benchEnv) shardsThroughputRow(l time.Duration, n int, s shardsSamples, settle float64) benchRow {
	d := s.median()
	r := benchMedian(s.ratios)
	measure := fmt.Sprintf("shards %d worker(s), %s", n, shardsLatencyName(l))
	value := fmt.Sprintf("%.0f jobs/s", d.rate)
	busiest := e.shardsBusiest(n)
	if n > 1 {
		value += fmt.Sprintf(", %.2f x 1 worker (reps: %s); the busiest worker has %.0f%% of the jobs", r, benchRatios(s.ratios), 100*busiest)
	}
	value += fmt.Sprintf("; CPU/job %s, %.1f cores busy; peak %d sends in flight, %.2f deferrals/job; shares owned %.1fs after the first start",
		d.cpu(), d.cores(), d.peak, d.deferrals, settle)
	if !d.drained {
		value += fmt.Sprintf("; only %d of %d jobs done (rate is an upper bound)", d.done, d.jobs)
	}
	row := benchRow{Measure: measure, Value: value, Goal: "-", Status: statusInfo,
		Numbers: map[string]float64{"workers": float64(n), "latencyMs": benchMs(l), "jobsPerSec": d.rate, "ratioToOneWorker": r,
			"jobs": float64(d.jobs), "jobsDone": float64(d.done), "selfCPUMicrosPerJob": d.selfPerJob,
			"brokerCPUMicrosPerJob": d.brokerPerJob, "coresBusy": d.cores(), "settleSeconds": settle,
			"peakInFlight": float64(d.peak), "deferralsPerJob": d.deferrals, "busiestWorkerShare": busiest}}
	switch {
	case n == 1:
		row.Goal = "reference"
	case l > 0:
		row.Goal = "ratio > 1"
		row.Status = benchMet(r > 1 && d.drained)
	default:
		row.Goal = fmt.Sprintf("reported (%d cores bind)", runtime.NumCPU())
	}
	return row
}

// shardsBusiest is the largest share of a backlog's jobs one of n workers
// gets: the jobs are spread evenly over the tenants, the tenants over the
// shards by their id's hash.
func (e *benchEnv) shardsBusiest(n int) float64 {
	topo := broker.NewTopology("q", "")
	perRank := make([]int, n)
	for _, t := range e.tenants[:shardsTenants] {
		perRank[topo.ShardOf(t.ID)%n]++
	}
	return float64(slices.Max(perRank)) / shardsTenants
}

func (e *benchEnv) shardsIntakeRow(l time.Duration, s shardsSamples) benchRow {
	d := s.median()
	r := benchMedian(s.ratios)
	value := fmt.Sprintf("intake %.0f jobs/s, %.2f x the direct path (reps: %s); CPU/job %s, %.1f cores busy; %.2f deferrals/job",
		d.rate, r, benchRatios(s.ratios), d.cpu(), d.cores(), d.deferrals)
	if !d.drained {
		value += fmt.Sprintf("; only %d of %d jobs done", d.done, d.jobs)
	}
	row := benchRow{Measure: "shards intake hop, 1 worker, " + shardsLatencyName(l), Value: value, Goal: "reported", Status: statusInfo,
		Numbers: map[string]float64{"latencyMs": benchMs(l), "intakeJobsPerSec": d.rate, "ratioToDirect": r,
			"jobs": float64(d.jobs), "jobsDone": float64(d.done), "selfCPUMicrosPerJob": d.selfPerJob,
			"brokerCPUMicrosPerJob": d.brokerPerJob, "deferralsPerJob": d.deferrals}}
	if l > 0 {
		row.Goal = fmt.Sprintf("ratio >= %.2f", shardsIntakeGoal)
		row.Status = benchMet(r >= shardsIntakeGoal && d.drained)
	}
	return row
}

// shardsHandoverRun is one kill and one join.
type shardsHandoverRun struct {
	handover, join time.Duration
	victimRank     int
	victimIntake   bool
	published      int
	lost, repeated int
}

// shardsHandover runs the kill and the join e.reps times.
func (e *benchEnv) shardsHandover(ctx context.Context, c *shardsCluster) ([]benchRow, error) {
	var runs []shardsHandoverRun
	for rep := range e.reps {
		r, err := c.handoverOnce(ctx, rep)
		if err != nil {
			return nil, fmt.Errorf("shards handover: %w", err)
		}
		e.progress("shards handover, rep %d: killed rank %d (intake %v), survivors own all shards %s after; "+
			"a third worker owns its share %s after it started; %d jobs at %d/s meanwhile, %d lost, %d reached Meta twice",
			rep+1, r.victimRank, r.victimIntake, benchDur(r.handover), benchDur(r.join), r.published, shardsLoadRate, r.lost, r.repeated)
		runs = append(runs, r)
	}
	var hand, join, ranks []float64
	published, lost, repeated := 0, 0, 0
	for _, r := range runs {
		hand, join = append(hand, r.handover.Seconds()), append(join, r.join.Seconds())
		ranks = append(ranks, float64(r.victimRank))
		published, lost, repeated = published+r.published, lost+r.lost, repeated+r.repeated
	}
	h, j := benchMedian(hand), benchMedian(join)
	secs := func(xs []float64) string {
		s := make([]string, len(xs))
		for i, x := range xs {
			s[i] = benchDur(time.Duration(x * float64(time.Second)))
		}
		return strings.Join(s, ", ")
	}
	rankList := make([]string, len(runs))
	for i, r := range runs {
		rankList[i] = strconv.Itoa(r.victimRank)
		if r.victimIntake {
			rankList[i] += "+intake"
		}
	}
	goal := "<= " + benchDur(shardsHandoverGoal)
	return []benchRow{
		{Measure: "shards handover after a kill, 3 -> 2 workers",
			Value: fmt.Sprintf("%s (reps: %s; killed rank %s); %d jobs published meanwhile at %d/s, %d lost, "+
				"%d reached Meta twice (cut off in flight at the kill, sent again by the new owner)",
				benchDur(time.Duration(h*float64(time.Second))), secs(hand), strings.Join(rankList, ", "), published, shardsLoadRate, lost, repeated),
			Goal:   goal + ", no job lost",
			Status: benchMet(h <= shardsHandoverGoal.Seconds() && lost == 0),
			Numbers: map[string]float64{"handoverSeconds": h, "jobsPublished": float64(published), "jobsLost": float64(lost),
				"jobsReachedMetaTwice": float64(repeated)}},
		{Measure: "shards join, 2 -> 3 workers",
			Value:   fmt.Sprintf("%s (reps: %s)", benchDur(time.Duration(j*float64(time.Second))), secs(join)),
			Goal:    goal,
			Status:  benchMet(j <= shardsHandoverGoal.Seconds()),
			Numbers: map[string]float64{"joinSeconds": j}},
	}, nil
}

// handoverOnce starts three workers, the victim (a child process) first,
// second or last by rep, so that it holds another rank each time; kills it
// with SIGKILL under a load of shardsLoadRate jobs/s at Meta's latency;
// times the survivors until they own all shards again; then starts a third
// worker in-process and times it until every worker owns its share.
func (c *shardsCluster) handoverOnce(ctx context.Context, rep int) (shardsHandoverRun, error) {
	var r shardsHandoverRun
	if err := c.purge(); err != nil {
		return r, err
	}
	c.e.fake.Reset()
	var survivors []*benchWorker
	defer func() { haltAll(survivors) }()
	var victim *shardsChild
	defer func() {
		if victim != nil {
			victim.kill()
		}
	}()
	victimAt := rep % 3
	for i := range 3 {
		if i == victimAt {
			var err error
			if victim, err = c.startChild(ctx); err != nil {
				return r, err
			}
			for deadline := time.Now().Add(shardsSettleTimeout); victim.view().rank < 0 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			continue
		}
		w, err := c.newWorker(ctx)
		if err != nil {
			return r, err
		}
		w.start()
		survivors = append(survivors, w)
		for deadline := time.Now().Add(shardsSettleTimeout); viewOf(w).rank < 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	all := func() []shardsView { return append(viewsOf(survivors), victim.view()) }
	if _, err := c.waitSettled(ctx, all, shardsSettleTimeout); err != nil {
		return r, fmt.Errorf("before the kill: %w", err)
	}
	v := victim.view()
	r.victimRank, r.victimIntake = v.rank, v.intake

	base := shardsLoadBase + c.next
	load, err := c.startLoad(ctx, base)
	if err != nil {
		return r, err
	}
	stopLoad := sync.OnceValue(load.stop)
	defer stopLoad()
	sleepCtx(ctx, time.Second)
	killed := time.Now()
	victim.kill()
	if _, err := c.waitSettled(ctx, func() []shardsView { return viewsOf(survivors) }, shardsSettleTimeout); err != nil {
		return r, fmt.Errorf("after the kill: %w", err)
	}
	r.handover = time.Since(killed)

	sleepCtx(ctx, time.Second)
	joined := time.Now()
	w, err := c.newWorker(ctx)
	if err != nil {
		return r, err
	}
	w.start()
	survivors = append(survivors, w)
	if _, err := c.waitSettled(ctx, func() []shardsView { return viewsOf(survivors) }, shardsSettleTimeout); err != nil {
		return r, fmt.Errorf("after the join: %w", err)
	}
	r.join = time.Since(joined)
	sleepCtx(ctx, time.Second)
	r.published = stopLoad()
	c.next += r.published
	r.lost, r.repeated, err = c.loadOutcome(ctx, base, r.published)
	return r, err
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// shardsLoader publishes jobs numbered from a base at shardsLoadRate
// through the direct path until stopped; stop returns how many it
// published.
type shardsLoader struct {
	stop func() int
}

func (c *shardsCluster) startLoad(ctx context.Context, base int) (shardsLoader, error) {
	pub, err := dialBenchPublisher(c.e.amqpURL, false)
	if err != nil {
		return shardsLoader{}, err
	}
	quit, done := make(chan struct{}), make(chan int, 1)
	go func() {
		n := 0
		defer func() { pub.close(); done <- n }()
		start := time.Now()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for due := int(time.Since(start).Seconds() * shardsLoadRate); n < due; n++ {
				t := c.e.tenants[n%shardsTenants].ID
				exchange, key := c.route(shardsDirect, t)
				if err := pub.ch.PublishWithContext(ctx, exchange, key, false, false, amqp.Publishing{
					ContentType: "application/json", DeliveryMode: amqp.Persistent,
					Body: benchJobBody(t, base+n, time.Now())}); err != nil {
					return
				}
			}
		}
	}()
	return shardsLoader{stop: func() int { close(quit); return <-done }}, nil
}

// loadOutcome waits (at most 15 s) until every one of the published load
// jobs was answered 200 by the fake, and counts those never sent, and the
// jobs that reached the fake more than once: a send in flight at the killed
// worker (cut off, the fake logs it unanswered) that the new owner made
// again, which real Meta may have delivered already (at-least-once).
func (c *shardsCluster) loadOutcome(ctx context.Context, base, published int) (lost, repeated int, err error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		sent, reached := map[int]bool{}, map[int]int{}
		for _, call := range c.e.fake.Calls() {
			n, _, ok := benchStamp(call.Body)
			if !ok || n < base || n >= base+published {
				continue
			}
			reached[n]++
			if call.Status == 200 {
				sent[n] = true
			}
		}
		if len(sent) >= published || time.Now().After(deadline) {
			for _, k := range reached {
				repeated += k - 1
			}
			return published - len(sent), repeated, nil
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// shardsChildCommand is the hidden subcommand that runs one worker for the
// handover rows: 'wadbench shard-worker [the worker's flags]'.
const shardsChildCommand = "shard-worker"

// runShardWorker is 'wadbench shard-worker': one worker with the given
// flags, its JSON log lines on stdout, tokens from the environment; it stops
// when its stdin closes (its parent gone) or on a signal.
func runShardWorker(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	return worker.Main(ctx, args, stderr, worker.Options{Getenv: getenv, Logs: stdout})
}

// shardsChild is a worker in a child process; its ownership is read from
// its log lines (shard_acquired, shard_released, rank_acquired,
// intake_acquired).
type shardsChild struct {
	cmd   *exec.Cmd
	stdin io.Closer
	read  chan struct{} // closed when its stdout ends

	mu     sync.Mutex
	owned  map[int]bool
	rank   int
	intake bool
	killed bool
}

func (c *shardsCluster) startChild(ctx context.Context) (*shardsChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// The broker URL goes in the environment: a command line is visible to
	// every user of the machine.
	args := []string{shardsChildCommand}
	for i := 0; i < len(c.args); i++ {
		if c.args[i] == "--amqp-url" {
			i++
			continue
		}
		args = append(args, c.args[i])
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(append(os.Environ(), c.env...), "AMQP_URL="+c.e.amqpURL)
	cmd.Stderr = c.e.log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := &shardsChild{cmd: cmd, stdin: stdin, read: make(chan struct{}), owned: map[int]bool{}, rank: -1}
	go ch.readLogs(stdout)
	return ch, nil
}

func (ch *shardsChild) readLogs(r io.Reader) {
	defer close(ch.read)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var l struct {
			Event string `json:"event"`
			Shard *int   `json:"shard"`
			Rank  *int   `json:"rank"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		ch.mu.Lock()
		switch {
		case l.Event == "shard_acquired" && l.Shard != nil:
			ch.owned[*l.Shard] = true
		case l.Event == "shard_released" && l.Shard != nil:
			delete(ch.owned, *l.Shard)
		case l.Event == "rank_acquired" && l.Rank != nil:
			ch.rank = *l.Rank
		case l.Event == "intake_acquired":
			ch.intake = true
		}
		ch.mu.Unlock()
	}
}

// view is the child's ownership by its logs; it does not log the member
// count.
func (ch *shardsChild) view() shardsView {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	v := shardsView{rank: ch.rank, members: -1, intake: ch.intake}
	for s := range ch.owned {
		v.owned = append(v.owned, s)
	}
	slices.Sort(v.owned)
	return v
}

// kill sends SIGKILL (once) and reaps the process: its sockets close with
// it, as a container killed by the kernel.
func (ch *shardsChild) kill() {
	ch.mu.Lock()
	killed := ch.killed
	ch.killed = true
	ch.mu.Unlock()
	if killed {
		return
	}
	_ = ch.cmd.Process.Kill()
	_ = ch.stdin.Close()
	<-ch.read
	_ = ch.cmd.Wait() // "signal: killed", as meant
}

func (w *windowDeferrals) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.byReason, w.longest, w.longestReason = nil, 0, ""
}
