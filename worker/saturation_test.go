package worker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

// While every prefetch slot is held the worker says so, once a minute at
// most: here a tenant's API hangs on the two jobs a prefetch of 2 lets in.
func TestEveryPrefetchSlotHeldIsReportedAsSaturation(t *testing.T) {
	tenants := defaultTenants(1)
	a := tenants[0]
	h := startHarness(t, tenants, harnessOptions{Args: []string{"--prefetch", "2", "--prefetch-reduced", "1", "--meta-timeout", "30s"}})
	h.fake.Behave(a.Phone, fakemeta.Behaviour{Hang: true})
	for i := range 2 {
		h.publish(job(a.ID, fmt.Sprintf("hang-%d", i), fmt.Sprintf("1555000000%d", i)))
	}
	require.Eventually(t, func() bool { return len(h.events("prefetch_saturated")) > 0 }, 20*time.Second, 20*time.Millisecond)
	e := h.events("prefetch_saturated")[0]
	assert.EqualValues(t, 2, e["prefetch"])
	assert.EqualValues(t, 2, e["held"])
	assert.Equal(t, "WARN", e["level"])
	h.fake.Behave(a.Phone, fakemeta.Behaviour{})
	assert.Len(t, h.events("prefetch_saturated"), 1, "once a minute at most")
}
