package compose

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	yaml "go.yaml.in/yaml/v4"
)

// The stack's names: the worker's image, and the ports its services agree on.
const (
	imageName   = "wadispatch:local"
	binaryPath  = "/usr/local/bin/wadispatch"
	graceMargin = 5 * time.Second // stop_grace_period >= SHUTDOWN_TIMEOUT + this
	// defaultShutdownTimeout is the worker's SHUTDOWN_TIMEOUT when unset
	// (checked against `wadispatch run --help` below).
	defaultShutdownTimeout = 25 * time.Second
)

// repoRoot is the repository's root, three folders above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("runtime.Caller failed")
	}
	root, err := filepath.Abs(filepath.Join(filepath.Dir(file), "..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "wadispatch")); err != nil {
		t.Fatalf("repository root not found at %s: %v", root, err)
	}
	return root
}

func composeDir(t *testing.T) string { return filepath.Join(repoRoot(t), "deploy", "compose") }

// load loads content as deploy/compose/compose.yaml with the compose-spec
// loader as `docker compose` would: schema validation on, consistency checks
// on, paths resolved against deploy/compose. The environment is empty and
// every variable the file would interpolate is recorded, so the host's
// environment can never change what is checked.
func load(t *testing.T, content []byte, extra ...func(*loader.Options)) (*types.Project, []string, error) {
	t.Helper()
	dir := composeDir(t)
	var looked []string
	opts := []func(*loader.Options){
		func(o *loader.Options) {
			o.SkipValidation = false
			o.SkipConsistencyCheck = false
			o.ResolvePaths = true
			o.Interpolate.LookupValue = func(key string) (string, bool) {
				looked = append(looked, key)
				return "", false
			}
		},
	}
	opts = append(opts, extra...)
	project, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "compose.yaml"), Content: content}},
		Environment: types.Mapping{},
	}, opts...)
	return project, looked, err
}

