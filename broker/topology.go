package broker

import (
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultTiers are the delay tiers: 50, 100, 250 and 500 ms, then powers of
// two from 1 s to 4096 s. A deferral takes a tier that brings it back at
// most the smallest tier late, or else the largest tier not longer than the
// time left and comes back early for the remainder (Tier), so it is never
// late by more than the smallest tier. The short tiers are for jobs that wait
// only for their tenant's window to make room: a send takes a few
// milliseconds to a second, and a job parked for 250 ms where 5 would do is
// 250 ms added to it (and, at the end of a backlog, to the whole drain).
var DefaultTiers = func() []time.Duration {
	tiers := []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond}
	for d := time.Second; d <= 4096*time.Second; d *= 2 {
		tiers = append(tiers, d)
	}
	return tiers
}

// DefaultShards is the number of shards a job queue is split into unless
// SHARDS says otherwise: enough for a few dozen workers to share.
const DefaultShards = 32

// MaxShards bounds SHARDS: every shard is a queue, a binding and a consumer.
const MaxShards = 1024

// Topology names every queue and exchange the worker uses.
//
// Producers publish jobs to Queue, the intake. One worker at a time moves
// each job from there to its tenant's shard queue (ShardQueue(ShardOf(id)))
// through the shards exchange; a producer that can set a routing key may
// publish to the shards exchange itself, keyed by ShardKey. Each shard
// queue is consumed by one worker at a time. Deferred jobs go through the
// delay exchange to a delay tier, which dead-letters them back to the
// shards exchange with the key they were published with, "<tier>.<shard>":
// back to their shard.
type Topology struct {
	Queue           string
	ResultsExchange string
	Tiers           []time.Duration
	// Shards is the number of shard queues (default DefaultShards).
	Shards int
}

// NewTopology returns the topology for a job queue and a results exchange,
// split into DefaultShards shards.
func NewTopology(queue, resultsExchange string) Topology {
	return Topology{Queue: queue, ResultsExchange: resultsExchange, Tiers: DefaultTiers(), Shards: DefaultShards}
}

func (t Topology) shards() int {
	if t.Shards <= 0 {
		return DefaultShards
	}
	return t.Shards
}

// ShardOf is the shard of a tenant: FNV-1a (32 bits) of its id, modulo the
// number of shards. Producers that publish to the shards exchange directly
// compute the same.
func (t Topology) ShardOf(tenantID string) int {
	h := fnv.New32a()
	h.Write([]byte(tenantID))
	return int(h.Sum32() % uint32(t.shards()))
}

// ShardsExchange is the topic exchange the shard queues are bound to: shard
// i with "#.<i>", so a job published with the routing key "<i>" reaches it.
func (t Topology) ShardsExchange() string { return t.Queue + ".shards" }

// ShardKey is the routing key of shard i on the shards exchange.
func ShardKey(i int) string { return strconv.Itoa(i) }

// intakeKey routes a delay tier's copy of an intake delivery back to the
// intake (the worker defers only jobs it took from a shard; this is a
// fallback that loses nothing).
const intakeKey = "intake"

// ShardQueue is the queue of shard i: <queue>.shard.NN, zero-padded to the
// width of the largest shard number (at least two digits).
func (t Topology) ShardQueue(i int) string {
	width := max(2, len(strconv.Itoa(t.shards()-1)))
	return fmt.Sprintf("%s.shard.%0*d", t.Queue, width, i)
}

// JobQueues are the queues jobs wait in for a worker: the intake, then
// every shard.
func (t Topology) JobQueues() []string {
	queues := []string{t.Queue}
	for i := range t.shards() {
		queues = append(queues, t.ShardQueue(i))
	}
	return queues
}

// MembersQueue is the queue every worker consumes and nobody publishes to:
// its consumer count is the number of workers.
func (t Topology) MembersQueue() string { return t.Queue + ".members" }

