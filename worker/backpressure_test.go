package worker_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

// mostInFlight is the largest number of calls the fake had in flight at
// once among those that arrived within [from, to), counting only calls
// that arrived at or after from.
func mostInFlight(calls []fakemeta.Call, from, to time.Time) int {
	most := 0
	for _, c := range calls {
		if c.At.Before(from) || !c.At.Before(to) {
			continue
		}
		n := 0
		for _, d := range calls {
			if !d.At.Before(from) && !d.At.After(c.At) && d.AnsweredAt.After(c.At) {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}

func TestBackpressureReducesPrefetchUnderDepthAndRestoresIt(t *testing.T) {
	const jobs = 1500
	tenants := defaultTenants(10)
	var bodies [][]byte
	for i := range jobs {
		tn := tenants[i%len(tenants)]
		bodies = append(bodies, job(tn.ID, fmt.Sprintf("bp-%04d", i), "15550000009"))
	}
	fakeLatency := 60 * time.Millisecond
	h := startHarness(t, tenants, harnessOptions{
		Prepublish: bodies,
		Args: []string{"--backpressure-interval", "250ms", "--backpressure-high", "1000",
			"--backpressure-low", "100", "--prefetch", "10", "--prefetch-reduced", "5"},
		BeforeRun: func(h *harness) {
			for _, tn := range tenants {
				h.fake.Behave(tn.Phone, fakemeta.Behaviour{Latency: fakemeta.Latency{Median: fakeLatency}})
			}
		},
	})

	results := h.results(jobs, 90*time.Second) // fails on a duplicate result
	for id, r := range results {
		require.Equal(t, messages.StatusSent, r.Status, id)
	}
	sends := map[string]int{}
	for _, c := range h.fake.Calls() {
		var body struct {
			Text struct{ Body string } `json:"text"`
		}
		require.NoError(t, json.Unmarshal(c.Body, &body))
		sends[body.Text.Body]++
	}
	assert.Len(t, sends, jobs, "every job sent")
	for id, n := range sends {
		assert.Equal(t, 1, n, "%s sent more than once", id)
	}
	changes := h.events("prefetch_changed")
	require.GreaterOrEqual(t, len(changes), 2)
	assert.EqualValues(t, 10, changes[0]["previousPrefetch"])
	assert.EqualValues(t, 5, changes[0]["prefetch"])
	assert.Greater(t, changes[0]["queueDepth"], float64(1000))
	last := changes[len(changes)-1]
	assert.EqualValues(t, 10, last["prefetch"])
	assert.Less(t, last["queueDepth"], float64(100))

	// While the prefetch is reduced, the worker holds at most 5 jobs, so at
	// most 5 sends are in flight (after the 10 taken before the switch
	// have been answered), and 10 again afterwards.
	at := func(e map[string]any) time.Time {
		ts, err := time.Parse(time.RFC3339Nano, e["timestamp"].(string))
		require.NoError(t, err)
		return ts
	}
	reduced, restored := at(changes[0]), at(changes[1])
	// The reduction lasts until the ready jobs fall below 100, which the
	// delay queues hasten (a busy tenant's jobs wait there, not ready):
	// about 1-2 s on a quiet machine, depending on how fast the worker is.
	// What the check below needs is enough sends in it to look at.
	calls := h.fake.Calls()
	during := 0
	for _, c := range calls {
		if !c.At.Before(reduced) && c.At.Before(restored) {
			during++
		}
	}
	require.GreaterOrEqual(t, during, 20, "sends while reduced (%v), enough to look at", restored.Sub(reduced))
	// Jobs taken before the switch may still be out; of those sent after
	// it, never more than 5 at once.
	assert.LessOrEqual(t, mostInFlight(calls, reduced, restored), 5, "in flight while reduced")
	assert.Greater(t, mostInFlight(calls, time.Time{}, reduced), 5, "in flight before the reduction")
	assert.Zero(t, h.queued())
}
