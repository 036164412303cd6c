package observability

import (
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the wadispatch repository, from this package's directory.
const repoRoot = "../../.."

func repoPath(rel string) string { return filepath.Join(repoRoot, filepath.FromSlash(rel)) }

// labelValues are the values a label may take; nil means any value.
type labelValues []string

// metricSpec is one metric the worker exports, without the wadispatch_
// prefix: its type and its labels.
type metricSpec struct {
	typ    string // counter, gauge or histogram
	labels map[string]labelValues
}

// deferReasons are the counted defer reasons (docs/contract.md, "Defer
// reasons, as logged and counted: ... (and `early` ..., which is not
// counted as a deferral)"): `early` has no series.
var deferReasons = labelValues{"rate_limited", "busy", "breaker_open", "paused", "throttled", "pair_rate", "retry", "in_order"}

// workerMetrics is what the dashboard and the alerts may use. It is checked
// against the Metrics table of docs/contract.md (TestMetricListMatchesContract)
// and against the registry the worker serves (TestMetricListMatchesRegistry),
// so it cannot drift from either.
var workerMetrics = map[string]metricSpec{
	"jobs_total":            {"counter", map[string]labelValues{"tenant": nil, "outcome": {"sent", "failed", "dead_lettered"}}},
	"deferrals_total":       {"counter", map[string]labelValues{"tenant": nil, "reason": deferReasons}},
	"send_duration_seconds": {"histogram", map[string]labelValues{"tenant": nil}},
	"tenant_restarts_total": {"counter", map[string]labelValues{"tenant": nil}},
	"breaker_state":         {"gauge", map[string]labelValues{"tenant": nil, "state": {"closed", "open", "half_open"}}},
	"tokens_available":      {"gauge", map[string]labelValues{"tenant": nil}},
	"tokens_max":            {"gauge", map[string]labelValues{"tenant": nil}},
	"tenant_paused":         {"gauge", map[string]labelValues{"tenant": nil}},
	"tenant_quarantined":    {"gauge", map[string]labelValues{"tenant": nil}},
	"send_window":           {"gauge", map[string]labelValues{"tenant": nil}},
	"sends_in_flight":       {"gauge", map[string]labelValues{"tenant": nil}},
	"recipients_waiting":    {"gauge", map[string]labelValues{"tenant": nil}},

	"tenant_scrape_errors_total":       {"counter", nil},
	"prefetch":                         {"gauge", nil},
	"queue_depth":                      {"gauge", nil},
	"broker_ready":                     {"gauge", nil},
	"prefetch_changes_total":           {"counter", nil},
	"prefetch_held":                    {"gauge", nil},
	"prefetch_saturated_seconds_total": {"counter", nil},

	"config_last_reload_successful":                {"gauge", nil},
	"config_last_reload_success_timestamp_seconds": {"gauge", nil},
	"config_info": {"gauge", map[string]labelValues{"hash": nil}},
	"build_info":  {"gauge", map[string]labelValues{"version": nil, "goversion": nil}},

	"shards_owned": {"gauge", nil},
	// reason is empty on acquired handovers.
	"shard_handovers_total": {"counter", map[string]labelValues{"direction": {"acquired", "released"}, "reason": {"", "rebalance", "shutdown", "connection_lost"}}},
	"jobs_moved_total":      {"counter", map[string]labelValues{"reason": {"intake", "misrouted"}}},
}

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

const prefix = "wadispatch_"

// lookupSeries resolves a series name as PromQL sees it (with the prefix,
// and for a histogram one of its _bucket, _sum or _count series) to the
// metric it belongs to (without prefix) and the labels that series has.
func lookupSeries(name string) (metric string, labels map[string]labelValues, ok bool) {
	base, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return "", nil, false
	}
	if spec, ok := workerMetrics[base]; ok && spec.typ != "histogram" {
		return base, spec.labels, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		h, ok := strings.CutSuffix(base, suffix)
		if !ok {
			continue
		}
		spec, ok := workerMetrics[h]
		if !ok || spec.typ != "histogram" {
			continue
		}
		labels := maps.Clone(spec.labels)
		if suffix == "_bucket" {
			labels["le"] = nil
		}
		return h, labels, true
	}
	return "", nil, false
}

