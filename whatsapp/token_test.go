package whatsapp_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// fakeRead is a token read that tests can change and that counts its calls.
type fakeRead struct {
	mu    sync.Mutex
	token string
	err   error
	reads int
}

func (r *fakeRead) set(token string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.token, r.err = token, err
}

func (r *fakeRead) read() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads++
	return r.token, r.err
}

func (r *fakeRead) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reads
}

func TestTokenSource(t *testing.T) {
	t.Run("ReadsOnceAndCaches", func(t *testing.T) {
		r := &fakeRead{token: "tok-1"}
		src := whatsapp.NewTokenSource(r.read)

		first, err1 := src.Token()
		second, err2 := src.Token()

		require.NoError(t, err1)
		require.NoError(t, err2)
		assert.Equal(t, "tok-1", first)
		assert.Equal(t, "tok-1", second)
		assert.Equal(t, 1, r.count())
	})

	t.Run("ReadsNothingUntilAsked", func(t *testing.T) {
		r := &fakeRead{token: "tok-1"}
		whatsapp.NewTokenSource(r.read)
		assert.Zero(t, r.count())
	})

	t.Run("RefreshDetectsRotation", func(t *testing.T) {
		r := &fakeRead{token: "tok-1"}
		src := whatsapp.NewTokenSource(r.read)
		_, err := src.Token()
		require.NoError(t, err)

		r.set("tok-2", nil)
		changed, err := src.Refresh()

		require.NoError(t, err)
		assert.True(t, changed)
		tok, err := src.Token()
		require.NoError(t, err)
		assert.Equal(t, "tok-2", tok)
	})

	t.Run("RefreshReportsUnchangedToken", func(t *testing.T) {
		r := &fakeRead{token: "tok-1"}
		src := whatsapp.NewTokenSource(r.read)
		_, err := src.Token()
		require.NoError(t, err)

		changed, err := src.Refresh()

		require.NoError(t, err)
		assert.False(t, changed)
		assert.Equal(t, 2, r.count(), "Refresh reads again")
	})

	t.Run("AFailedReadIsReturnedAndTriedAgain", func(t *testing.T) {
		gone := errors.New("access_token_env T is not set")
		r := &fakeRead{err: gone}
		src := whatsapp.NewTokenSource(r.read)

		_, err := src.Token()
		require.ErrorIs(t, err, gone)

		r.set("tok-1", nil)
		tok, err := src.Token()
		require.NoError(t, err)
		assert.Equal(t, "tok-1", tok, "a failed read is not cached")
	})

	t.Run("AnEmptyTokenIsErrNoToken", func(t *testing.T) {
		_, err := whatsapp.NewTokenSource((&fakeRead{}).read).Token()
		require.ErrorIs(t, err, whatsapp.ErrNoToken)
	})

	t.Run("FailedRefreshKeepsTheOldToken", func(t *testing.T) {
		r := &fakeRead{token: testToken}
		src := whatsapp.NewTokenSource(r.read)
		_, err := src.Token()
		require.NoError(t, err)

		r.set("", whatsapp.ErrNoToken)
		changed, err := src.Refresh()

		require.ErrorIs(t, err, whatsapp.ErrNoToken)
		assert.False(t, changed)
		tok, err := src.Token()
		require.NoError(t, err)
		assert.Equal(t, testToken, tok)
	})

	t.Run("IsSafeForConcurrentUse", func(t *testing.T) {
		src := whatsapp.NewTokenSource((&fakeRead{token: "tok-1"}).read)
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

// The worker's wiring: the tenants file says where the token is, the
// source caches it and re-reads it after Meta's code 190.
func TestTokenSourceOverTheTenantsFile(t *testing.T) {
	t.Run("FileRotationIsPickedUpByRefresh", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "acme")
		require.NoError(t, os.WriteFile(path, []byte("  tok-1 \n"), 0o600))
		tenant := config.Tenant{ID: "acme", AccessTokenFile: path}
		src := whatsapp.NewTokenSource(func() (string, error) { return tenant.ReadToken(os.Getenv) })

		tok, err := src.Token()
		require.NoError(t, err)
		assert.Equal(t, "tok-1", tok)

		require.NoError(t, os.Remove(path))
		changed, err := src.Refresh()
		require.ErrorIs(t, err, fs.ErrNotExist)
		assert.False(t, changed)
		assert.NotContains(t, err.Error(), "tok-1")
		tok, err = src.Token()
		require.NoError(t, err)
		assert.Equal(t, "tok-1", tok, "a file caught mid-rotation keeps the old token")

		require.NoError(t, os.WriteFile(path, []byte("tok-2\n"), 0o600))
		changed, err = src.Refresh()
		require.NoError(t, err)
		assert.True(t, changed)
		tok, err = src.Token()
		require.NoError(t, err)
		assert.Equal(t, "tok-2", tok)
	})

	t.Run("UnsetVariableSaysWhichInTheTenantsFilesWords", func(t *testing.T) {
		tenant := config.Tenant{ID: "acme", AccessTokenEnv: "ACME_WA_TOKEN"}
		src := whatsapp.NewTokenSource(func() (string, error) {
			return tenant.ReadToken(func(string) string { return " " })
		})
		_, err := src.Token()
		require.Error(t, err)
		assert.Equal(t, "access_token_env ACME_WA_TOKEN is not set; set it to the tenant's access token", err.Error())
	})
}
