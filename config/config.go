// Package config loads and validates wadispatch's configuration: the settings
// of `wadispatch run` (environment variables, each with a matching flag that
// wins over it) and the tenants file, as docs/contract.md (Configuration)
// specifies.
//
// It returns one validated Config value, and an error that matches ErrConfig,
// is one line long, names the file, tenant and field, says what to do, and
// never contains a secret (access token, admin token, broker password).
//
// It does not log, does not connect to anything, and does not keep access
// tokens: it only checks that each tenant's token is there, and offers
// Tenant.ReadToken so that the owner of the token can (re-)read it.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/wadispatch/wadispatch/logging"
)

// ErrConfig matches (with errors.Is) every error Load, LoadTenants and
// Validate return, so that main can exit with code 2 on a configuration error.
// The one exception is flag.ErrHelp, returned as is for --help.
var ErrConfig = errors.New("config")

// Config is the validated configuration of `wadispatch run`.
type Config struct {
	AMQPURL         string        // AMQP_URL, amqp:// or amqps://
	Queue           string        // AMQP_QUEUE
	ResultsExchange string        // RESULTS_EXCHANGE
	TenantsFile     string        // TENANTS_FILE
	MetaBaseURL     string        // META_BASE_URL, http:// or https://
	MetaAPIVersion  string        // META_API_VERSION, like v23.0
	MetaTimeout     time.Duration // META_TIMEOUT
	// AdminAddr is ADMIN_ADDR, a host:port; "" (or "off") disables the admin listener.
	AdminAddr string
	// AdminToken is ADMIN_TOKEN, the admin API's bearer token; required when
	// AdminAddr listens on more than loopback (127.0.0.0/8, ::1, localhost).
	AdminToken string
	// MetricsAddr is METRICS_ADDR: a listener serving only /metrics and
	// the probes, without a token; "" (or "off") is none.
	MetricsAddr string
	LogLevel    slog.Level // LOG_LEVEL

	Prefetch             int           // PREFETCH
	PrefetchReduced      int           // PREFETCH_REDUCED, used under backpressure
	BackpressureHigh     int           // BACKPRESSURE_HIGH, queue depth that turns backpressure on
	BackpressureLow      int           // BACKPRESSURE_LOW, queue depth that turns it off again
	BackpressureInterval time.Duration // BACKPRESSURE_INTERVAL
	ShutdownTimeout      time.Duration // SHUTDOWN_TIMEOUT
	// TenantsWatch is TENANTS_WATCH: how often the tenants file is looked
	// at for a change to reload; 0 is off.
	TenantsWatch time.Duration
	// Shards is SHARDS: how many shards the tenants are split into, each
	// owned by one worker at a time; every worker on the queue must agree.
	Shards int

	Tenants []Tenant // from TenantsFile, in file order
	// TenantsHash is the SHA-256 of the tenants file as loaded, in hex.
	TenantsHash string
}

// Tenant is one tenant of the tenants file, with the file's defaults applied.
type Tenant struct {
	ID            string
	PhoneNumberID string
	// Exactly one of AccessTokenEnv and AccessTokenFile is set. A relative
	// AccessTokenFile in the tenants file is resolved against the tenants
	// file's directory, so this path works from any working directory.
	AccessTokenEnv  string
	AccessTokenFile string
	RateLimit       RateLimit
	Breaker         Breaker
	MaxAttempts     int           // transient retries before the DLQ
	MaxAge          time.Duration // a job older than this is dead-lettered
	// MaxInFlight caps the tenant's send window: the sends it may have in
	// flight at once. The window sizes itself below it from measured latency
	// and rate. The tenants file's default is DefaultMaxInFlight.
	MaxInFlight int
}

// RateLimit is a tenant's token bucket: PerMinute tokens a minute, at most Burst at once.
type RateLimit struct {
	PerMinute float64 // yaml: per_minute
	Burst     int     // yaml: burst
}

// Breaker configures a tenant's circuit breaker: it opens after
// FailureThreshold consecutive failures and stays open for OpenFor.
type Breaker struct {
	FailureThreshold int           // yaml: failure_threshold
	OpenFor          time.Duration // yaml: open_for
}

