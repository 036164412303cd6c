package worker_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/messages"
)

func TestRotatedTokenFileIsPickedUpOnCode190(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "rotating.token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("EAAold-token-s3cr3t\n"), 0o600))
	tn := testTenant{ID: "rotating", Phone: "400000000000001", Token: "EAAnew-token-s3cr3t", TokenFile: tokenFile}
	h := startHarness(t, []testTenant{tn}, harnessOptions{})
	// The server only accepts the new token; the worker still has the old one cached.
	require.NoError(t, os.WriteFile(tokenFile, []byte("EAAnew-token-s3cr3t\n"), 0o600))
	for i := range 3 {
		h.publish(job(tn.ID, fmt.Sprintf("r-%d", i), "15550000004"))
	}
	for id, r := range h.results(3, 30*time.Second) {
		assert.Equal(t, messages.StatusSent, r.Status, id)
	}
	authErrors := h.events("meta_api_auth_error")
	require.Len(t, authErrors, 1, "one 190, then the re-read token works")
	assert.Equal(t, true, authErrors[0]["cacheInvalidated"])
	assert.EqualValues(t, 190, authErrors[0]["errorCode"])
	info := h.tenantInfo(tn.ID)
	assert.Equal(t, "CLOSED", info.CircuitState)
	assert.Zero(t, info.ConsecutiveFailures, "no breaker failure")
	assert.NotContains(t, h.logs.String(), "EAAold-token-s3cr3t")
}
