package main

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The production binary links no test code: neither the testing package
// (which testkit and the benchmark suite pull in) nor testify.
func TestBinaryLinksNoTestCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	require.NoError(t, err, "go list -deps")
	for _, pkg := range strings.Fields(string(out)) {
		assert.NotEqual(t, "testing", pkg, "cmd/wadispatch links testing")
		assert.False(t, strings.HasPrefix(pkg, "github.com/stretchr/testify"), "cmd/wadispatch links %s", pkg)
	}
}

func TestRunRefusesNonLoopbackAdminWithoutToken(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"run", "--admin-addr", "0.0.0.0:8081"},
		func(string) string { return "" }, io.Discard, &stderr)
	assert.Equal(t, exitConfig, code)
	assert.Contains(t, stderr.String(), "ADMIN_TOKEN is required")
}

func TestUsage(t *testing.T) {
	t.Run("NamesEveryCommand", func(t *testing.T) {
		var stdout bytes.Buffer
		require.Equal(t, exitOK, run(context.Background(), []string{"help"}, nil, &stdout, io.Discard))
		for _, cmd := range []string{"run", "demo", "tenants", "fakemeta", "version"} {
			assert.Contains(t, stdout.String(), "wadispatch "+cmd+" ")
		}
		assert.NotContains(t, stdout.String(), "bench", "the benchmark suite is cmd/wadbench")
	})
	t.Run("UnknownCommandIsAUsageError", func(t *testing.T) {
		var stderr bytes.Buffer
		assert.Equal(t, exitConfig, run(context.Background(), []string{"bench"}, nil, io.Discard, &stderr))
		assert.Contains(t, stderr.String(), `unknown command "bench"`)
	})
	t.Run("NoCommandIsAUsageError", func(t *testing.T) {
		assert.Equal(t, exitConfig, run(context.Background(), nil, nil, io.Discard, io.Discard))
	})
}
