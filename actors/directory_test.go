package actors_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/actors"
	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/whatsapp"
)

func newActorSystem(tb testing.TB) *actor.ActorSystem {
	tb.Helper()
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	tb.Cleanup(system.Shutdown)
	return system
}

// directoryRouter starts a real router for acme (whose sends fail, and whose
// breaker opens after one failure) and globex, and returns it with a channel
// that receives every settlement.
func directoryRouter(t *testing.T) (*actor.RootContext, *actor.PID, chan struct{}) {
	t.Helper()
	tenant := func(id, phone string) config.Tenant {
		return config.Tenant{ID: id, PhoneNumberID: phone, AccessTokenEnv: "T",
			RateLimit: config.RateLimit{PerMinute: 600, Burst: 20},
			Breaker:   config.Breaker{FailureThreshold: 1, OpenFor: time.Hour}, MaxAttempts: 10, MaxAge: time.Hour}
	}
	settled := make(chan struct{}, 16)
	sender := &testkit.FakeSender{SendFn: func(context.Context, whatsapp.Request) (whatsapp.Response, error) {
		return whatsapp.Response{}, errors.New("connection refused")
	}}
	system := newActorSystem(t)
	router, err := system.Root.SpawnNamed(actors.NewRouterProps(actors.Config{
		Tenants: []config.Tenant{tenant("globex", "200000000000002"), tenant("acme", "100000000000001")},
		Tokens: map[string]whatsapp.TokenSource{
			"acme": &testkit.FakeToken{Value: "tok-acme"}, "globex": &testkit.FakeToken{Value: "tok-globex"},
		},
		Sender: sender,
		Broker: &testkit.FakeBroker{SettleFn: func(context.Context, messages.Delivery, ...broker.Message) error {
			settled <- struct{}{}
			return nil
		}},
	}), "router")
	require.NoError(t, err)
	t.Cleanup(func() { _ = system.Root.PoisonFuture(router).Wait() })
	return system.Root, router, settled
}

func TestDirectoryAsksTheRouter(t *testing.T) {
	root, router, settled := directoryRouter(t)
	dir := actors.Directory{Root: root, Router: router}
	ctx := context.Background()

	t.Run("ListReturnsEveryConfiguredTenantInIDOrder", func(t *testing.T) {
		list, err := dir.List(ctx)
		require.NoError(t, err)
		require.Len(t, list, 2)
		assert.Equal(t, "acme", list[0].ID)
		assert.Equal(t, "globex", list[1].ID)
		assert.Equal(t, "CLOSED", list[0].CircuitState)
		assert.Equal(t, 20, list[0].TokensMax)
		assert.False(t, list[0].Active, "no tenant has an actor yet")
	})

	t.Run("GetReturnsTheTenantFromItsActor", func(t *testing.T) {
		info, err := dir.Get(ctx, "globex")
		require.NoError(t, err)
		assert.Equal(t, "globex", info.ID)
		assert.True(t, info.Active, "the question started the tenant's actor")
	})

	t.Run("PauseAndResumeChangeTheTenant", func(t *testing.T) {
		info, err := dir.Pause(ctx, "globex")
		require.NoError(t, err)
		assert.True(t, info.Paused)
		info, err = dir.Get(ctx, "globex")
		require.NoError(t, err)
		assert.True(t, info.Paused, "the pause sticks")

		info, err = dir.Resume(ctx, "globex")
		require.NoError(t, err)
		assert.False(t, info.Paused)
	})

	t.Run("ResetBreakerClosesAnOpenBreaker", func(t *testing.T) {
		root.Send(router, testkit.NewFakeDelivery([]byte(`{"metadata":{"tenantId":"acme","internalId":"job-1"},`+
			`"wabaPayload":{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"hi"}}}`), nil))
		select {
		case <-settled:
		case <-time.After(5 * time.Second):
			require.FailNow(t, "the failed send was not settled")
		}
		info, err := dir.Get(ctx, "acme")
		require.NoError(t, err)
		require.Equal(t, "OPEN", info.CircuitState, "one failure opens acme's breaker")

		info, err = dir.ResetBreaker(ctx, "acme")
		require.NoError(t, err)
		assert.Equal(t, "CLOSED", info.CircuitState)
		assert.Zero(t, info.ConsecutiveFailures)
	})

	t.Run("UnknownTenantIsErrUnknownTenant", func(t *testing.T) {
		for name, ask := range map[string]func(context.Context, string) (messages.TenantInfo, error){
			"Get": dir.Get, "Pause": dir.Pause, "Resume": dir.Resume, "ResetBreaker": dir.ResetBreaker,
		} {
			info, err := ask(ctx, "nope")
			require.ErrorIs(t, err, messages.ErrUnknownTenant, name)
			assert.EqualError(t, err, `tenant "nope" is not configured`, name)
			assert.False(t, errors.Is(err, messages.ErrNoAnswer), name)
			assert.Zero(t, info, name)
		}
	})

	t.Run("ZeroTimeoutsTakeTheDefaults", func(t *testing.T) {
		assert.Greater(t, actors.ListTimeout, actors.AskTimeout, "the router's own wait for a tenant fits in the list's")
		list, err := actors.Directory{Root: root, Router: router, AskTimeout: 0, ListTimeout: 0}.List(ctx)
		require.NoError(t, err)
		assert.Len(t, list, 2)
	})
}

