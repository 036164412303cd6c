package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/wadispatch/wadispatch/logging"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// adminOff is the ADMIN_ADDR value that disables the admin listener.
const adminOff = "off"

// maxPrefetch is the largest prefetch count AMQP's basic.qos can carry (a uint16).
const maxPrefetch = math.MaxUint16

// maxNameLen leaves room, within AMQP's 255-byte names, for the suffixes
// the worker appends to the queue name (".dlq", ".wait.4096s", ...).
const maxNameLen = 200

var apiVersionRE = regexp.MustCompile(`^v\d+\.\d+$`)

// setting is one setting of `wadispatch run`: its environment variable, its
// flag, its default, and how to parse and check a raw value into a Config.
type setting struct {
	env   string
	flag  string
	arg   string // the value's name in the usage text
	def   string
	usage string
	set   func(c *Config, raw string) error
}

// settings lists the settings in the order of the configuration table of
// docs/contract.md, which is also the order of the usage text and of error
// checking.
func settings() []setting {
	return []setting{
		{"AMQP_URL", "amqp-url", "URL", "amqp://guest:guest@127.0.0.1:5672/",
			"RabbitMQ broker URL, amqp:// or amqps:// (percent-encode special characters of the password)",
			func(c *Config, raw string) error { c.AMQPURL = raw; return checkAMQPURL(raw) }},
		{"AMQP_QUEUE", "amqp-queue", "NAME", "whatsapp.outbound",
			"job queue (the intake); beside it NAME.dlq, NAME.shard.NN, NAME.delay.* and more",
			func(c *Config, raw string) error { c.Queue = raw; return checkName(raw) }},
		{"RESULTS_EXCHANGE", "results-exchange", "NAME", "whatsapp.results",
			"topic exchange for results (a durable queue of the same name is bound to it with #)",
			func(c *Config, raw string) error { c.ResultsExchange = raw; return checkName(raw) }},
		{"TENANTS_FILE", "tenants-file", "PATH", "tenants.yaml",
			"tenants file, YAML or JSON (see below)",
			func(c *Config, raw string) error {
				c.TenantsFile = raw
				if raw == "" {
					return errors.New("must name the tenants file")
				}
				return nil
			}},
		{"META_BASE_URL", "meta-base-url", "URL", whatsapp.DefaultBaseURL,
			"Graph API base URL, http:// or https://",
			func(c *Config, raw string) error { c.MetaBaseURL = raw; return checkHTTPURL(raw) }},
		{"META_API_VERSION", "meta-api-version", "VERSION", "v23.0",
			"Graph API version, like v23.0",
			func(c *Config, raw string) error { c.MetaAPIVersion = raw; return checkAPIVersion(raw) }},
		{"META_TIMEOUT", "meta-timeout", "DURATION", whatsapp.DefaultTimeout.String(),
			"timeout of one request to the Graph API",
			func(c *Config, raw string) (err error) { c.MetaTimeout, err = parsePositive(raw); return err }},
		{"ADMIN_ADDR", "admin-addr", "HOST:PORT", "127.0.0.1:8081",
			"admin API and /metrics listener; off disables it",
			func(c *Config, raw string) error {
				if raw == adminOff {
					raw = ""
				}
				c.AdminAddr = raw
				return checkAdminAddr(raw)
			}},
		{"METRICS_ADDR", "metrics-addr", "HOST:PORT", "off",
			"a listener of its own for /metrics, /healthz and /readyz, without a token (for Prometheus and probes); off: none",
			func(c *Config, raw string) error {
				if raw == adminOff {
					raw = ""
				}
				c.MetricsAddr = raw
				return checkAdminAddr(raw)
			}},
		{"ADMIN_TOKEN", "admin-token", "TOKEN", "",
			"bearer token of the admin API; required when ADMIN_ADDR is not loopback",
			func(c *Config, raw string) error { c.AdminToken = raw; return nil }},
		{"LOG_LEVEL", "log-level", "LEVEL", "info",
			"debug, info, warn or error",
			func(c *Config, raw string) (err error) { c.LogLevel, err = parseLogLevel(raw); return err }},
		{"PREFETCH", "prefetch", "N", "10",
			"consumer prefetch (unacked jobs in flight, shared by all tenants)",
			func(c *Config, raw string) (err error) { c.Prefetch, err = parsePrefetch(raw); return err }},
		{"PREFETCH_REDUCED", "prefetch-reduced", "N", "5",
			"consumer prefetch under backpressure, 1 to PREFETCH",
			func(c *Config, raw string) (err error) { c.PrefetchReduced, err = parsePrefetch(raw); return err }},
		{"BACKPRESSURE_HIGH", "backpressure-high", "N", "1000",
			"queue depth at which the prefetch drops to PREFETCH_REDUCED",
			func(c *Config, raw string) (err error) { c.BackpressureHigh, err = parseInt(raw, 1); return err }},
		{"BACKPRESSURE_LOW", "backpressure-low", "N", "100",
			"queue depth at which the prefetch returns to PREFETCH; below BACKPRESSURE_HIGH",
			func(c *Config, raw string) (err error) { c.BackpressureLow, err = parseInt(raw, 0); return err }},
		{"BACKPRESSURE_INTERVAL", "backpressure-interval", "DURATION", "30s",
			"how often the queue depth is checked",
			func(c *Config, raw string) (err error) { c.BackpressureInterval, err = parsePositive(raw); return err }},
		{"TENANTS_WATCH", "tenants-watch", "on|off|DURATION", "on",
			"reload TENANTS_FILE when its content changes, looked at every 5s (on) or every DURATION; off: only on SIGHUP or POST /v1/reload",
			func(c *Config, raw string) (err error) { c.TenantsWatch, err = parseWatch(raw); return err }},
		{"SHARDS", "shards", "N", "32",
			"shards the tenants are split into, shared by every worker on AMQP_QUEUE (1 to 1024); the same for all of them",
			func(c *Config, raw string) (err error) { c.Shards, err = parseShards(raw); return err }},
		{"SHUTDOWN_TIMEOUT", "shutdown-timeout", "DURATION", "25s",
			"time to finish or hand back in-flight jobs on SIGTERM or SIGINT",
			func(c *Config, raw string) (err error) { c.ShutdownTimeout, err = parsePositive(raw); return err }},
	}
}

