package actors

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/whatsapp"
)

type countingSender struct{ calls atomic.Int64 }

func (s *countingSender) Send(context.Context, whatsapp.Request) (whatsapp.Response, error) {
	n := s.calls.Add(1)
	return whatsapp.Response{WAMID: fmt.Sprintf("wamid.%d", n), HTTPStatus: 200}, nil
}

func TestIdleTenantIsPassivatedAndComesBackWithItsState(t *testing.T) {
	tenant := config.Tenant{ID: "idle", PhoneNumberID: "100000000000001",
		RateLimit: config.RateLimit{PerMinute: 1, Burst: 10},
		Breaker:   config.Breaker{FailureThreshold: 5, OpenFor: time.Minute}, MaxAttempts: 10, MaxAge: time.Hour}
	settled := make(chan struct{}, 16)
	sender := &countingSender{}
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	root := system.Root
	var logs syncBuffer
	router, err := root.SpawnNamed(NewRouterProps(Config{Tenants: []config.Tenant{tenant},
		Tokens: map[string]whatsapp.TokenSource{"idle": benchToken("t")}, Sender: sender,
		Broker: benchBroker(settled), PassivateAfter: 20 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}), "router")
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = root.PoisonFuture(router).Wait()
		system.Shutdown()
		if t.Failed() {
			t.Logf("worker log:\n%s", logs.Bytes())
		}
	})
	deliver := func(internalID string) {
		body := fmt.Appendf(nil, `{"metadata":{"tenantId":"idle","internalId":%q},`+
			`"wabaPayload":{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"hi"}}}`, internalID)
		root.Send(router, testkit.NewFakeDelivery(body, nil))
		select {
		case <-settled:
		case <-time.After(5 * time.Second):
			require.FailNow(t, "job not settled")
		}
	}
	list := func() messages.TenantInfo {
		res, err := root.RequestFuture(router, &messages.ListTenants{}, 5*time.Second).Result()
		require.NoError(t, err)
		return res.(*messages.TenantList).Tenants[0]
	}

	deliver("job-1")
	require.Eventually(t, func() bool { return !list().Active }, 5*time.Second, 5*time.Millisecond,
		"the idle tenant's actor is stopped")
	info := list()
	assert.EqualValues(t, 1, info.Sent, "its counters stay with the router")
	assert.InDelta(t, 9, info.TokensAvailable, 0.1, "and its bucket")

	deliver("job-1") // redelivered after it was sent: remembered across passivation
	assert.EqualValues(t, 1, sender.calls.Load(), "a sent job is not sent again after passivation")
	deliver("job-2")
	assert.EqualValues(t, 2, sender.calls.Load())

	res, err := root.RequestFuture(router, &messages.GetTenant{TenantID: "idle"}, 5*time.Second).Result()
	require.NoError(t, err)
	got := res.(*messages.TenantInfo)
	assert.True(t, got.Active)
	assert.EqualValues(t, 3, got.Sent, "the duplicate counts as sent again")
	assert.InDelta(t, 8, got.TokensAvailable, 0.1, "two sends spent two tokens; nothing was reset")

	require.Eventually(t, func() bool { return !list().Active }, 5*time.Second, 5*time.Millisecond,
		"it passivates again")
}

// A listing while a passivated actor is still stopping shows the tenant as
// its actor last reported it, not as a tenant that never started: the
// window between the router's Stop and the actor's Terminated is short,
// and a listing that fell into it showed no jobs sent and a full bucket.
func TestListingWhileTheActorStopsShowsWhatItReported(t *testing.T) {
	cfg := tenant("a")
	deps := &Config{}
	deps.withDefaults()
	now := time.Now()
	e := &tenantEntry{cfg: cfg}
	assert.Equal(t, float64(cfg.RateLimit.Burst), e.inactiveInfo(now).TokensAvailable, "never started")

	e.state = newTenantState(&e.cfg, benchToken("t"), "epoch", now, deps)
	e.state.sent = 3
	e.state.sched.Bucket().Allow(now)
	reported := e.state.info(now, false)
	e.stopping, e.stoppingInfo = &actor.PID{Id: "tenant-a"}, reported
	assert.Equal(t, reported, e.inactiveInfo(now), "stopping: what the actor reported")
	assert.EqualValues(t, 3, e.inactiveInfo(now).Sent)

	e.stopping = nil
	assert.EqualValues(t, 3, e.inactiveInfo(now).Sent, "passivated: read from the state")
}
