package observability

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// The parser checks say that every query is well formed and names only
// what the worker exports; these run them, on a real Prometheus server
// (Debian's, from the same package as promtool) holding a synthetic
// healthy fleet: every dashboard query must return data, and no alert
// expression may return anything.

// fleetStart is when the synthetic series start (a fixed time, so that the
// test does not depend on the clock); they run for fleetSpan, one sample
// every fleetStep; queries are evaluated at fleetEval.
var (
	fleetStart = time.Unix(1_700_000_000, 0)
	fleetSpan  = time.Hour
	fleetStep  = 30 * time.Second
	fleetEval  = fleetStart.Add(50 * time.Minute)
)

// fleetBuckets are the worker's histogram buckets (metrics.sendBuckets).
var fleetBuckets = []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "20", "30", "+Inf"}

// fleetLabelValues are the values given to labels the list does not
// enumerate.
var fleetLabelValues = map[string][]string{
	"tenant":    {"acme", "globex"},
	"hash":      {"aaaa"},
	"version":   {"v1.0.0"},
	"goversion": {"go1.26.8"},
}

// healthy is a sample of a healthy fleet of two workers sharing 32 shards:
// sending, nothing failing, dead-lettered, restarting, open, paused or
// saturated. i counts samples from 0.
func healthy(metric string, labels map[string]string, i int) float64 {
	n := float64(i)
	switch metric {
	case "jobs_total":
		if labels["outcome"] != "sent" {
			return 0
		}
		return 10 * n
	case "tenant_restarts_total", "tenant_scrape_errors_total", "prefetch_saturated_seconds_total":
		return 0
	case "breaker_state":
		if labels["state"] == "closed" {
			return 1
		}
		return 0
	case "tenant_paused", "tenant_quarantined":
		return 0
	case "queue_depth":
		return 10
	case "shards_owned":
		return 16
	case "prefetch":
		return 10
	case "config_last_reload_success_timestamp_seconds":
		return float64(fleetStart.Unix())
	}
	switch workerMetrics[metric].typ {
	case "counter":
		return n
	default:
		return 1
	}
}

// fleetSeries is every series of the synthetic fleet: name and labels.
type fleetSeries struct {
	metric string // without prefix, as in workerMetrics
	name   string // the series name
	labels map[string]string
}

func fleet() []fleetSeries {
	var all []fleetSeries
	for _, metric := range sortedKeys(workerMetrics) {
		spec := workerMetrics[metric]
		combos := []map[string]string{{}}
		for _, l := range sortedKeys(spec.labels) {
			vals := spec.labels[l]
			if vals == nil {
				vals = fleetLabelValues[l]
			}
			var next []map[string]string
			for _, c := range combos {
				for _, v := range vals {
					m := map[string]string{l: v}
					for k, cv := range c {
						m[k] = cv
					}
					next = append(next, m)
				}
			}
			combos = next
		}
		for _, instance := range []string{"w1:9100", "w2:9100"} {
			for _, c := range combos {
				ls := map[string]string{"job": "wadispatch", "instance": instance}
				for k, v := range c {
					ls[k] = v
				}
				if spec.typ != "histogram" {
					all = append(all, fleetSeries{metric, prefix + metric, ls})
					continue
				}
				for _, le := range fleetBuckets {
					b := map[string]string{"le": le}
					for k, v := range ls {
						b[k] = v
					}
					all = append(all, fleetSeries{metric, prefix + metric + "_bucket", b})
				}
				all = append(all, fleetSeries{metric, prefix + metric + "_sum", ls}, fleetSeries{metric, prefix + metric + "_count", ls})
			}
		}
	}
	return all
}

// openMetrics writes the fleet in the OpenMetrics text format that
// `promtool tsdb create-blocks-from openmetrics` reads.
func openMetrics() string {
	var b strings.Builder
	for _, s := range fleet() {
		var ls []string
		for _, k := range sortedKeys(s.labels) {
			ls = append(ls, fmt.Sprintf("%s=%q", k, s.labels[k]))
		}
		sel := s.name + "{" + strings.Join(ls, ",") + "}"
		for i := 0; time.Duration(i)*fleetStep <= fleetSpan; i++ {
			v := healthy(s.metric, s.labels, i)
			switch {
			case strings.HasSuffix(s.name, "_bucket"), strings.HasSuffix(s.name, "_count"):
				v = float64(i) // every send within the first bucket
			case strings.HasSuffix(s.name, "_sum"):
				v = 0.003 * float64(i)
			}
			ts := fleetStart.Add(time.Duration(i) * fleetStep).Unix()
			fmt.Fprintf(&b, "%s %s %d\n", sel, strconv.FormatFloat(v, 'g', -1, 64), ts)
		}
	}
	b.WriteString("# EOF\n")
	return b.String()
}