// RankQueue is the queue whose exclusive consumer holds rank i: the worker
// of rank r among N owns the shards s with s mod N = r.
func (t Topology) RankQueue(i int) string {
	width := max(2, len(strconv.Itoa(t.shards()-1)))
	return fmt.Sprintf("%s.rank.%0*d", t.Queue, width, i)
}

// DelayExchange is the topic exchange of the delay tiers: tier T is bound
// with "<T>.*".
func (t Topology) DelayExchange() string { return t.Queue + ".delay" }

// DLQ is the dead letter queue of the job queue.
func (t Topology) DLQ() string { return t.Queue + ".dlq" }

// ResultsQueue is the durable queue bound to the results exchange with "#",
// so no result is dropped while no consumer of results is attached.
func (t Topology) ResultsQueue() string { return t.ResultsExchange }

// WaitQueue is the delay queue of one tier.
func (t Topology) WaitQueue(tier time.Duration) string {
	return t.Queue + ".delay." + tierName(tier)
}

// WaitQueues lists every delay queue.
func (t Topology) WaitQueues() []string {
	names := make([]string, len(t.Tiers))
	for i, d := range t.Tiers {
		names[i] = t.WaitQueue(d)
	}
	return names
}

// Delete removes every queue of the topology and its results exchange, on a
// connection of its own to url, skipping what does not exist. The worker
// never calls it; the demo, the benchmarks and the tests clean up with it.
func (t Topology) Delete(url string) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return fmt.Errorf("delete topology of %s: %w", t.Queue, err)
	}
	defer conn.Close()
	// A failed delete closes its channel, so each gets a channel of its own.
	queues := append([]string{t.Queue, t.DLQ(), t.ResultsQueue(), t.MembersQueue()}, t.WaitQueues()...)
	for i := range t.shards() {
		queues = append(queues, t.ShardQueue(i), t.RankQueue(i))
	}
	for _, q := range queues {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("delete topology of %s: %w", t.Queue, err)
		}
		_, _ = ch.QueueDelete(q, false, false, false)
		_ = ch.Close()
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("delete topology of %s: %w", t.Queue, err)
	}
	defer ch.Close()
	for _, x := range []string{t.ResultsExchange, t.ShardsExchange(), t.DelayExchange()} {
		_ = ch.ExchangeDelete(x, false, false)
	}
	return nil
}

// Tier returns the delay tier for a wait of d: a tier at most the smallest
// tier longer than d, when there is one (one hop, late by no more than a
// job may be anyway), else the largest tier not longer than d (the job
// comes back early and takes another tier for the rest), or the smallest
// tier when d is shorter than all of them. Tiers are in ascending order.
func (t Topology) Tier(d time.Duration) time.Duration {
	best := t.Tiers[0]
	for _, tier := range t.Tiers {
		if tier >= d && tier-d <= t.Tiers[0] {
			return tier
		}
		if tier <= d {
			best = tier
		}
	}
	return best
}

func tierName(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	return fmt.Sprintf("%ds", int64(d/time.Second))
}

// ErrTopologyMismatch is returned when a queue or exchange already exists
// with other arguments than the worker would declare.
var ErrTopologyMismatch = errors.New("existing queue or exchange was declared with other arguments")

// ErrShardsMismatch is returned when the job queue is already split into
// another number of shards than SHARDS says.
var ErrShardsMismatch = errors.New("SHARDS does not match the broker's topology")

