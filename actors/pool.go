package actors

import "context"

// pool runs the actors' blocking work — Meta calls and settlements — on
// long-lived goroutines. A fresh goroutine per task starts with a small
// stack and grows it again inside net/http and amqp for every task (about a
// tenth of the worker's CPU in the throughput benchmark); a pooled one has
// grown it already. When no pooled goroutine is idle the task gets a
// goroutine of its own, so a task never waits for a free one.
type pool struct{ tasks chan func() }

// newPool starts size goroutines that live until ctx ends.
func newPool(ctx context.Context, size int) *pool {
	p := &pool{tasks: make(chan func())}
	for range size {
		go p.work(ctx)
	}
	return p
}

func (p *pool) work(ctx context.Context) {
	for {
		select {
		case task := <-p.tasks:
			task()
		case <-ctx.Done():
			return
		}
	}
}

// Go runs task on an idle pooled goroutine, or on a new one.
func (p *pool) Go(task func()) {
	select {
	case p.tasks <- task:
	default:
		go task()
	}
}
