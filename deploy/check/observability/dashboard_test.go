package observability

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/statetimeline"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

const dashboardFile = "deploy/grafana/wadispatch.json"

// datasourceUID is what every panel and query must use: the dashboard's
// datasource variable, so that the dashboard follows whichever Prometheus
// is picked.
const datasourceUID = "${datasource}"

func readDashboard(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile(repoPath(dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// registerPlugins registers with the SDK the panel types the dashboard
// uses and the Prometheus query type, so that the strict decoder decodes
// each panel's options and custom field config, and each target, into
// their own types and rejects any unknown or missing field. (The SDK's
// plugins.RegisterDefaultPlugins registers every plugin it has, and
// compiling them all takes a minute and a half here; a panel of another
// type fails TestDashboardPanels until it is added.)
func registerPlugins() {
	rt := cog.NewRuntime()
	for _, v := range []func() variants.PanelcfgConfig{
		timeseries.VariantConfig, stat.VariantConfig, statetimeline.VariantConfig, table.VariantConfig,
	} {
		rt.RegisterPanelcfgVariant(v())
	}
	rt.RegisterDataqueryVariant(prometheus.VariantConfig())
}

// sdkError works around a bug of the SDK (v0.0.22): its strict decoders
// return their list of errors as an error even when the list is empty (a
// nil cog.BuildErrors in a non-nil error interface).
func sdkError(err error) error {
	if be, ok := err.(cog.BuildErrors); ok && len(be) == 0 {
		return nil
	}
	return err
}

// decodeDashboard decodes the dashboard into the SDK's dashboard model and
// returns every way it is not a dashboard the model holds whole:
//
//   - a json.Decoder with DisallowUnknownFields into dashboard.Dashboard.
//     That is strict at the top level only: the SDK's Panel and
//     PanelOrRowPanel have UnmarshalJSON methods of their own, which
//     encoding/json calls without passing the setting on, and which are
//     lenient. This decode is the model the other checks read.
//   - the SDK's own strict decoder, UnmarshalJSONStrict, with the panel and
//     query types registered: it rejects unknown, missing and mistyped
//     fields in panels, rows, each panel type's options and custom field
//     config, the Prometheus queries, variables and annotations. Its result
//     is not used: the same SDK bug as in sdkError makes each union (panel
//     or row, a query, a panel's options) drop what it decoded, so only its
//     errors count.
//   - the SDK's Validate, on the model.
//   - the model encoded back and compared with the file: this catches what
//     even the strict decoder takes leniently (fieldConfig.defaults apart
//     from custom, overrides' values), since a field the model does not
//     hold is lost on the way back.
func decodeDashboard(raw []byte) (*dashboard.Dashboard, []string) {
	registerPlugins()
	var problems []string
	var d dashboard.Dashboard
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, []string{fmt.Sprintf("json.Decoder with DisallowUnknownFields: %v", err)}
	}
	if dec.More() {
		problems = append(problems, "more than one JSON value")
	}
	var strict dashboard.Dashboard
	if err := sdkError(strict.UnmarshalJSONStrict(raw)); err != nil {
		if be, ok := err.(cog.BuildErrors); ok {
			for _, e := range be {
				problems = append(problems, "strict decoder: "+e.Error())
			}
		} else {
			problems = append(problems, "strict decoder: "+err.Error())
		}
	}
	if err := d.Validate(); err != nil {
		problems = append(problems, "Validate: "+err.Error())
	}
	back, err := json.Marshal(&d)
	if err != nil {
		return &d, append(problems, fmt.Sprintf("encoding the model: %v", err))
	}
	var want, got any
	if err := json.Unmarshal(raw, &want); err != nil {
		return &d, append(problems, err.Error())
	}
	if err := json.Unmarshal(back, &got); err != nil {
		return &d, append(problems, err.Error())
	}
	for _, diff := range jsonDiff("", want, got) {
		problems = append(problems, "not held by the model (file, then after a round trip): "+diff)
	}
	return &d, problems
}

// mustDecodeDashboard is decodeDashboard for the tests that read the
// model: they stop if it is not sound.
func mustDecodeDashboard(t *testing.T) *dashboard.Dashboard {
	t.Helper()
	d, problems := decodeDashboard(readDashboard(t))
	if len(problems) > 0 {
		t.Fatalf("%s does not decode strictly (see TestDashboardDecodesStrictly): %s", dashboardFile, problems[0])
	}
	return d
}

// TestDashboardDecodesStrictly: the dashboard is one the Grafana Foundation
// SDK's model holds whole (see decodeDashboard).
func TestDashboardDecodesStrictly(t *testing.T) {
	_, problems := decodeDashboard(readDashboard(t))
	for _, p := range problems {
		t.Errorf("%s: %s", dashboardFile, p)
	}
}

// jsonDiff lists where two decoded JSON values differ.
func jsonDiff(path string, a, b any) []string {
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: %v became %v", path, short(a), short(b))}
		}
		var diffs []string
		keys := map[string]bool{}
		for k := range a {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		for _, k := range sortedKeys(keys) {
			av, aok := a[k]
			bv, bok := bm[k]
			switch {
			case !bok:
				diffs = append(diffs, fmt.Sprintf("%s.%s: %v is dropped", path, k, short(av)))
			case !aok:
				diffs = append(diffs, fmt.Sprintf("%s.%s: %v is added", path, k, short(bv)))
			default:
				diffs = append(diffs, jsonDiff(path+"."+k, av, bv)...)
			}
		}
		return diffs
	case []any:
		bs, ok := b.([]any)
		if !ok || len(a) != len(bs) {
			return []string{fmt.Sprintf("%s: %v became %v", path, short(a), short(b))}
		}
		var diffs []string
		for i := range a {
			diffs = append(diffs, jsonDiff(fmt.Sprintf("%s[%d]", path, i), a[i], bs[i])...)
		}
		return diffs
	}
	if !reflect.DeepEqual(a, b) {
		return []string{fmt.Sprintf("%s: %v became %v", path, short(a), short(b))}
	}
	return nil
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}

// allPanels is every panel that is not a row, rows' own panels included.
func allPanels(d *dashboard.Dashboard) (panels []*dashboard.Panel, rows []*dashboard.RowPanel) {
	for _, p := range d.Panels {
		switch {
		case p.Panel != nil:
			panels = append(panels, p.Panel)
		case p.RowPanel != nil:
			rows = append(rows, p.RowPanel)
			for i := range p.RowPanel.Panels {
				panels = append(panels, &p.RowPanel.Panels[i])
			}
		}
	}
	return panels, rows
}

func title(p *dashboard.Panel) string {
	if p.Title == nil {
		return fmt.Sprintf("panel %v", p.Id)
	}
	return fmt.Sprintf("panel %q", *p.Title)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// panelProblems: every panel has a title, a description, a grid position
// inside the 24 columns that overlaps no other, a unique id, a panel type
// registered in registerPlugins (so that its options are checked), the
// ${datasource} Prometheus datasource, and at least one Prometheus query
// with an expression and a unique refId, on that same datasource.
func panelProblems(d *dashboard.Dashboard) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	panels, rows := allPanels(d)
	if len(panels) == 0 {
		add("the dashboard has no panels")
	}
	type box struct {
		name string
		pos  dashboard.GridPos
	}
	var boxes []box
	ids := map[uint32]string{}
	for _, r := range rows {
		name := fmt.Sprintf("row %q", deref(r.Title))
		if r.GridPos != nil {
			boxes = append(boxes, box{name, *r.GridPos})
		}
		if prev, dup := ids[r.Id]; dup {
			add("%s has id %d, as %s does", name, r.Id, prev)
		}
		ids[r.Id] = name
	}
	for _, p := range panels {
		name := title(p)
		if deref(p.Title) == "" {
			add("%s has no title", name)
		}
		if deref(p.Description) == "" {
			add("%s has no description", name)
		}
		if p.Id == nil {
			add("%s has no id", name)
		} else {
			if prev, dup := ids[*p.Id]; dup {
				add("%s has id %d, as %s does", name, *p.Id, prev)
			}
			ids[*p.Id] = name
		}
		if _, ok := cog.ConfigForPanelcfgVariant(p.Type); !ok {
			add("%s: panel type %q is not registered in registerPlugins (its options would not be checked)", name, p.Type)
		}
		if p.GridPos == nil {
			add("%s has no gridPos", name)
		} else {
			g := *p.GridPos
			if g.W == 0 || g.H == 0 || g.X+g.W > 24 {
				add("%s: gridPos %+v is not inside the 24 columns", name, g)
			}
			boxes = append(boxes, box{name, g})
		}
		if p.Datasource == nil {
			add("%s has no datasource", name)
		} else if deref(p.Datasource.Type) != "prometheus" || deref(p.Datasource.Uid) != datasourceUID {
			add("%s: datasource %s/%s, want prometheus/%s", name, deref(p.Datasource.Type), deref(p.Datasource.Uid), datasourceUID)
		}
		if len(p.Targets) == 0 {
			add("%s has no targets", name)
		}
		refs := map[string]bool{}
		for i, target := range p.Targets {
			q, ok := target.(*prometheus.Dataquery)
			if !ok {
				add("%s: target %d is a %T, not a Prometheus query", name, i, target)
				continue
			}
			ref := deref(q.RefId)
			if ref == "" || refs[ref] {
				add("%s: target %d has refId %q, empty or used twice", name, i, ref)
			}
			refs[ref] = true
			if strings.TrimSpace(q.Expr) == "" {
				add("%s: target %s has no expr", name, ref)
			}
			if q.Datasource != nil && (deref(q.Datasource.Type) != "prometheus" || deref(q.Datasource.Uid) != datasourceUID) {
				add("%s: target %s: datasource %s/%s, want prometheus/%s", name, ref, deref(q.Datasource.Type), deref(q.Datasource.Uid), datasourceUID)
			}
		}
	}
	for i, a := range boxes {
		for _, b := range boxes[i+1:] {
			if a.pos.X < b.pos.X+b.pos.W && b.pos.X < a.pos.X+a.pos.W && a.pos.Y < b.pos.Y+b.pos.H && b.pos.Y < a.pos.Y+a.pos.H {
				add("%s %+v overlaps %s %+v", a.name, a.pos, b.name, b.pos)
			}
		}
	}
	return problems
}

func TestDashboardPanels(t *testing.T) {
	for _, p := range panelProblems(mustDecodeDashboard(t)) {
		t.Error(p)
	}
}

// grafanaBuiltins are Grafana's own variables, with a value each.
var grafanaBuiltins = map[string]string{
	"__rate_interval": "1m",
	"__interval":      "1m",
	"__interval_ms":   "60000",
	"__range":         "6h",
	"__range_s":       "21600",
	"__range_ms":      "21600000",
}

// variableUse matches $name, ${name}, ${name:format} and [[name]].
var variableUse = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// substitutions is each way the template variables are filled in: a query
// variable as one value, as several (Grafana writes a multi-value
// selection into a Prometheus query as a regular expression), and as its
// All value.
func substitutions(d *dashboard.Dashboard) ([]map[string]string, []string) {
	var problems []string
	vars := map[string][]string{}
	for name, val := range grafanaBuiltins {
		vars[name] = []string{val}
	}
	for _, v := range d.Templating.List {
		switch v.Type {
		case dashboard.VariableTypeQuery, dashboard.VariableTypeCustom:
			vals := []string{"acme", "(acme|globex)"}
			if v.AllValue != nil {
				vals = append(vals, *v.AllValue)
			}
			vars[v.Name] = vals
		case dashboard.VariableTypeDatasource:
			// Only ever a datasource uid, never in a query.
		default:
			problems = append(problems, fmt.Sprintf("variable %s: type %s has no test value", v.Name, v.Type))
		}
	}
	// Round i uses the i-th value of each variable (or its last).
	var subs []map[string]string
	for i := range 3 {
		s := map[string]string{}
		for name, vals := range vars {
			s[name] = vals[min(i, len(vals)-1)]
		}
		subs = append(subs, s)
	}
	return subs, problems
}

// substitute fills in the template variables of expr, naming any it does
// not know.
func substitute(expr string, values map[string]string) (string, []string) {
	var unknown []string
	out := variableUse.ReplaceAllStringFunc(expr, func(m string) string {
		sm := variableUse.FindStringSubmatch(m)
		v, ok := values[sm[1]+sm[2]+sm[3]]
		if !ok {
			unknown = append(unknown, m)
			return m
		}
		return v
	})
	return out, unknown
}

var legendLabel = regexp.MustCompile(`\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`)

// queryProblems: every panel query, with its template variables filled in
// each way, parses with the Prometheus parser, uses only metrics, labels
// and label values the worker exports, groups only by labels its series
// have, and names in its legend only labels its result has; and the
// dashboard shows every metric of the list somewhere.
func queryProblems(d *dashboard.Dashboard) []string {
	panels, _ := allPanels(d)
	subs, problems := substitutions(d)
	used := map[string]bool{}
	for _, p := range panels {
		for _, target := range p.Targets {
			q, ok := target.(*prometheus.Dataquery)
			if !ok {
				continue // panelProblems says so
			}
			where := fmt.Sprintf("%s, query %s", title(p), deref(q.RefId))
			for _, values := range subs {
				expr, unknown := substitute(q.Expr, values)
				if len(unknown) > 0 {
					problems = append(problems, fmt.Sprintf("%s: unknown template variables %v in %s", where, unknown, q.Expr))
					break
				}
				exprProblems, metrics, out := checkExpr(expr)
				for _, pr := range exprProblems {
					problems = append(problems, fmt.Sprintf("%s: %s\n\t%s", where, pr, expr))
				}
				for _, m := range metrics {
					used[m] = true
				}
				if out != nil {
					for _, l := range legendLabel.FindAllStringSubmatch(deref(q.LegendFormat), -1) {
						if !out[l[1]] {
							problems = append(problems, fmt.Sprintf("%s: legend %q names label %s, which the result does not have (it has %v)", where, deref(q.LegendFormat), l[1], out.names()))
						}
					}
				}
				if len(exprProblems) > 0 {
					break // the same problems with the next values
				}
			}
		}
	}
	var unused []string
	for _, m := range sortedKeys(workerMetrics) {
		if !used[m] {
			unused = append(unused, prefix+m)
		}
	}
	if len(unused) > 0 {
		problems = append(problems, fmt.Sprintf("no panel shows %v", unused))
	}
	return problems
}

func TestDashboardQueries(t *testing.T) {
	for _, p := range queryProblems(mustDecodeDashboard(t)) {
		t.Error(p)
	}
}

// variableProblems: a datasource variable named datasource for Prometheus
// datasources, and a multi-value tenant variable with an All option, whose
// values are the tenant label of wadispatch_jobs_total read from that
// datasource; no other variables.
func variableProblems(d *dashboard.Dashboard) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	byName := map[string]dashboard.VariableModel{}
	var names []string
	for _, v := range d.Templating.List {
		if _, dup := byName[v.Name]; dup {
			add("variable %s is defined twice", v.Name)
		}
		byName[v.Name] = v
		names = append(names, v.Name)
	}
	sort.Strings(names)
	if !slices.Equal(names, []string{"datasource", "tenant"}) {
		add("variables %v, want datasource and tenant", names)
	}
	if ds, ok := byName["datasource"]; ok {
		if ds.Type != dashboard.VariableTypeDatasource {
			add("datasource: type %s, want datasource", ds.Type)
		}
		if ds.Query == nil || deref(ds.Query.String) != "prometheus" {
			add("datasource: query %+v, want the plugin id prometheus", ds.Query)
		}
	}
	if tv, ok := byName["tenant"]; ok {
		if tv.Type != dashboard.VariableTypeQuery {
			add("tenant: type %s, want query", tv.Type)
		}
		if !deref(tv.Multi) || !deref(tv.IncludeAll) {
			add("tenant: multi %v, includeAll %v; want both", deref(tv.Multi), deref(tv.IncludeAll))
		}
		if tv.Datasource == nil || deref(tv.Datasource.Type) != "prometheus" || deref(tv.Datasource.Uid) != datasourceUID {
			add("tenant: datasource %+v, want prometheus/%s", tv.Datasource, datasourceUID)
		}
		const want = "label_values(wadispatch_jobs_total, tenant)"
		var queries []string
		if tv.Query != nil {
			if tv.Query.String != nil {
				queries = append(queries, *tv.Query.String)
			}
			if q, ok := tv.Query.Map["query"].(string); ok {
				queries = append(queries, q)
			}
		}
		if len(queries) == 0 {
			add("tenant: no query")
		}
		for _, q := range append(queries, deref(tv.Definition)) {
			if q != want {
				add("tenant: query or definition %q, want %q", q, want)
			}
		}
		if _, labels, ok := lookupSeries("wadispatch_jobs_total"); !ok || !hasKey(labels, "tenant") {
			add("wadispatch_jobs_total has no tenant label in the list")
		}
	}
	return problems
}

func TestDashboardVariables(t *testing.T) {
	for _, p := range variableProblems(mustDecodeDashboard(t)) {
		t.Error(p)
	}
}

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}
