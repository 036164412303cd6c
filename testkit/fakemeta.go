package testkit

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

// StartFakeMeta starts a fake Graph API (fakemeta.Server) on 127.0.0.1:0
// and closes it when the test ends.
func StartFakeMeta(tb testing.TB) *fakemeta.Server {
	tb.Helper()
	f, err := fakemeta.New("127.0.0.1:0")
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = f.Close() })
	return f
}
