package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/wadispatch/wadispatch/actors"
	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/logging"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// scaleGoal is the most memory an idle tenant may cost.
const scaleGoal = 2048

// scaleReport is what one 'bench scale' child measures.
type scaleReport struct {
	Tenants             int     `json:"tenants"`
	HeapBytesPerTenant  float64 `json:"heapBytesPerTenant"` // idle: actors passivated
	RSSBytesPerTenant   float64 `json:"rssBytesPerTenant"`
	ActiveHeapPerTenant float64 `json:"activeHeapBytesPerTenant"` // right after the jobs, actors alive
	ActiveRSSPerTenant  float64 `json:"activeRssBytesPerTenant"`
	GoroutinesPerTenant float64 `json:"goroutinesPerTenant"`
	// LoadSeconds is reading and validating a tenants file of N tenants;
	// SpawnSeconds starting the router on them until it answers;
	// ListSeconds one listing of every tenant (GET /v1/tenants, 'wadispatch
	// tenants') once they are idle.
	LoadSeconds  float64 `json:"loadSeconds"`
	SpawnSeconds float64 `json:"spawnSeconds"`
	ListSeconds  float64 `json:"listSeconds"`
	Seconds      float64 `json:"seconds"`
}

// scalePassivateAfter is the tenants' idle time before their actors stop,
// short so the measurement does not wait minutes.
const scalePassivateAfter = time.Second

// scale runs one child process per size, so each measures a fresh heap
// and RSS untouched by the other sections.
func (e *benchEnv) scale(ctx context.Context) ([]benchRow, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var rows []benchRow
	for _, n := range []int{1_000, 10_000, 100_000} {
		var heap, rss, aheap, gor, load, spawn, list []float64
		for rep := range e.reps {
			var out bytes.Buffer
			cmd := exec.CommandContext(ctx, exe, "scale", "--tenants", strconv.Itoa(n))
			cmd.Stdout, cmd.Stderr = &out, e.log
			if err := cmd.Run(); err != nil {
				return rows, fmt.Errorf("scale %d tenants: %w", n, err)
			}
			var r scaleReport
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				return rows, fmt.Errorf("scale %d tenants: child said %q: %w", n, out.String(), err)
			}
			e.progress("scale %d tenants, rep %d: heap %.0f B/tenant, RSS %.0f B/tenant (%.1fs)", n, rep+1,
				r.HeapBytesPerTenant, r.RSSBytesPerTenant, r.Seconds)
			heap, rss, gor = append(heap, r.HeapBytesPerTenant), append(rss, r.RSSBytesPerTenant), append(gor, r.GoroutinesPerTenant)
			aheap = append(aheap, r.ActiveHeapPerTenant)
			load, spawn, list = append(load, r.LoadSeconds), append(spawn, r.SpawnSeconds), append(list, r.ListSeconds)
		}
		h, r := benchMedian(heap), benchMedian(rss)
		rows = append(rows, benchRow{
			Measure: fmt.Sprintf("scale %s tenants", benchThousands(n)),
			Value: fmt.Sprintf("idle (passivated) heap %.0f B/tenant, RSS %.0f B/tenant; active heap %.0f B/tenant; %.2f goroutines/tenant; "+
				"tenants file loaded in %s, router up in %s; listing %s",
				h, r, benchMedian(aheap), benchMedian(gor), benchSeconds(benchMedian(load)), benchSeconds(benchMedian(spawn)),
				benchSeconds(benchMedian(list))),
			Goal:   fmt.Sprintf("idle heap <= %d B/tenant", scaleGoal),
			Status: benchMet(h <= scaleGoal),
			Numbers: map[string]float64{"heapBytesPerTenant": h, "rssBytesPerTenant": r,
				"activeHeapBytesPerTenant": benchMedian(aheap), "goroutinesPerTenant": benchMedian(gor),
				"loadSeconds": benchMedian(load), "spawnSeconds": benchMedian(spawn), "listSeconds": benchMedian(list)},
		})
	}
	return rows, nil
}

