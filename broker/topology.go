package broker

import (
	"errors"
	"fmt"
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

// Topology names every queue and exchange the worker uses.
type Topology struct {
	Queue           string
	ResultsExchange string
	Tiers           []time.Duration
}

// NewTopology returns the topology for a job queue and a results exchange.
func NewTopology(queue, resultsExchange string) Topology {
	return Topology{Queue: queue, ResultsExchange: resultsExchange, Tiers: DefaultTiers()}
}

// DLQ is the dead letter queue of the job queue.
func (t Topology) DLQ() string { return t.Queue + ".dlq" }

// ResultsQueue is the durable queue bound to the results exchange with "#",
// so no result is dropped while no consumer of results is attached.
func (t Topology) ResultsQueue() string { return t.ResultsExchange }

// WaitQueue is the delay queue of one tier.
func (t Topology) WaitQueue(tier time.Duration) string {
	return t.Queue + ".wait." + tierName(tier)
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
	for _, q := range append([]string{t.Queue, t.DLQ(), t.ResultsQueue()}, t.WaitQueues()...) {
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
	_ = ch.ExchangeDelete(t.ResultsExchange, false, false)
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

// declare creates the topology idempotently. The job queue, the DLQ and the
// results queue are classic durable queues. The delay tiers are quorum
// queues with a queue TTL and at-least-once dead-lettering back to the job
// queue: classic queues dead-letter at-most-once, so a broker crash during
// the hop could lose a job; a quorum queue keeps the message until the job
// queue has confirmed it (this needs x-overflow reject-publish).
func (t Topology) declare(ch *amqp.Channel) error {
	decl := func(name string, args amqp.Table) error {
		_, err := ch.QueueDeclare(name, true, false, false, false, args)
		return describeDeclare("queue "+name, err)
	}
	if err := decl(t.Queue, nil); err != nil {
		return err
	}
	if err := decl(t.DLQ(), nil); err != nil {
		return err
	}
	for _, tier := range t.Tiers {
		args := amqp.Table{
			"x-queue-type":              "quorum",
			"x-message-ttl":             tier.Milliseconds(),
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": t.Queue,
			"x-dead-letter-strategy":    "at-least-once",
			"x-overflow":                "reject-publish",
		}
		if err := decl(t.WaitQueue(tier), args); err != nil {
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
	return describeDeclare("binding "+t.ResultsQueue(),
		ch.QueueBind(t.ResultsQueue(), "#", t.ResultsExchange, false, nil))
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
