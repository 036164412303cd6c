package admin_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/admin"
)

func TestClient(t *testing.T) {
	_, base := startServer(t, admin.Options{Token: testToken})
	ctx := context.Background()
	client := admin.NewClient(base, testToken, nil)

	t.Run("ListReturnsEveryTenant", func(t *testing.T) {
		tenants, err := client.List(ctx)
		require.NoError(t, err)
		require.Len(t, tenants, 2)
		assert.Equal(t, "acme", tenants[0].ID)
		assert.Equal(t, "globex", tenants[1].ID)
		assert.Equal(t, int64(41), tenants[0].Sent)
	})

	t.Run("GetReturnsTheTenant", func(t *testing.T) {
		info, err := client.Get(ctx, "acme")
		require.NoError(t, err)
		assert.Equal(t, "acme", info.ID)
		assert.Equal(t, "OPEN", info.CircuitState)
		assert.Equal(t, 37, info.InFlight)
		assert.Equal(t, 64, info.Window)
		assert.Equal(t, 5, info.RecipientsWaiting)
	})

	t.Run("BareHostPortIsHTTP", func(t *testing.T) {
		info, err := admin.NewClient(strings.TrimPrefix(base, "http://")+"/", testToken, nil).Get(ctx, "globex")
		require.NoError(t, err)
		assert.Equal(t, "globex", info.ID)
	})

	t.Run("UnknownTenantIsErrNotFound", func(t *testing.T) {
		_, err := client.Get(ctx, "nope")
		require.ErrorIs(t, err, admin.ErrNotFound)
		assert.Contains(t, err.Error(), `tenant "nope" is not configured`)
	})

	t.Run("IDIsEscaped", func(t *testing.T) {
		_, err := client.Get(ctx, "a/b?c")
		require.ErrorIs(t, err, admin.ErrNotFound)
		assert.Contains(t, err.Error(), `tenant "a/b?c" is not configured`)
	})

	t.Run("MissingTokenIsErrUnauthorized", func(t *testing.T) {
		_, err := admin.NewClient(base, "", nil).List(ctx)
		require.ErrorIs(t, err, admin.ErrUnauthorized)
		assert.Contains(t, err.Error(), "ADMIN_TOKEN")
	})

	t.Run("WrongTokenIsErrUnauthorized", func(t *testing.T) {
		_, err := admin.NewClient(base, "not-"+testToken, nil).Get(ctx, "acme")
		require.ErrorIs(t, err, admin.ErrUnauthorized)
		assert.NotContains(t, err.Error(), testToken)
	})
}

func TestClientUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	t.Run("ClosedPortIsErrUnreachableWithAClearMessage", func(t *testing.T) {
		_, err := admin.NewClient("http://"+addr, testToken, nil).List(context.Background())
		require.ErrorIs(t, err, admin.ErrUnreachable)
		assert.Equal(t, "worker not reachable at http://"+addr+
			` (connection refused); is "wadispatch run" running with this ADMIN_ADDR?`, err.Error())
		assert.NotContains(t, err.Error(), testToken)
	})

	t.Run("SilentServerIsErrUnreachableTimedOut", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { _ = ln.Close() })
		hc := &http.Client{Timeout: 100 * time.Millisecond}
		_, err = admin.NewClient("http://"+ln.Addr().String(), "", hc).Get(context.Background(), "acme")
		require.ErrorIs(t, err, admin.ErrUnreachable)
		assert.Contains(t, err.Error(), "(timed out)")
	})

	t.Run("CancelledContextIsNotErrUnreachable", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := admin.NewClient("http://"+addr, "", nil).List(ctx)
		assert.ErrorIs(t, err, context.Canceled)
		assert.False(t, errors.Is(err, admin.ErrUnreachable))
	})
}

func TestClientRouterThatDoesNotAnswer(t *testing.T) {
	_, base := startServer(t, admin.Options{Tenants: silentTenants("router did not answer within 50ms")})

	_, err := admin.NewClient(base, "", nil).List(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "503")
	assert.Contains(t, err.Error(), "router did not answer within 50ms")
}
