package actors

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recordingInvoker records what a mailbox hands it, and panics on "boom".
type recordingInvoker struct {
	mu        sync.Mutex
	got       []any
	escalated []any
	// onEscalate runs on a failure, as supervision's suspension does.
	onEscalate func()
}

func (r *recordingInvoker) InvokeSystemMessage(m any) { r.add(m) }
func (r *recordingInvoker) InvokeUserMessage(m any) {
	if m == "boom" {
		panic("boom!")
	}
	r.add(m)
}
func (r *recordingInvoker) EscalateFailure(reason, m any) {
	r.mu.Lock()
	r.escalated = append(r.escalated, reason, m)
	r.mu.Unlock()
	if r.onEscalate != nil {
		r.onEscalate()
	}
}
func (r *recordingInvoker) add(m any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, m)
}
func (r *recordingInvoker) take() []any {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := r.got
	r.got = nil
	return got
}

// heldDispatcher keeps what it is asked to schedule, for the test to run.
type heldDispatcher struct{ scheduled []func() }

func (d *heldDispatcher) Schedule(fn func()) { d.scheduled = append(d.scheduled, fn) }
func (*heldDispatcher) Throughput() int      { return 300 }

// runAll runs what was scheduled, and reports how many bursts that was.
func (d *heldDispatcher) runAll() int {
	n := 0
	for ; n < len(d.scheduled); n++ {
		d.scheduled[n]()
	}
	d.scheduled = d.scheduled[:0]
	return n
}

func TestMailboxKeepsProtoactorsRules(t *testing.T) {
	newBox := func() (*mailbox, *recordingInvoker, *heldDispatcher) {
		m, inv, d := new(mailbox), &recordingInvoker{}, &heldDispatcher{}
		m.RegisterHandlers(inv, d)
		return m, inv, d
	}

	t.Run("SystemMessagesFirstThenUserMessagesInOrderInOneBurst", func(t *testing.T) {
		m, inv, d := newBox()
		m.PostUserMessage("u1")
		m.PostUserMessage("u2")
		m.PostSystemMessage("s1")
		assert.Equal(t, 2, m.UserMessageCount())
		assert.Equal(t, 1, d.runAll(), "an idle mailbox is scheduled once, however many messages come")
		assert.Equal(t, []any{"s1", "u1", "u2"}, inv.take())
		assert.Zero(t, m.UserMessageCount())
	})

	t.Run("SuspendedHoldsUserMessagesUntilResumed", func(t *testing.T) {
		m, inv, d := newBox()
		m.PostSystemMessage(&actor.SuspendMailbox{})
		m.PostUserMessage("u1")
		d.runAll()
		assert.Empty(t, inv.take(), "a suspended mailbox hands out no user message")
		assert.Equal(t, 1, m.UserMessageCount())
		m.PostUserMessage("u2")
		d.runAll()
		assert.Empty(t, inv.take())
		m.PostSystemMessage(&actor.ResumeMailbox{})
		d.runAll()
		assert.Equal(t, []any{"u1", "u2"}, inv.take(), "resumed: the held messages, in order")
	})

	t.Run("APanicIsEscalatedWithItsMessageAndTheRestWaitForTheRestart", func(t *testing.T) {
		m, inv, d := newBox()
		// As protoactor's actor context does on a failure.
		inv.onEscalate = func() { m.PostSystemMessage(&actor.SuspendMailbox{}) }
		m.PostUserMessage("u1")
		m.PostUserMessage("boom")
		m.PostUserMessage("u2")
		d.runAll()
		assert.Equal(t, []any{"boom!", "boom"}, inv.escalated)
		assert.Equal(t, []any{"u1"}, inv.take(), "nothing after the panic until the supervisor resumes")
		m.PostSystemMessage(&actor.ResumeMailbox{})
		d.runAll()
		assert.Equal(t, []any{"u2"}, inv.take())
	})

	t.Run("AMessageToAnIdleMailboxCostsNoAllocation", func(t *testing.T) {
		m, inv, d := newBox()
		msg := &wake{}
		allocs := testing.AllocsPerRun(1000, func() {
			m.PostUserMessage(msg)
			d.runAll()
			inv.got = inv.got[:0]
		})
		assert.Zero(t, allocs)
	})
}

// Messages posted from many goroutines at once, on a dispatcher that runs
// each burst on a goroutine of its own (protoactor's), each arrive once
// and in the order each goroutine posted them.
func TestMailboxUnderConcurrentPosts(t *testing.T) {
	const posters, each = 8, 2000
	inv := &recordingInvoker{}
	m := new(mailbox)
	var bursts sync.WaitGroup
	m.RegisterHandlers(inv, goDispatcher{&bursts})
	var wg sync.WaitGroup
	for p := range posters {
		wg.Go(func() {
			for i := range each {
				if i%100 == 0 {
					m.PostSystemMessage([2]int{-1, i})
				}
				m.PostUserMessage([2]int{p, i})
			}
		})
	}
	wg.Wait()
	bursts.Wait()
	next := make([]int, posters)
	users := 0
	for _, g := range inv.take() {
		v := g.([2]int)
		if v[0] < 0 {
			continue
		}
		require.Equal(t, next[v[0]], v[1], "poster %d's messages in order", v[0])
		next[v[0]]++
		users++
	}
	assert.Equal(t, posters*each, users)
	assert.Zero(t, m.UserMessageCount())
}

type goDispatcher struct{ wg *sync.WaitGroup }

