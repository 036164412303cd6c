package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Publishing errors. Each leaves the delivery being settled unacked.
var (
	ErrNacked         = errors.New("broker nacked the publish")
	ErrReturned       = errors.New("broker returned the publish as unroutable")
	ErrUnconfirmed    = errors.New("publish not confirmed in time")
	ErrNotConnected   = errors.New("not connected to the broker")
	ErrConnectionLost = errors.New("connection lost before the publish was confirmed")
	ErrBlocked        = errors.New("broker is blocking publishes (resource alarm)")
)

// pubIDHeader carries a per-publish id so a basic.return can be matched to
// the publish it belongs to.
const pubIDHeader = "x-wadispatch-pub"

// Message is one publish: where to and what.
type Message struct {
	Exchange   string
	Key        string
	Publishing amqp.Publishing
}

// publisher owns one connection and one channel in confirm mode.
//
// Each publish waits for its own confirm, never for another's. amqp091-go
// hands confirmations to NotifyPublish listeners strictly in delivery-tag
// order (confirms.go keeps an early confirm in its sequencer until every
// lower tag is confirmed), while RabbitMQ confirms a publish as soon as its
// queues have it, out of order across queues. On a shared channel a listener
// therefore learns that a result for tenant B was confirmed only after every
// earlier publish was: a deferral to a quorum delay tier whose confirm is
// slow or stuck (its Raft server busy or suspended, no leader during an
// election) holds every later result, dead letter and deferral of every
// tenant, their deliveries stay unacked in the shared prefetch window, and a
// confirm that never comes makes every later publish time out until the
// channel closes. (Quorum confirms are not slower than classic ones on a
// quiet single node, about 1-3 ms each; the harm is the coupling, which the
// stuck case makes unbounded.) So confirms are not read from NotifyPublish
// at all: each publish waits on its own DeferredConfirmation, which the
// library resolves the moment that publish's basic.ack or basic.nack
// arrives.
//
// Returns are matched to their publish by the pubIDHeader (its delivery
// tag). RabbitMQ sends a mandatory publish's basic.return before its
// basic.ack, and the connection's one reader goroutine puts the Return in
// the (buffered) returns channel before it reads the ack and resolves the
// DeferredConfirmation. Returns are only ever taken from that channel
// under pubGen.mu, and recorded before the lock is let go; a publish whose
// confirm has arrived takes, under the lock, every return waiting there
// before it reads its own outcome, so it sees every return that came
// before its ack, its own included. A publish that was returned is thus
// always reported as ErrReturned, never as a success. (It used to ask the
// dispatcher goroutine instead, two goroutine hand-offs and a channel per
// publish.) The dispatcher also empties the channel every returnsSweep, so
// returns of publishes nobody waits for any more never fill it: the
// library drops a Return it cannot hand over within 5 s.
//
// Lanes (one channel per kind of destination) would also keep quorum delay
// tiers from holding back results and dead letters, but one tenant's slow
// deferrals would still hold back every other tenant's deferrals on the
// shared lane. Per-publish confirms leave only what the broker itself
// orders: publishes to the same quorum queue commit in its Raft log in
// order, and all quorum queues of a node share one write-ahead log.
type publisher struct {
	dial   func() (*amqp.Connection, error)
	logger *slog.Logger

	// turn serialises publishes and reconnects. It is a channel rather than
	// a mutex so that waiting for it is bounded by the caller's context: a
	// publish stuck behind a broker resource alarm must not hold up every
	// other settlement, or shutdown, forever.
	turn chan struct{}
	// current is conn, readable without the turn (by close).
	current atomic.Pointer[amqp.Connection]
	conn    *amqp.Connection
	ch      *amqp.Channel
	gen     *pubGen
}

// pubGen is the state of one channel's life.
type pubGen struct {
	mu      sync.Mutex
	pending map[uint64]bool
	// returns is the channel's NotifyReturn channel (nil in tests that
	// record returns themselves); taken from under mu only.
	returns <-chan amqp.Return
	closed  chan struct{}
	err     error
	// unblocked is nil while the broker accepts publishes; while it blocks
	// them (connection.blocked) it is a channel closed on connection.unblocked.
	unblocked chan struct{}
}

func (p *publisher) connect() error {
	if p.turn == nil { // the first connect, from Dial
		p.turn = make(chan struct{}, 1)
	}
	conn, err := p.dial()
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return err
	}
	if err := ch.Confirm(false); err != nil {
		_ = conn.Close()
		return err
	}
	gen := newPubGen(ch.NotifyReturn(make(chan amqp.Return, returnsBuffer)))
	chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	go gen.dispatch(chClosed, connClosed, blocked, p.logger)
	p.conn, p.ch, p.gen = conn, ch, gen
	p.current.Store(conn)
	return nil
}

