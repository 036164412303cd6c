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

type outcome struct{ err error }

type pending struct {
	id   string
	done chan outcome
}

// publisher owns one connection and one channel in confirm mode. A single
// dispatcher goroutine reads returns and confirms from unbuffered channels:
// the library delivers a basic.return before the basic.ack of the same
// publish, so the dispatcher has always seen the return by the time it
// resolves the confirm.
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
	mu       sync.Mutex
	pending  map[uint64]*pending
	returned map[string]bool
	closed   chan struct{}
	err      error
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
	gen := &pubGen{pending: map[uint64]*pending{}, returned: map[string]bool{}, closed: make(chan struct{})}
	returns := ch.NotifyReturn(make(chan amqp.Return))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation))
	chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	go gen.dispatch(returns, confirms, chClosed, connClosed, blocked, p.logger)
	p.conn, p.ch, p.gen = conn, ch, gen
	p.current.Store(conn)
	return nil
}

func (g *pubGen) dispatch(returns <-chan amqp.Return, confirms <-chan amqp.Confirmation,
	chClosed, connClosed <-chan *amqp.Error, blocked <-chan amqp.Blocking, logger *slog.Logger) {
	var reason error = ErrConnectionLost
	defer func() { g.fail(reason) }()
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			if id, _ := r.Headers[pubIDHeader].(string); id != "" {
				g.mu.Lock()
				g.returned[id] = true
				g.mu.Unlock()
			}
		case c, ok := <-confirms:
			if !ok {
				return
			}
			g.resolve(c)
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

func (g *pubGen) resolve(c amqp.Confirmation) {
	g.mu.Lock()
	p := g.pending[c.DeliveryTag]
	delete(g.pending, c.DeliveryTag)
	var returned bool
	if p != nil {
		returned = g.returned[p.id]
		delete(g.returned, p.id)
	}
	g.mu.Unlock()
	if p == nil {
		return
	}
	switch {
	case !c.Ack:
		p.done <- outcome{ErrNacked}
	case returned:
		p.done <- outcome{ErrReturned}
	default:
		p.done <- outcome{}
	}
}

func (g *pubGen) fail(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return
	}
	g.err = err
	for tag, p := range g.pending {
		p.done <- outcome{err}
		delete(g.pending, tag)
	}
	close(g.closed)
}

// publish sends m with mandatory set and waits for its confirm until ctx ends.
func (p *publisher) publish(ctx context.Context, m Message) error {
	select {
	case p.turn <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("publish to %q: waiting for the publisher: %w", m.Key, ErrUnconfirmed)
	}
	release := func() { <-p.turn }
	if p.ch == nil || p.ch.IsClosed() || p.gen.isClosed() {
		if p.conn != nil {
			_ = p.conn.CloseDeadline(time.Now().Add(closeGrace))
			p.conn, p.ch, p.gen = nil, nil, nil
		}
		if err := p.connect(); err != nil {
			release()
			return fmt.Errorf("%w: %v", ErrNotConnected, err)
		}
	}
	ch, gen := p.ch, p.gen
	if err := gen.waitUnblocked(ctx); err != nil {
		release()
		return fmt.Errorf("publish to %q: %w", m.Key, err)
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
	w := &pending{id: id, done: make(chan outcome, 1)}
	gen.mu.Lock()
	if gen.err != nil {
		gen.mu.Unlock()
		release()
		return gen.err
	}
	gen.pending[seq] = w
	gen.mu.Unlock()
	err := ch.PublishWithContext(ctx, m.Exchange, m.Key, true, false, msg)
	release()
	if err != nil {
		gen.drop(seq)
		return fmt.Errorf("publish to %q: %w", m.Key, err)
	}
	select {
	case o := <-w.done:
		if o.err != nil {
			return fmt.Errorf("publish to %q: %w", m.Key, o.err)
		}
		return nil
	case <-ctx.Done():
		gen.drop(seq)
		return fmt.Errorf("publish to %q: %w", m.Key, ErrUnconfirmed)
	}
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
