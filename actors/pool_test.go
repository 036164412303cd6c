package actors

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPool(t *testing.T) {
	t.Run("RunsEveryTaskEvenWhenAllWorkersAreBusy", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := newPool(ctx, 2)
		release := make(chan struct{})
		var wg sync.WaitGroup
		ran := make(chan int, 10)
		for i := range 10 {
			wg.Add(1)
			p.Go(func() {
				defer wg.Done()
				ran <- i
				<-release // every task blocks: the pool's two cannot take them all
			})
		}
		for range 10 {
			select {
			case <-ran:
			case <-time.After(5 * time.Second):
				require.FailNow(t, "a task waited for a free worker instead of running")
			}
		}
		close(release)
		wg.Wait()
	})
	t.Run("StillRunsTasksAfterItsContextEnds", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		p := newPool(ctx, 1)
		cancel()
		done := make(chan struct{})
		p.Go(func() { close(done) })
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			assert.Fail(t, "a task handed to a stopped pool never ran")
		}
	})
}
