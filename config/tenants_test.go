package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
)

// longToken looks like a real Meta token pasted where a name belongs.
var longToken = "EAAG" + strings.Repeat("ZxQ9", 40)

func TestLoadTenantsErrors(t *testing.T) {
	const acme = `tenants:
  - id: acme
    phone_number_id: "106540352242922"
    access_token_env: ACME_WA_TOKEN
`
	tests := []struct {
		name    string
		content string // "" with noFile means the file does not exist
		noFile  bool
		want    string // {file} and {dir} stand for the file's path and directory
	}{
		// Reading and parsing.
		{name: "MissingFile", noFile: true,
			want: `{file}: cannot read file: no such file or directory; point TENANTS_FILE or --tenants-file at the tenants file`},
		{name: "EmptyFile", content: "",
			want: `{file}: file is empty; it needs a tenants list`},
		{name: "InvalidYAML", content: "tenants:\n - id: a\n  x: [\n",
			want: `{file}: line 1: invalid YAML: did not find expected '-' indicator`},
		{name: "TwoDocuments", content: acme + "---\n" + acme,
			want: `{file}: holds more than one YAML document (---); keep one`},
		{name: "UnknownTopLevelKey", content: "tenant:\n  - id: acme\n",
			want: `{file}: line 1: unknown field "tenant" in the top level; valid fields: defaults, tenants`},
		{name: "UnknownTenantKeyNamesLineAndTenant", content: acme + "  - id: globex\n    phone_number_id: \"2\"\n    access_token_env: GLOBEX\n    access_token: abc\n",
			want: `{file}: line 8: tenant "globex": unknown field "access_token" in a tenant; valid fields: id, phone_number_id, access_token_env, access_token_file, rate_limit, breaker, max_attempts, max_age, max_in_flight`},
		{name: "UnknownKeyOfTenantWithoutValidID", content: "tenants:\n  - phone: 1\n",
			want: `{file}: line 2: tenants[0]: unknown field "phone" in a tenant; valid fields: id, phone_number_id, access_token_env, access_token_file, rate_limit, breaker, max_attempts, max_age, max_in_flight`},
		{name: "UnknownDefaultsKey", content: "defaults:\n  retries: 3\n" + acme,
			want: `{file}: line 2: defaults: unknown field "retries" in defaults; valid fields: rate_limit, breaker, max_attempts, max_age, max_in_flight`},
		{name: "UnknownRateLimitKeyInDefaults", content: "defaults:\n  rate_limit: { per_minute: 1, per_second: 2 }\n" + acme,
			want: `{file}: line 2: defaults: unknown field "per_second" in rate_limit; valid fields: per_minute, burst`},
		{name: "UnknownBreakerKeyInTenant", content: acme + "    breaker:\n      threshold: 3\n",
			want: `{file}: line 6: tenant "acme": unknown field "threshold" in breaker; valid fields: failure_threshold, open_for`},
		{name: "WordForWholeNumber", content: acme + "    max_attempts: many\n",
			want: `{file}: line 5: tenant "acme": max_attempts: expected a whole number, got "many"`},
		{name: "CountsFurtherProblems", content: acme + "    max_attempts: many\n    max_age: 1d\n",
			want: `{file}: line 5: tenant "acme": max_attempts: expected a whole number, got "many" (and 1 more)`},
		{name: "FractionForMaxAttempts", content: acme + "    max_attempts: 2.5\n",
			want: `{file}: line 5: tenant "acme": max_attempts: expected a whole number, got "2.5"`},
		{name: "FractionForBurst", content: acme + "    rate_limit: { per_minute: 60, burst: 0.5 }\n",
			want: `{file}: line 5: tenant "acme": rate_limit.burst: expected a whole number, got "0.5"`},
		{name: "FractionForFailureThresholdInDefaults", content: "defaults:\n  breaker: { failure_threshold: 4.9 }\n" + acme,
			want: `{file}: line 2: defaults: breaker.failure_threshold: expected a whole number, got "4.9"`},
		{name: "WordForRate", content: acme + "    rate_limit: { per_minute: fast, burst: 2 }\n",
			want: `{file}: line 5: tenant "acme": rate_limit.per_minute: expected a number, got "fast"`},
		{name: "FractionForMaxInFlight", content: acme + "    max_in_flight: 2.5\n",
			want: `{file}: line 5: tenant "acme": max_in_flight: expected a whole number, got "2.5"`},
		{name: "FractionBelowOneIsNotReadAsZero", content: "defaults:\n  max_in_flight: 0.5\n" + acme,
			want: `{file}: line 2: defaults: max_in_flight: expected a whole number, got "0.5"`},
		{name: "LongFractionIsCutAsYAMLCutsValues", content: acme + "    max_in_flight: 1024.000001\n",
			want: `{file}: line 5: tenant "acme": max_in_flight: expected a whole number, got "1024.00..."`},
		{name: "WordForMaxInFlight", content: "defaults:\n  max_in_flight: lots\n" + acme,
			want: `{file}: line 2: defaults: max_in_flight: expected a whole number, got "lots"`},
		{name: "QuotedNumberForMaxInFlight", content: acme + "    max_in_flight: \"64\"\n",
			want: `{file}: line 5: tenant "acme": max_in_flight: expected a whole number, got "64"`},
		{name: "MappingForMaxInFlight", content: acme + "    max_in_flight: { max: 3 }\n",
			want: `{file}: line 5: tenant "acme": max_in_flight: expected a whole number, got a mapping`},
		{name: "DaysAreNoGoDuration", content: acme + "    max_age: 1d\n",
			want: `{file}: line 5: tenant "acme": max_age: expected a Go duration like 90s, 5m or 24h, got "1d"`},
		{name: "BareNumberIsNoDuration", content: "defaults:\n  breaker: { open_for: 60 }\n" + acme,
			want: `{file}: line 2: defaults: breaker.open_for: expected a Go duration like 90s, 5m or 24h, got "60"`},
		{name: "TenantsNotAList", content: "tenants: 5\n",
			want: `{file}: line 1: tenants: expected a list of tenants, got "5"`},
		{name: "ListForString", content: "tenants:\n  - id: [a, b]\n",
			want: `{file}: line 2: tenants[0]: id: expected a string, got a list`},
		{name: "DuplicateKey", content: acme + "    id: again\n",
			want: `{file}: line 5: mapping key "id" already defined at line 2`},

		// Tenants and their ids.
		{name: "NoTenants", content: "tenants: []\n",
			want: `{file}: tenants: no tenant configured; add at least one under tenants:`},
		{name: "OnlyDefaults", content: "defaults: { max_attempts: 3 }\n",
			want: `{file}: tenants: no tenant configured; add at least one under tenants:`},
		{name: "MissingID", content: "tenants:\n  - phone_number_id: \"1\"\n    access_token_env: ACME_WA_TOKEN\n",
			want: `{file}: tenants[0]: id is required`},
		{name: "InvalidID", content: strings.Replace(acme, "id: acme", "id: \"acme corp\"", 1),
			want: `{file}: tenants[0]: id "acme corp" must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit`},
		{name: "IDTooLong", content: strings.Replace(acme, "id: acme", "id: "+strings.Repeat("a", 65), 1),
			want: `{file}: tenants[0]: id "` + strings.Repeat("a", 65) + `" must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit`},
		{name: "DuplicateID", content: acme + strings.Replace(acme, "acme", "globex", 1)[len("tenants:\n"):] + acme[len("tenants:\n"):],
			want: `{file}: tenants[2]: id "acme" is a duplicate of tenants[0]; tenant ids must be unique`},

		// A tenant's fields.
		{name: "MissingPhoneNumberID", content: "tenants:\n  - id: acme\n    access_token_env: ACME_WA_TOKEN\n",
			want: `{file}: tenant "acme": phone_number_id is required; set it to the tenant's Meta phone number ID (digits, quoted)`},
		{name: "PhoneNumberIDNotDigits", content: strings.Replace(acme, `"106540352242922"`, `"+1 555 0100"`, 1),
			want: `{file}: tenant "acme": phone_number_id must be digits only (got "+1 555 0100")`},
		{name: "BothTokenSources", content: acme + "    access_token_file: /run/secrets/acme\n",
			want: `{file}: tenant "acme": set only one of access_token_env and access_token_file (both are set)`},
		{name: "NoTokenSource", content: "tenants:\n  - id: acme\n    phone_number_id: \"1\"\n",
			want: `{file}: tenant "acme": access_token_env or access_token_file is required; set exactly one`},
		{name: "TokenEnvUnset", content: strings.Replace(acme, "ACME_WA_TOKEN", "ACME_UNSET_TOKEN", 1),
			want: `{file}: tenant "acme": access_token_env ACME_UNSET_TOKEN is not set; set it to the tenant's access token`},
		{name: "TokenEnvBlank", content: strings.Replace(acme, "ACME_WA_TOKEN", "BLANK_TOKEN", 1),
			want: `{file}: tenant "acme": access_token_env BLANK_TOKEN is not set; set it to the tenant's access token`},
		{name: "TokenPastedAsEnvName", content: strings.Replace(acme, "ACME_WA_TOKEN", longToken, 1),
			want: `{file}: tenant "acme": access_token_env must be an environment variable name like ACME_WA_TOKEN (value not shown, in case it is the token itself)`},
		{name: "TokenFileMissing", content: strings.Replace(acme, "access_token_env: ACME_WA_TOKEN", "access_token_file: missing.token", 1),
			want: `{file}: tenant "acme": access_token_file {dir}/missing.token cannot be read: no such file or directory`},
		{name: "TokenFileEmpty", content: strings.Replace(acme, "access_token_env: ACME_WA_TOKEN", "access_token_file: empty.token", 1),
			want: `{file}: tenant "acme": access_token_file {dir}/empty.token is empty; write the tenant's access token into it`},
		{name: "TokenFileIsDirectory", content: strings.Replace(acme, "access_token_env: ACME_WA_TOKEN", "access_token_file: {dir}", 1),
			want: `{file}: tenant "acme": access_token_file {dir} cannot be read: is a directory`},
		{name: "TokenPastedAsFileName", content: strings.Replace(acme, "access_token_env: ACME_WA_TOKEN", "access_token_file: "+longToken, 1),
			want: `{file}: tenant "acme": access_token_file must be a path whose file name is at most 64 characters (value not shown, in case it is the token itself)`},

		// Limits, in defaults and in tenants.
		{name: "NegativeRate", content: acme + "    rate_limit: { per_minute: -5 }\n",
			want: `{file}: tenant "acme": rate_limit.per_minute must be > 0 (got -5)`},
		{name: "ZeroRate", content: acme + "    rate_limit: { per_minute: 0 }\n",
			want: `{file}: tenant "acme": rate_limit.per_minute must be > 0 (got 0)`},
		{name: "NaNRate", content: acme + "    rate_limit: { per_minute: .nan }\n",
			want: `{file}: tenant "acme": rate_limit.per_minute must be > 0 (got NaN)`},
		{name: "InfiniteRate", content: acme + "    rate_limit: { per_minute: .inf }\n",
			want: `{file}: tenant "acme": rate_limit.per_minute must be > 0 (got +Inf)`},
		{name: "ZeroBurst", content: acme + "    rate_limit: { burst: 0 }\n",
			want: `{file}: tenant "acme": rate_limit.burst must be >= 1 (got 0)`},
		{name: "ZeroFailureThreshold", content: acme + "    breaker: { failure_threshold: 0 }\n",
			want: `{file}: tenant "acme": breaker.failure_threshold must be >= 1 (got 0)`},
		{name: "NegativeOpenFor", content: acme + "    breaker: { open_for: -1s }\n",
			want: `{file}: tenant "acme": breaker.open_for must be > 0 (got -1s)`},
		{name: "ZeroMaxAttempts", content: acme + "    max_attempts: 0\n",
			want: `{file}: tenant "acme": max_attempts must be >= 1 (got 0)`},
		{name: "ZeroMaxAge", content: acme + "    max_age: 0s\n",
			want: `{file}: tenant "acme": max_age must be > 0 (got 0s)`},
		{name: "ZeroMaxInFlight", content: acme + "    max_in_flight: 0\n",
			want: `{file}: tenant "acme": max_in_flight must be >= 1 (got 0)`},
		{name: "NegativeMaxInFlightInDefaults", content: "defaults:\n  max_in_flight: -3\n" + acme,
			want: `{file}: defaults: max_in_flight must be >= 1 (got -3)`},
		{name: "NegativeMaxInFlightOverridingValidDefaults", content: "defaults:\n  max_in_flight: 8\n" + acme + "    max_in_flight: -1\n",
			want: `{file}: tenant "acme": max_in_flight must be >= 1 (got -1)`},
		{name: "InvalidDefaults", content: "defaults:\n  rate_limit: { burst: 0 }\n" + acme,
			want: `{file}: defaults: rate_limit.burst must be >= 1 (got 0)`},
		{name: "InvalidDefaultsEvenWhenOverridden", content: "defaults:\n  max_age: -1h\n" + acme + "    max_age: 1h\n",
			want: `{file}: defaults: max_age must be > 0 (got -1h0m0s)`},
		{name: "FirstBadTenantAfterGoodOne", content: acme + "  - id: globex\n    phone_number_id: \"2\"\n    access_token_env: ACME_WA_TOKEN\n    max_attempts: -1\n",
			want: `{file}: tenant "globex": max_attempts must be >= 1 (got -1)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "tenants.yaml")
			if !tt.noFile {
				content := strings.ReplaceAll(tt.content, "{dir}", dir)
				writeFile(t, dir, "tenants.yaml", content)
			}
			writeFile(t, dir, "empty.token", " \n")
			getenv := env{"ACME_WA_TOKEN": envToken, "GLOBEX": envToken, "BLANK_TOKEN": "  "}.get

			_, err := config.LoadTenants(path, getenv)

			assertOneLineNoSecret(t, err)
			assert.NotContains(t, err.Error(), longToken[:20])
			want := strings.NewReplacer("{file}", path, "{dir}", dir).Replace(tt.want)
			assert.Equal(t, want, err.Error())
		})
	}
}

func TestLoadTenants(t *testing.T) {
	t.Run("OverridesDefaultsFieldByField", func(t *testing.T) {
		dir := t.TempDir()
		path := writeFile(t, dir, "tenants.yaml", `
defaults:
  rate_limit: { per_minute: 100 }     # burst stays at the built-in 80
  breaker: { open_for: 30s }          # failure_threshold stays at 5
  max_attempts: 7
tenants:
  - id: acme
    phone_number_id: "1"
    access_token_env: ACME_WA_TOKEN
  - id: globex
    phone_number_id: "2"
    access_token_env: ACME_WA_TOKEN
    rate_limit: { burst: 5 }
    breaker: { failure_threshold: 2 }
    max_age: 1h
  - id: initech
    phone_number_id: "3"
    access_token_env: ACME_WA_TOKEN
    rate_limit: { per_minute: 600, burst: 100 }
    breaker: { failure_threshold: 9, open_for: 2m }
    max_attempts: 1
    max_age: 90m
    max_in_flight: 300
`)
		tenants, err := config.LoadTenants(path, env{"ACME_WA_TOKEN": envToken}.get)
		require.NoError(t, err)
		require.Len(t, tenants, 3)

		assert.Equal(t, config.RateLimit{PerMinute: 100, Burst: 80}, tenants[0].RateLimit)
		assert.Equal(t, config.Breaker{FailureThreshold: 5, OpenFor: 30 * time.Second}, tenants[0].Breaker)
		assert.Equal(t, 7, tenants[0].MaxAttempts)
		assert.Equal(t, 24*time.Hour, tenants[0].MaxAge)

		assert.Equal(t, config.RateLimit{PerMinute: 100, Burst: 5}, tenants[1].RateLimit)
		assert.Equal(t, config.Breaker{FailureThreshold: 2, OpenFor: 30 * time.Second}, tenants[1].Breaker)
		assert.Equal(t, 7, tenants[1].MaxAttempts)
		assert.Equal(t, time.Hour, tenants[1].MaxAge)

		assert.Equal(t, config.RateLimit{PerMinute: 600, Burst: 100}, tenants[2].RateLimit)
		assert.Equal(t, config.Breaker{FailureThreshold: 9, OpenFor: 2 * time.Minute}, tenants[2].Breaker)
		assert.Equal(t, 1, tenants[2].MaxAttempts)
		assert.Equal(t, 90*time.Minute, tenants[2].MaxAge)

		assert.Equal(t, 1024, tenants[0].MaxInFlight, "the built-in max_in_flight")
		assert.Equal(t, 1024, tenants[1].MaxInFlight)
		assert.Equal(t, 300, tenants[2].MaxInFlight)
	})

	t.Run("MaxInFlightFromDefaultsAndPerTenant", func(t *testing.T) {
		dir := t.TempDir()
		path := writeFile(t, dir, "tenants.yaml", `
defaults:
  max_in_flight: 64
tenants:
  - { id: acme, phone_number_id: "1", access_token_env: ACME_WA_TOKEN }
  - { id: globex, phone_number_id: "2", access_token_env: ACME_WA_TOKEN, max_in_flight: 2000 }
  - { id: initech, phone_number_id: "3", access_token_env: ACME_WA_TOKEN, max_in_flight: 1 }
  - { id: hooli, phone_number_id: "4", access_token_env: ACME_WA_TOKEN, max_in_flight: 1e3 }
`)
		tenants, err := config.LoadTenants(path, env{"ACME_WA_TOKEN": envToken}.get)
		require.NoError(t, err)
		require.Len(t, tenants, 4)
		assert.Equal(t, 64, tenants[0].MaxInFlight, "from defaults")
		assert.Equal(t, 2000, tenants[1].MaxInFlight, "above the built-in default")
		assert.Equal(t, 1, tenants[2].MaxInFlight, "1 is the least")
		assert.Equal(t, 1000, tenants[3].MaxInFlight, "a whole number written as a float")
		assert.Equal(t, config.RateLimit{PerMinute: 80, Burst: 80}, tenants[1].RateLimit, "the rest stays built in")
		assert.Equal(t, 10, tenants[1].MaxAttempts)
	})

	t.Run("ReadsJSON", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, "globex.token", fileToken+"\n")
		path := writeFile(t, dir, "tenants.json", `{
  "defaults": {"rate_limit": {"per_minute": 60, "burst": 10}, "max_age": "12h"},
  "tenants": [
    {"id": "acme", "phone_number_id": 106540352242922, "access_token_env": "ACME_WA_TOKEN"},
    {"id": "globex", "phone_number_id": "209876543210123", "access_token_file": "globex.token",
     "breaker": {"open_for": "1m30s"}, "max_in_flight": 2048.0}
  ]
}`)
		tenants, err := config.LoadTenants(path, env{"ACME_WA_TOKEN": envToken}.get)
		require.NoError(t, err)
		require.Len(t, tenants, 2)
		assert.Equal(t, "106540352242922", tenants[0].PhoneNumberID, "an unquoted number is read as digits")
		assert.Equal(t, config.RateLimit{PerMinute: 60, Burst: 10}, tenants[0].RateLimit)
		assert.Equal(t, 12*time.Hour, tenants[0].MaxAge)
		assert.Equal(t, filepath.Join(dir, "globex.token"), tenants[1].AccessTokenFile)
		assert.Equal(t, config.Breaker{FailureThreshold: 5, OpenFor: 90 * time.Second}, tenants[1].Breaker)
		assert.Equal(t, config.DefaultMaxInFlight, tenants[0].MaxInFlight)
		assert.Equal(t, 2048, tenants[1].MaxInFlight)
	})

	t.Run("ResolvesRelativeTokenFileAgainstTenantsFileAndKeepsAbsolute", func(t *testing.T) {
		dir := t.TempDir()
		secrets := t.TempDir()
		writeFile(t, dir, "acme.token", fileToken)
		abs := writeFile(t, secrets, "globex", fileToken)
		path := writeFile(t, dir, "tenants.yaml", `tenants:
  - { id: acme, phone_number_id: "1", access_token_file: acme.token }
  - { id: globex, phone_number_id: "2", access_token_file: `+abs+` }
`)
		tenants, err := config.LoadTenants(path, env{}.get)
		require.NoError(t, err)
		assert.Equal(t, filepath.Join(dir, "acme.token"), tenants[0].AccessTokenFile)
		assert.Equal(t, abs, tenants[1].AccessTokenFile)
	})
}

func TestReadToken(t *testing.T) {
	t.Run("ReadsEnvironmentVariableTrimmed", func(t *testing.T) {
		tok, err := config.Tenant{AccessTokenEnv: "T"}.ReadToken(env{"T": " " + envToken + "\n"}.get)
		require.NoError(t, err)
		assert.Equal(t, envToken, tok)
	})
	t.Run("PicksUpRotatedFile", func(t *testing.T) {
		dir := t.TempDir()
		tenant := config.Tenant{AccessTokenFile: writeFile(t, dir, "tok", fileToken+"\n")}
		tok, err := tenant.ReadToken(env{}.get)
		require.NoError(t, err)
		assert.Equal(t, fileToken, tok)

		writeFile(t, dir, "tok", "rotated\n")
		tok, err = tenant.ReadToken(env{}.get)
		require.NoError(t, err)
		assert.Equal(t, "rotated", tok)
	})
	t.Run("MissingFileErrorWrapsNotExist", func(t *testing.T) {
		_, err := config.Tenant{AccessTokenFile: filepath.Join(t.TempDir(), "gone")}.ReadToken(env{}.get)
		assert.ErrorIs(t, err, os.ErrNotExist)
	})
}
