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
)

// Shard ownership, decided by the broker (see Topology):
//
//   - Every worker consumes the members queue; its consumer count is the
//     number of workers, N. A worker that dies is gone when its connection
//     is.
//   - Each worker holds a rank: the exclusive consumer of one rank queue,
//     the lowest it can get (it moves down when a lower one frees up). The
//     worker of rank r owns the shards s with s mod N = r; a worker without
//     a rank below N (a standby beyond SHARDS workers, or one just joined)
//     owns none.
//   - Owning a shard is being the exclusive consumer of its queue: the
//     broker refuses a second one, so two workers never take jobs of one
//     shard at the same time.
//   - One worker at a time (whichever gets it) moves the intake, as the
//     exclusive consumer of the job queue, so jobs reach their shards in the
//     order they were published.
//   - A shard given away stops being handed out, waits until the
//     deliveries it handed out are settled, and only then closes its
//     channel: what it never handed out goes back to the queue, in order,
//     and the exclusive consumer ends with it. Only then can the new owner
//     consume it.

// ShardEvent tells of a shard this worker acquired or released.
type ShardEvent struct {
	Shard    int
	Acquired bool   // false: released
	Reason   string // why it was released: rebalance, shutdown, connection_lost
	// Owned is every shard owned after the change, ascending.
	Owned []int
}

// Ownership is what this worker owns, as last decided.
type Ownership struct {
	Shards  int   `json:"shards"`  // shards of the topology
	Owned   []int `json:"owned"`   // ascending
	Members int   `json:"members"` // workers consuming the members queue
	Rank    int   `json:"rank"`    // -1 without one
	Intake  bool  `json:"intake"`  // this worker moves the intake
	// Unsharded: every worker takes every shard (a control run).
	Unsharded bool `json:"unsharded,omitempty"`
}

// Owns reports whether shard is owned.
func (o Ownership) Owns(shard int) bool {
	_, found := slices.BinarySearch(o.Owned, shard)
	return found
}

// Default ownership timing.
const (
	// DefaultRebalanceInterval is how often a worker reads the membership
	// and claims or gives away shards.
	DefaultRebalanceInterval = time.Second
	// DefaultReleaseTimeout bounds how long a shard given away waits for
	// its deliveries in hand; what is still out then is redelivered to
	// the new owner.
	DefaultReleaseTimeout = 30 * time.Second
)

// consumer is one consumer of the session: of a shard queue, the intake or
// the members queue, on a channel of its own (an exclusive consume that is
// refused closes its channel, which must not take anything else with it).
type consumer struct {
	queue      string
	shard      int // -1: the intake; -2: the members queue
	ch         *amqp.Channel
	deliveries <-chan amqp.Delivery
	inHand     *tracker
	stop       chan struct{} // closed: hand nothing more out
	done       chan struct{} // closed when its forwarding goroutine ends
	closing    atomic.Bool   // its channel is being closed on purpose
}

// halt stops c handing deliveries out (once; later calls do nothing).
func (c *consumer) halt() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
}

const (
	intakeShard  = -1
	membersShard = -2
)

// released is a release goroutine's report.
type released struct {
	shard  int
	reason string
	left   int // deliveries still unsettled at the timeout
	took   time.Duration
}

// session is one consume connection's life: its consumers and ownership.
// Only its run goroutine touches its maps.
type session struct {
	b    *Broker
	ctx  context.Context
	conn *amqp.Connection
	out  sink

	ctl     *amqp.Channel // passive declares
	members *consumer
	rank    int
	rankCh  *amqp.Channel
	intake  *consumer
	shards  map[int]*consumer
	// releasing are shards given away whose channels are not closed yet.
	releasing map[int]*consumer
	releases  chan released
	failed    chan error
}

func newSession(ctx context.Context, b *Broker, conn *amqp.Connection, out sink) *session {
	return &session{b: b, ctx: ctx, conn: conn, out: out, rank: -1,
		shards: map[int]*consumer{}, releasing: map[int]*consumer{},
		releases: make(chan released, MaxShards), failed: make(chan error, 1)}
}