// benchSeconds shows a duration given in seconds.
func benchSeconds(s float64) string { return benchDur(time.Duration(s * float64(time.Second))) }

func benchThousands(n int) string {
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// runScale is 'wadbench scale': n tenant actors each handle one job
// (stub broker and Meta, no RabbitMQ), and the heap and RSS they added are
// printed as JSON.
func runScale(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wadbench scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("tenants", 10_000, "number of tenants, each handling one job")
	memprofile := fs.String("memprofile", "", "write a heap profile (in-use space) here afterwards")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: wadbench scale --tenants N [--memprofile FILE]")
		fmt.Fprintln(stderr, "\nSpawns N tenant actors (stub broker and Meta), sends each one job, and prints the heap")
		fmt.Fprintln(stderr, "and RSS per tenant as JSON. See 'wadbench --help'.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 {
		return fmt.Errorf("%w: --tenants must be at least 1", ErrUsage)
	}
	if *memprofile != "" {
		// Every allocation sampled, so the profile adds up to the figures
		// (it makes the run slower).
		runtime.MemProfileRate = 1
	}
	start := time.Now()
	r, err := measureScale(ctx, *n, *memprofile)
	if err != nil {
		return err
	}
	r.Seconds = time.Since(start).Seconds()
	return json.NewEncoder(stdout).Encode(r)
}

// measureScale measures n tenants; a memprofile is written while they are
// still alive.
func measureScale(ctx context.Context, n int, memprofile string) (scaleReport, error) {
	// The tenants come from a tenants file, as the worker's do: its
	// loading is the first part of a start-up with n tenants.
	tenants, load, err := scaleTenantsFile(n)
	if err != nil {
		return scaleReport{}, err
	}
	tokens := make(map[string]whatsapp.TokenSource, n)
	// Tokens are not registered with the log redactor here: registering is
	// quadratic in the number of secrets (logging.Secrets.Add), which
	// costs minutes at 100,000 and is no part of an idle tenant's memory.
	secrets := logging.NewSecrets()
	for _, t := range tenants {
		tokens[t.ID] = scaleToken("EAAG" + t.ID + strings.Repeat("x", 180))
	}
	logger := logging.New(io.Discard, logging.Options{Level: slog.LevelInfo, Version: "bench", Secrets: secrets})
	settled := make(chan struct{}, 1024)
	stub := &testkit.FakeBroker{Forget: true, SettleFn: func(context.Context, messages.Delivery, ...broker.Message) error {
		settled <- struct{}{}
		return nil
	}}
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return logger.With(slog.String("component", "protoactor"))
	}))
	defer system.Shutdown()
	spawnStart := time.Now()
	router, err := system.Root.SpawnNamed(actors.NewRouterProps(actors.Config{
		Tenants: tenants, Tokens: tokens, Sender: scaleSender{}, Broker: stub, Logger: logger, Context: ctx,
		PassivateAfter: scalePassivateAfter,
	}), "router")
	if err != nil {
		return scaleReport{}, err
	}
	defer func() { _ = system.Root.PoisonFuture(router).Wait() }()
	dir := actors.Directory{Root: system.Root, Router: router, ListTimeout: 5 * time.Minute}
	if _, err := dir.Get(ctx, tenants[0].ID); err != nil {
		return scaleReport{}, err
	}
	spawn := time.Since(spawnStart)

	heap0, rss0, gor0 := scaleMemNow()
	// In windows, so the jobs in flight do not swell the heap the runtime
	// keeps afterwards.
	const window = 1000
	inFlight := 0
	for i, t := range tenants {
		if inFlight == window {
			<-settled
			inFlight--
		}
		body := benchJobBody(t.ID, i, time.Now())
		system.Root.Send(router, testkit.NewFakeDelivery(body, nil))
		inFlight++
	}
	for ; inFlight > 0; inFlight-- {
		select {
		case <-settled:
		case <-ctx.Done():
			return scaleReport{}, ctx.Err()
		}
	}
	// Every tenant has settled its job; let their last messages run.
	if _, err := dir.Get(ctx, tenants[n-1].ID); err != nil {
		return scaleReport{}, err
	}
	time.Sleep(200 * time.Millisecond)
	heapA, rssA, _ := scaleMemNow()
	// Then the actors go idle and are passivated; their state stays.
	deadline := time.Now().Add(scalePassivateAfter + 60*time.Second)
	for {
		list, err := dir.List(ctx)
		if err != nil {
			return scaleReport{}, err
		}
		active := 0
		for _, t := range list {
			if t.Active {
				active++
			}
		}
		if active == 0 {
			break
		}
		if time.Now().After(deadline) {
			return scaleReport{}, fmt.Errorf("%d of %d tenant actors still active after %v", active, n, scalePassivateAfter)
		}
		time.Sleep(100 * time.Millisecond)
	}
	heap1, rss1, gor1 := scaleMemNow()
	listStart := time.Now()
	if _, err := dir.List(ctx); err != nil {
		return scaleReport{}, err
	}
	list := time.Since(listStart)
	if memprofile != "" {
		if err := writeHeapProfile(memprofile); err != nil {
			return scaleReport{}, err
		}
	}
	perTenant := func(after, before uint64) float64 { return float64(int64(after)-int64(before)) / float64(n) }
	return scaleReport{
		Tenants:             n,
		HeapBytesPerTenant:  perTenant(heap1, heap0),
		RSSBytesPerTenant:   perTenant(rss1, rss0),
		ActiveHeapPerTenant: perTenant(heapA, heap0),
		ActiveRSSPerTenant:  perTenant(rssA, rss0),
		GoroutinesPerTenant: float64(gor1-gor0) / float64(n),
		LoadSeconds:         load.Seconds(),
		SpawnSeconds:        spawn.Seconds(),
		ListSeconds:         list.Seconds(),
	}, nil
}