func composeFile(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(composeDir(t), "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	projectOnce sync.Once
	project     *types.Project
	projectErr  error
	lookedUp    []string
)

// stack is compose.yaml, loaded once.
func stack(t *testing.T) *types.Project {
	t.Helper()
	projectOnce.Do(func() { project, lookedUp, projectErr = load(t, composeFile(t)) })
	if projectErr != nil {
		t.Fatalf("compose.yaml does not load: %v", projectErr)
	}
	return project
}

func service(t *testing.T, name string) types.ServiceConfig {
	t.Helper()
	s, err := stack(t).GetService(name)
	if err != nil {
		t.Fatalf("service %s: %v", name, err)
	}
	return s
}

// env returns a service's environment variable, and whether it is set.
func env(s types.ServiceConfig, key string) (string, bool) {
	v, ok := s.Environment[key]
	if !ok || v == nil {
		return "", false
	}
	return *v, true
}

func TestLoadsWithSchemaValidation(t *testing.T) {
	p := stack(t)
	if p.Name != "wadispatch" {
		t.Errorf("project name %q, want wadispatch", p.Name)
	}
	want := []string{"fakemeta", "rabbitmq", "worker"}
	if got := p.ServiceNames(); !slices.Equal(sorted(got), want) {
		t.Errorf("services %v, want %v", got, want)
	}
}

// An unknown key anywhere fails the load: the schema is really applied.
func TestUnknownKeyFails(t *testing.T) {
	orig := string(composeFile(t))
	for _, tc := range []struct{ name, old, new, wantErr string }{
		{"TypoInService", "  worker:\n", "  worker:\n    read_onyl: true\n", "read_onyl"},
		{"UnknownTopLevel", "services:\n", "servces: {}\nservices:\n", "servces"},
		{"UnknownInHealthcheck", "    healthcheck:\n      # An exec probe", "    healthcheck:\n      probe: yes\n      # An exec probe", "probe"},
		{"UnknownInDependsOn", "        condition: service_healthy\n", "        condition: service_healthy\n        when: later\n", "when"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(orig, tc.old) {
				t.Fatalf("compose.yaml no longer contains %q; update the test", tc.old)
			}
			_, _, err := load(t, []byte(strings.Replace(orig, tc.old, tc.new, 1)))
			if err == nil {
				t.Fatalf("a compose.yaml with the unknown key %q loaded without error", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error does not name %q: %v", tc.wantErr, err)
			}
		})
	}
	// And a wrong value type, also by the schema.
	_, _, err := load(t, []byte(strings.Replace(orig, "    read_only: true\n    user:", "    read_only: [yes]\n    user:", 1)))
	if err == nil {
		t.Fatal("read_only: [yes] loaded without error")
	}
}

// What the file says is what runs: it interpolates nothing, so neither the
// host's environment nor a .env file can change it.
func TestNoInterpolation(t *testing.T) {
	p := stack(t)
	if len(lookedUp) > 0 {
		t.Errorf("compose.yaml interpolates variables %v; it must not", lookedUp)
	}
	raw, _, err := load(t, composeFile(t), func(o *loader.Options) { o.SkipInterpolation = true })
	if err != nil {
		t.Fatalf("load without interpolation: %v", err)
	}
	if !reflect.DeepEqual(p.Services, raw.Services) {
		t.Error("the services differ with and without interpolation")
	}
}

func TestWorkerHealthcheckIsExecProbe(t *testing.T) {
	w := service(t, "worker")
	hc := w.HealthCheck
	if hc == nil || hc.Disable {
		t.Fatal("worker has no healthcheck")
	}
	want := types.HealthCheckTest{"CMD", binaryPath, "probe", "--ready"}
	if !slices.Equal(hc.Test, want) {
		t.Errorf("worker healthcheck test %q, want %q (exec form: the image has no shell)", hc.Test, want)
	}
	// probe asks METRICS_ADDR when it is set: it must be, and listen where
	// the probe inside the container reaches it (0.0.0.0 is asked on 127.0.0.1).
	addr, ok := env(w, "METRICS_ADDR")
	if !ok {
		t.Fatal("worker has no METRICS_ADDR: probe would ask ADMIN_ADDR")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || (host != "0.0.0.0" && host != "") || port == "" {
		t.Errorf("METRICS_ADDR %q: want 0.0.0.0:PORT (reachable by Prometheus and the probe)", addr)
	}
	for what, d := range map[string]*types.Duration{"interval": hc.Interval, "timeout": hc.Timeout} {
		if d == nil || time.Duration(*d) <= 0 {
			t.Errorf("worker healthcheck has no %s", what)
		}
	}
	if hc.Timeout != nil && hc.Interval != nil && *hc.Timeout >= *hc.Interval {
		t.Errorf("healthcheck timeout %v not below its interval %v", *hc.Timeout, *hc.Interval)
	}
	// The image's config: an exec healthcheck of the image's own binary only
	// works if the entrypoint is that binary; the worker must run `run`.
	if !slices.Equal(w.Command, types.ShellCommand{"run"}) {
		t.Errorf("worker command %q, want [run]", w.Command)
	}
	if len(w.Entrypoint) != 0 {
		t.Errorf("worker overrides the image's entrypoint: %q", w.Entrypoint)
	}
}

func TestRabbitMQHealthcheck(t *testing.T) {
	r := service(t, "rabbitmq")
	if r.HealthCheck == nil {
		t.Fatal("rabbitmq has no healthcheck")
	}
	want := types.HealthCheckTest{"CMD", "rabbitmq-diagnostics", "-q", "ping"}
	if !slices.Equal(r.HealthCheck.Test, want) {
		t.Errorf("rabbitmq healthcheck %q, want %q", r.HealthCheck.Test, want)
	}
	if !strings.Contains(r.Image, "rabbitmq:") || !strings.Contains(r.Image, "management") {
		t.Errorf("rabbitmq image %q, want a rabbitmq:*-management image", r.Image)
	}
}

func TestWorkerStartsAfterHealthyBroker(t *testing.T) {
	w := service(t, "worker")
	dep, ok := w.DependsOn["rabbitmq"]
	if !ok {
		t.Fatal("worker does not depend on rabbitmq")
	}
	if dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("worker depends on rabbitmq with condition %q, want %q", dep.Condition, types.ServiceConditionHealthy)
	}
	if _, ok := w.DependsOn["fakemeta"]; !ok {
		t.Error("worker does not depend on fakemeta")
	}
	// The broker URL and the Graph API URL name those services.
	u, err := url.Parse(mustEnv(t, w, "AMQP_URL"))
	if err != nil || u.Scheme != "amqp" || u.Hostname() != "rabbitmq" {
		t.Errorf("AMQP_URL %q: want amqp://…@rabbitmq:5672/", mustEnv(t, w, "AMQP_URL"))
	}
	r := service(t, "rabbitmq")
	user, _ := env(r, "RABBITMQ_DEFAULT_USER")
	pass, _ := env(r, "RABBITMQ_DEFAULT_PASS")
	if got, _ := u.User.Password(); u.User.Username() != user || got != pass {
		t.Errorf("AMQP_URL's user does not match rabbitmq's RABBITMQ_DEFAULT_USER/PASS")
	}
	m, err := url.Parse(mustEnv(t, w, "META_BASE_URL"))
	if err != nil || m.Hostname() != "fakemeta" {
		t.Fatalf("META_BASE_URL %q: want http://fakemeta:PORT", mustEnv(t, w, "META_BASE_URL"))
	}
	f := service(t, "fakemeta")
	if addr := flagValue(f.Command, "--addr"); !strings.HasSuffix(addr, ":"+m.Port()) || !strings.HasPrefix(addr, "0.0.0.0:") {
		t.Errorf("fakemeta --addr %q does not serve META_BASE_URL's port %s on all interfaces", addr, m.Port())
	}
}

// Both services that run the wadispatch image are locked down.
func TestHardening(t *testing.T) {
	for _, name := range []string{"worker", "fakemeta"} {
		t.Run(name, func(t *testing.T) {
			s := service(t, name)
			if s.Image != imageName {
				t.Errorf("image %q, want %q", s.Image, imageName)
			}
			if !s.ReadOnly {
				t.Error("read_only is not true")
			}
			if s.User != "65532:65532" {
				t.Errorf("user %q, want 65532:65532", s.User)
			}
			if !slices.Equal(s.CapDrop, []string{"ALL"}) {
				t.Errorf("cap_drop %v, want [ALL]", s.CapDrop)
			}
			if len(s.CapAdd) != 0 {
				t.Errorf("cap_add %v, want none", s.CapAdd)
			}
			if !slices.Contains(s.SecurityOpt, "no-new-privileges:true") && !slices.Contains(s.SecurityOpt, "no-new-privileges") {
				t.Errorf("security_opt %v lacks no-new-privileges:true", s.SecurityOpt)
			}
			if s.Privileged {
				t.Error("privileged")
			}
			if s.NetworkMode == "host" || s.Pid == "host" || s.Ipc == "host" {
				t.Error("shares a host namespace")
			}
			// Exit code 2 is a configuration error: a restart loop must not
			// hide it. Docker cannot exclude an exit code, so retries are bounded.
			if r := s.Restart; r == types.RestartPolicyAlways || r == types.RestartPolicyUnlessStopped || r == types.RestartPolicyOnFailure {
				t.Errorf("restart %q restarts a configuration error (exit 2) forever; use no or on-failure:N", r)
			}
			for _, p := range s.Ports {
				if p.HostIP != "127.0.0.1" {
					t.Errorf("port %d published on %q, want 127.0.0.1 only", p.Target, p.HostIP)
				}
			}
		})
	}
	w := service(t, "worker")
	if w.Build == nil {
		t.Fatal("worker has no build section")
	}
	df := filepath.Join(w.Build.Context, w.Build.Dockerfile)
	if _, err := os.Stat(df); err != nil {
		t.Errorf("worker's Containerfile %s: %v", df, err)
	}
	if w.Build.Context != repoRoot(t) {
		t.Errorf("worker's build context %s, want the repository root %s", w.Build.Context, repoRoot(t))
	}
	if f := service(t, "fakemeta"); f.Build == nil && f.PullPolicy != types.PullPolicyNever {
		t.Errorf("fakemeta reuses the worker's image: pull_policy %q, want never (it is built, not pulled)", f.PullPolicy)
	}
	// The admin API is reached with `compose exec` only: loopback, no token.
	if a, _ := env(w, "ADMIN_ADDR"); a != "" && !strings.HasPrefix(a, "127.0.0.1:") && a != "off" {
		if _, ok := env(w, "ADMIN_TOKEN"); !ok {
			t.Errorf("ADMIN_ADDR %q beyond loopback without ADMIN_TOKEN: the worker would refuse to start", a)
		}
	}
}

func TestStopGracePeriodCoversShutdownTimeout(t *testing.T) {
	w := service(t, "worker")
	shutdown := defaultShutdownTimeout
	if v, ok := env(w, "SHUTDOWN_TIMEOUT"); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SHUTDOWN_TIMEOUT %q: %v", v, err)
		}
		shutdown = d
	}
	if w.StopGracePeriod == nil {
		t.Fatalf("worker has no stop_grace_period (Docker's default is 10s, below SHUTDOWN_TIMEOUT %v)", shutdown)
	}
	if got, want := time.Duration(*w.StopGracePeriod), shutdown+graceMargin; got < want {
		t.Errorf("stop_grace_period %v < SHUTDOWN_TIMEOUT %v + %v", got, shutdown, graceMargin)
	}
	if w.StopSignal != "" && w.StopSignal != "SIGTERM" {
		t.Errorf("stop_signal %q: the worker stops gracefully on SIGTERM", w.StopSignal)
	}
}