// run consumes until ctx ends (it returns ctx's error, with the connection
// left open for the deliveries in hand: Close hands back the rest) or the
// connection fails (it returns why; the caller closes the connection).
func (s *session) run() error {
	closed := s.conn.NotifyClose(make(chan *amqp.Error, 1))
	var err error
	if s.ctl, err = s.conn.Channel(); err != nil {
		return err
	}
	if s.members, err = s.consume(s.b.opts.Topology.MembersQueue(), membersShard, false); err != nil {
		return err
	}
	go s.forward(s.members)
	if err := s.rebalance(); err != nil {
		return err
	}
	s.b.ready.Store(true)
	o := s.b.Ownership()
	s.b.logger.Info("broker_connected", slog.String("queue", s.b.opts.Topology.Queue), slog.Int("prefetch", s.b.Prefetch()),
		slog.Int("shards", o.Shards), slog.Int("owned", len(o.Owned)), slog.Int("members", o.Members),
		slog.Bool("intake", o.Intake))
	tick := time.NewTicker(s.b.opts.RebalanceInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			s.shutdown()
			return s.ctx.Err()
		case e := <-closed:
			s.lost()
			if e == nil {
				return errors.New("connection closed")
			}
			return e
		case err := <-s.failed:
			s.lost()
			return err
		case r := <-s.releases:
			s.finishRelease(r)
		case <-tick.C:
			if err := s.rebalance(); err != nil {
				s.lost()
				return err
			}
		}
	}
}

// count is a queue's consumer count.
func (s *session) count(queue string) (int, error) {
	q, err := s.ctl.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("read consumers of %s: %w", queue, err)
	}
	return q.Consumers, nil
}

// rebalance reads the membership, claims a rank and the intake if it can,
// and takes or gives away shards to own what its rank says.
func (s *session) rebalance() error {
	t := s.b.opts.Topology
	members, err := s.count(t.MembersQueue())
	if err != nil {
		return err
	}
	unsharded := s.b.opts.Unsharded
	if !unsharded {
		if err := s.claimRank(members); err != nil {
			return err
		}
	}
	n := t.shards()
	var acquire []int
	for shard := range n {
		want := unsharded || (s.rank >= 0 && s.rank < members && shard%members == s.rank)
		c, owned := s.shards[shard]
		switch {
		case owned && !want:
			s.release(c, "rebalance")
		case !owned && want:
			if _, busy := s.releasing[shard]; !busy {
				acquire = append(acquire, shard)
			}
		}
	}
	if err := s.acquireAll(acquire); err != nil {
		return err
	}
	if s.intake == nil {
		if err := s.claimIntake(); err != nil {
			return err
		}
	}
	s.b.setOwnership(s.ownership(members))
	return nil
}

// claimRank takes the lowest free rank below min(members, shards) when it
// is lower than the one held.
func (s *session) claimRank(members int) error {
	t := s.b.opts.Topology
	limit := min(members, t.shards())
	if s.rank >= 0 && s.rank < limit {
		limit = s.rank
	}
	for i := range limit {
		n, err := s.count(t.RankQueue(i))
		if err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		ch, err := s.conn.Channel()
		if err != nil {
			return err
		}
		if _, err := ch.Consume(t.RankQueue(i), s.tag(), true, true, false, false, nil); err != nil {
			// Taken in the meantime; the refusal closed ch.
			if refused(err) {
				continue
			}
			return err
		}
		if s.rankCh != nil {
			_ = s.rankCh.Close()
		}
		s.rank, s.rankCh = i, ch
		s.b.logger.Info("rank_acquired", slog.Int("rank", i), slog.Int("members", members))
		return nil
	}
	return nil
}

// refused reports whether err is the broker refusing an exclusive consume
// (the queue has a consumer already).
func refused(err error) bool {
	var aerr *amqp.Error
	return errors.As(err, &aerr) && aerr.Code == amqp.AccessRefused
}

