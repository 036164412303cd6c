package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/logging"
	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
	"github.com/wadispatch/wadispatch/testkit/localrun"
	"github.com/wadispatch/wadispatch/worker"
)

const benchSuiteUsage = `Usage:
  wadbench [--quick] [--only SECTIONS] [--json] [flags]   the benchmark suite
  wadbench loadcheck [flags]                               one tenant's rate limit under load
  wadbench scale --tenants N [--memprofile FILE]           one scale measurement

wadbench runs every measurement below against the local RabbitMQ (start it with
'go tool task rabbitmq') and an in-process fake Graph API that answers at once
(with Meta's latency, and its rate per number, in the window, fairness and
shards rows), and prints one table: measure, value, goal, and whether the goal
is met. Each figure is the median of repeated runs (3, or 1 with --quick), and
each ratio is taken between runs of the same invocation, interleaved, so that
noise on a shared machine hits both sides. The default run takes about 15
minutes on two cores, --quick about 3 minutes. Queues are named bench.*.<random> and deleted afterwards. Progress
goes to stderr, the table to stdout.

Rows

  throughput T tenants, prefetch P  (T = 1, 10, 1000; P = 10, 100)
      Jobs/s end to end: RabbitMQ -> worker -> fake Meta -> result published
      with a publisher confirm -> ack. 6,000 jobs (3,000 for one tenant; a
      third of that with --quick), round-robin over T tenants whose rate
      limits never bind, are published first; then the consumer starts.
      Jobs/s = results confirmed / time, both counted from the moment the
      first twentieth of the results is in until the last result: a drain
      of a backlog, not a steady state, so jobs the worker defers count when
      they are finally sent; the time to that first twentieth (each side's
      start-up: dialling, and for the worker acquiring its shards and
      starting its tenants) is reported beside it and not counted. A side
      that has not drained after 7 s (3 s with --quick) from its start is
      stopped; its rate is then taken up to then, an upper bound, and the
      row says how many it did.
      Baseline: a bare amqp091-go consumer doing the same work on the same
      broker and fake Meta: consume at prefetch P, decode the job, POST its
      payload with the tenant's token (within the worker's default
      META_TIMEOUT, 10 s), publish a result with a confirm, ack
      (multiple=false), with P goroutines whatever T. The worker keeps a
      window of sends in flight per tenant (one tenant may use all P), so P
      is the most either side can have in flight.
      Value: worker jobs/s, baseline jobs/s, worker/baseline; CPU per job in
      microseconds of this process (worker or baseline, plus the fake Meta
      and the polling, the same for both) + of the local broker, worker vs
      baseline, after the first twentieth too; the two start-up times; how
      often the worker deferred a job (a tenant holds its
      window and one more; the rest of its backlog goes through the delay
      queues).
      Worker and baseline runs alternate. Goal: ratio >= 0.85, and the worker
      drained whenever the baseline did. With --cpuprofile, samples carry
      the label side=worker or side=baseline (go tool pprof
      -tagfocus=side=worker).

  window 1 tenant at R/s, Meta L  (R = 80 at L = 300ms and 1s; R = 1000 at 300ms)
      One tenant's send window against Meta's latency and throughput limit.
      The fake Meta answers after a log-normal latency (median L, sigma 0.5,
      at most 3 s) and at 80/s, like Meta, refuses sends above R per number
      (code 130429; burst R), so that throttling shows; at 1,000/s it does
      not, so that the row measures what the worker carries. The tenant's
      rate_limit is R (burst R). After a warm-up job (its answer gives the
      window a latency), the tenant gets a burst of R jobs and then 2 R jobs/s
      for a ramp (1.5 s, or 3 L), which empty its bucket, and then jobs 5%
      above R, so that the bucket binds, for a steady part: 30 s (15 s at
      1,000/s; 8, 5 and 3 s with --quick); then up to 8 s (1 s with --quick)
      for the backlog. Every tenth job goes to one of R/5 recipients in turn
      (one job to each every 2 s), every other job to a recipient of its own.
      PREFETCH by the rule PREFETCH >= R x the latency tail: 200 (80/s x about
      1 s, the p99 at 300 ms), 300 (80/s x 3 s, the cap), 600 (1,000/s x
      0.6 s); backpressure off. Value: sends/s over the steady part (the
      fake's 200 answers, by arrival) and that / R; peak sends in flight (the
      fake's call log); inversions: calls to a recipient that arrived after a
      call of a later job to it, plus pairs of calls to one recipient in
      flight at once; 130429 answers / calls, and when there were any the
      sends/s until the first; the tenant's deferrals by reason, and the
      longest delay one was given and why; jobs left after the wait. At
      1,000/s also CPU per send over the steady part, of this process (worker,
      fake Meta and the publisher) + of the broker, and how many cores both
      kept busy, beside the worker's CPU per job in the zero-latency
      throughput row of one tenant when that ran too. Each runs once (--reps
      does not apply). Goal: >= 0.95 R, 0 inversions and <= 1% throttled at
      80/s; >= 0.90 R at 1,000/s.

  window 200 conversational tenants beside an 80/s campaign
      200 tenants each publish one job every 4 s (50 jobs/s), each to a
      recipient of its own, with Meta's latency (median 300 ms), PREFETCH 100;
      beside them, or not, the campaign of the rows above at 80/s. Value: the
      conversational jobs' publish-to-arrival p99 (publish to the fake Meta
      receiving the call: Meta's own latency left out) beside the campaign
      over the same alone, the median of the pairs' ratios; the p99s and p50s
      of each side's samples pooled; the campaign's sends/s. Runs on a fresh
      worker each, 2 s of warm-up (each tenant's first job is not counted),
      then 10 s (3 s with --quick); alone and beside interleaved, 3 pairs (1
      with --quick). Goal: ratio <= 1.5, and
      every conversational job sent (one still unsent 4 s after the wait for
      the backlog counts with that delay).

  shards N worker(s), L  (N = 1, 2, 3; L = Meta 300ms, zero latency)
      Throughput of several workers sharing one queue's 32 shards: N
      in-process workers (each its own worker.New with connections of its
      own; PREFETCH 100 each, backpressure off) on one topology, started one
      after the other. The clock starts only once they own their shares:
      each a distinct rank r < N, counting N members, owning exactly the
      shards s with s mod N = r (so every shard once), one of them moving
      the intake. Then a backlog of 2,000 jobs at 300 ms (3,000 at zero
      latency; 1,000 and 1,500 with --quick), round-robin over 100 tenants
      whose rate limits never bind, is published through the direct path
      (the shards exchange, routing key the tenant's shard) with confirms
      in windows of 500. Jobs/s = results / time from the first publish
      until the last result (publishing overlaps the drain; at most 30 s).
      The fake answers after a log-normal latency (median L, sigma 0.5, at
      most 3 s, as in the window rows), or at once. Value: jobs/s, and for
      N > 1 the ratio to 1 worker in the same repetition (the median of
      the ratios) and the busiest worker's share of the jobs (the tenants
      fall into shards by their id's hash); CPU per job of this process
      (every worker, the fake, the publisher) + of the broker (whoever else
      uses it too), and how many cores both kept busy; the peak of sends
      in flight at the fake; deferrals per job (100 tenants on PREFETCH
      100: a backlog job is often deferred once, busy, through the delay
      tiers); how long the workers took to own their shares from the first
      one's start. Each repetition runs the sizes in a rotating order, each
      size's workers serving both latencies in alternating order, on fresh
      job numbers (a worker answers an id it sent already as a duplicate).
      The workers share this process's CPU and Go runtime. Goal at 300 ms:
      ratio > 1 (PREFETCH is per worker, so N workers may have N x 100
      sends in flight: adding a worker adds throughput). At zero latency no
      goal: the machine's cores are the limit (two here), and the ratio
      shows what splitting costs or gains there.

  shards intake hop, 1 worker, L
      One worker, the same backlog published to the intake (<queue>, where
      producers that set no routing key publish) instead of the direct
      path: the worker moves each job to its shard (a confirmed publish,
      then the ack) and takes it from there. Runs beside the 1-worker
      direct drain of the same repetition, in alternating order. Value:
      intake jobs/s and intake / direct (the median of the ratios), the
      compatibility path's cost. Goal: >= 0.85 at 300 ms, where the hop
      should hide behind Meta's latency; at zero latency reported, no
      threshold (the hop is CPU on cores that are busy already).

  shards handover after a kill, 3 -> 2 workers
  shards join, 2 -> 3 workers
      Three workers own their shares as above, one of them a child process
      (this binary run again with the hidden subcommand 'wadbench
      shard-worker', whose ownership is read from its shard_acquired,
      shard_released, rank_acquired and intake_acquired log lines), the
      other two in-process. The child starts first, second or last by
      repetition, so it holds rank 0 (and the intake), 1 or 2. Under 100
      jobs/s over the 100 tenants through the direct path at Meta 300 ms,
      1 s in, the child is killed with SIGKILL: the kernel closes its
      sockets and the broker drops its consumers at once (a machine lost
      without closing them is noticed only after the AMQP heartbeat
      timeout; not measured here). Handover = time from the kill until the
      two survivors own their shares of 2 (every shard once, the intake
      moved). 1 s later a third worker starts in-process; join = time from
      its worker.New until all three own their shares of 3. After 1 s more
      the load stops and every job published is waited for (at most 15 s).
      Value: the median times (and each repetition's); jobs published,
      lost (never answered 200) and those that reached Meta twice (a send
      in flight at the killed worker, cut off, made again by the new owner:
      at-least-once). Goal: each <= 5 s, no job lost. Workers rebalance
      every second: the survivors see the member count drop at their next
      tick, give away what is no longer theirs once its jobs in hand are
      settled, and take the rest at a later tick.

  reload 100,000 tenants, every one changed
  jobs/s beside reloads of 100,000 tenants
      A worker with a tenants file of 100,000 tenants (10,000 with --quick)
      reloads it with every tenant changed (the defaults' rate, alternately
      500,000 and 600,000 a minute): the time of worker.Reload (read, check,
      diff, one message applying it in the router), median of at least 3.
      Then a drain of 3,000 jobs (1,000) over 100 of the tenants, published
      through the direct path, with reloads running back to back beside it
      and without, alternating: jobs/s each, and the ratio. Reported, no
      goal.

  fairness (a) alone / (b) flood / (c) hang / (d) 500 / (e) campaign
      Whether a noisy neighbour delays quiet tenants, at Meta's latency: the
      fake Meta answers every number after a log-normal latency (median
      300 ms, sigma 0.5, at most 3 s, as in the window rows) and refuses
      sends above 80/s per number (130429). 20 quiet tenants each publish 2
      jobs/s (40/s), each job to a recipient of its own. A quiet job's added
      delay is the time from its publish (stamped in its text) to the fake
      receiving its send (the request's arrival, before the fake's latency,
      which is so left out): what the broker and the worker add. (a) the
      quiet tenants alone; beside a 21st tenant that (b) floods 100 jobs/s,
      10x its limit (600/min, burst 80); (c) sends 10 jobs/s, and its Meta
      hangs every call from the measured part on until the worker's timeout
      (META_TIMEOUT 4s here, above the fake's 3 s cap); (d) the same with
      HTTP 500 answers (after the latency) instead; (e) is a campaign at its
      full rate: rate_limit 4800/min, burst 80, a burst of 80 jobs and then
      160/s over the warm-up and 84/s after it, so that its bucket always
      binds. Breakers open after 5 failures for 5 s. PREFETCH 120 in every
      case, by the README's rule PREFETCH >= the sum over busy tenants of
      rate x latency (1 s, about the p99 at 300 ms): 80/s x 1 s for the
      campaign + 40/s x 1 s for the quiet tenants; backpressure off. Each
      case runs on a fresh worker and queues, for 6 s (3 s with --quick)
      after a 1.5 s warm-up that is not counted; the cases run interleaved,
      each repetition starting with the next case. Value: the quiet jobs'
      added delay p50 and p99, each the median over repetitions (each
      repetition's p99 listed), and for (b)-(e) that p99 / (a)'s and the
      difference; the neighbour's sends/s (200 answers) and calls failed or
      hung in the measured part. Goal: p99 <= 1.5 x (a)'s p99 or (a)'s p99
      + 20 ms, whichever is larger, and every quiet job sent (one the fake
      has not answered 5 s after the load counts with that delay, and fails
      the goal). The p99 of 240 sends is their third largest, so one stall
      of 100 ms on a busy machine decides it: read it together with the
      load average printed at the end.

  scale N tenants  (N = 1,000, 10,000, 100,000)
      In a child process without RabbitMQ: a router and N tenant actors (stub
      broker, stub Meta), each tenant handles one job; then heap in use
      (after GC) and resident set size, minus the same before any tenant was
      active, divided by N. Value: heap B/tenant, RSS B/tenant. Goal: heap
      <= 2048 B per idle tenant (RSS is shown; it moves in pages and with
      what the runtime has not returned to the OS). Tokens are not
      registered with the log redactor (that is per configured tenant, not
      per active one). Also: how long loading a tenants file of N tenants
      takes (read, parse, validate, as at start-up), how long the router
      takes to answer once started on them, and one listing of every tenant
      once they are idle (what GET /v1/tenants and 'wadispatch tenants'
      ask for). 'wadbench scale --tenants N --memprofile FILE' writes a heap
      profile for 'go tool pprof -top'; any N may be given there (1,000,000
      takes about a minute and 3 GiB).

  deferral burst
      One tenant at 600/min with a burst of 80 gets a burst of 1,000
      jobs (200 with --quick) published at once. Deferrals per job: the
      tenant's deferred counter (rate-limited, busy, retries; not the hops a
      job takes through shorter delay tiers on its way back, which are shown
      as 'tier hops') / jobs. Goal <= 2. Reordering: the largest distance
      between a job's place in publish order and its place in send order
      (no goal; jobs should go out about in the order they came). Drain: time
      to the last result vs the ideal (jobs - burst) / rate. Runs once, also
      in a full run (it takes the ideal drain, 92 s).

  hotpath <benchmark>
      'go test -bench' of the hot path (needs the go tool and the module's
      source; run from the repository): decode+validate (messages),
      router->tenant dispatch through the actor system with stubs, the bucket,
      the breaker, the schedule (actors), a message_delivered log line through
      the redacting handler and through a bare slog.JSONHandler (logging).
      Value: ns/op, B/op, allocs/op. No goal: for comparing commits.

Flags
`

