package actors

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
)

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
	assert.Equal(t, float64(cfg.RateLimit.Burst), e.inactiveInfo(now, time.Time{}).TokensAvailable, "never started")

	e.state = newTenantState(new(stateSlab), &e.cfg, benchToken("t"), "epoch", now, deps)
	e.state.sent = 3
	e.state.sched.Bucket().Allow(now)
	reported := e.state.info(now, false)
	e.stopping, e.stoppingInfo = &actor.PID{Id: "tenant-a"}, &reported
	assert.Equal(t, reported, e.inactiveInfo(now, time.Time{}), "stopping: what the actor reported")
	assert.EqualValues(t, 3, e.inactiveInfo(now, time.Time{}).Sent)

	e.stopping = nil
	assert.EqualValues(t, 3, e.inactiveInfo(now, time.Time{}).Sent, "passivated: read from the state")
}

// States made from one slab share an allocation, never their parts: each
// tenant has its own bucket, breaker and duplicate memory.
func TestStatesFromOneSlabAreIndependent(t *testing.T) {
	deps := &Config{}
	deps.withDefaults()
	now := time.Now()
	slab := new(stateSlab)
	a, b := tenant("a"), tenant("b")
	sa := newTenantState(slab, &a, benchToken("ta"), "epoch", now, deps)
	sb := newTenantState(slab, &b, benchToken("tb"), "epoch", now, deps)
	for range a.RateLimit.Burst {
		sa.sched.Bucket().Allow(now)
	}
	sa.sched.Breaker().Failure(now)
	sa.recent.max = 4
	sa.recent.add("job-1", "wamid.1")
	assert.Equal(t, 0.0, sa.info(now, false).TokensAvailable)
	assert.Equal(t, float64(b.RateLimit.Burst), sb.info(now, false).TokensAvailable, "b's bucket is its own")
	assert.Equal(t, 0, sb.sched.Breaker().Stats(now).ConsecutiveFailures, "b's breaker is its own")
	_, dup := sb.recent.get("job-1")
	assert.False(t, dup, "b's duplicate memory is its own")
}
