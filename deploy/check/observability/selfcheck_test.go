package observability

import (
	"encoding/json"
	"strings"
	"testing"
)

// The checks above pass on the real files; these tests make sure they
// would fail on broken ones, so that a check that silently checks nothing
// (as the SDK's strict decoder nearly did, see sdkError) is caught.

// allDashboardProblems runs every dashboard check on raw.
func allDashboardProblems(raw []byte) []string {
	d, problems := decodeDashboard(raw)
	if d == nil {
		return problems
	}
	problems = append(problems, panelProblems(d)...)
	problems = append(problems, queryProblems(d)...)
	return append(problems, variableProblems(d)...)
}

// firstPanel is the first panel of the given type in a decoded dashboard.
func firstPanel(t *testing.T, d map[string]any, typ string) map[string]any {
	t.Helper()
	for _, p := range d["panels"].([]any) {
		if p := p.(map[string]any); p["type"] == typ {
			return p
		}
	}
	t.Fatalf("no %s panel", typ)
	return nil
}

func firstTarget(t *testing.T, d map[string]any, typ string) map[string]any {
	t.Helper()
	return firstPanel(t, d, typ)["targets"].([]any)[0].(map[string]any)
}

func defaults(t *testing.T, d map[string]any, typ string) map[string]any {
	t.Helper()
	return firstPanel(t, d, typ)["fieldConfig"].(map[string]any)["defaults"].(map[string]any)
}

func variable(d map[string]any, name string) map[string]any {
	for _, v := range d["templating"].(map[string]any)["list"].([]any) {
		if v := v.(map[string]any); v["name"] == name {
			return v
		}
	}
	return nil
}

func TestDashboardChecksCatchMistakes(t *testing.T) {
	if problems := allDashboardProblems(readDashboard(t)); len(problems) > 0 {
		t.Fatalf("the dashboard itself has problems: %v", problems)
	}
	cases := []struct {
		name   string
		break_ func(t *testing.T, d map[string]any)
		want   string // in one of the problems
	}{
		{"unknown top-level field", func(t *testing.T, d map[string]any) { d["titel"] = "x" }, "unknown field"},
		{"unknown panel field", func(t *testing.T, d map[string]any) { firstPanel(t, d, "timeseries")["colour"] = "red" }, "colour"},
		{"unknown query field", func(t *testing.T, d map[string]any) { firstTarget(t, d, "timeseries")["exprs"] = "up" }, "exprs"},
		{"unknown timeseries option", func(t *testing.T, d map[string]any) {
			firstPanel(t, d, "timeseries")["options"].(map[string]any)["legnd"] = map[string]any{}
		}, "legnd"},
		{"missing stat option", func(t *testing.T, d map[string]any) {
			delete(firstPanel(t, d, "stat")["options"].(map[string]any), "reduceOptions")
		}, "reduceOptions"},
		{"unknown custom field config", func(t *testing.T, d map[string]any) {
			defaults(t, d, "timeseries")["custom"].(map[string]any)["lineWidht"] = 1
		}, "lineWidht"},
		{"unknown field config default", func(t *testing.T, d map[string]any) { defaults(t, d, "timeseries")["unitt"] = "s" }, "unitt"},
		{"unknown variable field", func(t *testing.T, d map[string]any) { variable(d, "tenant")["multiple"] = true }, "multiple"},
		{"mistyped field", func(t *testing.T, d map[string]any) { firstPanel(t, d, "stat")["gridPos"].(map[string]any)["w"] = "4" }, "gridPos"},
		{"no datasource", func(t *testing.T, d map[string]any) { delete(firstPanel(t, d, "timeseries"), "datasource") }, "no datasource"},
		{"a fixed datasource", func(t *testing.T, d map[string]any) {
			firstPanel(t, d, "timeseries")["datasource"] = map[string]any{"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
		}, "want prometheus/${datasource}"},
		{"no targets", func(t *testing.T, d map[string]any) { delete(firstPanel(t, d, "table"), "targets") }, "no targets"},
		{"overlapping panels", func(t *testing.T, d map[string]any) {
			firstPanel(t, d, "state-timeline")["gridPos"].(map[string]any)["y"] = 0.0
		}, "overlaps"},
		{"unparsable query", func(t *testing.T, d map[string]any) { firstTarget(t, d, "timeseries")["expr"] = "sum(rate(x[5m])" }, "does not parse"},
		{"unknown metric", func(t *testing.T, d map[string]any) {
			firstTarget(t, d, "timeseries")["expr"] = `sum(rate(wadispatch_job_total[$__rate_interval]))`
		}, "not a metric the worker exports"},
		{"unknown label", func(t *testing.T, d map[string]any) {
			firstTarget(t, d, "timeseries")["expr"] = `sum(rate(wadispatch_jobs_total{tenants=~"$tenant"}[$__rate_interval]))`
		}, `no label "tenants"`},
		{"unknown label value", func(t *testing.T, d map[string]any) {
			firstTarget(t, d, "timeseries")["expr"] = `sum(rate(wadispatch_jobs_total{outcome="deadlettered"}[$__rate_interval]))`
		}, `"deadlettered" is not a value`},
		{"unknown value in an alternation", func(t *testing.T, d map[string]any) {
			firstTarget(t, d, "timeseries")["expr"] = `sum(rate(wadispatch_jobs_total{outcome=~"sent|lost"}[$__rate_interval]))`
		}, `"lost" is not a value`},
		{"grouping by a missing label", func(t *testing.T, d map[string]any) {
			firstTarget(t, d, "timeseries")["expr"] = `sum by (reason) (rate(wadispatch_jobs_total[$__rate_interval]))`
		}, `no series below has label "reason"`},
		{"legend of a missing label", func(t *testing.T, d map[string]any) { firstTarget(t, d, "timeseries")["legendFormat"] = "{{tenant}}" }, "legend"},
		{"unknown template variable", func(t *testing.T, d map[string]any) {
			firstTarget(t, d, "timeseries")["expr"] = `sum(rate(wadispatch_jobs_total{tenant=~"$tennant"}[$__rate_interval]))`
		}, "unknown template variables"},
		{"a metric shown nowhere", func(t *testing.T, d map[string]any) {
			for _, p := range d["panels"].([]any) {
				targets, _ := p.(map[string]any)["targets"].([]any) // rows have none
				for _, q := range targets {
					q := q.(map[string]any)
					q["expr"] = strings.ReplaceAll(q["expr"].(string), "wadispatch_jobs_moved_total", "wadispatch_jobs_total")
				}
			}
		}, "no panel shows [wadispatch_jobs_moved_total]"},
		{"a single-value tenant variable", func(t *testing.T, d map[string]any) { variable(d, "tenant")["multi"] = false }, "multi false"},
		{"tenants from another metric", func(t *testing.T, d map[string]any) {
			variable(d, "tenant")["definition"] = "label_values(wadispatch_deferrals_total, tenant)"
		}, "query or definition"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var d map[string]any
			if err := json.Unmarshal(readDashboard(t), &d); err != nil {
				t.Fatal(err)
			}
			tc.break_(t, d)
			raw, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			problems := allDashboardProblems(raw)
			for _, p := range problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got %d: %v", tc.want, len(problems), problems)
		})
	}
}