// acquireParallel is how many shards are acquired side by side: each takes
// four round trips to the broker (read its consumers, open a channel, set
// the prefetch, consume), and one after the other a worker took about
// 200 ms to start consuming all 32 shards, during which the jobs of the
// shards not yet taken waited.
const acquireParallel = 8

// acquireAll tries to become the exclusive consumer of each shard, side by
// side, and records (in shard order) those it got. The first error is
// returned after every attempt has ended, with the shards got recorded,
// so a failed session still closes them.
func (s *session) acquireAll(shards []int) error {
	if len(shards) == 0 {
		return nil
	}
	got := make([]*consumer, len(shards))
	errs := make([]error, len(shards))
	turns := make(chan struct{}, acquireParallel)
	var wg sync.WaitGroup
	for i, shard := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			turns <- struct{}{}
			defer func() { <-turns }()
			got[i], errs[i] = s.tryAcquire(shard)
		}()
	}
	wg.Wait()
	for i, c := range got {
		if c == nil {
			continue
		}
		s.shards[c.shard] = c
		s.b.logger.Info("shard_acquired", slog.Int("shard", c.shard), slog.String("queue", c.queue))
		s.b.shardEvent(ShardEvent{Shard: c.shard, Acquired: true, Owned: s.owned()})
		go s.forward(got[i])
	}
	return errors.Join(errs...)
}

// tryAcquire tries to become the exclusive consumer of a shard, on a
// channel of its own (it runs beside other acquisitions, and a channel's
// calls must not interleave). It returns nil and no error when the shard's
// owner has not let go yet.
func (s *session) tryAcquire(shard int) (*consumer, error) {
	queue := s.b.opts.Topology.ShardQueue(shard)
	if s.b.opts.Unsharded {
		return s.consume(queue, shard, false)
	}
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, err
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("read consumers of %s: %w", queue, err)
	}
	if q.Consumers > 0 {
		_ = ch.Close()
		return nil, nil // its owner has not let go yet
	}
	c, err := s.consumeOn(ch, queue, shard, true)
	if refused(err) {
		return nil, nil
	}
	return c, err
}

// claimIntake tries to become the intake's exclusive consumer.
func (s *session) claimIntake() error {
	queue := s.b.opts.Topology.Queue
	if !s.b.opts.Unsharded {
		n, err := s.count(queue)
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
	c, err := s.consume(queue, intakeShard, !s.b.opts.Unsharded)
	if err != nil {
		if refused(err) {
			return nil
		}
		return err
	}
	s.intake = c
	s.b.logger.Info("intake_acquired", slog.String("queue", queue))
	go s.forward(c)
	return nil
}

func (s *session) tag() string { return fmt.Sprintf("%s-%d", s.b.opts.Name, rand.Uint64()) }

// consume starts a consumer on a channel of its own, at the configured
// prefetch. Its forwarding goroutine is the caller's to start.
func (s *session) consume(queue string, shard int, exclusive bool) (*consumer, error) {
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, err
	}
	return s.consumeOn(ch, queue, shard, exclusive)
}