// tenantsFile is what the test reads of a tenants file: enough to tie it to
// fakemeta and the mount. `wadispatch check` validates the rest.
type tenantsFile struct {
	Tenants []struct {
		ID              string `yaml:"id"`
		PhoneNumberID   string `yaml:"phone_number_id"`
		AccessTokenFile string `yaml:"access_token_file"`
		AccessTokenEnv  string `yaml:"access_token_env"`
	} `yaml:"tenants"`
}

// The tenants file the worker reads (TENANTS_FILE) is mounted read-only from
// deploy/compose, with every token file it names, and fakemeta accepts
// exactly those tenants and tokens.
func TestTenantsFileMounted(t *testing.T) {
	w := service(t, "worker")
	inContainer := mustEnv(t, w, "TENANTS_FILE")
	if !filepath.IsAbs(inContainer) {
		t.Fatalf("TENANTS_FILE %q is not absolute", inContainer)
	}
	onHost := ""
	for _, v := range w.Volumes {
		rel, err := filepath.Rel(v.Target, inContainer)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		if v.Type != types.VolumeTypeBind {
			t.Errorf("the volume at %s is a %s, want a bind mount of deploy/compose", v.Target, v.Type)
			continue
		}
		if !v.ReadOnly {
			t.Errorf("the mount at %s is not read-only", v.Target)
		}
		if v.Bind == nil || v.Bind.CreateHostPath {
			t.Errorf("the mount at %s would create a missing host path (bind.create_host_path: false wanted)", v.Target)
		}
		if !strings.HasPrefix(v.Source, composeDir(t)+string(filepath.Separator)) {
			t.Errorf("the mount at %s comes from %s, outside deploy/compose", v.Target, v.Source)
		}
		onHost = filepath.Join(v.Source, rel)
	}
	if onHost == "" {
		t.Fatalf("TENANTS_FILE %s is not under any of the worker's volumes", inContainer)
	}
	raw, err := os.ReadFile(onHost)
	if err != nil {
		t.Fatalf("the mounted tenants file: %v", err)
	}
	var tf tenantsFile
	if err := yaml.Unmarshal(raw, &tf); err != nil {
		t.Fatalf("%s: %v", onHost, err)
	}
	if len(tf.Tenants) == 0 {
		t.Fatalf("%s has no tenants", onHost)
	}
	// fakemeta's --tenant PHONE=TOKEN flags.
	fake := map[string]string{}
	cmd := service(t, "fakemeta").Command
	if len(cmd) == 0 || cmd[0] != "fakemeta" {
		t.Fatalf("fakemeta's command %q does not start with fakemeta", cmd)
	}
	for i, a := range cmd {
		if (a == "--tenant" || a == "-tenant") && i+1 < len(cmd) {
			phone, tok, ok := strings.Cut(cmd[i+1], "=")
			if !ok {
				t.Errorf("fakemeta --tenant %q is not PHONE=TOKEN", cmd[i+1])
			}
			fake[phone] = tok
		}
	}
	for _, tn := range tf.Tenants {
		if tn.AccessTokenFile == "" {
			t.Errorf("tenant %s: the sample should use access_token_file (tokens in files, not in compose.yaml)", tn.ID)
			continue
		}
		// Relative token files are relative to the tenants file, in the
		// container as on the host; an absolute one must be in the mount too.
		tokPath := tn.AccessTokenFile
		if filepath.IsAbs(tokPath) {
			rel, err := filepath.Rel(filepath.Dir(inContainer), tokPath)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("tenant %s: token file %s is outside the mounted folder", tn.ID, tokPath)
				continue
			}
			tokPath = rel
		}
		tok, err := os.ReadFile(filepath.Join(filepath.Dir(onHost), tokPath))
		if err != nil {
			t.Errorf("tenant %s: token file: %v", tn.ID, err)
			continue
		}
		want, ok := fake[tn.PhoneNumberID]
		if !ok {
			t.Errorf("tenant %s: fakemeta has no --tenant for phone %s", tn.ID, tn.PhoneNumberID)
		} else if strings.TrimSpace(string(tok)) != want {
			t.Errorf("tenant %s: the token file does not hold the token fakemeta accepts", tn.ID)
		}
		delete(fake, tn.PhoneNumberID)
	}
	if len(fake) > 0 {
		t.Errorf("fakemeta accepts phones that no tenant has: %v", keys(fake))
	}
}