// contractRow is one metric of the Metrics table of docs/contract.md.
type contractRow struct {
	typ    string
	labels map[string]labelValues // nil values: the table does not enumerate them
}

var (
	backticked  = regexp.MustCompile("`([^`]*)`")
	parenthesis = regexp.MustCompile(`\(([^()]*)\)`)
)

// contractMetrics reads the Metrics table of docs/contract.md: the table
// after the line "Metrics, all prefixed `wadispatch_`".
func contractMetrics(t *testing.T) map[string]contractRow {
	t.Helper()
	doc, err := os.ReadFile(repoPath("docs/contract.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	at := strings.Index(text, "Metrics, all prefixed `wadispatch_`")
	if at < 0 {
		t.Fatal("docs/contract.md has no paragraph \"Metrics, all prefixed `wadispatch_`\"")
	}
	rows := map[string]contractRow{}
	inTable := false
	for _, line := range strings.Split(text[at:], "\n") {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 3 {
			t.Fatalf("docs/contract.md: metrics row with %d cells: %s", len(cells), line)
		}
		names := backticked.FindAllStringSubmatch(cells[0], -1)
		if len(names) == 0 { // the header and its rule
			continue
		}
		row := contractRow{labels: map[string]labelValues{}}
		// "`tenant`, `outcome` (`sent`, `failed`, `dead_lettered`)": the
		// labels, each maybe followed by its values in parentheses.
		labelsCell := cells[1]
		for _, group := range parenthesis.FindAllStringSubmatchIndex(labelsCell, -1) {
			before := backticked.FindAllStringSubmatch(labelsCell[:group[0]], -1)
			if len(before) == 0 {
				t.Fatalf("docs/contract.md: values without a label in %s", line)
			}
			var vals labelValues
			for _, v := range backticked.FindAllStringSubmatch(labelsCell[group[2]:group[3]], -1) {
				vals = append(vals, v[1])
			}
			row.labels[before[len(before)-1][1]] = vals
		}
		for _, l := range backticked.FindAllStringSubmatch(parenthesis.ReplaceAllString(labelsCell, ""), -1) {
			if _, ok := row.labels[l[1]]; !ok {
				row.labels[l[1]] = nil
			}
		}
		row.typ = strings.Trim(strings.Fields(cells[2])[0], ",:")
		for _, n := range names {
			if _, dup := rows[n[1]]; dup {
				t.Fatalf("docs/contract.md lists metric %s twice", n[1])
			}
			rows[n[1]] = row
		}
	}
	if len(rows) == 0 {
		t.Fatal("docs/contract.md: no metrics table after \"Metrics, all prefixed `wadispatch_`\"")
	}
	return rows
}

// contractDeferReasons reads the defer reasons from the sentence "Defer
// reasons, as logged and counted: `a`, `b` ... (and `early` for ...)":
// the counted ones, before the parenthesis.
func contractDeferReasons(t *testing.T) labelValues {
	t.Helper()
	doc, err := os.ReadFile(repoPath("docs/contract.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(doc)), " ")
	_, rest, ok := strings.Cut(text, "Defer reasons, as logged and counted:")
	if !ok {
		t.Fatal("docs/contract.md has no sentence \"Defer reasons, as logged and counted:\"")
	}
	list, _, ok := strings.Cut(rest, "(and ")
	if !ok {
		t.Fatal("docs/contract.md: the defer reasons are not followed by \"(and `early` ...)\"")
	}
	var rs labelValues
	for _, m := range backticked.FindAllStringSubmatch(list, -1) {
		rs = append(rs, m[1])
	}
	return rs
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

func sameValues(a, b labelValues) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestMetricListMatchesContract: workerMetrics has exactly the metrics of
// docs/contract.md's Metrics table, with its types, labels and the label
// values the table enumerates.
func TestMetricListMatchesContract(t *testing.T) {
	rows := contractMetrics(t)
	if got, want := sortedKeys(workerMetrics), sortedKeys(rows); !slices.Equal(got, want) {
		t.Errorf("metric list differs from docs/contract.md:\n list:     %v\n contract: %v", got, want)
	}
	for name, row := range rows {
		spec, ok := workerMetrics[name]
		if !ok {
			continue
		}
		if spec.typ != row.typ {
			t.Errorf("%s: type %q in the list, %q in docs/contract.md", name, spec.typ, row.typ)
		}
		if got, want := sortedKeys(spec.labels), sortedKeys(row.labels); !slices.Equal(got, want) {
			t.Errorf("%s: labels %v in the list, %v in docs/contract.md", name, got, want)
			continue
		}
		for l, vals := range row.labels {
			listed := spec.labels[l]
			if name == "shard_handovers_total" && l == "reason" {
				// The table names the released reasons; acquired ones have none.
				listed = slices.DeleteFunc(slices.Clone(listed), func(v string) bool { return v == "" })
			}
			if vals == nil {
				continue
			}
			if !sameValues(listed, vals) {
				t.Errorf("%s{%s}: values %v in the list, %v in docs/contract.md", name, l, listed, vals)
			}
		}
	}
	if got := contractDeferReasons(t); !sameValues(got, deferReasons) {
		t.Errorf("defer reasons %v in the list, %v in docs/contract.md", deferReasons, got)
	}
}

// dumpedFamily is what testdata/registrydump_test.go writes.
type dumpedFamily struct {
	Name   string              `json:"name"`
	Type   string              `json:"type"`
	Labels map[string][]string `json:"labels"`
}

// TestMetricListMatchesRegistry runs testdata/registrydump_test.go inside
// the worker's metrics package (go test -overlay, in the worker module with
// its own go.sum), which scrapes a populated registry, and compares the
// wadispatch_* families with workerMetrics: the same names, types and
// label names, and only listed label values.
func TestMetricListMatchesRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the worker's metrics package")
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	overlay := filepath.Join(dir, "overlay.json")
	dump := filepath.Join(dir, "metrics.json")
	src, err := filepath.Abs("testdata/registrydump_test.go")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]map[string]string{"Replace": {
		filepath.Join(root, "metrics", "zz_observability_dump_test.go"): src,
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(overlay, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "test", "-count=1", "-overlay", overlay, "-run", "^TestObservabilityDump$", "./metrics")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK=off", "OBSERVABILITY_METRICS_DUMP="+dump)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	raw, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	var families []dumpedFamily
	if err := json.Unmarshal(raw, &families); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range families {
		name := strings.TrimPrefix(f.Name, prefix)
		seen[name] = true
		spec, ok := workerMetrics[name]
		if !ok {
			t.Errorf("the worker serves %s, which is not in the list (nor, then, in docs/contract.md)", f.Name)
			continue
		}
		if f.Type != spec.typ {
			t.Errorf("%s: the worker serves a %s, the list says %s", f.Name, f.Type, spec.typ)
		}
		labels := maps.Clone(f.Labels)
		if spec.typ == "histogram" {
			delete(labels, "le")
		}
		if got, want := sortedKeys(labels), sortedKeys(spec.labels); !slices.Equal(got, want) {
			t.Errorf("%s: the worker's labels are %v, the list's %v", f.Name, got, want)
			continue
		}
		for l, vals := range labels {
			allowed := spec.labels[l]
			if allowed == nil {
				continue
			}
			for _, v := range vals {
				if !slices.Contains(allowed, v) {
					t.Errorf("%s{%s=%q}: a value the list does not have (%v)", f.Name, l, v, allowed)
				}
			}
		}
	}
	for _, name := range sortedKeys(workerMetrics) {
		if !seen[name] {
			t.Errorf("%s%s is in the list but the worker's registry does not serve it", prefix, name)
		}
	}
	if t.Failed() {
		t.Logf("registry dump:\n%s", raw)
	}
}
