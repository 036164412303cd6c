package worker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// panickingSender panics instead of sending when panics says so for a
// job (by its payload's text), counting every panic per job.
type panickingSender struct {
	next   whatsapp.Sender
	mu     sync.Mutex
	panics map[string]int
	// when reports whether the n-th call (from 1) for job should panic.
	when func(job string, n int) bool
	seen map[string]int
}

func newPanickingSender(when func(job string, n int) bool) *panickingSender {
	return &panickingSender{when: when, panics: map[string]int{}, seen: map[string]int{}}
}

func (p *panickingSender) wrap(next whatsapp.Sender) whatsapp.Sender {
	p.next = next
	return p
}

func (p *panickingSender) Send(ctx context.Context, req whatsapp.Request) (whatsapp.Response, error) {
	body := string(req.Payload)
	i := strings.Index(body, `"job `)
	id := ""
	if i >= 0 {
		id = strings.SplitN(body[i+5:], `"`, 2)[0]
	}
	p.mu.Lock()
	p.seen[id]++
	n := p.seen[id]
	boom := p.when(id, n)
	if boom {
		p.panics[id]++
	}
	p.mu.Unlock()
	if boom {
		panic(fmt.Sprintf("test panic sending %s (call %d)", id, n))
	}
	return p.next.Send(ctx, req)
}

func (p *panickingSender) count(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.panics[id]
}

func TestPanickingTenantRestartsKeepingItsStateAndLosesNoJob(t *testing.T) {
	a := testTenant{ID: "crashy", Phone: "500000000000001", Token: "EAAtoken-crashy-s3cr3t",
		Extra: "rate_limit: {per_minute: 1, burst: 10}"}
	b := testTenant{ID: "steady", Phone: "500000000000002", Token: "EAAtoken-steady-s3cr3t"}
	ps := newPanickingSender(func(job string, n int) bool { return job == "crashy-3" && n == 1 })
	h := startHarness(t, []testTenant{a, b}, harnessOptions{WrapSender: ps.wrap})

	before := h.tenantInfo(a.ID)
	require.InDelta(t, 10, before.TokensAvailable, 0.01, "A starts with a full bucket")
	for i := 1; i <= 5; i++ {
		h.publish(job(a.ID, fmt.Sprintf("crashy-%d", i), "15550000005"))
		h.publish(job(b.ID, fmt.Sprintf("steady-%d", i), "15550000006"))
	}
	results := h.results(10, 30*time.Second)
	for id, r := range results {
		assert.Equal(t, messages.StatusSent, r.Status, id)
	}
	assert.Equal(t, 1, ps.count("crashy-3"), "the third job panicked once")

	after := h.tenantInfo(a.ID)
	assert.Equal(t, 1, after.Restarts, "A's actor restarted once")
	assert.EqualValues(t, 5, after.Sent)
	// Six admissions (five jobs and the retry of the one that panicked)
	// spent six tokens; a restart that rebuilt the bucket would show ~10.
	assert.InDelta(t, before.TokensAvailable-6, after.TokensAvailable, 0.5,
		"A's bucket kept its spent tokens across the restart")
	assert.Zero(t, h.tenantInfo(b.ID).Restarts, "B never noticed")
	assert.EqualValues(t, 5, h.tenantInfo(b.ID).Sent)

	restarted := h.events("tenant_actor_restarted")
	require.Len(t, restarted, 1)
	assert.Equal(t, a.ID, restarted[0]["tenantId"])
	assert.Contains(t, restarted[0]["reason"], "test panic sending crashy-3")
	assert.EqualValues(t, 1, restarted[0]["restarts"])
	assert.Zero(t, h.depth(h.topo.DLQ()))
}

func TestJobThatAlwaysPanicsIsDeadLetteredAsPoisonAfterThreeCrashes(t *testing.T) {
	tenants := defaultTenants(2)
	a, b := tenants[0], tenants[1]
	ps := newPanickingSender(func(job string, _ int) bool { return job == "poison-1" })
	h := startHarness(t, tenants, harnessOptions{WrapSender: ps.wrap})
	h.publish(job(a.ID, "poison-1", "15550000007"))
	h.publish(job(a.ID, "fine-1", "15550000007"))
	h.publish(job(b.ID, "fine-2", "15550000008"))

	results := h.results(3, 30*time.Second)
	assert.Equal(t, messages.StatusSent, results["fine-1"].Status)
	assert.Equal(t, messages.StatusSent, results["fine-2"].Status)
	require.Contains(t, results, "poison-1")
	assert.Equal(t, messages.StatusDeadLettered, results["poison-1"].Status)
	assert.Equal(t, messages.ReasonPoison, results["poison-1"].Reason)

	dead := h.dlq(1, 10*time.Second)
	require.Len(t, dead, 1)
	assert.Equal(t, messages.ReasonPoison, dead[0].Headers[messages.HeaderDLQReason])
	assert.EqualValues(t, 3, dead[0].Headers[messages.HeaderCrashes])
	assert.Equal(t, 3, ps.count("poison-1"), "exactly three crashes, then no fourth try")
	assert.Equal(t, 3, h.tenantInfo(a.ID).Restarts)
	assert.False(t, h.tenantInfo(a.ID).Quarantined, "three crashes are below the quarantine limit")
	assert.Zero(t, h.tenantInfo(b.ID).Restarts)
}
