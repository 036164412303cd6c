package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/wadispatch/wadispatch/messages"
)

// Options configure a Broker.
type Options struct {
	URL      string
	Topology Topology
	Logger   *slog.Logger
	// Prefetch is the consumer's initial prefetch count.
	Prefetch int
	// ConfirmTimeout bounds how long a settlement waits for confirms
	// (default 10 s).
	ConfirmTimeout time.Duration
	// Name is shown as the connection name in the management tools.
	Name string
}

// Broker is the worker's connection to RabbitMQ.
type Broker struct {
	opts   Options
	logger *slog.Logger
	pub    *publisher

	ready    atomic.Bool
	prefetch atomic.Int64
	changes  chan int

	consMu   sync.Mutex
	consConn *amqp.Connection

	unsettled *tracker
	settled   *settledSet

	redeclMu   sync.Mutex
	redeclared time.Time
}

// Dial connects the publisher, declares the topology and returns a Broker.
// Consuming starts with Run.
func Dial(ctx context.Context, opts Options) (*Broker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ConfirmTimeout <= 0 {
		opts.ConfirmTimeout = 10 * time.Second
	}
	if opts.Prefetch <= 0 {
		opts.Prefetch = 10
	}
	if opts.Name == "" {
		opts.Name = "wadispatch"
	}
	b := &Broker{opts: opts, logger: opts.Logger, changes: make(chan int, 1), unsettled: newTracker(),
		settled: newSettledSet()}
	b.prefetch.Store(int64(opts.Prefetch))
	b.pub = &publisher{dial: func() (*amqp.Connection, error) { return b.dial("publish") }, logger: opts.Logger}
	if err := b.pub.connect(); err != nil {
		return nil, fmt.Errorf("connect to broker: %w", err)
	}
	if err := b.Declare(ctx); err != nil {
		_ = b.pub.close()
		return nil, err
	}
	return b, nil
}

func (b *Broker) dial(role string) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(b.opts.Name + "-" + role)
	return amqp.DialConfig(b.opts.URL, amqp.Config{
		Heartbeat:  10 * time.Second,
		Properties: props,
		Dial:       amqp.DefaultDial(5 * time.Second),
	})
}

// Topology returns the names in use.
func (b *Broker) Topology() Topology { return b.opts.Topology }

