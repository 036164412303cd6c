package actors

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/messages"
)

// list runs one lister for asks, beside the idle tenants given, and
// returns its answer and how long it took.
func list(t *testing.T, root *actor.RootContext, idle []messages.TenantInfo, asks map[string]*actor.PID) ([]messages.TenantInfo, time.Duration) {
	t.Helper()
	start := time.Now()
	asker := root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*messages.ListTenants); ok {
			root.Spawn(newListerProps(idle, asks, ctx.Sender(), 3*time.Second))
		}
	}))
	got, err := root.RequestFuture(asker, &messages.ListTenants{}, time.Minute).Result()
	require.NoError(t, err)
	return got.(*messages.TenantList).Tenants, time.Since(start)
}

// A listing answers with every tenant sorted by ID: the idle ones as the
// router gave them, the running ones as they answered; one that does not
// answer within the timeout is listed as such, and the others are not
// kept waiting longer.
func TestListerAnswersWithEveryTenantAndGivesUpOnASilentOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := startHarness(t, Config{}).root
		answers := root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
			if q, ok := ctx.Message().(*messages.GetTenant); ok {
				ctx.Respond(&messages.TenantInfo{ID: q.TenantID, Active: true, Sent: 7})
			}
		}))
		silent := root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
		idle := []messages.TenantInfo{{ID: "b"}}

		got, took := list(t, root, idle, map[string]*actor.PID{"c": answers, "d": answers})
		assert.Equal(t, []string{"b", "c", "d"}, ids(got))
		assert.EqualValues(t, 7, got[1].Sent)
		assert.Zero(t, took, "all answered: no wait for the timeout")

		got, took = list(t, root, idle, map[string]*actor.PID{"c": answers, "a": silent})
		require.Equal(t, []string{"a", "b", "c"}, ids(got))
		assert.Equal(t, "no answer from tenant actor", got[0].LastError)
		assert.True(t, got[0].Active)
		assert.EqualValues(t, 7, got[2].Sent)
		assert.Equal(t, 3*time.Second, took, "answered at the timeout")
	})
}

func ids(infos []messages.TenantInfo) []string {
	out := make([]string, len(infos))
	for i, info := range infos {
		out[i] = info.ID
	}
	return out
}