// declare creates the topology idempotently. The job queue, the DLQ, the
// shard queues and the results queue are classic durable queues (a shard's
// single owner is an exclusive consumer, which quorum queues ignore). The
// delay tiers are quorum queues with a message TTL and at-least-once
// dead-lettering back to the shards exchange: classic queues dead-letter
// at-most-once, so a broker crash during the hop could lose a job; a quorum
// queue keeps the message until its shard has confirmed it (this needs
// x-overflow reject-publish).
func (t Topology) declare(ch *amqp.Channel) error {
	decl := func(name string, args amqp.Table) error {
		_, err := ch.QueueDeclare(name, true, false, false, false, args)
		return describeDeclare("queue "+name, err)
	}
	bind := func(queue, key, exchange string) error {
		return describeDeclare("binding "+queue, ch.QueueBind(queue, key, exchange, false, nil))
	}
	if err := decl(t.Queue, nil); err != nil {
		return err
	}
	if err := decl(t.DLQ(), nil); err != nil {
		return err
	}
	n := t.shards()
	// The members queue never holds a message; its x-max-length records
	// the number of shards, an argument the broker checks on every
	// declare, so it refuses a worker started with another SHARDS.
	if _, err := ch.QueueDeclare(t.MembersQueue(), true, false, false, false,
		amqp.Table{"x-max-length": int32(n)}); err != nil {
		return t.describeShards(err)
	}
	if err := describeDeclare("exchange "+t.ShardsExchange(),
		ch.ExchangeDeclare(t.ShardsExchange(), amqp.ExchangeTopic, true, false, false, false, nil)); err != nil {
		return err
	}
	for i := range n {
		if err := decl(t.ShardQueue(i), nil); err != nil {
			return err
		}
		if err := bind(t.ShardQueue(i), "#."+ShardKey(i), t.ShardsExchange()); err != nil {
			return err
		}
		if err := decl(t.RankQueue(i), nil); err != nil {
			return err
		}
	}
	if err := bind(t.Queue, "#."+intakeKey, t.ShardsExchange()); err != nil {
		return err
	}
	if err := describeDeclare("exchange "+t.DelayExchange(),
		ch.ExchangeDeclare(t.DelayExchange(), amqp.ExchangeTopic, true, false, false, false, nil)); err != nil {
		return err
	}
	for _, tier := range t.Tiers {
		args := amqp.Table{
			"x-queue-type":           "quorum",
			"x-message-ttl":          tier.Milliseconds(),
			"x-dead-letter-exchange": t.ShardsExchange(),
			"x-dead-letter-strategy": "at-least-once",
			"x-overflow":             "reject-publish",
		}
		if err := decl(t.WaitQueue(tier), args); err != nil {
			return err
		}
		if err := bind(t.WaitQueue(tier), tierName(tier)+".*", t.DelayExchange()); err != nil {
			return err
		}
	}
	if err := describeDeclare("exchange "+t.ResultsExchange,
		ch.ExchangeDeclare(t.ResultsExchange, amqp.ExchangeTopic, true, false, false, false, nil)); err != nil {
		return err
	}
	if err := decl(t.ResultsQueue(), nil); err != nil {
		return err
	}
	return bind(t.ResultsQueue(), "#", t.ResultsExchange)
}

// currentShards finds the number in the broker's refusal of a members
// queue declared with another count ("... received '8' but current is
// '32'").
var currentShards = regexp.MustCompile(`current is (?:the value )?'(\d+)'`)

func (t Topology) describeShards(err error) error {
	var aerr *amqp.Error
	if errors.As(err, &aerr) && aerr.Code == amqp.PreconditionFailed {
		was := "another number of"
		if m := currentShards.FindStringSubmatch(aerr.Reason); m != nil {
			was = m[1]
		}
		return fmt.Errorf("%w: SHARDS is %d, but %s is already split into %s shards (queue %s); "+
			"changing it needs every worker stopped and the shard queues moved back to the intake (README: Changing SHARDS)",
			ErrShardsMismatch, t.shards(), t.Queue, was, t.MembersQueue())
	}
	return describeDeclare("queue "+t.MembersQueue(), err)
}

func describeDeclare(what string, err error) error {
	if err == nil {
		return nil
	}
	var aerr *amqp.Error
	if errors.As(err, &aerr) && aerr.Code == amqp.PreconditionFailed {
		return fmt.Errorf("%s: %w: %s (delete it or choose another AMQP_QUEUE / RESULTS_EXCHANGE)",
			what, ErrTopologyMismatch, strings.TrimPrefix(aerr.Reason, "PRECONDITION_FAILED - "))
	}
	return fmt.Errorf("declare %s: %w", what, err)
}
