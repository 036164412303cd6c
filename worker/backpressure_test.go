package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

// brokerPrefetch asks RabbitMQ (not the worker) for the prefetch count of
// the consumers on queue; -1 when it has none.
func brokerPrefetch(t *testing.T, queue string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", "list_consumers", "-q", "--no-table-headers",
		"queue_name", "prefetch_count").Output()
	require.NoError(t, err, "rabbitmqctl list_consumers")
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == queue {
			n, err := strconv.Atoi(f[1])
			require.NoError(t, err)
			return n
		}
	}
	return -1
}

// waitBrokerPrefetch polls the broker (each rabbitmqctl call takes about
// half a second) until queue's consumer has prefetch want.
func waitBrokerPrefetch(t *testing.T, queue string, want int, deadline time.Time) bool {
	t.Helper()
	for time.Now().Before(deadline) {
		if brokerPrefetch(t, queue) == want {
			return true
		}
	}
	return false
}

func TestBackpressureReducesPrefetchUnderDepthAndRestoresIt(t *testing.T) {
	const jobs = 1500
	tenants := defaultTenants(10)
	var bodies [][]byte
	for i := range jobs {
		tn := tenants[i%len(tenants)]
		bodies = append(bodies, job(tn.ID, fmt.Sprintf("bp-%04d", i), "15550000009"))
	}
	fakeLatency := 40 * time.Millisecond
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

	// The broker itself reports prefetch 5 while the queue is deep, and 10
	// again once it drains below 100.
	deadline := time.Now().Add(60 * time.Second)
	require.True(t, waitBrokerPrefetch(t, h.topo.Queue, 5, deadline),
		"the broker never showed prefetch 5 for the worker's consumer")
	assert.True(t, waitBrokerPrefetch(t, h.topo.Queue, 10, deadline),
		"the broker never showed prefetch 10 again after the queue drained")

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
	assert.Zero(t, h.depth(h.topo.Queue))
}