// The sample tenants file passes `wadispatch check`, with and without the
// token check (the tokens are in the mounted folder).
func TestSampleTenantsFileChecks(t *testing.T) {
	bin := wadispatchBinary(t)
	file := filepath.Join(composeDir(t), "wadispatch", "tenants.yaml")
	for _, args := range [][]string{
		{"check", "--tenants-file", file, "--skip-tokens"},
		{"check", "--tenants-file", file},
	} {
		out, err := run(t, bin, nil, args...)
		if err != nil {
			t.Fatalf("wadispatch %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if !strings.Contains(out, ": ok, ") {
			t.Errorf("wadispatch %s printed %q, want ': ok, …'", strings.Join(args, " "), out)
		}
		t.Logf("wadispatch %s -> %s", strings.Join(args, " "), strings.TrimSpace(out))
	}
	// And a broken copy fails with exit code 2, so the check above means something.
	broken := filepath.Join(t.TempDir(), "tenants.yaml")
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(broken, bytes.Replace(raw, []byte("phone_number_id:"), []byte("phone_numbr_id:"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, bin, nil, "check", "--tenants-file", broken, "--skip-tokens")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("check of a broken tenants file: %v (want exit code 2)\n%s", err, out)
	}
}

// Every environment variable the worker gets is a setting `wadispatch run`
// knows (a misspelt name would be silently ignored), and the defaults the
// test assumes are the binary's.
func TestWorkerEnvironmentIsKnown(t *testing.T) {
	bin := wadispatchBinary(t)
	help, err := run(t, bin, nil, "run", "--help")
	if err != nil {
		t.Fatalf("wadispatch run --help: %v\n%s", err, help)
	}
	for key := range service(t, "worker").Environment {
		if !strings.Contains(help, "env "+key+",") {
			t.Errorf("worker environment %s is not a setting of `wadispatch run` (see run --help)", key)
		}
	}
	if !strings.Contains(help, `env SHUTDOWN_TIMEOUT, default "`+defaultShutdownTimeout.String()+`"`) {
		t.Errorf("SHUTDOWN_TIMEOUT's default is no longer %v; update defaultShutdownTimeout", defaultShutdownTimeout)
	}
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binOut  []byte
)

// wadispatchBinary builds ./cmd/wadispatch from the repository root once, as
// the image's binary is built (static, GOWORK=off).
func wadispatchBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wadispatch-compose-check-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "wadispatch")
		cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, "./cmd/wadispatch")
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
		binOut, binErr = cmd.CombinedOutput()
	})
	if binErr != nil {
		t.Fatalf("go build ./cmd/wadispatch: %v\n%s", binErr, binOut)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func run(t *testing.T, bin string, envv []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, envv...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustEnv(t *testing.T, s types.ServiceConfig, key string) string {
	t.Helper()
	v, ok := env(s, key)
	if !ok || v == "" {
		t.Fatalf("service %s has no %s", s.Name, key)
	}
	return v
}

// flagValue returns the value after flag in args ("" if absent).
func flagValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func keys(m map[string]string) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	return sorted(k)
}