// tool finds a binary: $env, else name on $PATH. Without either the test
// is skipped, unless $OBSERVABILITY_REQUIRE_PROMTOOL is set
// (deploy/check-observability.sh sets it, PROMTOOL and PROMETHEUS).
func tool(t *testing.T, env, name string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("OBSERVABILITY_REQUIRE_PROMTOOL") != "" {
			t.Fatalf("no %s: set %s or put %s on PATH", name, env, name)
		}
		t.Skipf("no %s (set %s, or run deploy/check-observability.sh)", name, env)
	}
	return p
}

// fleetServer backfills the fleet into a TSDB and serves it with a
// Prometheus server on the loopback; it returns the server's URL.
func fleetServer(t *testing.T) string {
	t.Helper()
	promtoolBin := tool(t, "PROMTOOL", "promtool")
	prometheusBin := tool(t, "PROMETHEUS", "prometheus")
	dir := t.TempDir()
	data := filepath.Join(dir, "fleet.om")
	if err := os.WriteFile(data, []byte(openMetrics()), 0o644); err != nil {
		t.Fatal(err)
	}
	tsdb := filepath.Join(dir, "tsdb")
	if out, err := exec.Command(promtoolBin, "tsdb", "create-blocks-from", "openmetrics", "--quiet", data, tsdb).CombinedOutput(); err != nil {
		t.Fatalf("promtool tsdb create-blocks-from openmetrics: %v\n%s", err, out)
	}
	config := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(config, []byte("global: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A free port on the loopback (the server cannot be given port 0 and
	// say which it got).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prometheusBin,
		"--config.file="+config,
		"--storage.tsdb.path="+tsdb,
		"--storage.tsdb.retention.time=36500d", // the fleet is in 2023
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
		if t.Failed() {
			log, _ := os.ReadFile(logFile.Name())
			t.Logf("prometheus log:\n%s", log)
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus on %s not ready after 30 s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// queryResult is the part of a /api/v1/query answer read here.
type queryResult struct {
	Status    string `json:"status"`
	Error     string `json:"error"`
	ErrorType string `json:"errorType"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

// instantQuery evaluates expr at fleetEval and returns how many series (or
// 1 for a scalar) it gave.
func instantQuery(base, expr string) (int, error) {
	resp, err := http.PostForm(base+"/api/v1/query", url.Values{
		"query": {expr},
		"time":  {strconv.FormatInt(fleetEval.Unix(), 10)},
	})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r queryResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, fmt.Errorf("%s: %w", resp.Status, err)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("%s: %s", r.ErrorType, r.Error)
	}
	switch r.Data.ResultType {
	case "scalar":
		return 1, nil
	case "vector", "matrix":
		var series []json.RawMessage
		if err := json.Unmarshal(r.Data.Result, &series); err != nil {
			return 0, err
		}
		return len(series), nil
	}
	return 0, fmt.Errorf("result of type %s", r.Data.ResultType)
}

// TestQueriesOnAFleet: on a synthetic healthy fleet of two workers with
// every series the worker exports, every dashboard query (with each
// substitution of its variables) evaluates and returns data, and every
// alert expression evaluates and returns nothing.
func TestQueriesOnAFleet(t *testing.T) {
	base := fleetServer(t)
	// The fleet is there, and the checks below can tell data from none.
	names := 0
	for _, spec := range workerMetrics {
		names++
		if spec.typ == "histogram" {
			names += 2 // _bucket, _sum and _count
		}
	}
	for expr, want := range map[string]int{
		`count by (__name__) ({__name__=~"wadispatch_.+"})`: names,
		`wadispatch_broker_ready == 1`:                      2,
		`wadispatch_jobs_total{tenant="nobody"}`:            0,
	} {
		if n, err := instantQuery(base, expr); err != nil || n != want {
			t.Fatalf("%s: %d series (%v), want %d: the fleet is not what it should be", expr, n, err, want)
		}
	}

	d := mustDecodeDashboard(t)
	panels, _ := allPanels(d)
	subs, problems := substitutions(d)
	for _, p := range problems {
		t.Error(p)
	}
	for _, p := range panels {
		for _, target := range p.Targets {
			q, ok := target.(*prometheus.Dataquery)
			if !ok {
				continue
			}
			for _, values := range subs {
				expr, _ := substitute(q.Expr, values)
				n, err := instantQuery(base, expr)
				switch {
				case err != nil:
					t.Errorf("%s, query %s: %v\n\t%s", title(p), deref(q.RefId), err, expr)
				case n == 0:
					t.Errorf("%s, query %s: no data on the fleet\n\t%s", title(p), deref(q.RefId), expr)
				}
			}
		}
	}

	var alerts []string
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			n, err := instantQuery(base, r.Expr)
			switch {
			case err != nil:
				t.Errorf("alert %s: %v\n\t%s", r.Alert, err, r.Expr)
			case n > 0:
				t.Errorf("alert %s: its expression returns %d series on a healthy fleet\n\t%s", r.Alert, n, r.Expr)
			}
			alerts = append(alerts, r.Alert)
		}
	}
	if !slices.Contains(alerts, "WadispatchNotConsuming") {
		t.Error("no alerts evaluated")
	}
}