func TestExprChecksCatchMistakes(t *testing.T) {
	for expr, want := range map[string]string{
		`wadispatch_broker_ready == 0 or absent(wadispatch_broker_ready)`:                                   "",
		`histogram_quantile(0.99, sum by (tenant, le) (rate(wadispatch_send_duration_seconds_bucket[5m])))`: "",
		`rate(wadispatch_send_duration_seconds_sum[5m]) / rate(wadispatch_send_duration_seconds_count[5m])`: "",
		`wadispatch_send_duration_seconds`:                                       "not a metric the worker exports",
		`sum by (le) (rate(wadispatch_send_duration_seconds_sum[5m]))`:           `no series below has label "le"`,
		`wadispatch_shard_handovers_total{direction="acquired", reason=""}`:      "",
		`wadispatch_shard_handovers_total{direction="released", reason="crash"}`: `"crash" is not a value`,
		`wadispatch_breaker_state{state="half-open"}`:                            `"half-open" is not a value`,
		`wadispatch_deferrals_total{reason="in_order"}`:                          "",
		`wadispatch_deferrals_total{reason="inorder"}`:                           `"inorder" is not a value`,
		`up{job="wadispatch"}`:                                                   "not a metric the worker exports",
		`wadispatch_queue_depth{instance="w1", tenant="acme"}`:                   `no label "tenant"`,
	} {
		problems, _, _ := checkExpr(expr)
		switch {
		case want == "" && len(problems) > 0:
			t.Errorf("%s: unexpected problems %v", expr, problems)
		case want != "" && !strings.Contains(strings.Join(problems, "\n"), want):
			t.Errorf("%s: want a problem with %q, got %v", expr, want, problems)
		}
	}
	for expr, want := range map[string][]string{
		`max by (tenant) (2 * wadispatch_breaker_state{state="open"} + ignoring (state) wadispatch_breaker_state{state="half_open"})`: {"tenant"},
		`2 * wadispatch_breaker_state + ignoring (state) wadispatch_breaker_state`:                                                    {"instance", "job", "tenant"},
		`wadispatch_broker_ready == 0 or absent(wadispatch_broker_ready)`:                                                             {"instance", "job"},
		`count(count by (hash) (wadispatch_config_info)) > 1`:                                                                         {},
		`histogram_quantile(0.5, sum by (tenant, le) (rate(wadispatch_send_duration_seconds_bucket[5m])))`:                            {"tenant"},
	} {
		_, _, out := checkExpr(expr)
		if out == nil || strings.Join(out.names(), ",") != strings.Join(want, ",") {
			t.Errorf("%s: result labels %v, want %v", expr, out.names(), want)
		}
	}
}
