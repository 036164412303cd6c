package worker_test

import (
	"fmt"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ownGoroutines returns the stacks of the goroutines a worker may start,
// by goroutine id: its own packages', the broker client's, the actor
// system's and the Graph API client's connections. Test goroutines (this
// one, and parallel tests waiting for their turn) and the fake Meta's
// server goroutines are left out.
func ownGoroutines() map[string]string {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	own := map[string]string{}
	for _, g := range strings.Split(b.String(), "\n\n") {
		switch {
		case strings.Contains(g, "testing.tRunner"),
			strings.Contains(g, "testkit/fakemeta"),
			strings.Contains(g, "net/http.(*conn).serve"),
			strings.Contains(g, "net/http.(*Server).Serve"):
			continue
		case strings.Contains(g, "github.com/wadispatch/wadispatch/"),
			strings.Contains(g, "github.com/rabbitmq/amqp091-go"),
			strings.Contains(g, "github.com/asynkron/protoactor-go"),
			strings.Contains(g, "net/http.(*persistConn)"):
			id, _, _ := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
			own[id] = g
		}
	}
	return own
}

// newSince returns the stacks in now whose goroutines were not in before.
func newSince(before, now map[string]string) []string {
	var out []string
	for id, g := range now {
		if _, ok := before[id]; !ok {
			out = append(out, g)
		}
	}
	return out
}

// Every goroutine the worker starts — consumer, backpressure, publisher,
// the actors and their send/settle pool, the Graph API client's
// connections — has ended once Run returns (goroutines exit a moment after
// they are told to, so the check waits for them, up to a bound).
func TestStoppedWorkerLeavesNoGoroutineBehind(t *testing.T) {
	before := ownGoroutines()
	tenants := defaultTenants(3)
	h := startHarness(t, tenants, harnessOptions{
		Defaults: "rate_limit: {per_minute: 60, burst: 2}\nbreaker: {failure_threshold: 5, open_for: 60s}\nmax_attempts: 10",
	})
	for _, tn := range tenants {
		for i := range 4 { // two sent at once, two deferred on the bucket
			h.publish(job(tn.ID, fmt.Sprintf("%s-%d", tn.ID, i), "15550000001"))
		}
	}
	h.results(6, 30*time.Second)
	h.stop()
	require.NoError(t, h.conn.Close(), "the test's own connection")

	deadline := time.Now().Add(10 * time.Second)
	left := newSince(before, ownGoroutines())
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		left = newSince(before, ownGoroutines())
	}
	require.Empty(t, left, "goroutines still running after the worker stopped")
}