// benchSections are the parts of the suite, in the order they run.
var benchSections = []string{"throughput", "window", "shards", "reload", "fairness", "scale", "deferral", "hotpath"}

// benchRow is one line of the suite's table.
type benchRow struct {
	Measure string             `json:"measure"`
	Value   string             `json:"value"`
	Goal    string             `json:"goal"`
	Status  string             `json:"status"` // met, NOT MET, info, error
	Numbers map[string]float64 `json:"numbers,omitempty"`
}

const (
	statusMet    = "met"
	statusNotMet = "NOT MET"
	statusInfo   = "info"
	statusError  = "error"
)

func benchMet(ok bool) string {
	if ok {
		return statusMet
	}
	return statusNotMet
}

// benchEnv is what every section shares: the broker, one fake Meta and its
// tenants, the mode and where progress goes.
type benchEnv struct {
	amqpURL string
	quick   bool
	reps    int
	fake    *fakemeta.Server
	dir     string
	tenants []localrun.Tenant // bench tenants t0000 ... t0999

	throughputCases []throughputCase
	throughputCPU   map[throughputCase]drainResult // the worker's drains, once the throughput rows ran
	brokerPID       int                            // the local broker's process, 0 if unknown
	log             io.Writer
}

func (e *benchEnv) progress(format string, args ...any) {
	fmt.Fprintf(e.log, "bench: "+format+"\n", args...)
}

