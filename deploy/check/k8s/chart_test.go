package k8s

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// valueSets are the values the chart is linted and rendered with, each as
// a -f file; want says what the rendered objects must then show.
var valueSets = []struct {
	name string
	vals string
	want want
}{
	{
		name: "defaults",
		want: want{replicas: 2, shards: 32, shutdown: "25s", grace: 30, pdb: true, adminExposed: true},
	},
	{
		name: "ha-monitoring",
		vals: `
replicaCount: 3
config: { shards: 64, prefetch: 50 }
serviceMonitor: { enabled: true, labels: { release: kube-prometheus-stack } }
prometheusRule: { enabled: true, labels: { release: kube-prometheus-stack } }
image: { repository: registry.example.com/wadispatch, tag: "1.4.2" }
`,
		want: want{replicas: 3, shards: 64, prefetch: "50", shutdown: "25s", grace: 30, pdb: true,
			adminExposed: true, serviceMonitor: true, prometheusRule: true, image: "registry.example.com/wadispatch:1.4.2"},
	},
	{
		name: "shutdown-60s",
		vals: `
config: { shutdownTimeout: 60s }
`,
		want: want{replicas: 2, shards: 32, shutdown: "60s", grace: 65, pdb: true, adminExposed: true},
	},
	{
		name: "single-grace-set-exec-probes",
		vals: `
replicaCount: 1
config: { shutdownTimeout: 1m30s }
terminationGracePeriodSeconds: 120
probes: { mode: exec, execCommand: [/usr/local/bin/wadispatch] }
admin: { expose: false }
`,
		want: want{replicas: 1, shards: 32, shutdown: "1m30s", grace: 120, execProbes: true},
	},
	{
		name: "existing-configmap-and-secrets",
		vals: `
tenants: { existingConfigMap: shared-tenants, key: tenants.json }
amqp: { existingSecret: rabbit, secretKey: uri }
admin: { existingSecret: ops-admin }
tokens: { existingSecret: meta-tokens }
`,
		want: want{replicas: 2, shards: 32, shutdown: "25s", grace: 30, pdb: true, adminExposed: true,
			tenantsConfigMap: "shared-tenants", amqpSecret: "rabbit", adminSecret: "ops-admin", tokensSecret: "meta-tokens"},
	},
	{
		name: "tenants-as-string-extra-env",
		vals: `
tenants:
  file: |
    tenants:
      - id: globex
        phone_number_id: "209876543210123"
        access_token_file: /etc/wadispatch/tokens/globex
        rate_limit: { per_minute: 600 }
extraEnv:
  - { name: PREFETCH, value: "7" }
  - { name: PREFETCH_REDUCED, value: "3" }
`,
		want: want{replicas: 2, shards: 32, prefetch: "7", shutdown: "25s", grace: 30, pdb: true, adminExposed: true},
	},
}

type want struct {
	replicas                              int32
	shards                                int
	prefetch                              string // default "10"
	shutdown                              string
	grace                                 int64
	pdb, adminExposed, execProbes         bool
	serviceMonitor, prometheusRule        bool
	image                                 string // default wadispatch:<appVersion>
	tenantsConfigMap                      string // an existing one, else the chart's
	amqpSecret, adminSecret, tokensSecret string // default prod-wadispatch-{amqp,admin,tokens}
}

// TestLintStrict is `helm lint --strict` with every value set: a warning
// fails as an error does.
func TestLintStrict(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			errs, infos := lintStrict(values(t, vs.vals))
			for _, m := range infos {
				t.Log(m)
			}
			for _, e := range errs {
				t.Error(e)
			}
		})
	}
}

// TestRender renders every value set, decodes each object strictly into
// its API type and asserts what the worker relies on.
func TestRender(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			r := render(t, values(t, vs.vals))
			t.Logf("NOTES.txt:\n%s", r.notes)
			checkWorker(t, r, vs.want)
		})
	}
}

