// This file is not part of any package in the tree: registry_test.go lays
// it over the wadispatch metrics package with `go test -overlay`, as
// metrics/zz_observability_dump_test.go, so that it runs against the real
// registry the worker serves, with no copy of its metric definitions and no
// dependency of the check module on the worker module. It uses only the
// package's exported API.

package metrics_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/metrics"
)

// obsDumpTenants stands for the worker's actors.Directory: one configured
// tenant with every state gauge.
type obsDumpTenants struct{}

func (obsDumpTenants) List(context.Context) ([]messages.TenantInfo, error) {
	return []messages.TenantInfo{{ID: "acme", Active: true, CircuitState: "CLOSED", TokensAvailable: 1, TokensMax: 2, Window: 1}}, nil
}

// obsDumpFamily is one metric family as written for the check module.
type obsDumpFamily struct {
	Name   string              `json:"name"`
	Type   string              `json:"type"`
	Labels map[string][]string `json:"labels"` // label name -> values seen
}

// TestObservabilityDump scrapes a fully populated registry over HTTP and
// writes its wadispatch_* families to $OBSERVABILITY_METRICS_DUMP.
func TestObservabilityDump(t *testing.T) {
	out := os.Getenv("OBSERVABILITY_METRICS_DUMP")
	if out == "" {
		t.Skip("OBSERVABILITY_METRICS_DUMP is not set")
	}
	m := metrics.New([]string{"acme"})
	m.SetTenants(obsDumpTenants{})
	m.SetBuildInfo("v0.0.0-check")
	m.ConfigLoaded(true, time.Now(), "0123abcd")
	m.JobOutcome("acme", "sent")
	m.SendLatency("acme", 10*time.Millisecond)
	m.ShardChanged(true, "", 1)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var dump []obsDumpFamily
	for name, f := range families {
		if !strings.HasPrefix(name, "wadispatch_") {
			continue
		}
		d := obsDumpFamily{Name: name, Type: strings.ToLower(f.GetType().String()), Labels: map[string][]string{}}
		seen := map[string]map[string]bool{}
		for _, metric := range f.GetMetric() {
			for _, lp := range metric.GetLabel() {
				if seen[lp.GetName()] == nil {
					seen[lp.GetName()] = map[string]bool{}
				}
				seen[lp.GetName()][lp.GetValue()] = true
			}
		}
		for l, vs := range seen {
			for v := range vs {
				d.Labels[l] = append(d.Labels[l], v)
			}
			sort.Strings(d.Labels[l])
		}
		dump = append(dump, d)
	}
	sort.Slice(dump, func(i, j int) bool { return dump[i].Name < dump[j].Name })
	b, err := json.MarshalIndent(dump, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