// benchOptions are the suite's flags.
type benchOptions struct {
	amqpURL    string
	quick      bool
	reps       int
	sections   map[string]bool
	cases      []throughputCase
	json       bool
	cpuprofile string
}

func parseBenchFlags(args []string, getenv func(string) string, stderr io.Writer) (benchOptions, error) {
	fs := flag.NewFlagSet("wadbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	amqpURL := fs.String("amqp-url", firstNonEmpty(getenv("AMQP_URL"), testkit.DefaultAMQPURL), "broker URL (env AMQP_URL)")
	quick := fs.Bool("quick", false, "short run: 1 repetition, smaller loads (about 2.5 minutes)")
	only := fs.String("only", strings.Join(benchSections, ","), "comma-separated sections to run")
	reps := fs.Int("reps", 0, "repetitions per measurement (default 3, 1 with --quick)")
	asJSON := fs.Bool("json", false, "print the rows as JSON instead of a table")
	cases := fs.String("throughput-cases", "1x10,10x10,1000x10,1x100,10x100,1000x100", "throughput grid, TENANTSxPREFETCH,...")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of this process (worker and baseline) here")
	fs.Usage = func() { fmt.Fprint(stderr, benchSuiteUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return benchOptions{}, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return benchOptions{}, fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	o := benchOptions{amqpURL: *amqpURL, quick: *quick, reps: *reps, sections: map[string]bool{}, json: *asJSON,
		cpuprofile: *cpuprofile}
	for _, s := range strings.Split(*only, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(benchSections, s) {
			return o, fmt.Errorf("%w: --only: unknown section %q (have %s)", ErrUsage, s, strings.Join(benchSections, ", "))
		}
		o.sections[s] = true
	}
	var err error
	if o.cases, err = parseThroughputCases(*cases); err != nil {
		return o, err
	}
	if o.reps <= 0 {
		o.reps = 3
		if o.quick {
			o.reps = 1
		}
	}
	return o, nil
}

// newBenchEnv starts the fake Meta with 1,000 tenants and checks that the
// broker answers when a section needs it. close undoes it.
func newBenchEnv(o benchOptions, log io.Writer) (env *benchEnv, close func(), err error) {
	env = &benchEnv{amqpURL: o.amqpURL, quick: o.quick, reps: o.reps, throughputCases: o.cases, log: log}
	if o.sections["throughput"] || o.sections["window"] || o.sections["shards"] || o.sections["reload"] || o.sections["fairness"] || o.sections["deferral"] {
		conn, err := amqp.Dial(env.amqpURL)
		if err != nil {
			return nil, nil, fmt.Errorf("connect to RabbitMQ at %s (start it with: go tool task rabbitmq): %w", logging.RedactURL(env.amqpURL), err)
		}
		_ = conn.Close()
		if u, err := amqp.ParseURI(env.amqpURL); err == nil && (u.Host == "127.0.0.1" || u.Host == "localhost") {
			env.brokerPID = listenerPID(u.Port)
		}
	}
	var cleanup func()
	if env.fake, env.dir, cleanup, err = localrun.StartMeta("wadispatch-bench-"); err != nil {
		return nil, nil, err
	}
	env.tenants = make([]localrun.Tenant, 1000)
	for i := range env.tenants {
		id := fmt.Sprintf("t%04d", i)
		env.tenants[i] = localrun.Tenant{ID: id, Phone: fmt.Sprintf("2000000000%05d", i), Token: "bench-token-" + id}
		env.fake.AddTenant(env.tenants[i].Phone, env.tenants[i].Token)
	}
	return env, cleanup, nil
}

func runSuite(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseBenchFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	env, closeEnv, err := newBenchEnv(o, stderr)
	if err != nil {
		return err
	}
	defer closeEnv()
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	mode := "full run"
	if env.quick {
		mode = "--quick"
	}
	host, _ := os.Hostname()
	load0 := loadAverage()
	env.progress("%s, %d repetition(s), %d CPUs, %s, on %s, load average %s", mode, env.reps, runtime.NumCPU(),
		runtime.Version(), host, load0)
	start := time.Now()
	var rows []benchRow
	for _, s := range benchSections {
		if !o.sections[s] {
			continue
		}
		sectionStart := time.Now()
		got, err := env.run(ctx, s)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			got = append(got, benchRow{Measure: s, Value: err.Error(), Status: statusError})
		}
		env.progress("%s done in %s", s, time.Since(sectionStart).Round(time.Second))
		rows = append(rows, got...)
	}
	took := time.Since(start).Round(time.Second)
	load1 := loadAverage()
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"quick": env.quick, "reps": env.reps, "cpus": runtime.NumCPU(),
			"go": runtime.Version(), "seconds": took.Seconds(), "loadAverageStart": load0, "loadAverageEnd": load1,
			"rows": rows}); err != nil {
			return err
		}
	} else {
		printBenchTable(stdout, rows)
		fmt.Fprintf(stdout, "\n%d rows in %s (%s, %d repetition(s), %d CPUs, %s; load average %s at start, %s at end)\n",
			len(rows), took, mode, env.reps, runtime.NumCPU(), runtime.Version(), load0, load1)
	}
	for _, r := range rows {
		if r.Status == statusError {
			return errors.New("some measurements failed (rows marked error)")
		}
	}
	return nil
}