// parseFlags parses args and returns the flags that were given, by name.
// The flag package's own messages and usage are silenced: --help prints our
// usage text to usage, and other errors come back as one line.
func parseFlags(args []string, usage io.Writer) (map[string]string, error) {
	fs := flag.NewFlagSet("wadispatch run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	all := settings()
	values := make(map[string]*string, len(all))
	for _, s := range all {
		values[s.flag] = fs.String(s.flag, "", s.usage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeUsage(usage, all)
			return nil, flag.ErrHelp
		}
		return nil, newError(err, "wadispatch run: %s (see wadispatch run --help)", err)
	}
	if fs.NArg() > 0 {
		return nil, newError(nil, "wadispatch run: unexpected argument %q; settings are --flags or environment variables (see wadispatch run --help)", fs.Arg(0))
	}
	set := make(map[string]string)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = *values[f.Name] })
	return set, nil
}

// writeUsage prints the `wadispatch run --help` text.
func writeUsage(w io.Writer, all []setting) {
	var b strings.Builder
	b.WriteString(`Usage: wadispatch run [flags]

Consume WhatsApp send jobs from RabbitMQ and deliver them through Meta's
WhatsApp Cloud API, one actor per tenant.

Every setting is an environment variable with a matching flag; the flag wins.
An empty variable counts as unset.

Flags:
`)
	for _, s := range all {
		def := "no default"
		if s.def != "" {
			def = fmt.Sprintf("default %q", s.def)
		}
		fmt.Fprintf(&b, "  --%s %s\n", s.flag, s.arg)
		fmt.Fprintf(&b, "        %s\n", s.usage)
		fmt.Fprintf(&b, "        env %s, %s\n", s.env, def)
	}
	b.WriteString(`
Tenants file (YAML, or JSON, which is YAML too; unknown keys are errors):

  defaults:                     # optional; these are the built-in values
    rate_limit: { per_minute: 80, burst: 80 }
    breaker:    { failure_threshold: 5, open_for: 60s }
    max_attempts: 10            # transient retries before the dead letter queue
    max_age: 24h                # older jobs are dead-lettered
    max_in_flight: 1024         # cap on the send window (sends in flight at once)
  tenants:
    - id: acme
      phone_number_id: "106540352242922"
      access_token_env: ACME_WA_TOKEN        # or access_token_file: /run/secrets/acme
      rate_limit: { per_minute: 600 }        # overrides per_minute only; burst stays 80

A tenant may override any field of defaults. Durations are Go durations (90s,
1m30s, 24h). A relative access_token_file is relative to the tenants file.

A configuration error prints one line and exits with code 2.
`)
	_, _ = io.WriteString(w, b.String())
}

func checkAMQPURL(raw string) error {
	if raw == "" {
		return errors.New("must be set, like amqp://user:password@host:5672/vhost")
	}
	if strings.ContainsAny(raw, " \t\r\n") {
		return errors.New("must not contain whitespace; percent-encode it (space is %20)")
	}
	// url.Parse errors quote the URL, password included: never show them.
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("is not a valid URL; use amqp://user:password@host:5672/vhost and percent-encode special characters of the password (/ is %2F, @ is %40)")
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return fmt.Errorf("scheme must be amqp or amqps (got %q)", u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("has no host: %s", logging.RedactURL(raw))
	}
	return nil
}

func checkHTTPURL(raw string) error {
	if raw == "" {
		return errors.New("must be set, like https://graph.facebook.com")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("is not a valid URL; use one like https://graph.facebook.com")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme must be http or https (got %q)", u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("has no host: %s", logging.RedactURL(raw))
	}
	return nil
}

