package actors

import (
	"sync"
	"sync/atomic"
)

// pool runs the actors' blocking work — Meta calls and settlements — on
// long-lived goroutines. A fresh goroutine per task starts with a small
// stack and grows it again inside net/http and amqp for every task (about a
// tenth of the worker's CPU in the throughput benchmark); a pooled one has
// grown it already. When no pooled goroutine is idle the task gets a
// goroutine of its own, so a task never waits for a free one. Close ends
// them all.
type pool struct {
	tasks chan task
	done  chan struct{}
	once  sync.Once
	// live counts every goroutine, pooled and overflow; ended tells Close
	// and CloseFromTask, under mu, when one ends.
	mu    sync.Mutex
	live  int
	ended sync.Cond
	// overflow counts the goroutines started because none was idle.
	overflow atomic.Int64
}

// A task is work for the pool. Passing one that is already a pointer (a
// recycled sendTask, say) costs no allocation, where a closure would.
type task interface{ run() }

// A chain is a task that may hand its goroutine on to a next task, which
// runThen returns: a tenant's mailbox whose last message started a send,
// then that send, whose outcome runs the mailbox again. The pool runs the
// chain in a loop on one goroutine, not by recursion (a busy tenant's
// chain has no end).
type chain interface {
	task
	runThen() task
}

// runChain runs t and whatever it hands on.
func runChain(t task) {
	for t != nil {
		c, ok := t.(chain)
		if !ok {
			t.run()
			return
		}
		t = c.runThen()
	}
}

// taskFunc is a function as a task.
type taskFunc func()

func (f taskFunc) run() { f() }

// newPool starts size goroutines that live until Close.
func newPool(size int) *pool {
	p := &pool{tasks: make(chan task), done: make(chan struct{})}
	p.ended.L = &p.mu
	p.started(size)
	for range size {
		go p.work()
	}
	return p
}

// started counts n goroutines about to start; each calls exited as it ends.
func (p *pool) started(n int) {
	p.mu.Lock()
	p.live += n
	p.mu.Unlock()
}

func (p *pool) exited() {
	p.mu.Lock()
	p.live--
	p.mu.Unlock()
	p.ended.Broadcast()
}

// closeLeaving ends the pooled goroutines once they are idle and waits
// until no more than left goroutines are running.
func (p *pool) closeLeaving(left int) {
	p.once.Do(func() { close(p.done) })
	p.mu.Lock()
	for p.live > left {
		p.ended.Wait()
	}
	p.mu.Unlock()
}

func (p *pool) work() {
	defer p.exited()
	for {
		select {
		case t := <-p.tasks:
			runChain(t)
		case <-p.done:
			return
		}
	}
}

// Go runs f on an idle pooled goroutine, or on a new one (see Run).
func (p *pool) Go(f func()) { p.Run(taskFunc(f)) }

// Run runs t on an idle pooled goroutine, or on a new one. After Close
// it still runs (on a new goroutine): a settlement must not be dropped.
func (p *pool) Run(t task) {
	select {
	case p.tasks <- t:
	default:
		p.overflow.Add(1)
		p.started(1)
		go func() {
			defer p.exited()
			runChain(t)
		}()
	}
}

// mailboxes is a pool as the actors' protoactor dispatcher: a mailbox
// with messages runs its burst on a pooled goroutine instead of a new one
// (protoactor's default), so the burst does not grow a fresh stack again
// (stack growth under the log line alone was 4% of the worker's CPU in the
// throughput benchmark; in the router, decoding a job on a fresh stack
// was a third of its cost per job). The router's mailbox and the tenants'
// share the pool that runs sends and settlements: one goroutine can then
// carry a job from the router through its tenant to its send
// (mailbox.runNext), and any of them has grown its stack already.
type mailboxes struct{ p *pool }

// mailboxThroughput is how many messages a mailbox handles before it
// yields its goroutine: protoactor's default.
const mailboxThroughput = 300

func (m mailboxes) Schedule(fn func()) { m.p.Go(fn) }
func (mailboxes) Throughput() int      { return mailboxThroughput }

// Close ends the pooled goroutines once they are idle and waits for every
// task to finish. Tasks are bounded by the context they were given, so
// cancelling it first makes Close prompt.
func (p *pool) Close() { p.closeLeaving(0) }

// CloseFromTask is Close for a caller running on one of the pool's own
// goroutines (the router, when it stops): it waits for every other one
// to end, as its own cannot before it returns.
func (p *pool) CloseFromTask() { p.closeLeaving(1) }

// lanes runs tasks in order within a lane, one at a time, and the lanes side
// by side on a pool: the intake's moves to one shard are published in the
// order the jobs came, while moves to other shards need not wait for them.
type lanes struct {
	p       *pool
	mu      sync.Mutex
	queues  [][]func()
	running []bool
}

func newLanes(p *pool, n int) *lanes {
	return &lanes{p: p, queues: make([][]func(), n), running: make([]bool, n)}
}

// Go queues task on lane (modulo the number of lanes).
func (l *lanes) Go(lane int, task func()) {
	i := lane % len(l.queues)
	l.mu.Lock()
	l.queues[i] = append(l.queues[i], task)
	if l.running[i] {
		l.mu.Unlock()
		return
	}
	l.running[i] = true
	l.mu.Unlock()
	l.p.Go(func() { l.drain(i) })
}

func (l *lanes) drain(i int) {
	for {
		l.mu.Lock()
		if len(l.queues[i]) == 0 {
			l.running[i] = false
			l.mu.Unlock()
			return
		}
		task := l.queues[i][0]
		l.queues[i][0] = nil
		l.queues[i] = l.queues[i][1:]
		l.mu.Unlock()
		task()
	}
}