// Declare declares the whole topology on a channel of its own.
func (b *Broker) Declare(ctx context.Context) error {
	conn, err := b.dial("declare")
	if err != nil {
		return fmt.Errorf("connect to broker: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	return b.opts.Topology.declare(ch)
}

// Ready reports whether the consumer is connected and consuming.
func (b *Broker) Ready() bool { return b.ready.Load() }

// Prefetch reports the consumer's current prefetch count.
func (b *Broker) Prefetch() int { return int(b.prefetch.Load()) }

// SetPrefetch asks the consumer to switch to prefetch n. RabbitMQ applies
// basic.qos only to consumers created after it, so the switch cancels the
// consumer, waits for its deliveries to drain, sets qos and consumes again on
// the same channel: deliveries in flight stay ackable.
func (b *Broker) SetPrefetch(n int) {
	select {
	case <-b.changes:
	default:
	}
	b.changes <- n
}

// Run consumes the job queue and hands every delivery to out until ctx ends.
// When the connection or channel drops, or the broker cancels the consumer,
// it reconnects with capped exponential backoff and jitter, redeclares the
// topology and consumes again. Deliveries of a dead channel keep pointing at
// it, so their acks fail instead of acking something else.
func (b *Broker) Run(ctx context.Context, out chan<- *Delivery) error {
	backoff := 100 * time.Millisecond
	const maxBackoff = 5 * time.Second
	first := true
	for ctx.Err() == nil {
		start := time.Now()
		err := b.consumeOnce(ctx, out, first)
		first = false
		b.ready.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		b.logger.Warn("broker_connection_lost", slog.String("error", err.Error()))
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(backoff*2, maxBackoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	return nil
}

func (b *Broker) consumeOnce(ctx context.Context, out chan<- *Delivery, first bool) error {
	conn, err := b.dial("consume")
	if err != nil {
		return err
	}
	b.consMu.Lock()
	b.consConn = conn
	b.consMu.Unlock()
	keepOpen := false
	defer func() {
		if keepOpen {
			return
		}
		b.consMu.Lock()
		if b.consConn == conn {
			b.consConn = nil
		}
		b.consMu.Unlock()
		// Closing the connection hands every unacked delivery back.
		_ = conn.Close()
	}()
	if !first {
		if err := b.Declare(ctx); err != nil {
			return err
		}
	}
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	cancelled := ch.NotifyCancel(make(chan string, 1))
	prefetch := int(b.prefetch.Load())
	deliveries, tag, err := b.startConsumer(ch, prefetch)
	if err != nil {
		return err
	}
	// stop ends consuming once ctx is done. It keeps the channel open, so
	// the jobs in hand can still be acked (Close hands back the rest), and
	// requeues what the broker sent before the cancel took effect.
	stop := func(cancelConsumer bool) error {
		keepOpen = true
		if cancelConsumer {
			if err := ch.Cancel(tag, false); err != nil {
				keepOpen = false
				return ctx.Err()
			}
		}
		for d := range deliveries {
			_ = d.Nack(false, true)
		}
		return ctx.Err()
	}
	b.ready.Store(true)
	b.logger.Info("broker_connected", slog.String("queue", b.opts.Topology.Queue), slog.Int("prefetch", prefetch))
	for {
		select {
		case <-ctx.Done():
			return stop(true)
		case e := <-closed:
			if e == nil {
				return errors.New("channel closed")
			}
			return e
		case c := <-cancelled:
			return fmt.Errorf("broker cancelled consumer %s", c)
		case n := <-b.changes:
			if n == prefetch {
				continue
			}
			// Cancel, drain, qos, consume again on the same channel.
			if err := ch.Cancel(tag, false); err != nil {
				return err
			}
			for d := range deliveries {
				if !b.forward(ctx, out, ch, d) {
					return stop(false)
				}
			}
			deliveries, tag, err = b.startConsumer(ch, n)
			if err != nil {
				return err
			}
			prefetch = n
			b.prefetch.Store(int64(n))
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("consumer cancelled")
			}
			// Stopping while this delivery waits to be handed out must
			// not close the connection under the jobs in hand.
			if !b.forward(ctx, out, ch, d) {
				return stop(true)
			}
		}
	}
}

func (b *Broker) startConsumer(ch *amqp.Channel, prefetch int) (<-chan amqp.Delivery, string, error) {
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return nil, "", err
	}
	tag := fmt.Sprintf("%s-%d", b.opts.Name, rand.Uint64())
	deliveries, err := ch.Consume(b.opts.Topology.Queue, tag, false, false, false, false, nil)
	if err != nil {
		return nil, "", fmt.Errorf("consume %s: %w", b.opts.Topology.Queue, err)
	}
	return deliveries, tag, nil
}

func (b *Broker) forward(ctx context.Context, out chan<- *Delivery, ch *amqp.Channel, d amqp.Delivery) bool {
	if d.Redelivered && b.settled.contains(fingerprint(d)) {
		// Settled already; only its ack was lost with the channel.
		_ = ch.Ack(d.DeliveryTag, false)
		b.logger.Info("redelivery_acked", slog.String("reason", "settled before its channel closed"))
		return true
	}
	del := &Delivery{
		Body:        d.Body,
		Headers:     d.Headers,
		ContentType: d.ContentType,
		MessageID:   d.MessageId,
		Redelivered: d.Redelivered,
		ReceivedAt:  time.Now(),
		Timestamp:   d.Timestamp,
		tag:         d.DeliveryTag,
		ch:          ch,
		props:       d,
		tracker:     b.unsettled,
	}
	b.unsettled.add(1)
	select {
	case out <- del:
		return true
	case <-ctx.Done():
		// Never handed out: back to the queue.
		_ = ch.Nack(d.DeliveryTag, false, true)
		del.settled()
		return false
	}
}

// Unsettled is the number of deliveries handed out by Run and not yet acked
// or requeued.
func (b *Broker) Unsettled() int {
	n, _ := b.unsettled.state()
	return n
}

// WaitSettled blocks until every delivery handed out has been acked or
// requeued, or ctx ends.
func (b *Broker) WaitSettled(ctx context.Context) error {
	for {
		n, changed := b.unsettled.state()
		if n <= 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("%d deliveries still unsettled: %w", n, ctx.Err())
		}
	}
}

// QueueDepth reads the number of ready messages in the job queue with a
// passive declare on a channel of its own.
func (b *Broker) QueueDepth(ctx context.Context) (int, error) {
	b.consMu.Lock()
	conn := b.consConn
	b.consMu.Unlock()
	if conn == nil || conn.IsClosed() {
		return 0, ErrNotConnected
	}
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(b.opts.Topology.Queue, true, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	return q.Messages, nil
}

// Publish sends one message and waits for its confirm.
func (b *Broker) Publish(ctx context.Context, m Message) error {
	ctx, cancel := context.WithTimeout(ctx, b.opts.ConfirmTimeout)
	defer cancel()
	return b.pub.publish(ctx, m)
}

// Settle publishes every message that replaces d, waits until each is
// confirmed, then acks d. If any publish fails, d is requeued (nacked with
// requeue) so it comes back, and the error is returned. If d's channel has
// already closed, nothing is published and ErrStaleDelivery is returned:
// the broker hands d out again. A settled delivery is remembered: if its
// ack is lost with the channel and the broker hands it out again, Run acks
// it instead of handing it out a second time.
func (b *Broker) Settle(ctx context.Context, md messages.Delivery, msgs ...Message) error {
	d := own(md)
	if d.Stale() {
		// d is back in the queue and will be handled again, publishing
		// what replaces it then; publishing it now too would make two.
		return d.Requeue()
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.ConfirmTimeout)
	defer cancel()
	var err error
	switch len(msgs) {
	case 0:
	case 1:
		err = b.pub.publish(ctx, msgs[0])
	default:
		errs := make([]error, len(msgs))
		var wg sync.WaitGroup
		for i, m := range msgs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = b.pub.publish(ctx, m)
			}()
		}
		wg.Wait()
		err = errors.Join(errs...)
	}
	if err != nil {
		if errors.Is(err, ErrReturned) {
			b.redeclareAfterReturn()
		}
		if nerr := d.Requeue(); nerr != nil {
			return errors.Join(err, nerr)
		}
		return err
	}
	if d.ch != nil {
		// Remembered before the ack, which the broker may never see.
		b.settled.add(fingerprint(d.props))
	}
	return d.Ack()
}

// redeclareAfterReturn declares the topology again after a publish came
// back unroutable. Every route the worker publishes to is a queue of its
// own topology, so a return means one was deleted under it; without this
// the requeued job would bounce between the queue and the worker (each
// bounce deferring it anew) until the next reconnect. Settlements returned
// meanwhile wait for it, so their jobs come back to a whole topology. At
// most once a second.
func (b *Broker) redeclareAfterReturn() {
	b.redeclMu.Lock()
	defer b.redeclMu.Unlock()
	if time.Since(b.redeclared) < time.Second {
		return
	}
	b.redeclared = time.Now()
	if err := b.Declare(context.Background()); err != nil {
		b.logger.Error("topology_redeclare_failed", slog.String("error", err.Error()))
		return
	}
	b.logger.Warn("topology_redeclared", slog.String("reason", "a publish was returned as unroutable"))
}

// Close closes the publisher (after the caller's pending confirms) and the
// consumer connection, handing any unacked delivery back to the queue.
func (b *Broker) Close() error {
	b.consMu.Lock()
	if b.consConn != nil {
		_ = b.consConn.Close()
	}
	b.consMu.Unlock()
	return b.pub.close()
}
