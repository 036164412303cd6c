package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckValidatesATenantsFileAsAStartWould(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "tenants.yaml")
	require.NoError(t, os.WriteFile(good, []byte("tenants:\n  - id: acme\n    phone_number_id: \"106540352242922\"\n    access_token_env: ACME_WA_TOKEN\n"), 0o600))
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("tenants:\n  - id: acme\n    phone_number_id: \"106540352242922\"\n    access_token_env: ACME_WA_TOKEN\n    rate_limit: {per_minute: -1}\n"), 0o600))
	env := func(k string) string {
		if k == "ACME_WA_TOKEN" {
			return "EAAtoken-s3cr3t"
		}
		return ""
	}
	check := func(getenv func(string) string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"check"}, args...), getenv, &out, &errb)
		return code, out.String(), errb.String()
	}

	code, out, _ := check(env, "--tenants-file", good)
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, "ok, 1 tenants, tokens checked (sha256 ")

	code, _, errs := check(func(string) string { return "" }, "--tenants-file", good)
	assert.Equal(t, exitConfig, code, "the token is missing")
	assert.Contains(t, errs, `tenant "acme": access_token_env ACME_WA_TOKEN is not set`)
	assert.Equal(t, 1, strings.Count(errs, "\n"), "one line")

	code, out, _ = check(func(string) string { return "" }, "--tenants-file", good, "--skip-tokens")
	assert.Equal(t, exitOK, code, "CI without the secrets")
	assert.Contains(t, out, "tokens not checked")

	code, _, errs = check(env, "--tenants-file", bad)
	assert.Equal(t, exitConfig, code)
	assert.Contains(t, errs, "bad.yaml")
	assert.Contains(t, errs, "per_minute")

	assert.Equal(t, exitConfig, run(context.Background(), []string{"check", "extra"}, env, io.Discard, io.Discard))
}