func checkWorker(t *testing.T, r rendered, w want) {
	t.Helper()
	if w.prefetch == "" {
		w.prefetch = "10"
	}
	if w.image == "" {
		w.image = "wadispatch:" + appVersion(t)
	}
	full := releaseName + "-wadispatch"
	if w.amqpSecret == "" {
		w.amqpSecret = full + "-amqp"
	}
	if w.adminSecret == "" {
		w.adminSecret = full + "-admin"
	}
	if w.tokensSecret == "" {
		w.tokensSecret = full + "-tokens"
	}

	// NOTES.txt names the Secrets to create.
	for _, s := range []string{w.amqpSecret, w.tokensSecret} {
		if !strings.Contains(r.notes, s) {
			t.Errorf("NOTES.txt does not name Secret %s:\n%s", s, r.notes)
		}
	}

	d := one[appsv1.Deployment](t, r)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != w.replicas {
		t.Errorf("replicas = %s, want %d", deref(d.Spec.Replicas), w.replicas)
	}
	if d.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType {
		ru := d.Spec.Strategy.RollingUpdate
		if ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 || ru.MaxSurge == nil || ru.MaxSurge.IntValue() < 1 {
			t.Errorf("rolling update %+v: want surge >= 1 and no unavailable worker", ru)
		}
	}
	sel, err := metaSelector(d.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	pod := d.Spec.Template
	if !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("the Deployment's selector %v does not select its pods %v", sel, pod.Labels)
	}
	ps := pod.Spec
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token; the worker never talks to the API")
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(ps.Containers))
	}
	c := ps.Containers[0]
	if c.Image != w.image {
		t.Errorf("image %q, want %q", c.Image, w.image)
	}
	if !reflect.DeepEqual(c.Args, []string{"run"}) || len(c.Command) != 0 {
		t.Errorf("command %q args %q, want the image's entrypoint with args [run]", c.Command, c.Args)
	}

	// Security: non-root 65532, read-only root, no privilege escalation,
	// every capability dropped, seccomp RuntimeDefault.
	psc, sc := ps.SecurityContext, c.SecurityContext
	if sc == nil {
		t.Fatal("the container has no securityContext")
	}
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if b := firstBool(sc.RunAsNonRoot, psc.RunAsNonRoot); b == nil || !*b {
		t.Error("runAsNonRoot is not true")
	}
	if u := firstInt(sc.RunAsUser, psc.RunAsUser); u == nil || *u != 65532 {
		t.Errorf("runAsUser = %s, want 65532", deref(u))
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("the container is privileged")
	}
	if sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("capabilities %+v, want drop [ALL] and none added", sc.Capabilities)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile %+v, want RuntimeDefault", seccomp)
	}

	// Environment: every name valid and set once; secrets from Secrets.
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("env %s is set twice", e.Name)
		}
		if errs := validation.IsEnvVarName(e.Name); len(errs) > 0 {
			t.Errorf("env %q: %v", e.Name, errs)
		}
		env[e.Name] = e
	}
	value := func(name string) string {
		e, ok := env[name]
		if !ok {
			t.Errorf("env %s is not set", name)
		}
		if e.ValueFrom != nil {
			t.Errorf("env %s comes from %+v, want a value", name, e.ValueFrom)
		}
		return e.Value
	}
	fromSecret := func(name, secret string) {
		e, ok := env[name]
		switch {
		case !ok:
			t.Errorf("env %s is not set", name)
		case e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil:
			t.Errorf("env %s = %+v, want it from a Secret", name, e)
		case e.ValueFrom.SecretKeyRef.Name != secret || e.ValueFrom.SecretKeyRef.Key == "":
			t.Errorf("env %s from Secret %q key %q, want Secret %q", name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key, secret)
		}
	}
	fromSecret("AMQP_URL", w.amqpSecret)
	for name, v := range map[string]string{
		"SHARDS": strconv.Itoa(w.shards), "PREFETCH": w.prefetch, "SHUTDOWN_TIMEOUT": w.shutdown,
		"AMQP_QUEUE": "whatsapp.outbound", "RESULTS_EXCHANGE": "whatsapp.results", "META_API_VERSION": "v23.0",
	} {
		if got := value(name); got != v {
			t.Errorf("env %s = %q, want %q", name, got, v)
		}
	}
	if tw := value("TENANTS_WATCH"); tw == "off" || tw == "" {
		t.Errorf("TENANTS_WATCH = %q: a ConfigMap update would never reach a running worker", tw)
	}
	adminHost, adminPort := splitHostPort(t, "ADMIN_ADDR", value("ADMIN_ADDR"))
	if w.adminExposed {
		if adminHost != "0.0.0.0" {
			t.Errorf("ADMIN_ADDR host %q, want 0.0.0.0", adminHost)
		}
		fromSecret("ADMIN_TOKEN", w.adminSecret)
	} else {
		if !net.ParseIP(adminHost).IsLoopback() {
			t.Errorf("ADMIN_ADDR host %q, want loopback", adminHost)
		}
		if _, ok := env["ADMIN_TOKEN"]; ok {
			t.Error("ADMIN_TOKEN set for a loopback admin API")
		}
	}
	if _, ok := env["ADMIN_TOKEN"]; ok && !w.adminExposed {
		t.Error("ADMIN_TOKEN without an exposed admin API")
	}
	metricsHost, metricsPort := splitHostPort(t, "METRICS_ADDR", value("METRICS_ADDR"))
	if metricsHost != "0.0.0.0" {
		t.Errorf("METRICS_ADDR host %q, want 0.0.0.0 (probes and Prometheus reach it)", metricsHost)
	}

	// Grace period: at least SHUTDOWN_TIMEOUT + 5 s.
	shutdown, err := time.ParseDuration(w.shutdown)
	if err != nil {
		t.Fatal(err)
	}
	minGrace := int64((shutdown+time.Second-1)/time.Second) + 5
	if g := ps.TerminationGracePeriodSeconds; g == nil || *g != w.grace || *g < minGrace {
		t.Errorf("terminationGracePeriodSeconds = %s, want %d (>= SHUTDOWN_TIMEOUT %s + 5 s = %d)", deref(g), w.grace, w.shutdown, minGrace)
	}

	// Ports: named, valid, the metrics one where METRICS_ADDR listens.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
			t.Errorf("port name %q: %v", p.Name, errs)
		}
		ports[p.Name] = p.ContainerPort
	}
	if ports["metrics"] != int32(metricsPort) {
		t.Errorf("container port metrics = %d, want METRICS_ADDR's %d", ports["metrics"], metricsPort)
	}
	if w.adminExposed && ports["admin"] != int32(adminPort) {
		t.Errorf("container port admin = %d, want ADMIN_ADDR's %d", ports["admin"], adminPort)
	}
	if !w.adminExposed {
		if _, ok := ports["admin"]; ok {
			t.Error("an admin port is declared for a loopback admin API")
		}
	}

	// Probes: readiness on /readyz, liveness on /healthz.
	checkProbe(t, "readiness", c.ReadinessProbe, "/readyz", []string{"probe", "--ready"}, w.execProbes, ports, metricsPort)
	checkProbe(t, "liveness", c.LivenessProbe, "/healthz", []string{"probe"}, w.execProbes, ports, metricsPort)

	// Volumes: the tenants ConfigMap and the tokens Secret mounted as
	// directories, never with subPath (whose files the kubelet never
	// updates), read-only.
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		if m.SubPath != "" || m.SubPathExpr != "" {
			t.Errorf("volume %s is mounted with subPath %q: its files would never be updated", m.Name, m.SubPath+m.SubPathExpr)
		}
		if _, ok := vols[m.Name]; !ok {
			t.Errorf("mount of unknown volume %s", m.Name)
		}
	}
	tenantsFile := value("TENANTS_FILE")
	tm, tv := mountOf(t, c, vols, path.Dir(tenantsFile))
	cmName := w.tenantsConfigMap
	if cmName == "" {
		cm := one[corev1.ConfigMap](t, r)
		cmName = cm.Name
		content, ok := cm.Data[path.Base(tenantsFile)]
		if !ok {
			t.Fatalf("ConfigMap %s has no key %s (TENANTS_FILE %s)", cm.Name, path.Base(tenantsFile), tenantsFile)
		}
		checkTenantsFile(t, content, c, vols)
	} else if n := len(all[corev1.ConfigMap](r)); n != 0 {
		t.Errorf("%d ConfigMaps rendered with tenants.existingConfigMap set", n)
	}
	if tv.ConfigMap == nil || tv.ConfigMap.Name != cmName {
		t.Errorf("the volume at %s is %+v, want ConfigMap %s", tm.MountPath, tv.VolumeSource, cmName)
	} else if len(tv.ConfigMap.Items) > 0 {
		t.Errorf("the tenants ConfigMap volume lists items %v; mount it whole", tv.ConfigMap.Items)
	}
	if !tm.ReadOnly {
		t.Error("the tenants mount is not read-only")
	}
	var tokensMount *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if v := vols[m.Name]; v.Secret != nil && v.Secret.SecretName == w.tokensSecret {
			tokensMount = &c.VolumeMounts[i]
			if len(v.Secret.Items) > 0 {
				t.Errorf("the tokens Secret volume lists items %v: a token added for a new tenant would not appear", v.Secret.Items)
			}
			// 65532 must read the files: group-readable, of the pod's fsGroup.
			if mode := v.Secret.DefaultMode; mode == nil || *mode&0o040 == 0 || *mode&0o007 != 0 || psc.FSGroup == nil {
				t.Errorf("tokens mode %s with fsGroup %s: want group-readable (not world-readable) files of the pod's fsGroup", deref(mode), deref(psc.FSGroup))
			}
		}
	}
	if tokensMount == nil {
		t.Errorf("Secret %s (the tenants' tokens) is not mounted", w.tokensSecret)
	} else if !tokensMount.ReadOnly {
		t.Error("the tokens mount is not read-only")
	}

	// The Service in front of the metrics (and admin) ports.
	svc := one[corev1.Service](t, r)
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) || len(svc.Spec.Selector) == 0 {
		t.Errorf("the Service's selector %v does not select the pods %v", svc.Spec.Selector, pod.Labels)
	}
	svcPorts := map[string]corev1.ServicePort{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = p
		if p.TargetPort.Type == intstr.String {
			if _, ok := ports[p.TargetPort.StrVal]; !ok {
				t.Errorf("Service port %s targets %q, which the container does not declare", p.Name, p.TargetPort.StrVal)
			}
		}
	}
	if _, ok := svcPorts["metrics"]; !ok {
		t.Error("the Service has no metrics port")
	}
	if _, ok := svcPorts["admin"]; ok != w.adminExposed {
		t.Errorf("Service admin port present = %v, want %v", ok, w.adminExposed)
	}

	// PodDisruptionBudget: minAvailable 1 when there are several workers.
	pdbs := all[policyv1.PodDisruptionBudget](r)
	if w.pdb != (len(pdbs) == 1) || len(pdbs) > 1 {
		t.Errorf("%d PodDisruptionBudgets, want one: %v", len(pdbs), w.pdb)
	}
	for _, pdb := range pdbs {
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
			t.Errorf("PDB minAvailable %v, want 1", pdb.Spec.MinAvailable)
		}
		if s, err := metaSelector(pdb.Spec.Selector); err != nil || !s.Matches(labels.Set(pod.Labels)) {
			t.Errorf("the PDB's selector %v does not select the pods %v (%v)", pdb.Spec.Selector, pod.Labels, err)
		}
	}

	// ServiceMonitor: scrapes the Service's metrics port on /metrics.
	sms := all[monitoringv1.ServiceMonitor](r)
	if w.serviceMonitor != (len(sms) == 1) || len(sms) > 1 {
		t.Errorf("%d ServiceMonitors, want one: %v", len(sms), w.serviceMonitor)
	}
	for _, sm := range sms {
		if s, err := metaSelector(&sm.Spec.Selector); err != nil || !s.Matches(labels.Set(svc.Labels)) {
			t.Errorf("the ServiceMonitor's selector %v does not select the Service %v (%v)", sm.Spec.Selector, svc.Labels, err)
		}
		if ns := sm.Spec.NamespaceSelector; !ns.Any && len(ns.MatchNames) > 0 && !contains(ns.MatchNames, releaseNamespace) {
			t.Errorf("the ServiceMonitor looks in namespaces %v, not %s", ns.MatchNames, releaseNamespace)
		}
		if len(sm.Spec.Endpoints) != 1 {
			t.Fatalf("%d ServiceMonitor endpoints, want 1", len(sm.Spec.Endpoints))
		}
		ep := sm.Spec.Endpoints[0]
		if ep.Port != "metrics" || ep.Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoint port %v path %q, want metrics /metrics", ep.Port, ep.Path)
		}
		if _, ok := svcPorts["metrics"]; !ok {
			t.Error("the ServiceMonitor's port is not a port of the Service")
		}
	}

	// PrometheusRule: the alerts of files/alerts.yaml, with this shard count.
	prs := all[monitoringv1.PrometheusRule](r)
	if w.prometheusRule != (len(prs) == 1) || len(prs) > 1 {
		t.Errorf("%d PrometheusRules, want one: %v", len(prs), w.prometheusRule)
	}
	for _, pr := range prs {
		checkAlerts(t, pr.Spec.Groups, w.shards)
	}
}

