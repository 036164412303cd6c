package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
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

	// RebalanceInterval is how often the membership is read and shards
	// are claimed or given away (default DefaultRebalanceInterval).
	RebalanceInterval time.Duration
	// ReleaseTimeout bounds how long a shard given away waits for its
	// deliveries in hand (default DefaultReleaseTimeout).
	ReleaseTimeout time.Duration
	// OnShards, when set, is told of every shard acquired (before any of
	// its deliveries is handed out) and released. It must not block.
	OnShards func(ShardEvent)
	// Unsharded makes every worker consume the intake and every shard,
	// none exclusively: several workers then each keep their own state of
	// every tenant, as before shards existed. Only for the tests' control
	// runs, which show what sharding prevents.
	Unsharded bool
}

// Broker is the worker's connection to RabbitMQ.
type Broker struct {
	opts   Options
	logger *slog.Logger
	pub    *publisher

	ready    atomic.Bool
	prefetch atomic.Int64

	consMu   sync.Mutex
	consConn *amqp.Connection

	// unsettled counts the shard deliveries handed out and not settled,
	// which the prefetch bounds; moving counts the intake's.
	unsettled *tracker
	moving    *tracker
	// waiting counts the shard deliveries waiting in hand for room in the
	// prefetch window, by shard (MaxShards of them, whatever the topology
	// says), and waitingAll all of them.
	waiting    []atomic.Int32
	waitingAll atomic.Int32
	settled    *settledSet
	ownership  ownershipState

	redeclMu   sync.Mutex
	redeclared time.Time
}

