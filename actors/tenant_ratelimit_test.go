package actors

import (
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
)

// slowTenant sends 60 a minute (a token a second) with a burst of 3.
func slowTenant() config.Tenant {
	a := tenant("a")
	a.RateLimit = config.RateLimit{PerMinute: 60, Burst: 3}
	return a
}

func TestBurstIsSentAtOnceAndEachDeferredJobAtItsSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{slowTenant()}})
		ids := make([]string, 10)
		for i := range ids {
			ids[i] = fmt.Sprintf("j%d", i+1)
			h.publish("a", ids[i]) // all at t0, each handled before the next arrives
		}
		h.advanceTo(time.Minute)

		// The burst goes at t0; job k > 3 holds the token due (k-3) s
		// after t0 and is sent SendGuard after it.
		for i, id := range ids {
			want := time.Duration(0)
			if i >= 3 {
				want = time.Duration(i-2)*time.Second + SendGuard
			}
			calls := h.callsFor(id)
			require.Len(t, calls, 1, id)
			assert.Equal(t, want, calls[0].Start, id)
			assert.Equal(t, messages.StatusSent, h.result(id).Status, id)
		}
		assertWithinRate(t, h.callStarts("a"), 3, 1)

		for i, id := range ids {
			want := []string(nil)
			if i >= 3 {
				want = []string{"rate_limited"}
			}
			assert.Equal(t, want, h.deferReasons(id), "%s is deferred once, to its slot", id)
			for _, c := range h.copies(testkit.KindDeferred, id) {
				assert.EqualValues(t, 1, header(c, messages.HeaderDeferrals),
					"%s: taking the next delay tier is not another deferral", id)
			}
		}
		info := h.info("a")
		assert.EqualValues(t, 7, info.DeferredTotal)
		assert.EqualValues(t, 10, info.Sent)
		assert.Equal(t, 0, info.Deferred)
	})
}

// assertWithinRate checks that no window [s_i, s_j] of the sorted send
// times holds more than burst + perSecond × (s_j − s_i) sends.
func assertWithinRate(t *testing.T, starts []time.Duration, burst int, perSecond float64) {
	t.Helper()
	starts = slices.Sorted(slices.Values(starts))
	for i := range starts {
		for j := i; j < len(starts); j++ {
			allowed := float64(burst) + perSecond*(starts[j]-starts[i]).Seconds()
			assert.LessOrEqual(t, float64(j-i+1), allowed+1e-9, "sends in [%s, %s]", starts[i], starts[j])
		}
	}
}

// A burst that arrives together while the tenant's latency is unknown:
// the tenant holds MaxHeld = 2 (one sending, one next), so the third job
// is deferred to a busy slot, which the smallest delay tier (50 ms) turns
// into a 50 ms wait. The later jobs keep their rate-limit slots, so the
// tenant's rate is unaffected. (The send window replaces this holding.)
func TestBurstArrivingTogetherHoldsTwoAndDefersTheThirdWhileLatencyIsUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{slowTenant()}})
		h.answer(always(reply{Delay: 10 * time.Millisecond}))
		for i := range 10 {
			h.deliver(jobBody("a", fmt.Sprintf("j%d", i+1), ownRecipient), nil)
		}
		h.advanceTo(time.Minute)

		want := []time.Duration{0, 10 * time.Millisecond, 50 * time.Millisecond}
		for k := 1; k <= 7; k++ {
			want = append(want, time.Duration(k)*time.Second+SendGuard)
		}
		assert.Equal(t, want, h.callStarts("a"))
		assertWithinRate(t, h.callStarts("a"), 3, 1)
	})
}