func (e *benchEnv) run(ctx context.Context, section string) ([]benchRow, error) {
	switch section {
	case "throughput":
		return e.throughput(ctx)
	case "window":
		return e.window(ctx)
	case "shards":
		return e.shards(ctx)
	case "reload":
		return e.reload(ctx)
	case "fairness":
		return e.fairness(ctx)
	case "scale":
		return e.scale(ctx)
	case "deferral":
		return e.deferral(ctx)
	case "hotpath":
		return e.hotpath(ctx)
	}
	return nil, fmt.Errorf("unknown section %q", section)
}

func printBenchTable(w io.Writer, rows []benchRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEASURE\tVALUE\tGOAL\tSTATUS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Measure, r.Value, r.Goal, r.Status)
	}
	_ = tw.Flush()
}

// benchWorker is a worker on queues of its own.
type benchWorker struct {
	w    *worker.Worker
	cfg  config.Config
	topo broker.Topology
	stop context.CancelFunc
	done chan error
}

// newBenchWorker writes a tenants file for tenants with the given defaults
// block and creates a worker on fresh queues; start starts consuming.
func (e *benchEnv) newBenchWorker(ctx context.Context, label string, tenants []localrun.Tenant, defaults string,
	logs io.Writer, args ...string) (*benchWorker, error) {
	dir, err := os.MkdirTemp(e.dir, label+"-")
	if err != nil {
		return nil, err
	}
	path, getenv, err := localrun.WriteTenants(dir, defaults, tenants, e.fake, nil)
	if err != nil {
		return nil, err
	}
	queue := benchQueueName(label)
	cfg, err := config.Load(getenv, append([]string{"--amqp-url", e.amqpURL, "--amqp-queue", queue,
		"--results-exchange", queue + ".results", "--tenants-file", path, "--meta-base-url", e.fake.URL(),
		"--admin-addr", "off", "--shutdown-timeout", "2s"}, args...), io.Discard)
	if err != nil {
		return nil, err
	}
	w, err := worker.New(ctx, cfg, worker.Options{Getenv: getenv, Logs: logs})
	if err != nil {
		return nil, err
	}
	return &benchWorker{w: w, cfg: cfg, topo: broker.NewTopology(cfg.Queue, cfg.ResultsExchange)}, nil
}

