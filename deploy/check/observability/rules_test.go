package observability

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"go.yaml.in/yaml/v3"
)

const (
	rulesFile     = "deploy/prometheus/alerts.yaml"
	rulesTestFile = "deploy/prometheus/alerts_test.yaml"
)

// requiredAlerts are the alerts the rules file must have.
var requiredAlerts = []string{
	"WadispatchNotConsuming",
	"WadispatchBreakerOpen",
	"WadispatchDeadLetters",
	"WadispatchTenantCrashLoop",
	"WadispatchSendLatencyHigh",
	"WadispatchQueueDeep",
	"WadispatchPrefetchSaturated",
	"WadispatchReloadFailing",
	"WadispatchShardUnowned",
	"WadispatchReplicasDisagree",
}

var severities = []string{"critical", "warning"}

func readRules(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	groups, errs := rulefmt.ParseFile(repoPath(rulesFile), false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil {
		t.FailNow()
	}
	return groups
}

// templateLabel matches $labels.name in an annotation template.
var templateLabel = regexp.MustCompile(`\$labels\.([A-Za-z_][A-Za-z0-9_]*)`)

// TestAlertRules: the rules file parses and validates with this
// Prometheus's rule parser (a newer one than Debian's promtool), has the
// required alerts and only recording-free alerting rules named Wadispatch*,
// each with a `for`, a severity label, a summary and a description that
// use only labels the alert has; and every expression uses only the
// worker's metrics, labels and label values.
func TestAlertRules(t *testing.T) {
	groups := readRules(t)
	seen := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				t.Errorf("group %s: recording rule %s; this file holds alerts only", g.Name, r.Record)
				continue
			}
			name := r.Alert
			seen[name] = true
			if !strings.HasPrefix(name, "Wadispatch") {
				t.Errorf("alert %s is not named Wadispatch*", name)
			}
			if time.Duration(r.For) <= 0 {
				t.Errorf("%s has no `for`: one bad evaluation would page", name)
			}
			if !slices.Contains(severities, r.Labels["severity"]) {
				t.Errorf("%s: severity %q, want one of %v", name, r.Labels["severity"], severities)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s has no %s annotation", name, a)
				}
			}
			problems, _, out := checkExpr(r.Expr)
			for _, p := range problems {
				t.Errorf("%s: %s\n\t%s", name, p, r.Expr)
			}
			if out == nil {
				t.Errorf("%s: cannot tell the labels of %s", name, r.Expr)
				continue
			}
			for a, text := range r.Annotations {
				for _, m := range templateLabel.FindAllStringSubmatch(text, -1) {
					if !out[m[1]] {
						t.Errorf("%s: annotation %s uses $labels.%s, which the alert does not have (it has %v)", name, a, m[1], out.names())
					}
				}
			}
		}
	}
	for _, name := range requiredAlerts {
		if !seen[name] {
			t.Errorf("%s has no alert %s", rulesFile, name)
		}
	}
}

// ruleTests is the part of a promtool test file this check reads.
type ruleTests struct {
	RuleFiles          []string `yaml:"rule_files"`
	EvaluationInterval string   `yaml:"evaluation_interval"`
	Tests              []struct {
		Name        string `yaml:"name"`
		Interval    string `yaml:"interval"`
		InputSeries []struct {
			Series string `yaml:"series"`
			Values string `yaml:"values"`
		} `yaml:"input_series"`
		AlertRuleTests []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `yaml:"exp_labels"`
				ExpAnnotations map[string]string `yaml:"exp_annotations"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestAlertTestsCoverEveryAlert: alerts_test.yaml tests the rules file,
// and for every alert has a case where it fires, expecting its severity,
// summary and description, and one where it does not; and names no alert
// the rules file lacks (promtool passes a case expecting no alert of a
// name that does not exist).
func TestAlertTestsCoverEveryAlert(t *testing.T) {
	groups := readRules(t)
	alerts := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts[r.Alert] = true
			}
		}
	}
	raw, err := os.ReadFile(repoPath(rulesTestFile))
	if err != nil {
		t.Fatal(err)
	}
	var rt ruleTests
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&rt); err != nil {
		t.Fatalf("%s: %v", rulesTestFile, err)
	}
	if !slices.Equal(rt.RuleFiles, []string{filepath.Base(rulesFile)}) {
		t.Errorf("%s: rule_files %v, want [%s]", rulesTestFile, rt.RuleFiles, filepath.Base(rulesFile))
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, series := range tc.InputSeries {
			metric := series.Series
			if i := strings.IndexByte(metric, '{'); i >= 0 {
				metric = metric[:i]
			}
			if _, _, ok := lookupSeries(metric); !ok {
				t.Errorf("test %q: input series %s is not a metric the worker exports", tc.Name, metric)
			}
		}
		for _, at := range tc.AlertRuleTests {
			if !alerts[at.Alertname] {
				t.Errorf("test %q: alert %s is not in %s", tc.Name, at.Alertname, rulesFile)
			}
			if len(at.ExpAlerts) == 0 {
				quiet[at.Alertname] = true
				continue
			}
			fires[at.Alertname] = true
			for _, exp := range at.ExpAlerts {
				if exp.ExpLabels["severity"] == "" {
					t.Errorf("test %q: %s at %s expects no severity label", tc.Name, at.Alertname, at.EvalTime)
				}
				for _, a := range []string{"summary", "description"} {
					if exp.ExpAnnotations[a] == "" {
						t.Errorf("test %q: %s at %s expects no %s", tc.Name, at.Alertname, at.EvalTime, a)
					}
				}
			}
		}
	}
	for _, name := range sortedKeys(alerts) {
		if !fires[name] {
			t.Errorf("%s has no case where %s fires", rulesTestFile, name)
		}
		if !quiet[name] {
			t.Errorf("%s has no case where %s does not fire", rulesTestFile, name)
		}
	}
}

// TestPromtool runs `promtool check rules` on the rules file and
// `promtool test rules` on its unit tests.
func TestPromtool(t *testing.T) {
	bin := tool(t, "PROMTOOL", "promtool")
	dir := repoPath("deploy/prometheus")
	for _, args := range [][]string{
		{"--version"},
		{"check", "rules", filepath.Base(rulesFile)},
		{"test", "rules", filepath.Base(rulesTestFile)},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
		if err != nil {
			t.Errorf("promtool %s: %v", strings.Join(args, " "), err)
		}
	}
}
