package actors

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// benchBroker settles at once and reports every settlement on settled. Its
// results are built as the real broker builds them: the fake's own mark a
// result with a header for the tests to read, two allocations a job the
// worker does not make.
type benchBroker struct {
	*testkit.FakeBroker
	topo broker.Topology
}

func newBenchBroker(settled chan struct{}) benchBroker {
	return benchBroker{&testkit.FakeBroker{Forget: true, SettleFn: func(context.Context, messages.Delivery, ...broker.Message) error {
		settled <- struct{}{}
		return nil
	}}, broker.NewTopology("jobs", "results")}
}

func (b benchBroker) ResultMessage(status string, body []byte, at time.Time) broker.Message {
	return b.topo.ResultMessage(status, body, at)
}

// benchSender is a Meta that accepts every message at once.
type benchSender struct{}

func (benchSender) Send(context.Context, whatsapp.Request) (whatsapp.Response, error) {
	return whatsapp.Response{WAMID: "wamid.BENCH", HTTPStatus: 200}, nil
}

type benchToken string

func (t benchToken) Token() (string, error) { return string(t), nil }
func (t benchToken) Refresh() (bool, error) { return false, nil }

// benchRouter starts a router for n tenants whose limits never bind, with
// a prefetch window of prefetch (which sizes the actors' goroutine pool as
// the worker's is), and returns the root context, the router and the
// settlement channel.
func benchRouter(b *testing.B, n, prefetch int) (*actor.RootContext, *actor.PID, chan struct{}) {
	b.Helper()
	tenants := make([]config.Tenant, n)
	tokens := make(map[string]whatsapp.TokenSource, n)
	for i := range tenants {
		id := fmt.Sprintf("t%05d", i)
		tenants[i] = config.Tenant{ID: id, PhoneNumberID: fmt.Sprintf("1%014d", i),
			RateLimit:   config.RateLimit{PerMinute: 1e9, Burst: 1 << 20},
			Breaker:     config.Breaker{FailureThreshold: 5, OpenFor: time.Minute},
			MaxAttempts: 10, MaxAge: 24 * time.Hour}
		tokens[id] = benchToken("token-" + id)
	}
	settled := make(chan struct{}, 1024)
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	// A dedupe memory smaller than the cycle of internal ids below, so no
	// job is suppressed as a duplicate.
	pid, err := system.Root.SpawnNamed(NewRouterProps(Config{Tenants: tenants, Tokens: tokens, Sender: benchSender{},
		Broker: newBenchBroker(settled), DedupeSize: 16, Prefetch: prefetch}), "router")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = system.Root.PoisonFuture(pid).Wait()
		system.Shutdown()
	})
	return system.Root, pid, settled
}

// benchBodies returns 64 bodies per tenant, with distinct internal ids and
// recipients: jobs to one recipient wait behind each other (one send at a
// time per recipient), and the benchmark would measure their deferrals.
func benchBodies(tenants int) [][]byte {
	out := make([][]byte, 0, 64*tenants)
	for i := range 64 {
		for t := range tenants {
			out = append(out, fmt.Appendf(nil, `{"metadata":{"tenantId":"t%05d","internalId":"job-%d"},`+
				`"wabaPayload":{"messaging_product":"whatsapp","to":"1555%07d","type":"text","text":{"body":"hi"}}}`, t, i, i))
		}
	}
	return out
}

// BenchmarkRouterDispatch measures one job through the actor system with
// a Meta and a broker that answer at once: router decodes and forwards,
// the tenant admits it, the send runs on its goroutine, the outcome comes
// back to the tenant, and the settlement starts.
//
//   - OneTenantSequential: one job at a time (latency of the whole path).
//   - Tenants100Window100: 100 tenants with 100 jobs in flight, as under a
//     prefetch of 100 (throughput; ns/op is per job).
func BenchmarkRouterDispatch(b *testing.B) {
	b.Run("OneTenantSequential", func(b *testing.B) {
		root, router, settled := benchRouter(b, 1, 1)
		bodies := benchBodies(1)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			root.Send(router, testkit.NewFakeDelivery(bodies[i%len(bodies)], nil))
			<-settled
			i++
		}
	})
	b.Run("Tenants100Window100", func(b *testing.B) {
		const tenants, window = 100, 100
		root, router, settled := benchRouter(b, tenants, window)
		bodies := benchBodies(tenants)
		b.ReportAllocs()
		b.ResetTimer()
		// A b.N loop rather than b.Loop: the jobs still in flight at the
		// end must be waited for inside the timing.
		inFlight := 0
		for i := range b.N {
			if inFlight == window {
				<-settled
				inFlight--
			}
			root.Send(router, testkit.NewFakeDelivery(bodies[i%len(bodies)], nil))
			inFlight++
		}
		for ; inFlight > 0; inFlight-- {
			<-settled
		}
	})
}