func (b *benchWorker) start() {
	ctx, cancel := context.WithCancel(context.Background())
	b.stop, b.done = cancel, make(chan error, 1)
	go func() { b.done <- b.w.Run(ctx) }()
}

// close stops the worker (a worker never started is stopped by running it
// on a cancelled context) and deletes its queues.
func (b *benchWorker) close() {
	if b.stop == nil {
		b.start()
	}
	b.stop()
	<-b.done
	_ = b.topo.Delete(b.cfg.AMQPURL)
}

func benchQueueName(label string) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return "bench." + label + "." + hex.EncodeToString(r[:])
}

// benchJobBody is a job whose text carries the publish time and the job's
// number, so send order and publish-to-send time can be read from the fake
// Meta's call log.
func benchJobBody(tenant string, n int, published time.Time) []byte {
	return benchJobBodyTo(tenant, n, fmt.Sprintf("1555%07d", n%10_000_000), published)
}

// benchJobBodyTo is benchJobBody to the recipient to (digits).
func benchJobBodyTo(tenant string, n int, to string, published time.Time) []byte {
	return fmt.Appendf(nil, `{"metadata":{"tenantId":%q,"internalId":"%s-%d"},"wabaPayload":{"messaging_product":"whatsapp",`+
		`"recipient_type":"individual","to":%q,"type":"text","text":{"body":"n=%d t=%d"}}}`,
		tenant, tenant, n, to, n, published.UnixNano())
}