// Load builds the Config of `wadispatch run`: built-in defaults, then the
// environment (read through getenv; an empty value counts as unset), then the
// flags in args (the arguments after `wadispatch run`), which win. It then
// loads the tenants file (see LoadTenants) and validates the whole.
//
// For --help (or -h) it prints the usage text to usage and returns
// flag.ErrHelp, which does not match ErrConfig. Every other error matches
// ErrConfig. Nothing is printed for other errors: the caller prints the
// returned one-line error.
func Load(getenv func(string) string, args []string, usage io.Writer) (Config, error) {
	set, err := parseFlags(args, usage)
	if err != nil {
		return Config{}, err
	}
	var c Config
	for _, s := range settings() {
		raw, source := s.def, s.env
		if v := strings.TrimSpace(getenv(s.env)); v != "" {
			raw = v
		}
		if v, ok := set[s.flag]; ok {
			raw, source = strings.TrimSpace(v), "--"+s.flag
		}
		if err := s.set(&c, raw); err != nil {
			return Config{}, newError(err, "%s: %s", source, err)
		}
	}
	if err := c.validateSettings(); err != nil {
		return Config{}, err
	}
	f, err := LoadTenantsFile(c.TenantsFile, getenv)
	if err != nil {
		return Config{}, err
	}
	c.Tenants, c.TenantsHash = f.Tenants, f.Hash
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks every setting and every tenant of c. It cannot see the
// environment, so it does not check that tenants' tokens are there; Load and
// LoadTenants do. Errors name settings by their environment variable.
func (c Config) Validate() error {
	checks := []struct {
		env string
		err error
	}{
		{"AMQP_URL", checkAMQPURL(c.AMQPURL)},
		{"AMQP_QUEUE", checkName(c.Queue)},
		{"RESULTS_EXCHANGE", checkName(c.ResultsExchange)},
		{"META_BASE_URL", checkHTTPURL(c.MetaBaseURL)},
		{"META_API_VERSION", checkAPIVersion(c.MetaAPIVersion)},
		{"META_TIMEOUT", checkPositive(c.MetaTimeout)},
		{"ADMIN_ADDR", checkAdminAddr(c.AdminAddr)},
		{"METRICS_ADDR", checkAdminAddr(c.MetricsAddr)},
		{"LOG_LEVEL", checkLogLevel(c.LogLevel)},
		{"PREFETCH", checkPrefetch(c.Prefetch)},
		{"PREFETCH_REDUCED", checkPrefetch(c.PrefetchReduced)},
		{"BACKPRESSURE_HIGH", checkAtLeast(c.BackpressureHigh, 1)},
		{"BACKPRESSURE_LOW", checkAtLeast(c.BackpressureLow, 0)},
		{"BACKPRESSURE_INTERVAL", checkPositive(c.BackpressureInterval)},
		{"SHUTDOWN_TIMEOUT", checkPositive(c.ShutdownTimeout)},
		{"SHARDS", checkShards(c.Shards)},
	}
	for _, ch := range checks {
		if ch.err != nil {
			return newError(ch.err, "%s: %s", ch.env, ch.err)
		}
	}
	if err := c.validateSettings(); err != nil {
		return err
	}
	file := c.TenantsFile
	if file == "" {
		file = "tenants"
	}
	return validateTenants(file, c.Tenants, nil)
}

// validateSettings checks the rules between settings, once each is valid alone.
func (c Config) validateSettings() error {
	switch {
	case c.PrefetchReduced > c.Prefetch:
		return newError(nil, "PREFETCH_REDUCED must be between 1 and PREFETCH (%d) (got %d); lower PREFETCH_REDUCED or raise PREFETCH",
			c.Prefetch, c.PrefetchReduced)
	case c.BackpressureLow >= c.BackpressureHigh:
		return newError(nil, "BACKPRESSURE_LOW must be below BACKPRESSURE_HIGH (got low %d, high %d)",
			c.BackpressureLow, c.BackpressureHigh)
	case c.MetricsAddr != "" && c.MetricsAddr == c.AdminAddr && !strings.HasSuffix(c.MetricsAddr, ":0"):
		return newError(nil, "METRICS_ADDR must differ from ADMIN_ADDR (both %s); set one to another port or off", c.MetricsAddr)
	}
	if c.AdminEnabled() {
		if err := CheckAdminToken(c.AdminAddr, c.AdminToken); err != nil {
			return newError(err, "%s", err)
		}
	}
	return nil
}

// Tenant returns the tenant with the given id.
func (c Config) Tenant(id string) (Tenant, bool) {
	for _, t := range c.Tenants {
		if t.ID == id {
			return t, true
		}
	}
	return Tenant{}, false
}

// AdminEnabled reports whether the admin listener should run.
func (c Config) AdminEnabled() bool {
	return c.AdminAddr != "" && c.AdminAddr != adminOff
}

// AMQPPassword returns the broker password of AMQPURL, decoded ("" if
// none), so that the caller can register it with the log redaction; it is
// logging.PasswordFromURL's answer (logging.URLPasswords gives every form).
func (c Config) AMQPPassword() string { return logging.PasswordFromURL(c.AMQPURL) }

// Redacted is a human summary of c, one setting a line, with the broker
// password (see logging.RedactURL) and the admin token replaced by "****".
func (c Config) Redacted() string {
	var b strings.Builder
	line := func(k string, v any) { fmt.Fprintf(&b, "%-22s %v\n", k, v) }
	line("AMQP_URL", logging.RedactURL(c.AMQPURL))
	line("AMQP_QUEUE", c.Queue)
	line("RESULTS_EXCHANGE", c.ResultsExchange)
	line("TENANTS_FILE", c.TenantsFile)
	line("META_BASE_URL", logging.RedactURL(c.MetaBaseURL))
	line("META_API_VERSION", c.MetaAPIVersion)
	line("META_TIMEOUT", c.MetaTimeout)
	if c.AdminEnabled() {
		line("ADMIN_ADDR", c.AdminAddr)
	} else {
		line("ADMIN_ADDR", adminOff)
	}
	line("ADMIN_TOKEN", redactSecret(c.AdminToken))
	if c.MetricsAddr != "" {
		line("METRICS_ADDR", c.MetricsAddr)
	} else {
		line("METRICS_ADDR", adminOff)
	}
	line("LOG_LEVEL", strings.ToLower(c.LogLevel.String()))
	line("PREFETCH", c.Prefetch)
	line("PREFETCH_REDUCED", c.PrefetchReduced)
	line("BACKPRESSURE_HIGH", c.BackpressureHigh)
	line("BACKPRESSURE_LOW", c.BackpressureLow)
	line("BACKPRESSURE_INTERVAL", c.BackpressureInterval)
	line("SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
	if c.TenantsWatch > 0 {
		line("TENANTS_WATCH", c.TenantsWatch)
	} else {
		line("TENANTS_WATCH", "off")
	}
	line("SHARDS", c.Shards)
	ids := make([]string, len(c.Tenants))
	for i, t := range c.Tenants {
		ids[i] = t.ID
	}
	line("tenants", fmt.Sprintf("%d (%s)", len(c.Tenants), strings.Join(ids, ", ")))
	return b.String()
}

// LogValue makes c loggable with slog without its secrets.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("amqpUrl", logging.RedactURL(c.AMQPURL)),
		slog.String("queue", c.Queue),
		slog.String("resultsExchange", c.ResultsExchange),
		slog.String("tenantsFile", c.TenantsFile),
		slog.String("metaBaseUrl", logging.RedactURL(c.MetaBaseURL)),
		slog.String("metaApiVersion", c.MetaAPIVersion),
		slog.Duration("metaTimeout", c.MetaTimeout),
		slog.String("adminAddr", c.AdminAddr),
		slog.Bool("adminAuth", c.AdminToken != ""),
		slog.String("metricsAddr", c.MetricsAddr),
		slog.String("logLevel", c.LogLevel.String()),
		slog.Int("prefetch", c.Prefetch),
		slog.Int("prefetchReduced", c.PrefetchReduced),
		slog.Int("backpressureHigh", c.BackpressureHigh),
		slog.Int("backpressureLow", c.BackpressureLow),
		slog.Duration("backpressureInterval", c.BackpressureInterval),
		slog.Duration("shutdownTimeout", c.ShutdownTimeout),
		slog.Duration("tenantsWatch", c.TenantsWatch),
		slog.Int("shards", c.Shards),
		slog.Int("tenants", len(c.Tenants)),
	)
}

func redactSecret(s string) string {
	if s == "" {
		return "(not set)"
	}
	return "****"
}

// configError is the one error type of this package: a one-line message
// that matches ErrConfig and keeps its cause for errors.Is (fs.ErrNotExist, ...).
type configError struct {
	msg   string
	cause error
}

func (e *configError) Error() string        { return e.msg }
func (e *configError) Is(target error) bool { return target == ErrConfig }
func (e *configError) Unwrap() error        { return e.cause }

// newError formats a configError. Messages are built from %q-quoted values
// and single-line causes; the replacement is a last guard for the one-line rule.
func newError(cause error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	msg = strings.NewReplacer("\r\n", "; ", "\n", "; ", "\r", "; ").Replace(msg)
	return &configError{msg: msg, cause: cause}
}