// scaleTenantsFile writes a tenants file of n tenants (80/min, burst 80,
// each with its own access_token_env) to a temporary directory and loads
// it as the worker does, returning the tenants and how long loading took.
func scaleTenantsFile(n int) ([]config.Tenant, time.Duration, error) {
	dir, err := os.MkdirTemp("", "wadbench-scale-")
	if err != nil {
		return nil, 0, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	var file bytes.Buffer
	file.WriteString("defaults:\n  rate_limit: {per_minute: 80, burst: 80}\n  breaker: {failure_threshold: 5, open_for: 60s}\n" +
		"  max_attempts: 10\n  max_age: 24h\ntenants:\n")
	for i := range n {
		fmt.Fprintf(&file, "  - id: t%06d\n    phone_number_id: \"3%014d\"\n    access_token_env: WA_TOKEN_T%06d\n", i, i, i)
	}
	path := dir + "/tenants.yaml"
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		return nil, 0, err
	}
	getenv := func(name string) string {
		if strings.HasPrefix(name, "WA_TOKEN_") {
			return "EAAG" + name
		}
		return ""
	}
	start := time.Now()
	tenants, err := config.LoadTenants(path, getenv)
	return tenants, time.Since(start), err
}

// writeHeapProfile writes the heap profile (in-use space) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// scaleMemNow returns heap in use and RSS after a full collection that
// returns free memory to the OS, and the number of goroutines.
func scaleMemNow() (heap, rss uint64, goroutines int) {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, scaleRSS(), runtime.NumGoroutine()
}

// scaleRSS reads the resident set size from /proc/self/statm (0 where
// there is none).
func scaleRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// scaleSender is a Meta that accepts every message at once.
type scaleSender struct{}

func (scaleSender) Send(context.Context, whatsapp.Request) (whatsapp.Response, error) {
	return whatsapp.Response{WAMID: "wamid.SCALE", HTTPStatus: 200}, nil
}

type scaleToken string

func (t scaleToken) Token() (string, error) { return string(t), nil }
func (t scaleToken) Refresh() (bool, error) { return false, nil }
