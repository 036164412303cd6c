package actors

import (
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
)

// testShards puts each tenant in the shard its table says.
type testShards map[string]int

func (s testShards) ShardOf(id string) int { return s[id] }

// WaitingBesides says another shard's delivery may always be waiting, as
// the sharing rule assumed before it asked.
func (s testShards) WaitingBesides(int) bool { return true }

func (s testShards) MoveMessage(d messages.Delivery, shard int) broker.Message {
	return broker.Message{Exchange: "shards", Key: strconv.Itoa(shard)}
}

// moves are the messages settled to the shards exchange, by key.
func moves(h *harness) []string {
	var keys []string
	for _, s := range h.broker.Settlements() {
		for _, m := range s.Messages {
			if m.Exchange == "shards" {
				keys = append(keys, m.Key)
			}
		}
	}
	return keys
}

func shardedHarness(t *testing.T) *harness {
	a, b := tenant("a"), tenant("b")
	a.RateLimit = config.RateLimit{PerMinute: 60, Burst: 5}
	// a in shard 0: the fake broker's copies come back as deliveries of
	// shard 0.
	return startHarness(t, Config{Tenants: []config.Tenant{a, b}, Shards: testShards{"a": 0, "b": 2}})
}

// A job from the intake is moved to its tenant's shard, not sent; so is one
// found in a shard its tenant does not belong to. One from its own shard is
// sent.
func TestTheRouterMovesJobsToTheirShard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := shardedHarness(t)
		h.root.Send(h.router, &messages.ShardsChanged{Shard: 0, Acquired: true, Owned: []int{0}})
		intake := testkit.NewFakeDelivery(jobBody("a", "j1", ownRecipient), nil)
		intake.Intake = true
		h.root.Send(h.router, intake)
		wrong := testkit.NewFakeDelivery(jobBody("b", "j2", ownRecipient), nil)
		h.root.Send(h.router, wrong) // shard 0
		right := testkit.NewFakeDelivery(jobBody("a", "j3", ownRecipient), nil)
		h.root.Send(h.router, right)
		h.advance(2 * 1e9) // a token for j3: the bucket started empty

		assert.ElementsMatch(t, []string{"0", "2"}, moves(h), "j1 to shard 0, j2 to shard 2 (lanes apart)")
		assert.Empty(t, h.callsFor("j1"))
		assert.Empty(t, h.callsFor("j2"))
		assert.Len(t, h.callsFor("j3"), 1, "a job in its own shard is sent")
		require.Len(t, h.logs("job_rerouted", "b"), 1)
	})
}

// A tenant of a shard another worker owns is listed as such, and commands
// to it are refused with where it is; once its shard is acquired it starts
// with an empty bucket, since its previous owner may have spent its burst.
func TestATenantOwnedElsewhereIsSaidToBeAndStartsEmptyWhenAcquired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := shardedHarness(t)
		info := h.askTenant(&messages.GetTenant{TenantID: "a"})
		assert.True(t, info.OwnedElsewhere)
		assert.Equal(t, 0, info.Shard)
		res := h.ask(&messages.PauseTenant{TenantID: "a"})
		elsewhere, ok := res.(*messages.TenantElsewhere)
		require.True(t, ok, "got %T", res)
		assert.Equal(t, 0, elsewhere.Shard)
		assert.True(t, h.listed("b").OwnedElsewhere)

		h.root.Send(h.router, &messages.ShardsChanged{Shard: 0, Acquired: true, Owned: []int{0}})
		info = h.askTenant(&messages.GetTenant{TenantID: "a"})
		assert.False(t, info.OwnedElsewhere)
		assert.Zero(t, info.TokensAvailable, "an acquired tenant's bucket starts empty")
		assert.True(t, h.pause("a").Paused, "commands reach it now")
		assert.True(t, h.listed("b").OwnedElsewhere, "b's shard is still another worker's")

		// Released and acquired again (the other worker had it meanwhile):
		// the bucket is emptied again, actor or not.
		h.resume("a")
		h.advance(10 * 1e9)
		require.InDelta(t, 5, h.info("a").TokensAvailable, 0.01, "refilled to its burst")
		h.root.Send(h.router, &messages.ShardsChanged{Shard: 0, Owned: []int{}})
		h.root.Send(h.router, &messages.ShardsChanged{Shard: 0, Acquired: true, Owned: []int{0}})
		assert.InDelta(t, 0, h.info("a").TokensAvailable, 0.01)
	})
}

// A tenant's bucket is empty when its shard is acquired, and refills from
// then on, whenever its first job comes.
func TestAnAcquiredTenantsBucketRefillsFromTheAcquisition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := shardedHarness(t) // a: 60/min, burst 5, shard 0
		h.root.Send(h.router, &messages.ShardsChanged{Shard: 0, Acquired: true, Owned: []int{0}})
		h.settle()
		h.advance(3 * time.Second)
		assert.InDelta(t, 3, h.listed("a").TokensAvailable, 0.01, "listed before its state exists")
		h.publish("a", "j1")
		assert.Len(t, h.callsFor("j1"), 1, "sent at once: 3 tokens refilled since the acquisition")
		assert.InDelta(t, 2, h.info("a").TokensAvailable, 0.01)
	})
}