// Returns: room for those that come between two publishes' confirms or
// two sweeps, and the sweep that empties the channel when no publish does.
const (
	returnsBuffer = 256
	returnsSweep  = 100 * time.Millisecond
)

func newPubGen(returns <-chan amqp.Return) *pubGen {
	return &pubGen{pending: map[uint64]bool{}, returns: returns, closed: make(chan struct{})}
}

// dispatch sweeps the returns and follows the connection's blocked state
// until the channel or the connection closes. A closed channel also closes
// chClosed, so it always ends.
func (g *pubGen) dispatch(chClosed, connClosed <-chan *amqp.Error, blocked <-chan amqp.Blocking, logger *slog.Logger) {
	var reason error = ErrConnectionLost
	defer func() { g.fail(reason) }()
	sweep := time.NewTicker(returnsSweep)
	defer sweep.Stop()
	for {
		select {
		case <-sweep.C:
			g.mu.Lock()
			g.takeReturnsLocked()
			g.mu.Unlock()
		case b, ok := <-blocked:
			if !ok {
				blocked = nil
				continue
			}
			g.setBlocked(b.Active)
			if b.Active {
				logger.Warn("broker_blocked", slog.String("reason", b.Reason))
			} else {
				logger.Info("broker_unblocked")
			}
		case e := <-chClosed:
			if e != nil {
				reason = fmt.Errorf("%w: %s", ErrConnectionLost, e.Reason)
			}
			return
		case e := <-connClosed:
			if e != nil {
				reason = fmt.Errorf("%w: %s", ErrConnectionLost, e.Reason)
			}
			return
		}
	}
}

func (g *pubGen) setBlocked(active bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case active && g.unblocked == nil:
		g.unblocked = make(chan struct{})
	case !active && g.unblocked != nil:
		close(g.unblocked)
		g.unblocked = nil
	}
}

// waitUnblocked returns at once while the broker accepts publishes, and
// otherwise waits for it to lift its alarm, for the channel to die, or for
// ctx. Nothing is written to a blocked connection: the broker stops reading
// it, and a write that filled the socket buffer would hang.
func (g *pubGen) waitUnblocked(ctx context.Context) error {
	g.mu.Lock()
	unblocked := g.unblocked
	g.mu.Unlock()
	if unblocked == nil {
		return nil
	}
	select {
	case <-unblocked:
		return nil
	case <-g.closed:
		return g.err
	case <-ctx.Done():
		return ErrBlocked
	}
}

// takeReturnsLocked records every return waiting in the channel, each on
// the publish it belongs to; one no longer pending (it gave up waiting) is
// ignored. g.mu must be held.
func (g *pubGen) takeReturnsLocked() {
	for {
		select {
		case r, ok := <-g.returns:
			if !ok {
				g.returns = nil
				return
			}
			g.recordReturnLocked(r)
		default:
			return
		}
	}
}

func (g *pubGen) recordReturnLocked(r amqp.Return) {
	id, _ := r.Headers[pubIDHeader].(string)
	seq, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return
	}
	if _, ok := g.pending[seq]; ok {
		g.pending[seq] = true
	}
}

// returned forgets publish seq, whose confirm has arrived, and reports
// whether it was returned: the returns that came before its confirm are in
// the channel or recorded already (see publisher).
func (g *pubGen) returned(seq uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.takeReturnsLocked()
	returned := g.pending[seq]
	delete(g.pending, seq)
	return returned
}

func (g *pubGen) fail(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return
	}
	g.err = err
	close(g.closed)
}

// publish sends m with mandatory set and waits for its confirm until ctx ends.
func (p *publisher) publish(ctx context.Context, m Message) error {
	c, err := p.begin(ctx, m)
	if err != nil {
		return err
	}
	return c.wait()
}

// start sends m with mandatory set and returns how to wait for its confirm
// (until ctx ends). Messages started one after the other reach the broker
// in that order, whenever their confirms come.
func (p *publisher) start(ctx context.Context, m Message) (func() error, error) {
	c, err := p.begin(ctx, m)
	if err != nil {
		return nil, err
	}
	return c.wait, nil
}

// confirm is one publish written, whose confirm is still to come.
type confirm struct {
	ctx context.Context
	m   Message
	ch  *amqp.Channel
	gen *pubGen
	dc  *amqp.DeferredConfirmation
	seq uint64
}

