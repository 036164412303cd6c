package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestFairLimit(t *testing.T) {
	t.Run("SmallP99sGetTwentyMillisecondsMore", func(t *testing.T) {
		assert.Equal(t, 25*time.Millisecond, fairLimit(5*time.Millisecond))
		assert.Equal(t, 60*time.Millisecond, fairLimit(40*time.Millisecond), "1.5 x 40 ms = 40 ms + 20 ms")
	})
	t.Run("LargeP99sGetHalfAgainAsMuch", func(t *testing.T) {
		assert.Equal(t, 150*time.Millisecond, fairLimit(100*time.Millisecond))
	})
}

func TestFairAdded(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	published := map[int]time.Time{1: t0, 2: t0.Add(time.Second), 3: t0.Add(2 * time.Second)}
	arrived := map[int]time.Time{
		1: t0.Add(3 * time.Millisecond), 2: t0.Add(time.Second + 40*time.Millisecond),
		9: t0, // a job not counted (the warm-up's) is left out
	}
	added, late := fairAdded(published, arrived, t0.Add(10*time.Second))
	assert.Equal(t, []time.Duration{3 * time.Millisecond, 40 * time.Millisecond, 8 * time.Second}, added,
		"sorted; a job that never arrived counts until the deadline")
	assert.Equal(t, 1, late)
}

func TestFairDurs(t *testing.T) {
	assert.Equal(t, "4.1ms, 36ms", fairDurs([]float64{float64(4100 * time.Microsecond), float64(36 * time.Millisecond)}))
}
