package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/wadispatch/wadispatch/messages"
)

// ListTimeout is how long Directory.List waits for the router by default.
// The router waits up to AskTimeout for each tenant before it answers,
// marking the silent ones, so a list needs a little longer than that:
// otherwise one stuck tenant would cost the whole list.
const ListTimeout = AskTimeout + time.Second

// Directory answers questions about tenants by asking the router: it is the
// one place outside the actors that speaks the admin messages
// (messages.ListTenants, GetTenant, PauseTenant, ResumeTenant, ResetBreaker)
// and turns their answers into values and errors. The admin API and metrics
// use it through interfaces of their own.
//
// Every question is bounded by a timeout (and by ctx), so a stuck actor
// costs an error, never a hung caller. Errors:
//   - a tenant that is not configured matches messages.ErrUnknownTenant
//     (it is the router's *messages.TenantNotFound);
//   - no answer in time, or a router that is not running, matches
//     messages.ErrNoAnswer, and reads "router did not answer within 3s",
//     "tenant actor did not answer within 2s" or "router is not running";
//   - any other answer is an error reading "unexpected answer <type>".
//
// The zero timeouts take the defaults; a Directory is safe for concurrent
// use and cheap to copy.
type Directory struct {
	Root   *actor.RootContext
	Router *actor.PID
	// AskTimeout bounds a question about one tenant (default AskTimeout).
	AskTimeout time.Duration
	// ListTimeout bounds the question for every tenant (default ListTimeout).
	ListTimeout time.Duration
}

// List returns every configured tenant's state, ordered by id. A tenant
// whose actor did not answer the router in time is listed with only its id,
// Active and LastError "no answer from tenant actor".
func (d Directory) List(ctx context.Context) ([]messages.TenantInfo, error) {
	res, err := d.ask(ctx, "router", d.listTimeout(), &messages.ListTenants{})
	if err != nil {
		return nil, err
	}
	list, ok := res.(*messages.TenantList)
	if !ok {
		return nil, fmt.Errorf("unexpected answer %T", res)
	}
	return list.Tenants, nil
}

// Get returns one tenant's state.
func (d Directory) Get(ctx context.Context, id string) (messages.TenantInfo, error) {
	return d.tenant(ctx, &messages.GetTenant{TenantID: id})
}

// Pause stops the tenant's sends (its jobs are deferred) and returns its state.
func (d Directory) Pause(ctx context.Context, id string) (messages.TenantInfo, error) {
	return d.tenant(ctx, &messages.PauseTenant{TenantID: id})
}

// Resume undoes Pause, lifts a crash quarantine, and returns the tenant's state.
func (d Directory) Resume(ctx context.Context, id string) (messages.TenantInfo, error) {
	return d.tenant(ctx, &messages.ResumeTenant{TenantID: id})
}

// ResetBreaker closes the tenant's breaker and returns its state.
func (d Directory) ResetBreaker(ctx context.Context, id string) (messages.TenantInfo, error) {
	return d.tenant(ctx, &messages.ResetBreaker{TenantID: id})
}

// ReconfigureTimeout bounds how long a reload waits for the router.
const ReconfigureTimeout = 30 * time.Second

// Reconfigure hands the router a reload's changes and waits until they are
// applied.
func (d Directory) Reconfigure(ctx context.Context, msg *Reconfigure) (*Reconfigured, error) {
	res, err := d.ask(ctx, "router", ReconfigureTimeout, msg)
	if err != nil {
		return nil, err
	}
	done, ok := res.(*Reconfigured)
	if !ok {
		return nil, fmt.Errorf("unexpected answer %T", res)
	}
	return done, nil
}

func (d Directory) tenant(ctx context.Context, msg any) (messages.TenantInfo, error) {
	res, err := d.ask(ctx, "tenant actor", d.askTimeout(), msg)
	if err != nil {
		return messages.TenantInfo{}, err
	}
	switch res := res.(type) {
	case *messages.TenantInfo:
		return *res, nil
	case *messages.TenantNotFound:
		return messages.TenantInfo{}, res
	case *messages.TenantElsewhere:
		return messages.TenantInfo{}, res
	}
	return messages.TenantInfo{}, fmt.Errorf("unexpected answer %T", res)
}

func (d Directory) askTimeout() time.Duration {
	if d.AskTimeout > 0 {
		return d.AskTimeout
	}
	return AskTimeout
}

func (d Directory) listTimeout() time.Duration {
	if d.ListTimeout > 0 {
		return d.ListTimeout
	}
	return ListTimeout
}

type answer struct {
	res any
	err error
}

// ask sends msg to the router and waits for the answer, up to timeout or
// ctx's deadline, whichever is sooner; who names the actor expected to
// answer, for the error.
func (d Directory) ask(ctx context.Context, who string, timeout time.Duration, msg any) (any, error) {
	if d.Root == nil || d.Router == nil {
		return nil, &noAnswerError{text: "router is not running", cause: errors.New("actors.Directory has no router")}
	}
	if deadline, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(deadline))
	}
	within := max(timeout, 0).Round(time.Millisecond)
	var a answer
	switch {
	case ctx.Err() != nil:
		a.err = ctx.Err()
	case timeout <= 0:
		a.err = context.DeadlineExceeded
	case ctx.Done() == nil:
		a.res, a.err = d.Root.RequestFuture(d.Router, msg, timeout).Result()
	default:
		future := d.Root.RequestFuture(d.Router, msg, timeout)
		done := make(chan answer, 1)
		go func() {
			res, err := future.Result()
			done <- answer{res, err}
		}()
		select {
		case a = <-done:
		case <-ctx.Done():
			a.err = ctx.Err()
		}
	}
	switch {
	case a.err == nil:
		return a.res, nil
	case errors.Is(a.err, actor.ErrDeadLetter):
		return nil, &noAnswerError{text: "router is not running", cause: a.err}
	case errors.Is(a.err, context.Canceled):
		return nil, &noAnswerError{text: fmt.Sprintf("%s did not answer before the question was cancelled", who), cause: a.err}
	}
	return nil, &noAnswerError{text: fmt.Sprintf("%s did not answer within %s", who, within), cause: a.err}
}

// noAnswerError is a question that got no answer. Its text is for an
// operator (the admin API answers it with a 503); it matches
// messages.ErrNoAnswer and wraps the cause (actor.ErrTimeout,
// actor.ErrDeadLetter, or ctx's error).
type noAnswerError struct {
	text  string
	cause error
}

func (e *noAnswerError) Error() string        { return e.text }
func (e *noAnswerError) Unwrap() error        { return e.cause }
func (e *noAnswerError) Is(target error) bool { return target == messages.ErrNoAnswer }
