package whatsapp_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/whatsapp"
)

// fakeEnv is a getenv that tests can change and that counts its reads.
type fakeEnv struct {
	mu    sync.Mutex
	vars  map[string]string
	reads int
}

func (e *fakeEnv) set(k, v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.vars[k] = v
}

func (e *fakeEnv) getenv(k string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reads++
	return e.vars[k]
}

func writeToken(tb testing.TB, path, content string) {
	tb.Helper()
	require.NoError(tb, os.WriteFile(path, []byte(content), 0o600))
}

func TestEnvToken(t *testing.T) {
	t.Run("ReadsOnceAndCaches", func(t *testing.T) {
		env := &fakeEnv{vars: map[string]string{"ACME_WA_TOKEN": " tok-1\n"}}
		src := whatsapp.NewEnvToken("ACME_WA_TOKEN", env.getenv)

		first, err1 := src.Token()
		second, err2 := src.Token()

		require.NoError(t, err1)
		require.NoError(t, err2)
		assert.Equal(t, "tok-1", first)
		assert.Equal(t, "tok-1", second)
		assert.Equal(t, 1, env.reads)
	})

	t.Run("RefreshDetectsRotation", func(t *testing.T) {
		env := &fakeEnv{vars: map[string]string{"ACME_WA_TOKEN": "tok-1"}}
		src := whatsapp.NewEnvToken("ACME_WA_TOKEN", env.getenv)
		_, err := src.Token()
		require.NoError(t, err)

		env.set("ACME_WA_TOKEN", "tok-2")
		changed, err := src.Refresh()

		require.NoError(t, err)
		assert.True(t, changed)
		tok, err := src.Token()
		require.NoError(t, err)
		assert.Equal(t, "tok-2", tok)
	})

	t.Run("RefreshReportsUnchangedToken", func(t *testing.T) {
		env := &fakeEnv{vars: map[string]string{"ACME_WA_TOKEN": "tok-1"}}
		src := whatsapp.NewEnvToken("ACME_WA_TOKEN", env.getenv)
		_, err := src.Token()
		require.NoError(t, err)

		changed, err := src.Refresh()

		require.NoError(t, err)
		assert.False(t, changed)
	})

	t.Run("UnsetVariableErrorNamesIt", func(t *testing.T) {
		env := &fakeEnv{vars: map[string]string{}}
		src := whatsapp.NewEnvToken("ACME_WA_TOKEN", env.getenv)

		_, err := src.Token()

		require.ErrorIs(t, err, whatsapp.ErrNoToken)
		assert.Contains(t, err.Error(), "ACME_WA_TOKEN")
	})

	t.Run("FailedRefreshKeepsTheOldTokenAndDoesNotPrintIt", func(t *testing.T) {
		env := &fakeEnv{vars: map[string]string{"ACME_WA_TOKEN": testToken}}
		src := whatsapp.NewEnvToken("ACME_WA_TOKEN", env.getenv)
		_, err := src.Token()
		require.NoError(t, err)

		env.set("ACME_WA_TOKEN", "")
		changed, err := src.Refresh()

		require.ErrorIs(t, err, whatsapp.ErrNoToken)
		assert.False(t, changed)
		assert.NotContains(t, err.Error(), testToken)
		tok, err := src.Token()
		require.NoError(t, err)
		assert.Equal(t, testToken, tok)
	})
}

func TestFileToken(t *testing.T) {
	t.Run("TrimsWhitespaceAndCaches", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "acme")
		writeToken(t, path, "  tok-1 \n")
		src := whatsapp.NewFileToken(path)

		first, err := src.Token()
		require.NoError(t, err)
		require.NoError(t, os.Remove(path))
		second, err := src.Token()

		require.NoError(t, err)
		assert.Equal(t, "tok-1", first)
		assert.Equal(t, "tok-1", second)
	})

	t.Run("RefreshDetectsRotation", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "acme")
		writeToken(t, path, "tok-1\n")
		src := whatsapp.NewFileToken(path)
		_, err := src.Token()
		require.NoError(t, err)

		writeToken(t, path, "tok-2\n")
		changed, err := src.Refresh()

		require.NoError(t, err)
		assert.True(t, changed)
		tok, err := src.Token()
		require.NoError(t, err)
		assert.Equal(t, "tok-2", tok)
	})

	t.Run("RefreshReportsUnchangedToken", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "acme")
		writeToken(t, path, "tok-1\n")
		src := whatsapp.NewFileToken(path)
		_, err := src.Token()
		require.NoError(t, err)

		writeToken(t, path, "tok-1") // rewritten, same token
		changed, err := src.Refresh()

		require.NoError(t, err)
		assert.False(t, changed)
	})

	t.Run("MissingFileErrorNamesThePath", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "missing")
		src := whatsapp.NewFileToken(path)

		_, err := src.Token()

		require.ErrorIs(t, err, fs.ErrNotExist)
		assert.Contains(t, err.Error(), path)
		assert.Equal(t, "access_token_file "+path+": open: no such file or directory", err.Error())
	})

	t.Run("EmptyFileIsNoToken", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "acme")
		writeToken(t, path, " \n")
		src := whatsapp.NewFileToken(path)

		_, err := src.Token()

		require.ErrorIs(t, err, whatsapp.ErrNoToken)
		assert.Contains(t, err.Error(), path)
	})

	t.Run("FailedRefreshKeepsTheOldTokenAndDoesNotPrintIt", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "acme")
		writeToken(t, path, testToken)
		src := whatsapp.NewFileToken(path)
		_, err := src.Token()
		require.NoError(t, err)

		require.NoError(t, os.Remove(path))
		changed, err := src.Refresh()

		require.ErrorIs(t, err, fs.ErrNotExist)
		assert.False(t, changed)
		assert.NotContains(t, err.Error(), testToken)
		tok, err := src.Token()
		require.NoError(t, err)
		assert.Equal(t, testToken, tok)
	})

	t.Run("IsSafeForConcurrentUse", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "acme")
		writeToken(t, path, "tok-1")
		src := whatsapp.NewFileToken(path)

		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 50 {
					tok, err := src.Token()
					assert.NoError(t, err)
					assert.Equal(t, "tok-1", tok)
					_, err = src.Refresh()
					assert.NoError(t, err)
				}
			})
		}
		wg.Wait()
	})
}
