package actors

import (
	"fmt"
	"testing"
	"testing/synctest"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
)

// The router dead-letters an invalid job whose identity it can read and
// counts it in its tenant's DeadLettered. The count lives in the tenant's
// state, which only the tenant actor's goroutine may touch: while the
// tenant answers admin questions, the router must not write it. Run with
// -race: today the router's write (router.reject) races the tenant's read
// (TenantState.info) and the race detector fails this test.
func TestInvalidJobsOfAnActiveTenantAreCountedWithoutRacingItsActor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{tenant("a")}})
		h.publish("a", "ok") // the tenant is active
		const n = 200
		asks := make([]*actor.Future, 0, n)
		for i := range n {
			h.deliver(fmt.Appendf(nil, `{"metadata":{"tenantId":"a","internalId":"bad%d"},`+
				`"wabaPayload":{"messaging_product":"whatsapp","type":"text","text":{"body":"x"}}}`, i), nil) // valid identity, no "to"
			asks = append(asks, h.root.RequestFuture(h.router, &messages.GetTenant{TenantID: "a"}, AskTimeout))
		}
		for _, f := range asks {
			_, err := f.Result()
			require.NoError(t, err)
		}
		h.settle()

		assert.EqualValues(t, n, h.info("a").DeadLettered)
		assert.Len(t, h.copies(testkit.KindDeadLetter, ""), n)
		for _, m := range h.copies(testkit.KindDeadLetter, "") {
			require.Equal(t, messages.ReasonInvalidJob, m.Publishing.Headers[messages.HeaderDLQReason])
		}
		assert.Equal(t, map[string]int{messages.StatusSent: 1, messages.StatusDeadLettered: n}, h.statuses("a"))
	})
}