// silentRouter never answers.
type silentRouter struct{}

func (silentRouter) Receive(actor.Context) {}

func TestDirectoryWithoutAnAnswer(t *testing.T) {
	system := newActorSystem(t)
	silent := system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return silentRouter{} }))
	const askTimeout, listTimeout = 20 * time.Millisecond, 60 * time.Millisecond
	dir := actors.Directory{Root: system.Root, Router: silent, AskTimeout: askTimeout, ListTimeout: listTimeout}
	ctx := context.Background()

	t.Run("ATenantQuestionWaitsTheAskTimeout", func(t *testing.T) {
		for name, ask := range map[string]func(context.Context, string) (messages.TenantInfo, error){
			"Get": dir.Get, "Pause": dir.Pause, "Resume": dir.Resume, "ResetBreaker": dir.ResetBreaker,
		} {
			start := time.Now()
			_, err := ask(ctx, "acme")
			elapsed := time.Since(start)
			require.ErrorIs(t, err, messages.ErrNoAnswer, name)
			assert.ErrorIs(t, err, actor.ErrTimeout, name)
			assert.EqualError(t, err, "tenant actor did not answer within 20ms", name)
			assert.GreaterOrEqual(t, elapsed, askTimeout, name)
			assert.Less(t, elapsed, time.Second, name)
		}
	})

	t.Run("TheListWaitsTheListTimeout", func(t *testing.T) {
		start := time.Now()
		_, err := dir.List(ctx)
		elapsed := time.Since(start)
		require.ErrorIs(t, err, messages.ErrNoAnswer)
		assert.EqualError(t, err, "router did not answer within 60ms")
		assert.GreaterOrEqual(t, elapsed, listTimeout, "longer than one tenant's ask")
		assert.Less(t, elapsed, time.Second)
	})

	t.Run("AnEarlierDeadlineOfCtxWins", func(t *testing.T) {
		slow := actors.Directory{Root: system.Root, Router: silent} // default timeouts: 2 s and 3 s
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := slow.List(ctx)
		require.ErrorIs(t, err, messages.ErrNoAnswer)
		assert.Contains(t, err.Error(), "router did not answer within ")
		assert.Less(t, time.Since(start), actors.AskTimeout)
	})

	t.Run("ACancelledCtxIsNotWaitedFor", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := actors.Directory{Root: system.Root, Router: silent}.Get(ctx, "acme")
		require.ErrorIs(t, err, messages.ErrNoAnswer)
		assert.ErrorIs(t, err, context.Canceled)
		assert.EqualError(t, err, "tenant actor did not answer before the question was cancelled")
	})

	t.Run("AStoppedRouterIsNotRunning", func(t *testing.T) {
		stopped := system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return silentRouter{} }))
		require.NoError(t, system.Root.StopFuture(stopped).Wait())
		_, err := actors.Directory{Root: system.Root, Router: stopped, ListTimeout: time.Second}.List(ctx)
		require.ErrorIs(t, err, messages.ErrNoAnswer)
		assert.ErrorIs(t, err, actor.ErrDeadLetter)
		assert.EqualError(t, err, "router is not running")
	})

	t.Run("NoRouterIsNotRunning", func(t *testing.T) {
		_, err := actors.Directory{}.Get(ctx, "acme")
		require.ErrorIs(t, err, messages.ErrNoAnswer)
		assert.EqualError(t, err, "router is not running")
	})
}

// oddRouter answers every question with the wrong type.
type oddRouter struct{}

func (oddRouter) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *messages.ListTenants:
		ctx.Respond(&messages.TenantInfo{ID: "acme"})
	case *messages.GetTenant:
		ctx.Respond(&messages.TenantList{})
	}
}

func TestDirectoryUnexpectedAnswer(t *testing.T) {
	system := newActorSystem(t)
	odd := system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return oddRouter{} }))
	dir := actors.Directory{Root: system.Root, Router: odd}

	_, err := dir.List(context.Background())
	assert.EqualError(t, err, "unexpected answer *messages.TenantInfo")
	_, err = dir.Get(context.Background(), "acme")
	assert.EqualError(t, err, "unexpected answer *messages.TenantList")
	assert.False(t, errors.Is(err, messages.ErrNoAnswer) || errors.Is(err, messages.ErrUnknownTenant))
}