// consumeOn is consume on a channel already open.
func (s *session) consumeOn(ch *amqp.Channel, queue string, shard int, exclusive bool) (*consumer, error) {
	if err := ch.Qos(s.b.opts.Prefetch, 0, false); err != nil {
		return nil, err
	}
	dl, err := ch.Consume(queue, s.tag(), false, exclusive, false, false, nil)
	if err != nil {
		return nil, err
	}
	return &consumer{queue: queue, shard: shard, ch: ch, deliveries: dl, inHand: newTracker(),
		stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// forward hands c's deliveries out until c is stopped or its channel ends.
func (s *session) forward(c *consumer) {
	defer close(c.done)
	for {
		select {
		case <-c.stop:
			return
		case <-s.ctx.Done():
			return
		case d, ok := <-c.deliveries:
			if !ok {
				if !c.closing.Load() {
					select {
					case s.failed <- fmt.Errorf("consumer of %s ended", c.queue):
					default:
					}
				}
				return
			}
			if c.shard == membersShard {
				_ = c.ch.Ack(d.DeliveryTag, false) // nobody should publish there
				continue
			}
			if !s.b.hand(s.ctx, c, d, s.out) {
				return
			}
		}
	}
}

// release gives a shard away: nothing more is handed out, and once what was
// handed out is settled (or the release timeout has passed) its channel
// closes, which hands the rest back and lets another worker consume it.
func (s *session) release(c *consumer, reason string) {
	delete(s.shards, c.shard)
	s.releasing[c.shard] = c
	c.halt()
	timeout := s.b.opts.ReleaseTimeout
	go func() {
		start := time.Now()
		<-c.done
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		left, _ := waitTracker(ctx, c.inHand)
		cancel()
		c.closing.Store(true)
		_ = c.ch.Close()
		s.releases <- released{shard: c.shard, reason: reason, left: left, took: time.Since(start)}
	}()
}

func (s *session) finishRelease(r released) {
	delete(s.releasing, r.shard)
	attrs := []slog.Attr{slog.Int("shard", r.shard), slog.String("reason", r.reason),
		slog.Int64("drainMs", r.took.Milliseconds())}
	level := slog.LevelInfo
	if r.left > 0 {
		level = slog.LevelWarn
		attrs = append(attrs, slog.Int("unsettled", r.left))
	}
	s.b.logger.LogAttrs(context.Background(), level, "shard_released", attrs...)
	s.b.shardEvent(ShardEvent{Shard: r.shard, Reason: r.reason, Owned: s.owned()})
}

// shutdown stops handing anything out and leaves the membership and its
// rank, so the other workers start claiming its shards; the shards
// themselves stay its own until Close, after the deliveries in hand are
// settled.
func (s *session) shutdown() {
	s.members.closing.Store(true)
	_ = s.members.ch.Close()
	if s.rankCh != nil {
		_ = s.rankCh.Close()
	}
	all := []*consumer{s.members}
	if s.intake != nil {
		all = append(all, s.intake)
	}
	for _, c := range s.shards {
		all = append(all, c)
	}
	for _, c := range all {
		c.halt()
	}
	for _, c := range all {
		<-c.done
	}
	for _, c := range s.releasing {
		<-c.done
	}
}

// lost reports every shard as released after the connection failed: the
// broker has handed their deliveries back already.
func (s *session) lost() {
	owned := s.owned()
	for shard := range s.releasing {
		owned = append(owned, shard)
	}
	for _, c := range s.allConsumers() {
		c.closing.Store(true)
		c.halt()
	}
	s.shards, s.releasing = map[int]*consumer{}, map[int]*consumer{}
	for _, shard := range owned {
		s.b.shardEvent(ShardEvent{Shard: shard, Reason: "connection_lost", Owned: []int{}})
	}
	s.b.setOwnership(Ownership{Shards: s.b.opts.Topology.shards(), Rank: -1, Unsharded: s.b.opts.Unsharded})
}

func (s *session) allConsumers() []*consumer {
	var all []*consumer
	for _, c := range []*consumer{s.members, s.intake} {
		if c != nil {
			all = append(all, c)
		}
	}
	for _, c := range s.shards {
		all = append(all, c)
	}
	for _, c := range s.releasing {
		all = append(all, c)
	}
	return all
}

func (s *session) owned() []int {
	owned := make([]int, 0, len(s.shards))
	for shard := range s.shards {
		owned = append(owned, shard)
	}
	slices.Sort(owned)
	return owned
}

func (s *session) ownership(members int) Ownership {
	return Ownership{Shards: s.b.opts.Topology.shards(), Owned: s.owned(), Members: members, Rank: s.rank,
		Intake: s.intake != nil, Unsharded: s.b.opts.Unsharded}
}

// waitTracker waits until t counts nothing or ctx ends, and returns what it
// counts then.
func waitTracker(ctx context.Context, t *tracker) (int, error) {
	for {
		n, changed := t.state()
		if n <= 0 {
			return 0, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return n, ctx.Err()
		}
	}
}

// ownershipState is the Broker's copy of the last Ownership, for readers on
// other goroutines.
type ownershipState struct {
	mu sync.Mutex
	o  Ownership
}
