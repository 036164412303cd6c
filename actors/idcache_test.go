package actors

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestIDCache(t *testing.T) {
	for _, size := range []int{3, indexAfter + 8} {
		t.Run(fmt.Sprintf("Size%d", size), func(t *testing.T) {
			c := newIDCache(size)
			_, ok := c.get("nothing")
			assert.False(t, ok)
			for i := range size {
				c.add(fmt.Sprintf("id-%d", i), fmt.Sprintf("wamid-%d", i))
			}
			for i := range size {
				w, ok := c.get(fmt.Sprintf("id-%d", i))
				assert.True(t, ok, "id-%d", i)
				assert.Equal(t, fmt.Sprintf("wamid-%d", i), w)
			}
			c.add("id-0", "wamid-again") // an update does not evict
			w, _ := c.get("id-0")
			assert.Equal(t, "wamid-again", w)
			_, ok = c.get(fmt.Sprintf("id-%d", size-1))
			assert.True(t, ok)

			c.repack()           // as at an idle check: what it holds and its order stay
			c.add("new-1", "w1") // full: the oldest (id-0) makes room
			c.add("new-2", "w2") // then id-1
			_, ok = c.get("id-0")
			assert.False(t, ok, "oldest evicted")
			_, ok = c.get("id-1")
			assert.False(t, ok)
			for _, id := range []string{"id-2", "new-1", "new-2"} {
				_, ok = c.get(id)
				assert.True(t, ok, id)
			}
			assert.Len(t, c.entries, size, "bounded")
		})
	}
	t.Run("NilCacheFindsNothing", func(t *testing.T) {
		var c *idCache
		_, ok := c.get("x")
		assert.False(t, ok)
	})
}

func newIDCache(max int) *idCache { return &idCache{max: max} }
