package worker_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit/localrun"
	"github.com/wadispatch/wadispatch/worker"
)

// tenantsFile renders a tenants file for tenants (registering their tokens
// with the fake Meta); tenants with a TokenFile get it written. It returns
// the file's content.
func (h *harness) tenantsFile(tenants ...testTenant) []byte {
	h.tb.Helper()
	dir := h.tb.TempDir()
	for i := range tenants {
		if tenants[i].TokenFile != "" && !filepath.IsAbs(tenants[i].TokenFile) {
			path := filepath.Join(dir, tenants[i].TokenFile)
			require.NoError(h.tb, os.WriteFile(path, []byte(tenants[i].Token), 0o600))
			tenants[i].TokenFile = path
		}
		h.tenants[tenants[i].ID] = tenants[i]
	}
	path, _, err := localrun.WriteTenants(dir, h.defaults, tenants, h.fake, nil)
	require.NoError(h.tb, err)
	b, err := os.ReadFile(path)
	require.NoError(h.tb, err)
	return b
}

// replaceFile writes content to path atomically (a temporary file renamed
// over it), as an editor or a deploy tool would.
func replaceFile(t testing.TB, path string, content []byte) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, content, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// post makes an admin POST and returns the status and the body.
func (h *harness) post(path string) (int, []byte) {
	h.tb.Helper()
	resp, err := http.Post("http://"+h.worker.AdminAddr()+path, "application/json", nil)
	require.NoError(h.tb, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(h.tb, err)
	return resp.StatusCode, body
}

func (h *harness) metricsText() string {
	h.tb.Helper()
	resp, err := http.Get("http://" + h.worker.AdminAddr() + "/metrics")
	require.NoError(h.tb, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(h.tb, err)
	return string(b)
}

// A reload through the admin API adds, changes and removes tenants while
// jobs flow: every job ends with a result (a removed tenant's later jobs
// dead-lettered as unknown_tenant), an added tenant (its token in a file)
// is served, a changed one keeps its counters and takes its new rate. A
// broken file changes nothing and the worker goes on serving.
func TestReloadThroughTheAdminAPIAddsChangesAndRemovesTenants(t *testing.T) {
	keep := testTenant{ID: "keep", Phone: "710000000000001", Token: "EAAtoken-keep-s3cr3t"}
	slow := testTenant{ID: "slow", Phone: "710000000000002", Token: "EAAtoken-slow-s3cr3t", Extra: "rate_limit: {per_minute: 60, burst: 1}"}
	gone := testTenant{ID: "gone", Phone: "710000000000003", Token: "EAAtoken-gone-s3cr3t"}
	h := startHarness(t, []testTenant{keep, slow, gone}, harnessOptions{Args: append([]string{"--tenants-watch", "off"}, adminArgs...)})

	var before []string
	for i := range 5 {
		for _, tn := range []testTenant{keep, gone} {
			id := fmt.Sprintf("%s-a%d", tn.ID, i)
			before = append(before, id)
			h.publish(job(tn.ID, id, "15550001000"))
		}
	}
	h.publish(job(slow.ID, "slow-a0", "15550001001"))
	first := h.results(len(before)+1, 30*time.Second)
	for id, r := range first {
		require.Equal(t, messages.StatusSent, r.Status, id)
	}
	require.EqualValues(t, 1, h.adminTenant(slow.ID).Sent)

	added := testTenant{ID: "added", Phone: "710000000000004", Token: "EAAtoken-added-s3cr3t", TokenFile: "added.token"}
	faster := slow
	faster.Extra = "rate_limit: {per_minute: 6000, burst: 100}"
	second := h.tenantsFile(keep, faster, added)
	replaceFile(t, h.cfg.TenantsFile, second)
	status, body := h.post("/v1/reload")
	require.Equal(t, http.StatusOK, status, "%s", body)
	var res worker.ReloadResult
	require.NoError(t, json.Unmarshal(body, &res))
	assert.True(t, res.Changed)
	assert.Equal(t, []string{"added"}, res.Added)
	assert.Equal(t, []string{"slow"}, res.Updated)
	assert.Equal(t, []string{"gone"}, res.Removed)
	assert.Equal(t, 2, res.Generation)

	info := h.adminTenant(slow.ID)
	assert.EqualValues(t, 1, info.Sent, "its counters stay")
	assert.Equal(t, 6000.0, info.RatePerMinute, "its new rate applies")
	for i := range 5 {
		h.publish(job(slow.ID, fmt.Sprintf("slow-b%d", i), fmt.Sprintf("1555000110%d", i)))
		h.publish(job(added.ID, fmt.Sprintf("added-b%d", i), "15550001002"))
		h.publish(job(gone.ID, fmt.Sprintf("gone-b%d", i), "15550001003"))
	}
	results := h.results(15, 30*time.Second)
	for i := range 5 {
		assert.Equal(t, messages.StatusSent, results[fmt.Sprintf("slow-b%d", i)].Status)
		assert.Equal(t, messages.StatusSent, results[fmt.Sprintf("added-b%d", i)].Status)
		r := results[fmt.Sprintf("gone-b%d", i)]
		assert.Equal(t, messages.StatusDeadLettered, r.Status)
		assert.Equal(t, messages.ReasonUnknownTenant, r.Reason)
	}

	// A broken file: 422 with the line a start-up would print; nothing
	// changes, and the worker goes on serving.
	replaceFile(t, h.cfg.TenantsFile, []byte("tenants:\n  - id: keep\n    phone_number_id: \"x\"\n    bogus: 1\n"))
	status, body = h.post("/v1/reload")
	require.Equal(t, http.StatusUnprocessableEntity, status, "%s", body)
	assert.Contains(t, string(body), filepath.Base(h.cfg.TenantsFile))
	assert.Contains(t, string(body), "bogus")
	var cs worker.ConfigStatus
	require.Equal(t, http.StatusOK, h.call(http.MethodGet, "/v1/config", "", &cs))
	assert.Equal(t, 2, cs.Generation, "the set in force stays")
	assert.Equal(t, res.Hash, cs.Hash)
	assert.Contains(t, cs.LastError, "bogus")
	assert.Equal(t, 3, cs.Tenants)
	metrics := h.metricsText()
	assert.Contains(t, metrics, "wadispatch_config_last_reload_successful 0")
	assert.Contains(t, metrics, fmt.Sprintf(`wadispatch_config_info{hash=%q} 1`, res.Hash))
	require.Len(t, h.events("config_reload_failed"), 1)

	h.publish(job(added.ID, "added-c0", "15550001002"))
	assert.Equal(t, messages.StatusSent, h.results(1, 30*time.Second)["added-c0"].Status)

	// The same file again is a no-op.
	replaceFile(t, h.cfg.TenantsFile, second)
	status, body = h.post("/v1/reload")
	require.Equal(t, http.StatusOK, status, "%s", body)
	require.NoError(t, json.Unmarshal(body, &res))
	assert.False(t, res.Changed, "an identical file changes nothing")
	assert.Contains(t, h.metricsText(), "wadispatch_config_last_reload_successful 1")
	assert.Len(t, h.events("config_reloaded"), 1)
	assert.Zero(t, h.queued())
}

// A Kubernetes ConfigMap update swaps the ..data symlink of the mounted
// directory and never writes the file; the watch picks it up.
func TestTheWatchPicksUpAConfigMapSymlinkSwap(t *testing.T) {
	keep := testTenant{ID: "keep", Phone: "720000000000001", Token: "EAAtoken-keep-s3cr3t"}
	added := testTenant{ID: "added", Phone: "720000000000002", Token: "EAAtoken-added-s3cr3t", TokenFile: "added.token"}
	mount := t.TempDir()
	h := startHarness(t, []testTenant{keep}, harnessOptions{
		Args: []string{"--tenants-watch", "100ms"},
		BeforeConfig: func(h *harness, path string) string {
			// The layout the kubelet makes: <mount>/..<stamp>/tenants.yaml,
			// <mount>/..data -> ..<stamp>, <mount>/tenants.yaml -> ..data/tenants.yaml.
			content, err := os.ReadFile(path)
			require.NoError(t, err)
			stamp := filepath.Join(mount, "..2026_12_01_00_00_00.1")
			require.NoError(t, os.Mkdir(stamp, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(stamp, "tenants.yaml"), content, 0o600))
			require.NoError(t, os.Symlink(filepath.Base(stamp), filepath.Join(mount, "..data")))
			require.NoError(t, os.Symlink("..data/tenants.yaml", filepath.Join(mount, "tenants.yaml")))
			return filepath.Join(mount, "tenants.yaml")
		},
	})
	stamp := filepath.Join(mount, "..2026_12_01_00_01_00.2")
	require.NoError(t, os.Mkdir(stamp, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(stamp, "tenants.yaml"), h.tenantsFile(keep, added), 0o600))
	out, err := exec.Command("ln", "-sfn", filepath.Base(stamp), filepath.Join(mount, "..data_tmp")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command("mv", "-T", filepath.Join(mount, "..data_tmp"), filepath.Join(mount, "..data")).CombinedOutput()
	require.NoError(t, err, "%s", out)

	require.Eventually(t, func() bool { return len(h.events("config_reloaded")) == 1 }, 20*time.Second, 20*time.Millisecond,
		"the swap was noticed")
	assert.Equal(t, "watch", h.events("config_reloaded")[0]["trigger"])
	h.publish(job(added.ID, "added-1", "15550002000"))
	assert.Equal(t, messages.StatusSent, h.results(1, 30*time.Second)["added-1"].Status)
}

// SIGHUP reloads the tenants file of a running `wadispatch run`; the process
// does not die of it (Go's default), and stops cleanly afterwards.
func TestSIGHUPReloadsTheTenantsFile(t *testing.T) {
	keep := testTenant{ID: "keep", Phone: "730000000000001", Token: "EAAtoken-keep-s3cr3t"}
	added := testTenant{ID: "added", Phone: "730000000000002", Token: "EAAtoken-added-s3cr3t", TokenFile: "added.token"}
	h, args := processHarness(t, []testTenant{keep}, "--tenants-watch", "off")
	p := startProcess(t, h, args)
	tenantsFile := ""
	for i, a := range args {
		if a == "--tenants-file" {
			tenantsFile = args[i+1]
		}
	}
	require.NotEmpty(t, tenantsFile)
	replaceFile(t, tenantsFile, h.tenantsFile(h.tenants[keep.ID], added)) // keep as it was, its token in a file
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(h.logs.String(), `"config_reloaded"`) }, 20*time.Second,
		20*time.Millisecond, "reloaded on SIGHUP: %s\n%s", h.events("config_reload_failed"), p.stderr.String())
	assert.Contains(t, h.logs.String(), `"trigger":"sighup"`)
	h.publish(job(added.ID, "added-1", "15550003000"))
	assert.Equal(t, messages.StatusSent, h.results(1, 30*time.Second)["added-1"].Status)
	select {
	case <-p.exited:
		require.FailNow(t, "the process died of SIGHUP", "%v", p.err)
	default:
	}
	p.terminate(t)
	assert.NoError(t, p.err, "a clean stop after the reload")
}
