package admin_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/admin"
	"github.com/wadispatch/wadispatch/messages"
)

func TestWriteTable(t *testing.T) {
	tenants := []messages.TenantInfo{
		{ID: "acme", Shard: 3, CircuitState: "CLOSED", TokensAvailable: 12, TokensMax: 80, InFlight: 37, Window: 64,
			RecipientsWaiting: 5, Deferred: 3, Sent: 1042, Failed: 2, LastError: "transient: HTTP 503"},
		{ID: "globex-corporation", CircuitState: "OPEN", TokensAvailable: 0.5, TokensMax: 20, InFlight: 3, Window: 2,
			RecipientsWaiting: 12, Deferred: 140,
			Sent: 7, Failed: 31, Restarts: 6, Quarantined: true, LastError: "tenant_blocked: (#368)\ttemporarily\nblocked"},
		{ID: "initech", CircuitState: "HALF_OPEN", TokensAvailable: 5, TokensMax: 5, Window: 1024, Paused: true},
		{ID: "umbrella", CircuitState: "CLOSED", TokensAvailable: 1, TokensMax: 1, Paused: true, Quarantined: true,
			LastError: strings.Repeat("x", 200)},
		{ID: "stuck", LastError: "no answer from tenant actor"},
		{ID: "wayne", Shard: 17, OwnedElsewhere: true},
	}
	var b strings.Builder
	require.NoError(t, admin.WriteTable(&b, tenants))
	out := b.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")

	t.Run("MatchesTheGoldenOutput", func(t *testing.T) {
		want := "" +
			"ID                  SHARD  BREAKER                       TOKENS   IN-FLIGHT  WINDOW  WAITING  DEFERRED  SENT  FAILED  RESTARTS  LAST ERROR\n" +
			"acme                3      closed                        12.0/80  37         64      5        3         1042  2       0         transient: HTTP 503\n" +
			"globex-corporation  0      open (quarantined)            0.5/20   3          2       12       140       7     31      6         tenant_blocked: (#368) temporarily blocked\n" +
			"initech             0      half_open (paused)            5.0/5    0          1024    0        0         0     0       0         -\n" +
			"umbrella            0      closed (paused, quarantined)  1.0/1    0          0       0        0         0     0       0         " + strings.Repeat("x", 79) + "…\n" +
			"stuck               0      unknown                       0.0/0    0          0       0        0         0     0       0         no answer from tenant actor\n" +
			"wayne               17     elsewhere                     -        -          -       -        -         -     -       -         owned by another worker\n"
		assert.Equal(t, want, out)
	})

	t.Run("EveryTenantHasOneRow", func(t *testing.T) {
		require.Len(t, lines, len(tenants)+1)
		for i, tn := range tenants {
			assert.True(t, strings.HasPrefix(lines[i+1], tn.ID+" "), "row %d is %s", i+1, tn.ID)
		}
	})

	t.Run("ColumnsAreAligned", func(t *testing.T) {
		header := lines[0]
		for _, col := range []string{"SHARD", "BREAKER", "TOKENS", "IN-FLIGHT", "WINDOW", "WAITING", "DEFERRED", "SENT", "FAILED", "RESTARTS", "LAST ERROR"} {
			at := strings.Index(header, col)
			require.Positive(t, at, col)
			for _, row := range lines[1:] {
				cells := []rune(row)
				require.Greater(t, len(cells), at, row)
				assert.Equal(t, ' ', cells[at-1], "column %s starts after a space in %q", col, row)
				assert.NotEqual(t, ' ', cells[at], "column %s has a value in %q", col, row)
			}
		}
	})

	t.Run("EmptyListPrintsTheHeader", func(t *testing.T) {
		var b strings.Builder
		require.NoError(t, admin.WriteTable(&b, nil))
		assert.Equal(t, "ID  SHARD  BREAKER  TOKENS  IN-FLIGHT  WINDOW  WAITING  DEFERRED  SENT  FAILED  RESTARTS  LAST ERROR\n", b.String())
	})
}
