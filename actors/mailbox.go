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
	process    func() // processMessages, made once
}

const (
	mailboxIdle int32 = iota
	mailboxRunning
)

// newMailbox is the actor.MailboxProducer of mailbox.
func newMailbox() actor.Mailbox { return new(mailbox) }

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
	m.process = m.processMessages
}

func (*mailbox) Start() {}

func (m *mailbox) UserMessageCount() int { return int(m.users.Load()) }

func (m *mailbox) schedule() {
	if m.status.CompareAndSwap(mailboxIdle, mailboxRunning) {
		m.dispatcher.Schedule(m.process)
	}
}

func (m *mailbox) processMessages() {
	for {
		m.run()
		m.status.Store(mailboxIdle)
		// A message posted after run found the queues empty, but before
		// the mailbox was idle again, did not schedule it: take it now.
		more := m.systems.Load() > 0 || (!m.suspended.Load() && m.users.Load() > 0)
		if !more || !m.status.CompareAndSwap(mailboxIdle, mailboxRunning) {
			return
		}
	}
}

func (m *mailbox) run() {
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
		if msg = m.pop(&m.system); msg != nil {
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
