package config_test

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
)

// Secret values the tests plant; none may ever show up in an error.
const (
	envToken    = "EAAGenvSECRETtoken123"
	fileToken   = "EAAGfileSECRETtoken456"
	amqpSecret  = "amqpS3cretPw"
	adminSecret = "adminS3cretTok"
)

var secrets = []string{envToken, fileToken, amqpSecret, adminSecret}

const minimalTenants = `tenants:
  - id: acme
    phone_number_id: "106540352242922"
    access_token_env: ACME_WA_TOKEN
`

// env is a fake environment for getenv.
type env map[string]string

func (e env) get(k string) string { return e[k] }

func writeFile(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	require.NoError(tb, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// baseEnv is an environment with a valid tenants file and its token.
func baseEnv(tb testing.TB) env {
	tb.Helper()
	path := writeFile(tb, tb.TempDir(), "tenants.yaml", minimalTenants)
	return env{"TENANTS_FILE": path, "ACME_WA_TOKEN": envToken}
}

// assertOneLineNoSecret checks the rules every config error follows.
func assertOneLineNoSecret(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	assert.ErrorIs(t, err, config.ErrConfig)
	msg := err.Error()
	assert.NotContains(t, msg, "\n")
	assert.NotContains(t, msg, "\r")
	for _, s := range secrets {
		assert.NotContains(t, msg, s)
	}
}

func TestLoad(t *testing.T) {
	t.Run("AppliesDocumentedDefaults", func(t *testing.T) {
		e := baseEnv(t)
		c, err := config.Load(e.get, nil, io.Discard)
		require.NoError(t, err)

		assert.Equal(t, "amqp://guest:guest@127.0.0.1:5672/", c.AMQPURL)
		assert.Equal(t, "whatsapp.outbound", c.Queue)
		assert.Equal(t, "whatsapp.results", c.ResultsExchange)
		assert.Equal(t, e["TENANTS_FILE"], c.TenantsFile)
		assert.Equal(t, "https://graph.facebook.com", c.MetaBaseURL)
		assert.Equal(t, "v23.0", c.MetaAPIVersion)
		assert.Equal(t, 10*time.Second, c.MetaTimeout)
		assert.Equal(t, "127.0.0.1:8081", c.AdminAddr)
		assert.Empty(t, c.AdminToken)
		assert.Equal(t, slog.LevelInfo, c.LogLevel)
		assert.Equal(t, 10, c.Prefetch)
		assert.Equal(t, 5, c.PrefetchReduced)
		assert.Equal(t, 1000, c.BackpressureHigh)
		assert.Equal(t, 100, c.BackpressureLow)
		assert.Equal(t, 30*time.Second, c.BackpressureInterval)
		assert.Equal(t, 25*time.Second, c.ShutdownTimeout)
		require.Len(t, c.Tenants, 1)
		assert.Equal(t, config.Tenant{
			ID:             "acme",
			PhoneNumberID:  "106540352242922",
			AccessTokenEnv: "ACME_WA_TOKEN",
			RateLimit:      config.RateLimit{PerMinute: 80, Burst: 80},
			Breaker:        config.Breaker{FailureThreshold: 5, OpenFor: 60 * time.Second},
			MaxAttempts:    10,
			MaxAge:         24 * time.Hour,
			MaxInFlight:    1024,
		}, c.Tenants[0])
		assert.True(t, c.AdminEnabled())
	})

	t.Run("DefaultTenantsFileIsTenantsYAML", func(t *testing.T) {
		_, err := config.Load(env{}.get, nil, io.Discard)
		assertOneLineNoSecret(t, err)
		assert.True(t, strings.HasPrefix(err.Error(), "tenants.yaml: cannot read file: "), err.Error())
	})

	t.Run("ReadsEverySettingFromEnvironment", func(t *testing.T) {
		e := baseEnv(t)
		for k, v := range map[string]string{
			"AMQP_URL":              "amqps://user:" + amqpSecret + "@rabbit.example:5671/prod",
			"AMQP_QUEUE":            "jobs",
			"RESULTS_EXCHANGE":      "results",
			"META_BASE_URL":         "http://127.0.0.1:9999",
			"META_API_VERSION":      "v19.0",
			"META_TIMEOUT":          "3s",
			"ADMIN_ADDR":            "0.0.0.0:9090",
			"ADMIN_TOKEN":           adminSecret,
			"LOG_LEVEL":             "DEBUG",
			"PREFETCH":              "20",
			"PREFETCH_REDUCED":      "2",
			"BACKPRESSURE_HIGH":     "50",
			"BACKPRESSURE_LOW":      "0",
			"BACKPRESSURE_INTERVAL": "1m",
			"SHUTDOWN_TIMEOUT":      "5s",
		} {
			e[k] = v
		}
		c, err := config.Load(e.get, nil, io.Discard)
		require.NoError(t, err)
		assert.Equal(t, "amqps://user:"+amqpSecret+"@rabbit.example:5671/prod", c.AMQPURL)
		assert.Equal(t, "jobs", c.Queue)
		assert.Equal(t, "results", c.ResultsExchange)
		assert.Equal(t, "http://127.0.0.1:9999", c.MetaBaseURL)
		assert.Equal(t, "v19.0", c.MetaAPIVersion)
		assert.Equal(t, 3*time.Second, c.MetaTimeout)
		assert.Equal(t, "0.0.0.0:9090", c.AdminAddr)
		assert.Equal(t, adminSecret, c.AdminToken)
		assert.Equal(t, slog.LevelDebug, c.LogLevel)
		assert.Equal(t, 20, c.Prefetch)
		assert.Equal(t, 2, c.PrefetchReduced)
		assert.Equal(t, 50, c.BackpressureHigh)
		assert.Equal(t, 0, c.BackpressureLow)
		assert.Equal(t, time.Minute, c.BackpressureInterval)
		assert.Equal(t, 5*time.Second, c.ShutdownTimeout)
		assert.Equal(t, amqpSecret, c.AMQPPassword())
	})

	t.Run("ReadsEverySettingFromFlags", func(t *testing.T) {
		e := baseEnv(t)
		c, err := config.Load(e.get, []string{
			"--amqp-url", "amqp://u:p@h:1/",
			"--amqp-queue", "q",
			"--results-exchange", "r",
			"--tenants-file", e["TENANTS_FILE"],
			"--meta-base-url", "https://meta.test",
			"--meta-api-version", "v1.2",
			"--meta-timeout", "1s",
			"--admin-addr", "localhost:0",
			"--admin-token", "t",
			"--log-level", "warn",
			"--prefetch", "3",
			"--prefetch-reduced", "3",
			"--backpressure-high", "9",
			"--backpressure-low", "8",
			"--backpressure-interval", "2s",
			"--shutdown-timeout=4s",
			"--shards", "7",
			"--tenants-watch", "off",
		}, io.Discard)
		require.NoError(t, err)
		assert.Equal(t, config.Config{
			Shards:               7,
			AMQPURL:              "amqp://u:p@h:1/",
			Queue:                "q",
			ResultsExchange:      "r",
			TenantsFile:          e["TENANTS_FILE"],
			MetaBaseURL:          "https://meta.test",
			MetaAPIVersion:       "v1.2",
			MetaTimeout:          time.Second,
			AdminAddr:            "localhost:0",
			AdminToken:           "t",
			LogLevel:             slog.LevelWarn,
			Prefetch:             3,
			PrefetchReduced:      3,
			BackpressureHigh:     9,
			BackpressureLow:      8,
			BackpressureInterval: 2 * time.Second,
			ShutdownTimeout:      4 * time.Second,
			Tenants:              c.Tenants,
			TenantsHash:          c.TenantsHash,
		}, c)
	})

	t.Run("FlagWinsOverEnvironmentWhichWinsOverDefault", func(t *testing.T) {
		tests := []struct {
			name string
			env  string
			args []string
			want int
		}{
			{"DefaultOnly", "", nil, 10},
			{"EnvOverDefault", "20", nil, 20},
			{"FlagOverEnv", "20", []string{"--prefetch", "30"}, 30},
			{"FlagOverDefault", "", []string{"-prefetch=40"}, 40},
			{"BlankEnvCountsAsUnset", "  ", nil, 10},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := baseEnv(t)
				e["PREFETCH"] = tt.env
				c, err := config.Load(e.get, tt.args, io.Discard)
				require.NoError(t, err)
				assert.Equal(t, tt.want, c.Prefetch)
			})
		}
	})

	t.Run("FlagTenantsFileWinsOverEnvironment", func(t *testing.T) {
		e := baseEnv(t)
		other := writeFile(t, t.TempDir(), "other.yaml", strings.ReplaceAll(minimalTenants, "acme", "globex"))
		c, err := config.Load(e.get, []string{"--tenants-file", other}, io.Discard)
		require.NoError(t, err)
		_, ok := c.Tenant("globex")
		assert.True(t, ok)
	})

	t.Run("AdminAddrOffDisablesListener", func(t *testing.T) {
		for _, args := range [][]string{{"--admin-addr", "off"}, {"--admin-addr", ""}} {
			e := baseEnv(t)
			e["ADMIN_ADDR"] = "0.0.0.0:8081" // would need a token, but the flag wins
			c, err := config.Load(e.get, args, io.Discard)
			require.NoError(t, err)
			assert.Empty(t, c.AdminAddr)
			assert.False(t, c.AdminEnabled())
		}
	})
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		env  env
		args []string
		want string // the exact message
	}{
		{"AMQPURLWithHTTPScheme", env{"AMQP_URL": "http://u:" + amqpSecret + "@h/"}, nil,
			`AMQP_URL: scheme must be amqp or amqps (got "http")`},
		{"AMQPURLFromFlagNamesFlag", nil, []string{"--amqp-url", "https://h/"},
			`--amqp-url: scheme must be amqp or amqps (got "https")`},
		{"AMQPURLUnparseableHidesPassword", env{"AMQP_URL": "amqp://u:" + amqpSecret + "/x@h/"}, nil,
			`AMQP_URL: is not a valid URL; use amqp://user:password@host:5672/vhost and percent-encode special characters of the password (/ is %2F, @ is %40)`},
		{"AMQPURLWithoutHost", env{"AMQP_URL": "amqp://u:" + amqpSecret + "@/vh"}, nil,
			`AMQP_URL: has no host: amqp://u:****@/vh`},
		{"AMQPURLWithWhitespace", env{"AMQP_URL": "amqp://u:a b@h/"}, nil,
			`AMQP_URL: must not contain whitespace; percent-encode it (space is %20)`},
		{"QueueReservedName", env{"AMQP_QUEUE": "amq.jobs"}, nil,
			`AMQP_QUEUE: must not start with amq., which RabbitMQ reserves (got "amq.jobs")`},
		{"QueueTooLong", env{"AMQP_QUEUE": strings.Repeat("q", 201)}, nil,
			`AMQP_QUEUE: must be at most 200 bytes long (got 201)`},
		{"ResultsExchangeReservedName", env{"RESULTS_EXCHANGE": "amq.topic"}, nil,
			`RESULTS_EXCHANGE: must not start with amq., which RabbitMQ reserves (got "amq.topic")`},
		{"EmptyTenantsFileFlag", nil, []string{"--tenants-file", ""},
			`--tenants-file: must name the tenants file`},
		{"MetaBaseURLWithFTPScheme", env{"META_BASE_URL": "ftp://graph"}, nil,
			`META_BASE_URL: scheme must be http or https (got "ftp")`},
		{"MetaBaseURLWithoutHost", env{"META_BASE_URL": "https://"}, nil,
			`META_BASE_URL: has no host: https://`},
		{"MetaAPIVersionWithoutV", env{"META_API_VERSION": "23.0"}, nil,
			`META_API_VERSION: must look like v23.0 (got "23.0")`},
		{"MetaAPIVersionWithoutMinor", env{"META_API_VERSION": "v23"}, nil,
			`META_API_VERSION: must look like v23.0 (got "v23")`},
		{"MetaTimeoutNotADuration", env{"META_TIMEOUT": "10"}, nil,
			`META_TIMEOUT: must be a Go duration like 10s, 1m30s or 2h (got "10")`},
		{"MetaTimeoutZero", env{"META_TIMEOUT": "0s"}, nil,
			`META_TIMEOUT: must be > 0 (got 0s)`},
		{"AdminAddrWithoutPort", env{"ADMIN_ADDR": "127.0.0.1"}, nil,
			`ADMIN_ADDR: must be host:port like 127.0.0.1:8081, or off (got "127.0.0.1")`},
		{"AdminAddrBadPort", env{"ADMIN_ADDR": "127.0.0.1:http"}, nil,
			`ADMIN_ADDR: port must be a number from 0 to 65535 (got "http")`},
		{"AdminAddrPublicWithoutToken", env{"ADMIN_ADDR": "0.0.0.0:8081"}, nil,
			`ADMIN_TOKEN is required because ADMIN_ADDR 0.0.0.0:8081 listens beyond loopback; set ADMIN_TOKEN, or bind ADMIN_ADDR to 127.0.0.1, or set it to off`},
		{"LogLevelUnknown", env{"LOG_LEVEL": "loud"}, nil,
			`LOG_LEVEL: must be debug, info, warn or error (got "loud")`},
		{"PrefetchNotANumber", env{"PREFETCH": "ten"}, nil,
			`PREFETCH: must be a whole number from 1 to 65535 (got "ten")`},
		{"PrefetchFromFlagNamesFlag", nil, []string{"--prefetch", "0"},
			`--prefetch: must be from 1 to 65535 (got 0)`},
		{"PrefetchAboveAMQPLimit", env{"PREFETCH": "70000"}, nil,
			`PREFETCH: must be from 1 to 65535 (got 70000)`},
		{"PrefetchReducedZero", env{"PREFETCH_REDUCED": "0"}, nil,
			`PREFETCH_REDUCED: must be from 1 to 65535 (got 0)`},
		{"PrefetchReducedAbovePrefetch", env{"PREFETCH_REDUCED": "11"}, nil,
			`PREFETCH_REDUCED must be between 1 and PREFETCH (10) (got 11); lower PREFETCH_REDUCED or raise PREFETCH`},
		{"BackpressureHighZero", env{"BACKPRESSURE_HIGH": "0"}, nil,
			`BACKPRESSURE_HIGH: must be >= 1 (got 0)`},
		{"BackpressureLowNegative", env{"BACKPRESSURE_LOW": "-1"}, nil,
			`BACKPRESSURE_LOW: must be >= 0 (got -1)`},
		{"BackpressureLowNotBelowHigh", env{"BACKPRESSURE_LOW": "1000"}, nil,
			`BACKPRESSURE_LOW must be below BACKPRESSURE_HIGH (got low 1000, high 1000)`},
		{"BackpressureIntervalNegative", env{"BACKPRESSURE_INTERVAL": "-30s"}, nil,
			`BACKPRESSURE_INTERVAL: must be > 0 (got -30s)`},
		{"ShutdownTimeoutZero", nil, []string{"--shutdown-timeout", "0"},
			`--shutdown-timeout: must be > 0 (got 0s)`},
		{"UnknownFlag", nil, []string{"--prefech", "3"},
			`wadispatch run: flag provided but not defined: -prefech (see wadispatch run --help)`},
		{"FlagWithoutValue", nil, []string{"--prefetch"},
			`wadispatch run: flag needs an argument: -prefetch (see wadispatch run --help)`},
		{"PositionalArgument", nil, []string{"extra"},
			`wadispatch run: unexpected argument "extra"; settings are --flags or environment variables (see wadispatch run --help)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := baseEnv(t)
			e["AMQP_URL"] = "amqp://guest:" + amqpSecret + "@127.0.0.1:5672/"
			for k, v := range tt.env {
				e[k] = v
			}
			var out bytes.Buffer
			_, err := config.Load(e.get, tt.args, &out)
			assertOneLineNoSecret(t, err)
			assert.Equal(t, tt.want, err.Error())
			assert.Empty(t, out.String(), "errors print nothing; the caller prints the one line")
		})
	}
}

func TestAdminTokenRequirement(t *testing.T) {
	tests := []struct {
		addr      string
		needToken bool
	}{
		{"127.0.0.1:8081", false},
		{"127.9.8.7:8081", false},
		{"[::1]:8081", false},
		{"localhost:8081", false},
		{"LOCALHOST:8081", false},
		{"0.0.0.0:8081", true},
		{":8081", true},
		{"[::]:8081", true},
		{"10.1.2.3:8081", true},
		{"admin.example.com:8081", true},
	}
	for _, tt := range tests {
		e := baseEnv(t)
		e["ADMIN_ADDR"] = tt.addr
		_, err := config.Load(e.get, nil, io.Discard)
		assert.Equal(t, tt.needToken, config.CheckAdminToken(tt.addr, "") != nil, tt.addr)
		assert.NoError(t, config.CheckAdminToken(tt.addr, adminSecret), tt.addr)
		if tt.needToken {
			assertOneLineNoSecret(t, err)
			assert.ErrorIs(t, err, config.ErrConfig, tt.addr)
			assert.ErrorIs(t, err, config.ErrAdminTokenRequired, tt.addr)
			assert.Equal(t, "ADMIN_TOKEN is required because ADMIN_ADDR "+tt.addr+" listens beyond loopback; "+
				"set ADMIN_TOKEN, or bind ADMIN_ADDR to 127.0.0.1, or set it to off", err.Error())
			e["ADMIN_TOKEN"] = adminSecret
			_, err = config.Load(e.get, nil, io.Discard)
		}
		assert.NoError(t, err, tt.addr)
	}
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	e := env{"ADMIN_TOKEN": adminSecret, "AMQP_URL": "amqp://u:" + amqpSecret + "@h/"}
	for _, arg := range []string{"--help", "-h"} {
		out.Reset()
		_, err := config.Load(e.get, []string{arg}, &out)
		require.ErrorIs(t, err, flag.ErrHelp)
		assert.NotErrorIs(t, err, config.ErrConfig, "help is not a config error: exit 0")

		text := out.String()
		assert.Contains(t, text, "Usage: wadispatch run [flags]")
		for _, v := range []string{
			"AMQP_URL", "AMQP_QUEUE", "RESULTS_EXCHANGE", "TENANTS_FILE", "META_BASE_URL",
			"META_API_VERSION", "META_TIMEOUT", "ADMIN_ADDR", "ADMIN_TOKEN", "LOG_LEVEL",
			"PREFETCH", "PREFETCH_REDUCED", "BACKPRESSURE_HIGH", "BACKPRESSURE_LOW",
			"BACKPRESSURE_INTERVAL", "SHUTDOWN_TIMEOUT",
		} {
			assert.Contains(t, text, "env "+v+",", "help names the variable")
			flagName := "--" + strings.ReplaceAll(strings.ToLower(v), "_", "-")
			assert.Contains(t, text, flagName+" ", "help names the flag")
		}
		for _, def := range []string{`"whatsapp.outbound"`, `"v23.0"`, `"10s"`, `"127.0.0.1:8081"`, `"25s"`, `"1000"`} {
			assert.Contains(t, text, "default "+def)
		}
		assert.NotContains(t, text, adminSecret, "help shows defaults, not the environment")
		assert.NotContains(t, text, amqpSecret)
	}
}

func TestValidate(t *testing.T) {
	valid := func() config.Config {
		return config.Config{
			AMQPURL: "amqp://guest:guest@127.0.0.1:5672/", Queue: "q", ResultsExchange: "r",
			TenantsFile: "tenants.yaml", MetaBaseURL: "https://graph.facebook.com", MetaAPIVersion: "v23.0",
			MetaTimeout: 10 * time.Second, AdminAddr: "127.0.0.1:8081", LogLevel: slog.LevelInfo,
			Prefetch: 10, PrefetchReduced: 5, BackpressureHigh: 1000, BackpressureLow: 100,
			BackpressureInterval: 30 * time.Second, ShutdownTimeout: 25 * time.Second,
			Tenants: []config.Tenant{{
				ID: "acme", PhoneNumberID: "1", AccessTokenEnv: "T",
				RateLimit:   config.RateLimit{PerMinute: 80, Burst: 80},
				Breaker:     config.Breaker{FailureThreshold: 5, OpenFor: time.Minute},
				MaxAttempts: 10, MaxAge: 24 * time.Hour, MaxInFlight: 1024,
			}},
		}
	}
	t.Run("AcceptsValidConfig", func(t *testing.T) {
		assert.NoError(t, valid().Validate())
	})
	t.Run("AcceptsAdminOff", func(t *testing.T) {
		c := valid()
		c.AdminAddr = "off"
		assert.NoError(t, c.Validate())
		assert.False(t, c.AdminEnabled())
	})
	tests := []struct {
		name   string
		change func(*config.Config)
		want   string
	}{
		{"AMQPURLScheme", func(c *config.Config) { c.AMQPURL = "http://u:" + amqpSecret + "@h/" },
			`AMQP_URL: scheme must be amqp or amqps (got "http")`},
		{"EmptyAMQPURL", func(c *config.Config) { c.AMQPURL = "" },
			`AMQP_URL: must be set, like amqp://user:password@host:5672/vhost`},
		{"EmptyQueue", func(c *config.Config) { c.Queue = "" }, `AMQP_QUEUE: must not be empty`},
		{"UnknownLogLevel", func(c *config.Config) { c.LogLevel = slog.Level(3) },
			`LOG_LEVEL: must be debug, info, warn or error (got INFO+3)`},
		{"PrefetchReducedAbovePrefetch", func(c *config.Config) { c.PrefetchReduced = 11 },
			`PREFETCH_REDUCED must be between 1 and PREFETCH (10) (got 11); lower PREFETCH_REDUCED or raise PREFETCH`},
		{"NoTenants", func(c *config.Config) { c.Tenants = nil },
			`tenants.yaml: tenants: no tenant configured; add at least one under tenants:`},
		{"TenantRateNegative", func(c *config.Config) { c.Tenants[0].RateLimit.PerMinute = -5 },
			`tenants.yaml: tenant "acme": rate_limit.per_minute must be > 0 (got -5)`},
		{"TenantMaxInFlightUnset", func(c *config.Config) { c.Tenants[0].MaxInFlight = 0 },
			`tenants.yaml: tenant "acme": max_in_flight must be >= 1 (got 0)`},
		{"TenantWithoutTokenSource", func(c *config.Config) { c.Tenants[0].AccessTokenEnv = "" },
			`tenants.yaml: tenant "acme": access_token_env or access_token_file is required; set exactly one`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.change(&c)
			err := c.Validate()
			assertOneLineNoSecret(t, err)
			assert.Equal(t, tt.want, err.Error())
		})
	}
}

