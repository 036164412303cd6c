package k8s

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart under test, relative to this package.
const chartDir = "../../helm/wadispatch"

// The release every render uses, as `helm template prod chart -n messaging`.
const (
	releaseName      = "prod"
	releaseNamespace = "messaging"
)

// newObject gives the API type each rendered kind is decoded into. A kind
// missing here fails the check: a new template needs its type added.
var newObject = map[string]func() any{
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                               func() any { return &corev1.Secret{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return &monitoringv1.PrometheusRule{} },
}

// object is one rendered document, decoded into its API type.
type object struct {
	template string // e.g. wadispatch/templates/deployment.yaml
	gvk      string // apiVersion/kind
	name     string
	obj      any
}

type rendered struct {
	objects []object
	notes   string
}

// lintStrict is `helm lint --strict` with the given values (as action.Lint
// does it: every message of severity warning or above is an error).
func lintStrict(vals map[string]any) (errs []string, infos []string) {
	linter := lint.AllWithKubeVersionAndSchemaValidation(chartDir, vals, releaseNamespace, nil, false)
	for _, m := range linter.Messages {
		if m.Severity >= support.WarningSev {
			errs = append(errs, m.Error())
		} else {
			infos = append(infos, m.Error())
		}
	}
	return errs, infos
}

// renderChart is `helm template prod deploy/helm/wadispatch -n messaging`
// with vals (as -f): values coalesced with the chart's, checked against
// values.schema.json, templates rendered, manifests split in Helm's install
// order. An error is what helm template would fail with.
func renderChart(vals map[string]any) (map[string]string, string, error) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return nil, "", fmt.Errorf("load chart: %w", err)
	}
	if err := chrt.Validate(); err != nil {
		return nil, "", fmt.Errorf("chart: %w", err)
	}
	if typ := chrt.Metadata.Type; typ != "" && typ != "application" {
		return nil, "", fmt.Errorf("%s charts are not installable", typ)
	}
	caps := chartutil.DefaultCapabilities
	if kv := chrt.Metadata.KubeVersion; kv != "" && !chartutil.IsCompatibleRange(kv, caps.KubeVersion.String()) {
		return nil, "", fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", kv, caps.KubeVersion.String())
	}
	opts := chartutil.ReleaseOptions{Name: releaseName, Namespace: releaseNamespace, Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValues(chrt, vals, opts, caps)
	if err != nil {
		return nil, "", err
	}
	out, err := engine.Render(chrt, top)
	if err != nil {
		return nil, "", err
	}
	notes := ""
	files := map[string]string{}
	for name, content := range out {
		switch {
		case strings.HasSuffix(name, "NOTES.txt"):
			notes = content
		case strings.HasPrefix(filepath.Base(name), "_"):
		default:
			files[name] = content
		}
	}
	return files, notes, nil
}

// render renders vals and decodes every document strictly into its API
// type; any failure fails the test.
func render(t *testing.T, vals map[string]any) rendered {
	t.Helper()
	files, notes, err := renderChart(vals)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	r := rendered{notes: notes}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, tmpl := range names {
		docs := releaseutil.SplitManifests(files[tmpl])
		keys := make([]string, 0, len(docs))
		for k := range docs {
			keys = append(keys, k)
		}
		sort.Sort(releaseutil.BySplitManifestsOrder(keys))
		for _, k := range keys {
			doc := docs[k]
			if strings.TrimSpace(doc) == "" {
				continue
			}
			o, err := decodeStrict(tmpl, []byte(doc))
			if err != nil {
				t.Fatalf("%s: %v\n---\n%s", tmpl, err, doc)
			}
			r.objects = append(r.objects, o)
		}
	}
	if len(r.objects) == 0 {
		t.Fatal("helm template rendered no object")
	}
	for _, o := range r.objects {
		checkMeta(t, o)
	}
	return r
}

