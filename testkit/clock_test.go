package testkit_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/wadispatch/wadispatch/testkit"
)

func TestFakeClock(t *testing.T) {
	start := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)

	t.Run("ReadsStartUntilMoved", func(t *testing.T) {
		c := testkit.NewFakeClock(start)
		assert.True(t, c.Now().Equal(start))
		assert.True(t, c.Now().Equal(start))
	})

	t.Run("AdvanceAddsTheDuration", func(t *testing.T) {
		c := testkit.NewFakeClock(start)
		c.Advance(90 * time.Second)
		c.Advance(500 * time.Millisecond)
		assert.True(t, c.Now().Equal(start.Add(90*time.Second+500*time.Millisecond)))
	})

	t.Run("NegativeAdvanceMovesBack", func(t *testing.T) {
		c := testkit.NewFakeClock(start)
		c.Advance(-time.Minute)
		assert.True(t, c.Now().Equal(start.Add(-time.Minute)))
	})

	t.Run("SetJumpsAnywhere", func(t *testing.T) {
		c := testkit.NewFakeClock(start)
		later := start.Add(24 * time.Hour)
		c.Set(later)
		assert.True(t, c.Now().Equal(later))
		c.Set(start)
		assert.True(t, c.Now().Equal(start))
	})

	t.Run("ConcurrentAdvancesAllCount", func(t *testing.T) {
		c := testkit.NewFakeClock(start)
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				for range 100 {
					c.Advance(time.Millisecond)
					_ = c.Now()
				}
			})
		}
		wg.Wait()
		assert.True(t, c.Now().Equal(start.Add(5000*time.Millisecond)))
	})
}