func checkProbe(t *testing.T, kind string, p *corev1.Probe, path string, args []string, exec bool, ports map[string]int32, metricsPort int) {
	t.Helper()
	if p == nil {
		t.Errorf("no %s probe", kind)
		return
	}
	if exec {
		if p.Exec == nil || len(p.Exec.Command) < 2 || !reflect.DeepEqual(p.Exec.Command[1:], args) {
			t.Errorf("%s probe %+v, want exec <wadispatch> %s", kind, p.ProbeHandler, strings.Join(args, " "))
		}
		return
	}
	g := p.HTTPGet
	if g == nil || g.Path != path {
		t.Errorf("%s probe %+v, want httpGet %s", kind, p.ProbeHandler, path)
		return
	}
	port := g.Port.IntValue()
	if g.Port.Type == intstr.String {
		port = int(ports[g.Port.StrVal])
	}
	if port != metricsPort {
		t.Errorf("%s probe on port %s (%d), want the metrics listener's %d, which needs no token", kind, g.Port.String(), port, metricsPort)
	}
	if p.PeriodSeconds < 1 || p.TimeoutSeconds < 1 || p.FailureThreshold < 1 {
		t.Errorf("%s probe timing %+v", kind, p)
	}
}

// checkTenantsFile asserts that every tenant of the rendered tenants file
// reads its token from a file of the mounted tokens Secret.
func checkTenantsFile(t *testing.T, content string, c corev1.Container, vols map[string]corev1.Volume) {
	t.Helper()
	var f struct {
		Tenants []struct {
			ID              string `json:"id"`
			AccessTokenEnv  string `json:"access_token_env"`
			AccessTokenFile string `json:"access_token_file"`
		} `json:"tenants"`
	}
	if err := yaml.Unmarshal([]byte(content), &f); err != nil {
		t.Fatalf("the tenants file is not YAML: %v\n%s", err, content)
	}
	if len(f.Tenants) == 0 {
		t.Error("the tenants file has no tenant")
	}
	for _, tn := range f.Tenants {
		if tn.AccessTokenFile == "" {
			t.Errorf("tenant %s has no access_token_file", tn.ID)
			continue
		}
		_, v := mountOf(t, c, vols, path.Dir(tn.AccessTokenFile))
		if v.Secret == nil {
			t.Errorf("tenant %s's access_token_file %s is not in a mounted Secret", tn.ID, tn.AccessTokenFile)
		}
	}
}