// benchStamp reads what benchJobBody put in a payload's text.
func benchStamp(payload []byte) (n int, published time.Time, ok bool) {
	var p struct {
		Text struct{ Body string } `json:"text"`
	}
	if json.Unmarshal(payload, &p) != nil {
		return 0, time.Time{}, false
	}
	ns, ts, found := strings.Cut(p.Text.Body, " ")
	if !found || !strings.HasPrefix(ns, "n=") || !strings.HasPrefix(ts, "t=") {
		return 0, time.Time{}, false
	}
	n, err1 := strconv.Atoi(ns[2:])
	t, err2 := strconv.ParseInt(ts[2:], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, time.Time{}, false
	}
	return n, time.Unix(0, t), true
}

// benchPublisher publishes jobs on a connection of its own.
type benchPublisher struct {
	conn *amqp.Connection
	ch   *amqp.Channel
}

func dialBenchPublisher(url string, confirm bool) (*benchPublisher, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err == nil && confirm {
		err = ch.Confirm(false)
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return &benchPublisher{conn: conn, ch: ch}, nil
}

func (p *benchPublisher) close() { _ = p.conn.Close() }

func (p *benchPublisher) publish(ctx context.Context, queue string, body []byte) (*amqp.DeferredConfirmation, error) {
	return p.ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body})
}