func checkAPIVersion(raw string) error {
	if !apiVersionRE.MatchString(raw) {
		return fmt.Errorf("must look like v23.0 (got %q)", raw)
	}
	return nil
}

func checkName(raw string) error {
	switch {
	case raw == "":
		return errors.New("must not be empty")
	case len(raw) > maxNameLen:
		return fmt.Errorf("must be at most %d bytes long (got %d)", maxNameLen, len(raw))
	case strings.HasPrefix(raw, "amq."):
		return fmt.Errorf("must not start with amq., which RabbitMQ reserves (got %q)", raw)
	}
	return nil
}

func checkAdminAddr(raw string) error {
	if raw == "" || raw == adminOff {
		return nil
	}
	_, port, err := net.SplitHostPort(raw)
	if err != nil {
		return fmt.Errorf("must be host:port like 127.0.0.1:8081, or off (got %q)", raw)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > math.MaxUint16 {
		return fmt.Errorf("port must be a number from 0 to 65535 (got %q)", port)
	}
	return nil
}

// ErrAdminTokenRequired is matched by CheckAdminToken's error.
var ErrAdminTokenRequired = errors.New("ADMIN_TOKEN is required")

// CheckAdminToken is the rule that the admin API needs a token unless it
// listens on loopback only: it returns nil when token is set or addr is
// loopback (IsLoopbackAddr), else a one-line error that matches
// ErrAdminTokenRequired and says what to do. Validate applies it to an
// enabled ADMIN_ADDR; admin.New applies it again to the address it is given.
func CheckAdminToken(addr, token string) error {
	if token != "" || IsLoopbackAddr(addr) {
		return nil
	}
	return fmt.Errorf("%w because ADMIN_ADDR %s listens beyond loopback; set ADMIN_TOKEN, or bind ADMIN_ADDR to 127.0.0.1, or set it to off",
		ErrAdminTokenRequired, addr)
}

// IsLoopbackAddr reports whether the host of a host:port address is
// loopback (127.0.0.0/8, ::1, localhost). An empty host listens on every
// interface, so it is not. The admin API needs a token unless it is
// (CheckAdminToken).
func IsLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func parseLogLevel(raw string) (slog.Level, error) {
	l, err := logging.ParseLevel(raw)
	if err != nil {
		return 0, fmt.Errorf("must be %s (got %q)", logging.LevelNames, raw)
	}
	return l, nil
}

func checkLogLevel(l slog.Level) error {
	if !logging.ValidLevel(l) {
		return fmt.Errorf("must be %s (got %s)", logging.LevelNames, l)
	}
	return nil
}

func parseInt(raw string, least int) (int, error) {
	n, err := strconv.Atoi(raw)
	if err != nil {
		return 0, fmt.Errorf("must be a whole number >= %d (got %q)", least, raw)
	}
	return n, checkAtLeast(n, least)
}

func checkAtLeast(n, least int) error {
	if n < least {
		return fmt.Errorf("must be >= %d (got %d)", least, n)
	}
	return nil
}

// DefaultTenantsWatch is how often TENANTS_WATCH=on looks at the file.
const DefaultTenantsWatch = 5 * time.Second

func parseWatch(raw string) (time.Duration, error) {
	switch strings.ToLower(raw) {
	case "on", "true", "1":
		return DefaultTenantsWatch, nil
	case "off", "false", "0":
		return 0, nil
	}
	d, err := time.ParseDuration(raw)
	if err != nil || d < 100*time.Millisecond {
		return 0, fmt.Errorf("must be on, off or a Go duration of at least 100ms like 5s (got %q)", raw)
	}
	return d, nil
}

// maxShards bounds SHARDS (broker.MaxShards): every shard is a queue, a
// binding and a consumer.
const maxShards = 1024

func parseShards(raw string) (int, error) {
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > maxShards {
		return 0, fmt.Errorf("must be a whole number from 1 to %d (got %q)", maxShards, raw)
	}
	return n, nil
}

// checkShards accepts 0 too: a Config built in code without SHARDS gets
// the default.
func checkShards(n int) error {
	if n < 0 || n > maxShards {
		return fmt.Errorf("must be from 1 to %d (got %d)", maxShards, n)
	}
	return nil
}

func parsePrefetch(raw string) (int, error) {
	n, err := strconv.Atoi(raw)
	if err != nil {
		return 0, fmt.Errorf("must be a whole number from 1 to %d (got %q)", maxPrefetch, raw)
	}
	return n, checkPrefetch(n)
}

func checkPrefetch(n int) error {
	if n < 1 || n > maxPrefetch {
		return fmt.Errorf("must be from 1 to %d (got %d)", maxPrefetch, n)
	}
	return nil
}

func parsePositive(raw string) (time.Duration, error) {
	d, err := time.ParseDuration(raw)
	if err != nil {
		return 0, fmt.Errorf("must be a Go duration like 10s, 1m30s or 2h (got %q)", raw)
	}
	return d, checkPositive(d)
}

func checkPositive(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("must be > 0 (got %s)", d)
	}
	return nil
}