// requiredAlerts are the conditions the PrometheusRule must alert on, each
// as fragments of the expression (the alert's name is free, so that the
// canonical deploy/prometheus/alerts.yaml may name them as it likes).
var requiredAlerts = map[string][]string{
	"worker not ready":       {"wadispatch_broker_ready", "== 0"},
	"breaker open":           {"wadispatch_breaker_state", `state="open"`},
	"dead letters":           {"wadispatch_jobs_total", `outcome="dead_lettered"`},
	"tenant crash loop":      {"wadispatch_tenant_restarts_total"},
	"send latency p99":       {"histogram_quantile(0.99", "wadispatch_send_duration_seconds_bucket"},
	"queue depth":            {"wadispatch_queue_depth"},
	"prefetch saturated":     {"wadispatch_prefetch_saturated_seconds_total"},
	"tenants reload failing": {"wadispatch_config_last_reload_successful", "== 0"},
	"shard unowned":          {"wadispatch_shards_owned", "<"},
}

// promDuration is the pattern of monitoring/v1's Duration.
var promDuration = regexp.MustCompile(`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`)

func checkAlerts(t *testing.T, groups []monitoringv1.RuleGroup, shards int) {
	t.Helper()
	found := map[string]string{}
	names := map[string]bool{}
	for _, g := range groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("rule group %q is empty or unnamed", g.Name)
		}
		for _, rule := range g.Rules {
			expr := strings.Join(strings.Fields(rule.Expr.String()), " ")
			if (rule.Alert == "") == (rule.Record == "") || expr == "" {
				t.Errorf("rule %q/%q: want exactly one of alert and record, and an expr", rule.Alert, rule.Record)
			}
			if rule.Alert != "" {
				if names[g.Name+"/"+rule.Alert] {
					t.Errorf("alert %s is defined twice in group %s", rule.Alert, g.Name)
				}
				names[g.Name+"/"+rule.Alert] = true
			}
			if rule.For != nil && !promDuration.MatchString(string(*rule.For)) {
				t.Errorf("alert %s: for %q is not a Prometheus duration", rule.Alert, *rule.For)
			}
			if strings.Count(expr, "(") != strings.Count(expr, ")") {
				t.Errorf("alert %s: unbalanced parentheses in %q", rule.Alert, expr)
			}
			for cond, frags := range requiredAlerts {
				if rule.Alert != "" && containsAll(expr, frags) {
					found[cond] = rule.Alert
				}
			}
			if strings.Contains(expr, "wadispatch_shards_owned") && strings.Contains(expr, "<") && shards > 0 {
				if !regexp.MustCompile(`<\s*` + strconv.Itoa(shards) + `\b`).MatchString(expr) {
					t.Errorf("alert %s: %q does not compare with the release's %d shards", rule.Alert, expr, shards)
				}
			}
		}
	}
	for cond := range requiredAlerts {
		if found[cond] == "" {
			t.Errorf("no alert on %s (an expr with %q)", cond, requiredAlerts[cond])
		}
	}
}

