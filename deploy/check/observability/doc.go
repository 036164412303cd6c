// Package observability holds the checks of wadispatch's monitoring files
// (its tests; the package has no API):
//
//   - deploy/grafana/wadispatch.json decodes strictly into the Grafana
//     dashboard model, every panel has a datasource and PromQL targets that
//     parse, and every metric and label they use is one the worker exports;
//   - deploy/prometheus/alerts.yaml parses, uses only the worker's metrics,
//     and every alert has a firing and a quiet case in alerts_test.yaml,
//     which promtool runs;
//   - on a Prometheus server holding a synthetic healthy fleet, every
//     dashboard query returns data and no alert expression returns any;
//   - the list of the worker's metrics these checks use matches both the
//     Metrics table of docs/contract.md and the registry the worker serves.
//
// Run them with deploy/check-observability.sh, which also fetches promtool
// and the Prometheus server (without them, `go test` skips the tests that
// need them).
// The module is separate from the worker's so that the Grafana and
// Prometheus libraries stay out of the worker's build.
package observability
