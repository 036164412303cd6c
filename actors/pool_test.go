package actors

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
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
			<-ran
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
		<-done
		assert.True(t, true)
	})
}