func (d goDispatcher) Schedule(fn func()) { d.wg.Go(fn) }
func (goDispatcher) Throughput() int      { return 50 }

// The ring keeps order through growth and wrap-around, against a slice.
func TestFifoKeepsOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var q fifo
	var model []int
	next := 0
	for range 100000 {
		if rng.IntN(3) > 0 || len(model) == 0 && rng.IntN(2) == 0 {
			q.push(next)
			model = append(model, next)
			next++
			continue
		}
		v := q.pop()
		if len(model) == 0 {
			require.Nil(t, v)
			continue
		}
		require.Equal(t, model[0], v)
		model = model[1:]
	}
	for len(model) > 0 {
		require.Equal(t, model[0], q.pop())
		model = model[1:]
	}
	assert.Nil(t, q.pop())
	assert.Nil(t, q.buf, "an emptied queue that grew lets its buffer go")
}

// nextInvoker is an invoker whose handler of "go" hands run on to the
// goroutine running the mailbox (runNext), and records whether it may.
type nextInvoker struct {
	recordingInvoker
	m        *mailbox
	run      task
	accepted []bool
}

func (n *nextInvoker) InvokeUserMessage(msg any) {
	n.add(msg)
	if msg == "go" {
		n.accepted = append(n.accepted, n.m.runNext(n.run))
	}
}

// A handler's last act hands the goroutine on: the task runs on the
// goroutine that ran the mailbox once the mailbox is idle again.
func TestMailboxHandsItsGoroutineOnToTheTaskAHandlerLeft(t *testing.T) {
	newBox := func(p *pool) (*mailbox, *nextInvoker) {
		m := new(mailbox)
		inv := &nextInvoker{m: m}
		m.RegisterHandlers(inv, mailboxes{p})
		return m, inv
	}
	t.Run("OnThePoolsGoroutineOnceTheMailboxIsIdle", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := newPool(1)
			synctest.Wait() // its goroutine waits for a task
			m, inv := newBox(p)
			idle := make(chan bool, 1)
			inv.run = taskFunc(func() { idle <- m.status.Load() == mailboxIdle })
			m.PostUserMessage("go")
			assert.True(t, <-idle, "the mailbox was let go first")
			synctest.Wait()
			assert.Equal(t, []bool{true}, inv.accepted)
			assert.Zero(t, p.overflow.Load(), "the pool's one goroutine ran both: nothing else was started")
			p.Close()
		})
	})
	t.Run("DeclinedWhileMoreMessagesWait", func(t *testing.T) {
		m, inv := newBox(newPool(0))
		ran := 0
		inv.run = taskFunc(func() { ran++ })
		// The first "go" is queued while the mailbox counts as running;
		// postHere then runs the idle mailbox on this goroutine, and the
		// first "go" finds the second waiting.
		m.status.Store(mailboxRunning)
		m.PostUserMessage("go")
		m.status.Store(mailboxIdle)
		next := m.postHere("go")
		assert.Equal(t, []bool{false, true}, inv.accepted, "the first would have waited for the second")
		require.NotNil(t, next, "the second's task is handed back to run next")
		next.run()
		assert.Equal(t, 1, ran)
	})
	t.Run("NotWithoutAPool", func(t *testing.T) {
		m := new(mailbox)
		inv := &nextInvoker{m: m, run: taskFunc(func() {})}
		d := &heldDispatcher{}
		m.RegisterHandlers(inv, d)
		m.PostUserMessage("go")
		d.runAll()
		assert.Equal(t, []bool{false}, inv.accepted)
	})
	t.Run("ClaimHandsAnIdleMailboxToTheCaller", func(t *testing.T) {
		m, inv := newBox(newPool(0))
		next := m.claim("u1")
		require.Equal(t, task(m), next, "the idle mailbox is the caller's to run")
		assert.Empty(t, inv.take(), "not handled until the caller runs it")
		assert.Nil(t, m.claim("u2"), "running already: the message is only queued")
		runChain(next)
		assert.Equal(t, []any{"u1", "u2"}, inv.take())
		assert.Equal(t, mailboxIdle, m.status.Load())
	})
	t.Run("PostHereRunsAnIdleMailboxOnTheCaller", func(t *testing.T) {
		m, inv := newBox(newPool(0))
		assert.Nil(t, m.postHere("u1"))
		assert.Equal(t, []any{"u1"}, inv.take(), "handled before postHere returned")
		// A running mailbox only gets the message.
		m.status.Store(mailboxRunning)
		assert.Nil(t, m.postHere("u2"))
		assert.Empty(t, inv.take())
		assert.Equal(t, 1, m.UserMessageCount())
	})
}

// chainOf is a chain task that hands on to itself n times, recording the
// depth of the stack it runs at.
type chainOf struct {
	n      int
	depths []int
}

func (c *chainOf) run() { runChain(c) }
func (c *chainOf) runThen() task {
	c.depths = append(c.depths, runtime.Callers(0, make([]uintptr, 64)))
	if c.n--; c.n > 0 {
		return c
	}
	return nil
}

// A tenant's chain (mailbox, send, mailbox, ...) has no end while it is
// busy: it runs in a loop, at one depth of stack, not by recursion.
func TestChainsRunInALoop(t *testing.T) {
	c := &chainOf{n: 1000}
	c.run()
	require.Len(t, c.depths, 1000)
	assert.Equal(t, c.depths[0], slices.Max(c.depths))
}
