package actors

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// mailbox is the router's and the tenants' protoactor mailbox. It keeps
// the rules of protoactor's default one (actor.Unbounded): system messages
// go first; supervision's SuspendMailbox holds user messages back until
// ResumeMailbox; a panic while handling a message is escalated with that
// message; a burst yields its goroutine after the dispatcher's Throughput.
// What it does not do is allocate when an idle mailbox gets a message: the
// default hands its dispatcher a new method value (m.processMessages) each
// time, which for a tenant is two allocations a job (the job, and its
// send's outcome). This one makes that function once. Neither mailbox
// middlewares nor MessageBatch are supported; nothing here uses them.
type mailbox struct {
	mu     sync.Mutex
	user   fifo // guarded by mu
	system fifo // guarded by mu

	status    atomic.Int32 // mailboxIdle or mailboxRunning
	users     atomic.Int32 // user messages queued
	systems   atomic.Int32 // system messages queued
	suspended atomic.Bool

	invoker    actor.MessageInvoker
	dispatcher actor.Dispatcher
	process    func() // run, made once, for a dispatcher other than mailboxes
	// pool is the dispatcher's when it is a mailboxes: the mailbox then
	// runs as a chain task on it, and may hand its goroutine on (runNext).
	pool *pool
	// next is a task to run on this goroutine once the mailbox is let go
	// (runNext); only the goroutine running the mailbox touches it.
	next task
}

const (
	mailboxIdle int32 = iota
	mailboxRunning
)

func (m *mailbox) PostUserMessage(msg any)   { m.post(&m.user, &m.users, msg) }
func (m *mailbox) PostSystemMessage(msg any) { m.post(&m.system, &m.systems, msg) }

func (m *mailbox) post(q *fifo, count *atomic.Int32, msg any) {
	m.mu.Lock()
	q.push(msg)
	m.mu.Unlock()
	count.Add(1)
	m.schedule()
}

func (m *mailbox) RegisterHandlers(invoker actor.MessageInvoker, dispatcher actor.Dispatcher) {
	m.invoker, m.dispatcher = invoker, dispatcher
	m.process = m.run
	if d, ok := dispatcher.(mailboxes); ok {
		m.pool = d.p
	}
}

func (*mailbox) Start() {}

func (m *mailbox) UserMessageCount() int { return int(m.users.Load()) }

func (m *mailbox) schedule() {
	if m.status.CompareAndSwap(mailboxIdle, mailboxRunning) {
		if m.pool != nil {
			m.pool.Run(m)
			return
		}
		m.dispatcher.Schedule(m.process)
	}
}

// run and runThen make the mailbox a chain task for its pool; run is
// also what another dispatcher is given.
func (m *mailbox) run()          { runChain(m) }
func (m *mailbox) runThen() task { return m.drain() }

// drain handles messages until the mailbox is empty (or suspended) and
// idle again, and returns the task a handler left to run next (runNext).
func (m *mailbox) drain() task {
	for {
		m.burst()
		next := m.next
		m.next = nil
		m.status.Store(mailboxIdle)
		// A message posted after burst found the queues empty, but before
		// the mailbox was idle again, did not schedule it: take it now.
		more := m.systems.Load() > 0 || (!m.suspended.Load() && m.users.Load() > 0)
		if !more || !m.status.CompareAndSwap(mailboxIdle, mailboxRunning) {
			return next
		}
		if next != nil {
			m.pool.Run(next) // it does not wait for the messages that came
		}
	}
}

// runNext is asked by a handler of this mailbox's messages for t to run on
// the goroutine running the mailbox once it has let the mailbox go, rather
// than on another: a handler whose last act starts a send or a settlement
// saves the hand-off to a second goroutine (and its wake-up). It declines
// (the caller runs t on the pool) when the mailbox is not on a pool, has
// a task to run next already, or has more messages waiting: t would wait
// for them.
func (m *mailbox) runNext(t task) bool {
	if m.pool == nil || m.next != nil || m.users.Load() > 0 || m.systems.Load() > 0 {
		return false
	}
	m.next = t
	return true
}

// claim posts a user message and, when that finds the mailbox idle,
// returns the mailbox as the task that runs it, for the caller to run
// where it likes: the router runs a tenant's (runNext).
func (m *mailbox) claim(msg any) task {
	m.mu.Lock()
	m.user.push(msg)
	m.mu.Unlock()
	m.users.Add(1)
	if !m.status.CompareAndSwap(mailboxIdle, mailboxRunning) {
		return nil
	}
	return m
}

// postHere posts a user message and, when that finds the mailbox idle,
// runs it on the calling goroutine instead of handing it to another,
// returning the task its handlers left to run next. It is for a pooled
// chain task whose last act is this post (a send reporting its outcome
// to its tenant), which returns what postHere returns.
func (m *mailbox) postHere(msg any) task {
	if m.claim(msg) == nil {
		return nil
	}
	return m.drain()
}

// burst handles queued messages until none is left or the mailbox is
// suspended.
func (m *mailbox) burst() {
	var msg any
	defer func() {
		if r := recover(); r != nil {
			m.invoker.EscalateFailure(r, msg)
		}
	}()
	throughput := m.dispatcher.Throughput()
	for i := 0; ; i++ {
		if i > throughput {
			i = 0
			runtime.Gosched()
		}
		// The counts first: a burst is mostly one message, and looking
		// into an empty queue would take its lock for nothing. A message
		// pushed but not counted yet is drain's to find.
		msg = nil
		if m.systems.Load() > 0 {
			msg = m.pop(&m.system)
		}
		if msg != nil {
			m.systems.Add(-1)
			switch msg.(type) {
			case *actor.SuspendMailbox:
				m.suspended.Store(true)
			case *actor.ResumeMailbox:
				m.suspended.Store(false)
			default:
				m.invoker.InvokeSystemMessage(msg)
			}
			continue
		}
		if m.suspended.Load() {
			return
		}
		if m.users.Load() == 0 {
			return
		}
		if msg = m.pop(&m.user); msg == nil {
			return
		}
		m.users.Add(-1)
		m.invoker.InvokeUserMessage(msg)
	}
}

func (m *mailbox) pop(q *fifo) any {
	m.mu.Lock()
	defer m.mu.Unlock()
	return q.pop()
}

// fifo is a queue in a ring buffer that grows by doubling, and is let go
// when it empties after growing past fifoKeep, so an actor that had a
// burst does not keep its size.
type fifo struct {
	buf     []any // len is 0 or a power of two
	head, n int
}

const fifoKeep = 16

func (q *fifo) push(v any) {
	if q.n == len(q.buf) {
		buf := make([]any, max(4, 2*len(q.buf)))
		n := copy(buf, q.buf[q.head:])
		copy(buf[n:], q.buf[:q.head])
		q.buf, q.head = buf, 0
	}
	q.buf[(q.head+q.n)&(len(q.buf)-1)] = v
	q.n++
}

// pop returns the oldest value, or nil when the queue is empty.
func (q *fifo) pop() any {
	if q.n == 0 {
		return nil
	}
	v := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) & (len(q.buf) - 1)
	q.n--
	if q.n == 0 && len(q.buf) > fifoKeep {
		q.buf, q.head = nil, 0
	}
	return v
}
