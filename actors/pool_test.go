package actors

import (
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
)

func TestPool(t *testing.T) {
	t.Run("RunsEveryTaskEvenWhenAllWorkersAreBusy", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := newPool(2)
			synctest.Wait() // both idle
			release := make(chan struct{})
			var ran atomic.Int32
			for range 10 {
				p.Go(func() {
					ran.Add(1)
					<-release // every task blocks: the pool's two cannot take them all
				})
			}
			synctest.Wait()
			assert.EqualValues(t, 10, ran.Load(), "no task waits for a free worker")
			assert.EqualValues(t, 8, p.overflow.Load(), "a goroutine of its own for each task the two could not take")
			close(release)
			p.Close()
		})
	})
	t.Run("RunsMailboxBurstsOnItsIdleGoroutines", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := newPool(4)
			synctest.Wait()
			release := make(chan struct{})
			var ran atomic.Int32
			var d actor.Dispatcher = mailboxes{p}
			for range 4 {
				d.Schedule(func() {
					ran.Add(1)
					<-release
				})
			}
			synctest.Wait()
			assert.EqualValues(t, 4, ran.Load())
			// (Counted by the pool: runtime.NumGoroutine counts the
			// process, whose other tests start and end goroutines.)
			assert.Zero(t, p.overflow.Load(), "four bursts on the four idle goroutines, none started")
			assert.Equal(t, 300, d.Throughput())
			close(release)
			p.Close()
		})
	})
	t.Run("CloseWaitsForRunningTasksAndEndsEveryGoroutine", func(t *testing.T) {
		// synctest fails the test if a goroutine of the bubble outlives it.
		synctest.Test(t, func(t *testing.T) {
			p := newPool(3)
			release := make(chan struct{})
			var finished atomic.Int32
			for range 5 {
				p.Go(func() {
					<-release
					finished.Add(1)
				})
			}
			closed := make(chan struct{})
			go func() {
				p.Close()
				close(closed)
			}()
			synctest.Wait()
			select {
			case <-closed:
				t.Fatal("Close returned while tasks were still running")
			default:
			}
			close(release)
			<-closed
			assert.EqualValues(t, 5, finished.Load())
		})
	})
	t.Run("CloseFromTaskWaitsForEveryOtherGoroutine", func(t *testing.T) {
		// The router stops on one of the pool's goroutines: Close would
		// wait for that one too, for ever.
		synctest.Test(t, func(t *testing.T) {
			p := newPool(2)
			release := make(chan struct{})
			var finished atomic.Int32
			for range 3 { // two on the pool's goroutines, one of its own
				p.Go(func() {
					<-release
					finished.Add(1)
				})
			}
			closed := make(chan struct{})
			var left int
			p.Go(func() { // a fourth: started for it, as the router's is
				p.CloseFromTask()
				p.mu.Lock()
				left = p.live
				p.mu.Unlock()
				close(closed)
			})
			synctest.Wait()
			select {
			case <-closed:
				t.Fatal("CloseFromTask returned while tasks were still running")
			default:
			}
			close(release)
			<-closed
			assert.EqualValues(t, 3, finished.Load())
			assert.EqualValues(t, 1, left, "only the closing task's goroutine was left")
		})
	})
	t.Run("StillRunsTasksAfterClose", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := newPool(1)
			p.Close()
			var ran atomic.Bool
			p.Go(func() { ran.Store(true) })
			synctest.Wait()
			assert.True(t, ran.Load(), "a settlement handed to a closed pool still runs")
			p.Close()
		})
	})
}

// Tasks of one lane run one at a time, in the order they were queued,
// while another lane's run beside them.
func TestLanesKeepTheOrderWithinALane(t *testing.T) {
	p := newPool(4)
	defer p.Close()
	l := newLanes(p, 2)
	var mu sync.Mutex
	var got []int
	release := make(chan struct{})
	other := make(chan struct{})
	l.Go(0, func() { <-release })
	for i := range 50 {
		l.Go(2, func() { mu.Lock(); got = append(got, i); mu.Unlock() }) // lane 0 too (2 mod 2)
	}
	l.Go(1, func() { close(other) })
	<-other // lane 1 ran while lane 0 was blocked
	mu.Lock()
	assert.Empty(t, got, "nothing of lane 0 ran before its first task ended")
	mu.Unlock()
	close(release)
	p.Close()
	want := make([]int, 50)
	for i := range want {
		want[i] = i
	}
	assert.Equal(t, want, got)
}