func TestTenantLookup(t *testing.T) {
	c := config.Config{Tenants: []config.Tenant{{ID: "acme"}, {ID: "globex", PhoneNumberID: "2"}}}
	got, ok := c.Tenant("globex")
	require.True(t, ok)
	assert.Equal(t, "2", got.PhoneNumberID)
	_, ok = c.Tenant("initech")
	assert.False(t, ok)
}

func TestRedacted(t *testing.T) {
	e := baseEnv(t)
	e["AMQP_URL"] = "amqps://svc:" + amqpSecret + "@rabbit:5671/prod"
	e["ADMIN_TOKEN"] = adminSecret
	c, err := config.Load(e.get, nil, io.Discard)
	require.NoError(t, err)

	t.Run("SummaryHidesPasswordAndToken", func(t *testing.T) {
		s := c.Redacted()
		assert.Contains(t, s, "amqps://svc:****@rabbit:5671/prod")
		assert.Contains(t, s, "1 (acme)")
		assert.NotContains(t, s, amqpSecret)
		assert.NotContains(t, s, adminSecret)
	})
	t.Run("LogValueHidesPasswordAndToken", func(t *testing.T) {
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("config_loaded", "config", c)
		assert.Contains(t, buf.String(), "amqps://svc:****@rabbit:5671/prod")
		assert.NotContains(t, buf.String(), amqpSecret)
		assert.NotContains(t, buf.String(), adminSecret)
	})
	t.Run("UnparseableURLStillHidesPassword", func(t *testing.T) {
		c := config.Config{AMQPURL: "amqp://u:" + amqpSecret + "/x@h/"}
		assert.NotContains(t, c.Redacted(), amqpSecret)
		assert.Contains(t, c.Redacted(), "amqp://u:****@h/")
	})
}

func TestErrorsMatchErrConfigAndKeepCause(t *testing.T) {
	_, err := config.LoadTenants(filepath.Join(t.TempDir(), "missing.yaml"), env{}.get)
	assert.ErrorIs(t, err, config.ErrConfig)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.False(t, errors.Is(err, flag.ErrHelp))
}