// begin is start, returning the confirm to wait for as a value (publish
// needs no function made for it).
func (p *publisher) begin(ctx context.Context, m Message) (confirm, error) {
	select {
	case p.turn <- struct{}{}:
	case <-ctx.Done():
		return confirm{}, fmt.Errorf("publish to %q: waiting for the publisher: %w", m.Key, ErrUnconfirmed)
	}
	release := func() { <-p.turn }
	if p.ch == nil || p.ch.IsClosed() || p.gen.isClosed() {
		if p.conn != nil {
			_ = p.conn.CloseDeadline(time.Now().Add(closeGrace))
			p.conn, p.ch, p.gen = nil, nil, nil
		}
		if err := p.connect(); err != nil {
			release()
			return confirm{}, fmt.Errorf("%w: %v", ErrNotConnected, err)
		}
	}
	ch, gen := p.ch, p.gen
	if err := gen.waitUnblocked(ctx); err != nil {
		release()
		return confirm{}, fmt.Errorf("publish to %q: %w", m.Key, err)
	}
	seq := ch.GetNextPublishSeqNo()
	id := strconv.FormatUint(seq, 10)
	msg := m.Publishing
	headers := make(amqp.Table, len(msg.Headers)+1)
	for k, v := range msg.Headers {
		headers[k] = v
	}
	headers[pubIDHeader] = id
	msg.Headers = headers
	gen.mu.Lock()
	if gen.err != nil {
		gen.mu.Unlock()
		release()
		return confirm{}, gen.err
	}
	gen.pending[seq] = false
	gen.mu.Unlock()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, m.Exchange, m.Key, true, false, msg)
	release()
	if err != nil {
		gen.drop(seq)
		return confirm{}, fmt.Errorf("publish to %q: %w", m.Key, err)
	}
	if dc == nil || dc.DeliveryTag != seq {
		// Cannot happen while only this publisher, under the turn, publishes
		// on ch; a return could not be matched to it.
		gen.drop(seq)
		return confirm{}, fmt.Errorf("publish to %q: %w: confirm tracking lost its delivery tag", m.Key, ErrUnconfirmed)
	}
	return confirm{ctx: ctx, m: m, ch: ch, gen: gen, dc: dc, seq: seq}, nil
}

// wait waits for the publish's confirm until its context ends.
func (c confirm) wait() error {
	ctx, m, ch, gen, dc, seq := c.ctx, c.m, c.ch, c.gen, c.dc, c.seq
	select {
	case <-dc.Done():
	case <-ctx.Done():
		select {
		case <-dc.Done(): // confirmed just in time
		default:
			gen.drop(seq)
			return fmt.Errorf("publish to %q: %w", m.Key, ErrUnconfirmed)
		}
	}
	returned := gen.returned(seq)
	switch {
	case !dc.Acked() && ch.IsClosed():
		// The library resolves every outstanding confirmation as a nack
		// when the channel closes (it marks the channel closed first).
		// The dispatcher has the reason.
		err := error(ErrConnectionLost)
		select {
		case <-gen.closed:
			err = gen.err
		case <-ctx.Done():
		}
		return fmt.Errorf("publish to %q: %w", m.Key, err)
	case !dc.Acked():
		return fmt.Errorf("publish to %q: %w", m.Key, ErrNacked)
	case returned:
		return fmt.Errorf("publish to %q: %w", m.Key, ErrReturned)
	}
	return nil
}

func (g *pubGen) drop(seq uint64) {
	g.mu.Lock()
	delete(g.pending, seq)
	g.mu.Unlock()
}

func (g *pubGen) isClosed() bool {
	select {
	case <-g.closed:
		return true
	default:
		return false
	}
}

// closeGrace bounds closing a connection: a broker that blocks publishes
// may not answer connection.close either.
const closeGrace = 5 * time.Second

// close closes the connection. It waits up to closeGrace for a publish in
// progress, then closes anyway, which fails that publish.
func (p *publisher) close() error {
	select {
	case p.turn <- struct{}{}:
		defer func() { <-p.turn }()
	case <-time.After(closeGrace):
		// A publish is stuck; closing its connection fails it.
		if conn := p.current.Load(); conn != nil {
			_ = conn.CloseDeadline(time.Now().Add(closeGrace))
		}
		return ErrBlocked
	}
	if p.conn == nil {
		return nil
	}
	err := p.conn.CloseDeadline(time.Now().Add(closeGrace))
	p.conn, p.ch, p.gen = nil, nil, nil
	p.current.Store(nil)
	if errors.Is(err, amqp.ErrClosed) {
		return nil
	}
	return err
}