// publishAll publishes bodies in windows of 500 and waits for every confirm.
func (p *benchPublisher) publishAll(ctx context.Context, queue string, bodies [][]byte) error {
	const window = 500
	for len(bodies) > 0 {
		n := min(window, len(bodies))
		confirms := make([]*amqp.DeferredConfirmation, 0, n)
		for _, b := range bodies[:n] {
			dc, err := p.publish(ctx, queue, b)
			if err != nil {
				return err
			}
			confirms = append(confirms, dc)
		}
		for _, dc := range confirms {
			if ok, err := dc.WaitContext(ctx); err != nil || !ok {
				return fmt.Errorf("publish to %s not confirmed: %v", queue, err)
			}
		}
		bodies = bodies[n:]
	}
	return nil
}

// queueDepth is the number of ready messages in queue.
func benchQueueDepth(ch *amqp.Channel, queue string) (int, error) {
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	return q.Messages, nil
}

// waitDepth polls queue until it holds n ready messages or deadline passes,
// and returns the depth it saw last.
func benchWaitDepth(ctx context.Context, ch *amqp.Channel, queue string, n int, deadline time.Time, every time.Duration) (int, error) {
	for {
		d, err := benchQueueDepth(ch, queue)
		if err != nil || d >= n || !time.Now().Before(deadline) {
			return d, err
		}
		select {
		case <-ctx.Done():
			return d, ctx.Err()
		case <-time.After(every):
		}
	}
}

func benchMedian(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func benchDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	case d >= 10*time.Microsecond:
		return d.Round(100 * time.Nanosecond).String()
	default:
		return d.String()
	}
}

// loadAverage is the 1, 5 and 15 minute load average from /proc/loadavg,
// "?" where there is none: how busy the machine was says how far to trust
// the figures.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}