// TestAlertsFile checks files/alerts.yaml as a Prometheus rules file
// (decoded strictly into monitoring/v1 rule groups, with every required
// alert) and, when the canonical deploy/prometheus/alerts.yaml exists, that
// the chart's copy has the same content.
func TestAlertsFile(t *testing.T) {
	chartCopy := filepath.Join(chartDir, "files", "alerts.yaml")
	canonical := filepath.Join(chartDir, "..", "..", "prometheus", "alerts.yaml")
	for _, f := range []string{chartCopy, canonical} {
		b := readFileIfExists(t, f)
		if b == nil {
			if f == chartCopy {
				t.Fatalf("%s is missing", f)
			}
			t.Logf("%s does not exist (yet): nothing to compare the chart's copy with", f)
			continue
		}
		js, err := yaml.YAMLToJSONStrict(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var rules struct {
			Groups []monitoringv1.RuleGroup `json:"groups"`
		}
		if strict, err := unmarshalStrict(js, &rules); err != nil || len(strict) > 0 {
			t.Fatalf("%s is not a Prometheus rules file of monitoring/v1 rule groups: %v %v", f, err, strict)
		}
		checkAlerts(t, rules.Groups, 32)
	}
	if c := readFileIfExists(t, canonical); c != nil {
		var a, b any
		if err := yaml.Unmarshal(readFileIfExists(t, chartCopy), &a); err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(c, &b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s differs from the canonical %s; copy it: cp deploy/prometheus/alerts.yaml deploy/helm/wadispatch/files/alerts.yaml", chartCopy, canonical)
		}
	}
}

// TestGracePeriodTooLowRefused: a terminationGracePeriodSeconds below
// SHUTDOWN_TIMEOUT + 5 s fails rendering (helm template, install, upgrade),
// since the kubelet would kill the worker with jobs in hand. (helm lint
// renders in lint mode, where a template's `fail` is only logged, so lint
// alone does not catch it.)
func TestGracePeriodTooLowRefused(t *testing.T) {
	for _, tc := range []struct{ vals, wantErr string }{
		{"terminationGracePeriodSeconds: 29", "terminationGracePeriodSeconds 29 is too low: it must be at least SHUTDOWN_TIMEOUT (config.shutdownTimeout 25s) + 5 s = 30"},
		{"config: { shutdownTimeout: 60s }\nterminationGracePeriodSeconds: 30", "= 65"},
		{"config: { shutdownTimeout: 1500ms }\nterminationGracePeriodSeconds: 6", "= 7"},
		{"config: { shutdownTimeout: 1h }\nterminationGracePeriodSeconds: 3600", "= 3605"},
	} {
		t.Run(tc.vals, func(t *testing.T) {
			_, _, err := renderChart(values(t, tc.vals))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("helm template: %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
	// Exactly the minimum is accepted.
	r := render(t, values(t, "config: { shutdownTimeout: 1m }\nterminationGracePeriodSeconds: 65"))
	if g := one[appsv1.Deployment](t, r).Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g != 65 {
		t.Errorf("terminationGracePeriodSeconds = %s, want 65", deref(g))
	}
}

// TestBadValuesRefused: values.schema.json (or the templates) refuse
// values that would give a broken or misconfigured worker.
func TestBadValuesRefused(t *testing.T) {
	for _, tc := range []struct {
		vals, wantErr string
		lintPasses    bool // a `fail` of a template, which helm lint only logs
	}{
		{vals: "replicas: 3", wantErr: "additional properties 'replicas' not allowed"},
		{vals: "replicaCount: two", wantErr: "replicaCount"},
		{vals: "config: { shards: 0 }", wantErr: "shards"},
		{vals: "config: { shards: 2048 }", wantErr: "shards"},
		{vals: "config: { prefetch: 70000 }", wantErr: "prefetch"},
		{vals: "config: { shutdownTimeout: 25 }", wantErr: "shutdownTimeout"},
		{vals: "config: { shutdownTimeout: 2.5s }", wantErr: "shutdownTimeout"},
		{vals: "config: { shutdownTimeout: 0s }", wantErr: "must be more than 0", lintPasses: true},
		{vals: "config: { shutdownTimout: 25s }", wantErr: "shutdownTimout"},
		{vals: "config: { metaApiVersion: '23.0' }", wantErr: "metaApiVersion"},
		{vals: "config: { amqpQueue: amq.jobs }", wantErr: "amqpQueue"},
		{vals: "config: { tenantsWatch: sometimes }", wantErr: "tenantsWatch"},
		{vals: "admin: { port: 0 }", wantErr: "port"},
		{vals: "probes: { mode: tcp }", wantErr: "mode"},
		{vals: "tokens: { mountPath: tokens }", wantErr: "mountPath"},
		{vals: "terminationGracePeriodSeconds: '60'", wantErr: "terminationGracePeriodSeconds"},
		{vals: "serviceMonitor: { enabled: true }\nservice: { enabled: false }", wantErr: "serviceMonitor.enabled needs service.enabled", lintPasses: true},
		{vals: "tenants: { file: '' }", wantErr: "tenants.file is empty", lintPasses: true},
		{vals: "tenants: { file: { tenants: [] } }", wantErr: "/tenants/file"},
	} {
		t.Run(tc.vals, func(t *testing.T) {
			_, _, err := renderChart(values(t, tc.vals))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("helm template: %v, want an error with %q", err, tc.wantErr)
			}
			if errs, _ := lintStrict(values(t, tc.vals)); len(errs) == 0 && !tc.lintPasses {
				t.Error("helm lint --strict passed")
			}
		})
	}
}

// TestExtraEnvReplaces: a variable of extraEnv replaces the chart's own of
// the same name (set once), others are added.
func TestExtraEnvReplaces(t *testing.T) {
	r := render(t, values(t, `
extraEnv:
  - { name: SHARDS, value: "16" }
  - { name: AMQP_URL, valueFrom: { secretKeyRef: { name: other, key: u } } }
  - { name: BACKPRESSURE_HIGH, value: "5000" }
`))
	c := one[appsv1.Deployment](t, r).Spec.Template.Spec.Containers[0]
	seen := map[string][]corev1.EnvVar{}
	for _, e := range c.Env {
		seen[e.Name] = append(seen[e.Name], e)
	}
	if s := seen["SHARDS"]; len(s) != 1 || s[0].Value != "16" {
		t.Errorf("SHARDS = %+v, want once, 16", s)
	}
	if s := seen["AMQP_URL"]; len(s) != 1 || s[0].ValueFrom == nil || s[0].ValueFrom.SecretKeyRef.Name != "other" {
		t.Errorf("AMQP_URL = %+v, want once, from Secret other", s)
	}
	if s := seen["BACKPRESSURE_HIGH"]; len(s) != 1 || s[0].Value != "5000" {
		t.Errorf("BACKPRESSURE_HIGH = %+v", s)
	}
}

// TestNoRestartOnTenantsChange: a change of the tenants file changes no
// part of the pod template (the workers reload it live), while a change of
// a setting does (it needs a restart).
func TestNoRestartOnTenantsChange(t *testing.T) {
	pod := func(vals string) corev1.PodTemplateSpec {
		return one[appsv1.Deployment](t, render(t, values(t, vals))).Spec.Template
	}
	base := pod("")
	other := pod(`tenants: { file: "tenants: [ { id: initech, phone_number_id: '1', access_token_file: /etc/wadispatch/tokens/initech } ]" }`)
	if !reflect.DeepEqual(base, other) {
		t.Error("a change of the tenants file changes the pod template, which restarts every worker; they reload it live")
	}
	if reflect.DeepEqual(base, pod("config: { prefetch: 20 }")) {
		t.Error("a change of PREFETCH does not change the pod template")
	}
}

// TestTenantsFileAcceptedByWorker: the tenants file the chart renders by
// default passes the worker's own `wadispatch check --skip-tokens`.
func TestTenantsFileAcceptedByWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the worker")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	root, err := filepath.Abs(filepath.Join(chartDir, "..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "wadispatch")); err != nil {
		t.Skipf("no worker source at %s", root)
	}
	for _, vs := range valueSets {
		r := render(t, values(t, vs.vals))
		for _, cm := range all[corev1.ConfigMap](r) {
			for key, content := range cm.Data {
				f := filepath.Join(t.TempDir(), key)
				if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(goBin, "run", "./cmd/wadispatch", "check", "--skip-tokens", "--tenants-file", f)
				cmd.Dir = root
				cmd.Env = append(os.Environ(), "GOWORK=off")
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Errorf("%s: wadispatch check refuses ConfigMap %s key %s: %v\n%s\n---\n%s", vs.name, cm.Name, key, err, out, content)
				} else {
					t.Logf("%s: %s", vs.name, strings.TrimSpace(string(out)))
				}
			}
		}
	}
}

// helpers

func appVersion(t *testing.T) string {
	t.Helper()
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(readFileIfExists(t, filepath.Join(chartDir, "Chart.yaml")), &c); err != nil || c.AppVersion == "" {
		t.Fatalf("Chart.yaml appVersion: %v", err)
	}
	return c.AppVersion
}

func mountOf(t *testing.T, c corev1.Container, vols map[string]corev1.Volume, dir string) (corev1.VolumeMount, corev1.Volume) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(dir) {
			return m, vols[m.Name]
		}
	}
	t.Fatalf("no volume is mounted at %s", dir)
	return corev1.VolumeMount{}, corev1.Volume{}
}

func splitHostPort(t *testing.T, name, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", name, addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		t.Fatalf("%s %q: bad port", name, addr)
	}
	return host, p
}

// deref prints what a pointer points to, or nil.
func deref[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

func firstBool(vs ...*bool) *bool {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}

func firstInt(vs ...*int64) *int64 {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func containsAll(s string, frags []string) bool {
	for _, f := range frags {
		if !strings.Contains(s, f) {
			return false
		}
	}
	return true
}
