package admin

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/wadispatch/wadispatch/messages"
)

// maxErrorWidth is where WriteTable cuts a long last error.
const maxErrorWidth = 80

// WriteTable writes tenants as an aligned table, one row each, for the
// "wadispatch tenants" command. IN-FLIGHT is the sends in flight now, WINDOW
// how many the tenant may have in flight now, WAITING the recipients with a
// job waiting behind an earlier one to the same recipient, SHARD the
// tenant's shard. A tenant whose shard another worker owns has nothing
// else this worker can say: its row says where it is.
func WriteTable(w io.Writer, tenants []messages.TenantInfo) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSHARD\tBREAKER\tTOKENS\tIN-FLIGHT\tWINDOW\tWAITING\tDEFERRED\tSENT\tFAILED\tRESTARTS\tLAST ERROR")
	for _, t := range tenants {
		if t.OwnedElsewhere {
			fmt.Fprintf(tw, "%s\t%d\telsewhere\t-\t-\t-\t-\t-\t-\t-\t-\towned by another worker\n", oneLine(t.ID), t.Shard)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.1f/%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n",
			oneLine(t.ID), t.Shard, breakerColumn(t), t.TokensAvailable, t.TokensMax,
			t.InFlight, t.Window, t.RecipientsWaiting,
			t.Deferred, t.Sent, t.Failed, t.Restarts, lastError(t.LastError))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write tenants table: %w", err)
	}
	return nil
}

// breakerColumn is the breaker state in lower case, with the conditions
// that stop a tenant's sends whatever its breaker says.
func breakerColumn(t messages.TenantInfo) string {
	state := strings.ToLower(t.CircuitState)
	if state == "" {
		state = "unknown"
	}
	var marks []string
	if t.Paused {
		marks = append(marks, "paused")
	}
	if t.Quarantined {
		marks = append(marks, "quarantined")
	}
	if len(marks) == 0 {
		return oneLine(state)
	}
	return oneLine(state) + " (" + strings.Join(marks, ", ") + ")"
}

func lastError(s string) string {
	s = oneLine(s)
	if s == "" {
		return "-"
	}
	if r := []rune(s); len(r) > maxErrorWidth {
		return string(r[:maxErrorWidth-1]) + "…"
	}
	return s
}

// oneLine keeps a cell from breaking the table: control characters (tabs,
// newlines) become spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