// Dial connects the publisher, declares the topology and returns a Broker.
// Consuming starts with Run.
func Dial(ctx context.Context, opts Options) (*Broker, error) {
	b := New(opts)
	if err := b.Connect(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// New returns a Broker that has not connected yet; Connect connects it.
func New(opts Options) *Broker {
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
	if opts.RebalanceInterval <= 0 {
		opts.RebalanceInterval = DefaultRebalanceInterval
	}
	if opts.ReleaseTimeout <= 0 {
		opts.ReleaseTimeout = DefaultReleaseTimeout
	}
	if opts.Topology.Shards <= 0 {
		opts.Topology.Shards = DefaultShards
	}
	b := &Broker{opts: opts, logger: opts.Logger, unsettled: newTracker(), moving: newTracker(),
		settled: newSettledSet(), waiting: make([]atomic.Int32, MaxShards)}
	b.ownership.o = Ownership{Shards: opts.Topology.Shards, Rank: -1, Unsharded: opts.Unsharded}
	b.prefetch.Store(int64(opts.Prefetch))
	b.pub = &publisher{dial: func() (*amqp.Connection, error) { return b.dial("publish") }, logger: opts.Logger}
	return b
}

// Connect connects the publisher and declares the topology. An error
// wrapping ErrTopologyMismatch or ErrShardsMismatch will not go away by
// trying again; any other (the broker unreachable, refusing the login)
// may.
func (b *Broker) Connect(ctx context.Context) error {
	if err := b.pub.connect(); err != nil {
		return fmt.Errorf("connect to broker: %w", err)
	}
	if err := b.Declare(ctx); err != nil {
		_ = b.pub.close()
		return err
	}
	return nil
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

// Prefetch reports how many shard deliveries may be in hand at once.
func (b *Broker) Prefetch() int { return int(b.prefetch.Load()) }

// SetPrefetch changes how many shard deliveries may be in hand at once. The
// broker's own prefetch stays what Options.Prefetch said, per consumer:
// changing it means consuming again, which would let another worker take a
// shard; the deliveries beyond the limit wait unacked in this worker.
func (b *Broker) SetPrefetch(n int) {
	b.prefetch.Store(int64(n))
	b.unsettled.add(0) // wakes the consumers waiting for room
}

// Ownership returns the shards owned, as last decided.
func (b *Broker) Ownership() Ownership {
	b.ownership.mu.Lock()
	defer b.ownership.mu.Unlock()
	o := b.ownership.o
	o.Owned = slices.Clone(o.Owned)
	return o
}

func (b *Broker) setOwnership(o Ownership) {
	b.ownership.mu.Lock()
	b.ownership.o = o
	b.ownership.mu.Unlock()
}

func (b *Broker) shardEvent(e ShardEvent) {
	b.ownership.mu.Lock()
	b.ownership.o.Owned = slices.Clone(e.Owned)
	b.ownership.mu.Unlock()
	if b.opts.OnShards != nil {
		b.opts.OnShards(e)
	}
}

// Run consumes until ctx ends: the shards this worker owns (see Topology
// and session), and the intake while it is the one moving it; it hands
// every delivery to out. When the connection drops, it reconnects with
// capped exponential backoff and jitter, redeclares the topology and
// claims its share again. Deliveries of a dead channel keep pointing at it,
// so their acks fail instead of acking something else. When ctx ends it
// stops handing deliveries out and returns, keeping the connection open so
// the deliveries in hand can be settled; Close hands back the rest.
func (b *Broker) Run(ctx context.Context, out chan<- *Delivery) error {
	return b.run(ctx, sink{out: out})
}

// RunFunc is Run handing every delivery to fn instead of a channel, on
// the goroutine that took it from its consumer: one goroutine less
// between the broker and the router for every job. fn is called from
// several goroutines at once (one per consumer) and must not block; the
// deliveries of one consumer reach it in order.
func (b *Broker) RunFunc(ctx context.Context, fn func(*Delivery)) error {
	return b.run(ctx, sink{fn: fn})
}

// sink is where Run hands its deliveries: a channel or a function.
type sink struct {
	out chan<- *Delivery
	fn  func(*Delivery)
}

// give hands del over. Into a channel it may wait, and it reports false
// when c is stopped or ctx ends first.
func (k sink) give(ctx context.Context, c *consumer, del *Delivery) bool {
	if k.fn != nil {
		k.fn(del)
		return true
	}
	select {
	case k.out <- del:
		return true
	case <-c.stop:
	case <-ctx.Done():
	}
	return false
}

func (b *Broker) run(ctx context.Context, out sink) error {
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

func (b *Broker) consumeOnce(ctx context.Context, out sink, first bool) error {
	conn, err := b.dial("consume")
	if err != nil {
		return err
	}
	b.consMu.Lock()
	b.consConn = conn
	b.consMu.Unlock()
	if !first {
		if err := b.Declare(ctx); err != nil {
			b.dropConsumer(conn)
			return err
		}
	}
	err = newSession(ctx, b, conn, out).run()
	if ctx.Err() != nil {
		return ctx.Err() // the connection stays open for the jobs in hand
	}
	b.dropConsumer(conn)
	return err
}

// dropConsumer closes a consume connection, which hands every unacked
// delivery back.
func (b *Broker) dropConsumer(conn *amqp.Connection) {
	b.consMu.Lock()
	if b.consConn == conn {
		b.consConn = nil
	}
	b.consMu.Unlock()
	_ = conn.Close()
}

// hand gives one delivery of c to out, once the prefetch has room for a
// shard delivery. It returns false when c is stopped or ctx ends first; the
// delivery then stays unacked, and the broker hands it out again when its
// channel closes.
func (b *Broker) hand(ctx context.Context, c *consumer, d amqp.Delivery, out sink) bool {
	if d.Redelivered && b.settled.contains(fingerprint(d)) {
		// Settled already; only its ack was lost with the channel.
		_ = c.ch.Ack(d.DeliveryTag, false)
		b.logger.Info("redelivery_acked", slog.String("reason", "settled before its channel closed"))
		return true
	}
	count := b.moving
	if c.shard >= 0 {
		count = b.unsettled
		if !b.waitForRoom(ctx, c) {
			return false
		}
	}
	del := &Delivery{
		Body:        d.Body,
		Headers:     d.Headers,
		Redelivered: d.Redelivered,
		Shard:       c.shard,
		tag:         d.DeliveryTag,
		ch:          c.ch,
		props:       propsOf(&d),
		tracker:     count,
		inHand:      c.inHand,
	}
	count.add(1)
	c.inHand.add(1)
	if out.give(ctx, c, del) {
		return true
	}
	// Never handed out: it goes back when its channel closes.
	del.settled()
	return false
}

// waitForRoom waits until the prefetch window has room for a delivery of
// c's shard, counted meanwhile as waiting (WaitingBesides). It returns
// false when c is stopped or ctx ends first.
func (b *Broker) waitForRoom(ctx context.Context, c *consumer) bool {
	counted := false
	defer func() {
		if counted {
			b.waiting[c.shard].Add(-1)
			b.waitingAll.Add(-1)
		}
	}()
	for {
		n, changed := b.unsettled.state()
		if n < b.Prefetch() {
			return true
		}
		if !counted {
			counted = true
			b.waiting[c.shard].Add(1)
			b.waitingAll.Add(1)
		}
		select {
		case <-changed:
		case <-c.stop:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// WaitingBesides reports whether a delivery of a shard other than shard is
// waiting for room in the prefetch window: a tenant that holds much of the
// window then makes room (actors.Config.Prefetch's sharing rule).
func (b *Broker) WaitingBesides(shard int) bool {
	all := b.waitingAll.Load()
	if shard >= 0 && shard < len(b.waiting) {
		all -= b.waiting[shard].Load()
	}
	return all > 0
}

// Unsettled is the number of deliveries handed out by Run and not yet
// acked or requeued: the shards' (which the prefetch bounds) and the
// intake's.
func (b *Broker) Unsettled() int {
	return b.unsettled.count() + b.moving.count()
}

// WaitSettled blocks until every delivery handed out (the intake's too) has
// been acked or requeued, or ctx ends.
func (b *Broker) WaitSettled(ctx context.Context) error {
	for _, t := range []*tracker{b.unsettled, b.moving} {
		if n, err := waitTracker(ctx, t); err != nil {
			return fmt.Errorf("%d deliveries still unsettled: %w", max(n, b.Unsettled()), err)
		}
	}
	return nil
}

// QueueDepth reads the number of ready messages in the intake and in the
// shards this worker owns, with passive declares on a channel of its own.
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
	queues := []string{b.opts.Topology.Queue}
	for _, shard := range b.Ownership().Owned {
		queues = append(queues, b.opts.Topology.ShardQueue(shard))
	}
	depth := 0
	for _, name := range queues {
		q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		if err != nil {
			return 0, err
		}
		depth += q.Messages
	}
	return depth, nil
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
	return b.finish(d, err)
}

// finish settles d once what replaces it is published: requeued when that
// failed (err), acked when it was confirmed.
func (b *Broker) finish(d *Delivery, err error) error {
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
		b.settled.add(d.fingerprint())
	}
	return d.Ack()
}

// Move is Settle for one replacing message, in two steps: the publish is
// made before Move returns, so messages moved one after the other reach the
// broker in that order, and the returned function waits for its confirm
// and then acks d (or requeues it, and says why). The intake's moves use
// it: in order per shard, without waiting a confirm before the next.
func (b *Broker) Move(ctx context.Context, md messages.Delivery, m Message) func() error {
	d := own(md)
	if d.Stale() {
		err := d.Requeue()
		return func() error { return err }
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.ConfirmTimeout)
	wait, err := b.pub.start(ctx, m)
	if err != nil {
		cancel()
		nerr := d.Requeue()
		return func() error { return errors.Join(err, nerr) }
	}
	return func() error {
		defer cancel()
		return b.finish(d, wait())
	}
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
		// Closing the connection lets go of the shards (the jobs in hand
		// were settled or timed out before).
		for _, shard := range b.Ownership().Owned {
			b.logger.Info("shard_released", slog.Int("shard", shard), slog.String("reason", "shutdown"))
		}
		b.setOwnership(Ownership{Shards: b.opts.Topology.shards(), Rank: -1, Unsharded: b.opts.Unsharded})
	}
	b.consMu.Unlock()
	return b.pub.close()
}
