package testkit

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// FakeBroker is an in-memory actors.Broker. It builds the same messages the
// real broker does (from Topology), records every settlement, and, when
// Redeliver is set, brings each deferred or requeued copy back the way the
// delay tiers do: a deferral returns after the largest tier not longer than
// its wait (so a job comes back early and takes the next tier, as on
// RabbitMQ), a requeue at once. Its timers are ordinary timers, so inside a
// testing/synctest bubble they run in virtual time.
//
// Set the Fn fields before the first use; the zero value settles every
// delivery at once and keeps the copies to itself.
type FakeBroker struct {
	// Topology names the queues; zero: NewTopology("jobs", "results").
	Topology broker.Topology
	// SettleFn replaces a successful settlement: its error is returned to
	// the actor, and the settlement is recorded with it. It may block (a
	// slow confirm), e.g. on ctx or a timer.
	SettleFn func(ctx context.Context, d messages.Delivery, msgs ...broker.Message) error
	// Redeliver receives each deferred or requeued copy when it comes back.
	Redeliver func(*messages.Deliver)
	// Forget keeps no record of settlements (for benchmarks).
	Forget bool

	mu      sync.Mutex
	settled []Settlement
	topo    *broker.Topology
}

// Settlement is one settled delivery: what replaced it, and when.
type Settlement struct {
	Delivery messages.Delivery
	Messages []broker.Message
	Err      error
	At       time.Time
}

// Kind says what a message built by a FakeBroker is.
type Kind string

// The kinds of message a settlement publishes.
const (
	KindResult     Kind = "result"
	KindDeferred   Kind = "deferred"
	KindRequeued   Kind = "requeued"
	KindDeadLetter Kind = "dead_letter"
)

// kindHeader marks the messages a FakeBroker builds with their Kind (it is
// only ever on fakes' messages); waitHeader carries a deferral's wait.
const (
	kindHeader = "x-testkit-kind"
	waitHeader = "x-testkit-wait-ms"
)

// KindOf returns the kind of a message a FakeBroker built.
func KindOf(m broker.Message) Kind {
	k, _ := m.Publishing.Headers[kindHeader].(string)
	return Kind(k)
}

// WaitOf returns the wait a deferral asked for.
func WaitOf(m broker.Message) time.Duration {
	ms, _ := m.Publishing.Headers[waitHeader].(int64)
	return time.Duration(ms) * time.Millisecond
}

// NewFakeDelivery wraps a job body and headers as a delivery the FakeBroker
// (and the real broker's message builders) accept.
func NewFakeDelivery(body []byte, headers map[string]any) *messages.Deliver {
	return &messages.Deliver{Body: body, Headers: headers, Delivery: broker.NewDelivery(body, headers)}
}

var _ interface {
	Settle(ctx context.Context, d messages.Delivery, msgs ...broker.Message) error
	ResultMessage(status string, body []byte, at time.Time) broker.Message
	DeferMessage(d messages.Delivery, wait time.Duration, headers map[string]any) broker.Message
	RequeueMessage(d messages.Delivery, headers map[string]any) broker.Message
	DeadLetterMessage(d messages.Delivery, headers map[string]any) broker.Message
} = (*FakeBroker)(nil)

func (b *FakeBroker) topology() broker.Topology {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.topo == nil {
		t := b.Topology
		if t.Queue == "" {
			t = broker.NewTopology("jobs", "results")
		}
		b.topo = &t
	}
	return *b.topo
}

func own(d messages.Delivery) *broker.Delivery {
	bd, ok := d.(*broker.Delivery)
	if !ok {
		panic(fmt.Sprintf("testkit: a %T is not a delivery of NewFakeDelivery", d))
	}
	return bd
}

func mark(m broker.Message, k Kind) broker.Message {
	h := make(amqp.Table, len(m.Publishing.Headers)+1)
	for key, v := range m.Publishing.Headers {
		h[key] = v
	}
	h[kindHeader] = string(k)
	m.Publishing.Headers = h
	return m
}

// ResultMessage builds a result as the real broker does.
func (b *FakeBroker) ResultMessage(status string, body []byte, at time.Time) broker.Message {
	return mark(b.topology().ResultMessage(status, body, at), KindResult)
}

// DeferMessage builds a deferred copy as the real broker does, noting the wait.
func (b *FakeBroker) DeferMessage(d messages.Delivery, wait time.Duration, headers map[string]any) broker.Message {
	m := mark(b.topology().DeferMessage(own(d), wait, headers), KindDeferred)
	m.Publishing.Headers[waitHeader] = wait.Milliseconds()
	return m
}

// RequeueMessage builds a requeued copy as the real broker does.
func (b *FakeBroker) RequeueMessage(d messages.Delivery, headers map[string]any) broker.Message {
	return mark(b.topology().RequeueMessage(own(d), headers), KindRequeued)
}