// decodeStrict decodes one YAML document into the API type of its kind, as
// the API server's strict field validation does: an unknown (or misspelt,
// or wrongly cased) field or a duplicate key is an error.
func decodeStrict(tmpl string, doc []byte) (object, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return object{}, fmt.Errorf("not YAML: %w", err)
	}
	var tm metav1.TypeMeta
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
		return object{}, fmt.Errorf("no apiVersion/kind: %w", err)
	}
	gvk := tm.APIVersion + "/" + tm.Kind
	mk, ok := newObject[gvk]
	if !ok {
		return object{}, fmt.Errorf("%s is not a kind this check knows: add its API type to newObject", gvk)
	}
	obj := mk()
	strictErrs, err := sigsjson.UnmarshalStrict(js, obj)
	if err != nil {
		return object{}, fmt.Errorf("%s: %w", gvk, err)
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		return object{}, fmt.Errorf("%s: strict decoding: %s", gvk, strings.Join(msgs, "; "))
	}
	// The decoded object, encoded again, must be the same document: no
	// value was dropped on the way (e.g. a field the type ignores).
	back, err := yaml.Marshal(obj)
	if err != nil {
		return object{}, err
	}
	var a, b any
	_ = yaml.Unmarshal(js, &a)
	_ = yaml.Unmarshal(back, &b)
	if missing := lostPaths("", a, b); len(missing) > 0 {
		return object{}, fmt.Errorf("%s: fields lost decoding into the API type: %s", gvk, strings.Join(missing, ", "))
	}
	meta := obj.(metav1.Object)
	return object{template: tmpl, gvk: gvk, name: meta.GetName(), obj: obj}, nil
}

// lostPaths lists the paths of a (the rendered document) whose value is not
// in b (the document re-encoded from the API type). Empty values that the
// type omits are not counted.
func lostPaths(path string, a, b any) []string {
	switch av := a.(type) {
	case map[string]any:
		bv, _ := b.(map[string]any)
		var out []string
		for k, v := range av {
			if isEmpty(v) {
				continue
			}
			out = append(out, lostPaths(path+"."+k, v, bv[k])...)
		}
		return out
	case []any:
		bv, _ := b.([]any)
		var out []string
		for i, v := range av {
			var w any
			if i < len(bv) {
				w = bv[i]
			}
			out = append(out, lostPaths(fmt.Sprintf("%s[%d]", path, i), v, w)...)
		}
		return out
	default:
		if fmt.Sprint(a) != fmt.Sprint(b) {
			return []string{fmt.Sprintf("%s (%v became %v)", path, a, b)}
		}
		return nil
	}
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	case string:
		return x == ""
	}
	return false
}

// checkMeta asserts what the API server would refuse in any object's
// metadata (name, labels, annotations) and that it is in the release's
// namespace.
func checkMeta(t *testing.T, o object) {
	t.Helper()
	meta := o.obj.(metav1.Object)
	om := metav1.ObjectMeta{
		Name: meta.GetName(), Namespace: meta.GetNamespace(),
		Labels: meta.GetLabels(), Annotations: meta.GetAnnotations(),
	}
	nameFn := apivalidation.NameIsDNSSubdomain
	if o.gvk == "v1/Service" {
		nameFn = apivalidation.NameIsDNS1035Label
	}
	if errs := apivalidation.ValidateObjectMeta(&om, true, nameFn, field.NewPath("metadata")); len(errs) > 0 {
		t.Errorf("%s %s: %v", o.gvk, o.name, errs.ToAggregate())
	}
	if om.Namespace != releaseNamespace {
		t.Errorf("%s %s: namespace %q, want the release's %q", o.gvk, o.name, om.Namespace, releaseNamespace)
	}
	if om.Labels["app.kubernetes.io/instance"] != releaseName {
		t.Errorf("%s %s: no app.kubernetes.io/instance label", o.gvk, o.name)
	}
}

// all returns every rendered object of type T.
func all[T any](r rendered) []*T {
	var out []*T
	for _, o := range r.objects {
		if v, ok := o.obj.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

// one returns the only rendered object of type T, failing otherwise.
func one[T any](t *testing.T, r rendered) *T {
	t.Helper()
	objs := all[T](r)
	if len(objs) != 1 {
		var zero T
		t.Fatalf("rendered %d objects of type %T, want 1", len(objs), zero)
	}
	return objs[0]
}

// values builds a values map from YAML, as a -f file would give it.
func values(t *testing.T, src string) map[string]any {
	t.Helper()
	vals, err := chartutil.ReadValues([]byte(src))
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	return vals.AsMap()
}

// readFileIfExists returns a file's content, or nil if there is none.
func readFileIfExists(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

// metaSelector is a label selector as the API server reads it; an empty one
// (which selects everything) is an error.
func metaSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0) {
		return nil, fmt.Errorf("empty selector %v", s)
	}
	return metav1.LabelSelectorAsSelector(s)
}

// unmarshalStrict decodes JSON as the API server's strict field
// validation does (case-sensitive; unknown and duplicate fields reported).
func unmarshalStrict(js []byte, v any) ([]error, error) {
	return sigsjson.UnmarshalStrict(js, v)
}