// DeadLetterMessage builds a dead letter as the real broker does.
func (b *FakeBroker) DeadLetterMessage(d messages.Delivery, headers map[string]any) broker.Message {
	return mark(b.topology().DeadLetterMessage(own(d), headers), KindDeadLetter)
}

// Settle records the settlement (after SettleFn, when set) and schedules
// the copies' return.
func (b *FakeBroker) Settle(ctx context.Context, d messages.Delivery, msgs ...broker.Message) error {
	var err error
	if b.SettleFn != nil {
		err = b.SettleFn(ctx, d, msgs...)
	}
	if !b.Forget {
		b.mu.Lock()
		// A copy: the caller may reuse msgs once Settle returns.
		b.settled = append(b.settled, Settlement{Delivery: d, Messages: slices.Clone(msgs), Err: err, At: time.Now()})
		b.mu.Unlock()
	}
	if err != nil || b.Redeliver == nil {
		return err
	}
	for _, m := range msgs {
		var after time.Duration
		switch KindOf(m) {
		case KindDeferred:
			after = b.topology().Tier(WaitOf(m))
		case KindRequeued:
		default:
			continue
		}
		back := backFrom(m)
		time.AfterFunc(after, func() { b.Redeliver(back) })
	}
	return nil
}

// backFrom is the delivery of a copy coming back from its queue, without
// the fake's own marks.
func backFrom(m broker.Message) *messages.Deliver {
	h := make(map[string]any, len(m.Publishing.Headers))
	for k, v := range m.Publishing.Headers {
		if k != kindHeader && k != waitHeader {
			h[k] = v
		}
	}
	return NewFakeDelivery(m.Publishing.Body, h)
}

// Settlements returns every settlement so far, in order.
func (b *FakeBroker) Settlements() []Settlement {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Settlement(nil), b.settled...)
}

// Messages returns every message of the given kind settled so far, in order.
func (b *FakeBroker) Messages(k Kind) []broker.Message {
	var out []broker.Message
	for _, s := range b.Settlements() {
		if s.Err != nil {
			continue
		}
		for _, m := range s.Messages {
			if KindOf(m) == k {
				out = append(out, m)
			}
		}
	}
	return out
}

// Results decodes every result settled so far, in order.
func (b *FakeBroker) Results() []messages.Result {
	var out []messages.Result
	for _, m := range b.Messages(KindResult) {
		var r messages.Result
		if err := json.Unmarshal(m.Publishing.Body, &r); err != nil {
			panic(fmt.Sprintf("testkit: result is not a Result: %v", err))
		}
		out = append(out, r)
	}
	return out
}

// FakeSender is a whatsapp.Sender that answers in memory and records every
// call. SendFn decides the answer (it may block, e.g. on ctx to play a
// hanging Meta); nil accepts every message at once with a fresh wamid.
type FakeSender struct {
	SendFn func(ctx context.Context, req whatsapp.Request) (whatsapp.Response, error)

	mu    sync.Mutex
	calls []SenderCall
}

var _ whatsapp.Sender = (*FakeSender)(nil)

// SenderCall is one call a FakeSender received.
type SenderCall struct {
	Request    whatsapp.Request
	Start, End time.Time
	WAMID      string
	Err        error
}

// Send answers with SendFn, recording the call.
func (s *FakeSender) Send(ctx context.Context, req whatsapp.Request) (whatsapp.Response, error) {
	start := time.Now()
	s.mu.Lock()
	n := len(s.calls) + 1
	s.mu.Unlock()
	resp := whatsapp.Response{WAMID: "wamid.FAKE." + strconv.Itoa(n), HTTPStatus: 200}
	var err error
	if s.SendFn != nil {
		resp, err = s.SendFn(ctx, req)
	}
	s.mu.Lock()
	s.calls = append(s.calls, SenderCall{Request: req, Start: start, End: time.Now(), WAMID: resp.WAMID, Err: err})
	s.mu.Unlock()
	return resp, err
}

// Calls returns every finished call so far, in the order they ended.
func (s *FakeSender) Calls() []SenderCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SenderCall(nil), s.calls...)
}

// FakeToken is a whatsapp.TokenSource. TokenFn and RefreshFn answer; nil
// ones give Value and "unchanged".
type FakeToken struct {
	Value     string
	TokenFn   func() (string, error)
	RefreshFn func() (changed bool, err error)
}

var _ whatsapp.TokenSource = (*FakeToken)(nil)

// Token returns TokenFn's answer, or Value.
func (t *FakeToken) Token() (string, error) {
	if t.TokenFn != nil {
		return t.TokenFn()
	}
	return t.Value, nil
}

// Refresh returns RefreshFn's answer, or unchanged.
func (t *FakeToken) Refresh() (bool, error) {
	if t.RefreshFn != nil {
		return t.RefreshFn()
	}
	return false, nil
}
