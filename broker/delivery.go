package broker

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrStaleDelivery is returned when a delivery's channel is gone: the broker
// has already put it back in the queue, and acking it on another channel
// would ack a different message.
var ErrStaleDelivery = errors.New("delivery's channel is closed; the broker will redeliver it")

// Delivery is one message from the job queue. Ack and Requeue go to the
// channel that delivered it, never to another.
type Delivery struct {
	Body        []byte
	Headers     amqp.Table
	Redelivered bool
	// Shard is the shard queue it came from, or -1 for the intake.
	Shard int

	tag     uint64
	ch      *amqp.Channel
	props   props
	tracker *tracker
	// inHand counts the deliveries of its consumer not yet settled, so a
	// shard is let go only once they are (nil for NewDelivery's).
	inHand *tracker
	done   atomic.Bool
}

// props are the properties a producer set that a copy of the delivery
// carries on (Copy) and that identify it (fingerprint): 160 bytes of the
// 296 of the amqp.Delivery they come from, kept for every job in hand.
type props struct {
	contentType, contentEncoding, correlationID, replyTo string
	messageID, typ, userID, appID                        string
	timestamp                                            time.Time
	priority                                             uint8
}

func propsOf(d *amqp.Delivery) props {
	return props{contentType: d.ContentType, contentEncoding: d.ContentEncoding, correlationID: d.CorrelationId,
		replyTo: d.ReplyTo, messageID: d.MessageId, typ: d.Type, userID: d.UserId, appID: d.AppId,
		timestamp: d.Timestamp, priority: d.Priority}
}

// routeKey is the shards exchange's key back to where d came from.
func (d *Delivery) routeKey() string {
	if d.Shard < 0 {
		return intakeKey
	}
	return ShardKey(d.Shard)
}

// tracker counts deliveries handed out and not yet settled.
type tracker struct {
	mu sync.Mutex
	n  int
	// changed is closed on the next change once someone waits for it
	// (watched); a change nobody waits for makes no new channel (two a
	// job otherwise).
	changed chan struct{}
	watched bool
}

func newTracker() *tracker { return &tracker{changed: make(chan struct{})} }

func (t *tracker) add(d int) {
	t.mu.Lock()
	t.n += d
	if t.watched {
		close(t.changed)
		t.changed, t.watched = make(chan struct{}), false
	}
	t.mu.Unlock()
}

// state is the count and a channel closed when it next changes.
func (t *tracker) state() (int, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.watched = true
	return t.n, t.changed
}

// count is the count, for a reader that does not wait for a change.
func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

func (d *Delivery) settled() {
	if d.done.CompareAndSwap(false, true) {
		if d.tracker != nil {
			d.tracker.add(-1)
		}
		if d.inHand != nil {
			d.inHand.add(-1)
		}
	}
}

// Stale reports whether the channel that delivered this has closed: the
// broker has put it back in the queue and will hand it out again.
func (d *Delivery) Stale() bool { return d.ch != nil && d.ch.IsClosed() }

// Ack acknowledges this delivery alone (multiple=false).
func (d *Delivery) Ack() error {
	defer d.settled()
	if d.ch == nil {
		return nil
	}
	if d.ch.IsClosed() {
		return ErrStaleDelivery
	}
	return d.ch.Ack(d.tag, false)
}

// Requeue hands the delivery back to the queue.
func (d *Delivery) Requeue() error {
	defer d.settled()
	if d.ch == nil {
		return nil
	}
	if d.ch.IsClosed() {
		return ErrStaleDelivery
	}
	return d.ch.Nack(d.tag, false, true)
}

// Copy returns a publishing that carries this delivery's body and properties
// with extra headers set (nil values delete a header). The original headers
// are not changed.
func (d *Delivery) Copy(exchange, key string, headers map[string]any) Message {
	h := make(amqp.Table, len(d.Headers)+len(headers))
	for k, v := range d.Headers {
		h[k] = v
	}
	for k, v := range headers {
		if v == nil {
			delete(h, k)
			continue
		}
		h[k] = v
	}
	// Dead-lettering by a delay tier adds x-death and friends; they only
	// grow with every hop and mean nothing to the worker.
	delete(h, "x-death")
	delete(h, "x-first-death-exchange")
	delete(h, "x-first-death-queue")
	delete(h, "x-first-death-reason")
	delete(h, "x-last-death-exchange")
	delete(h, "x-last-death-queue")
	delete(h, "x-last-death-reason")
	delete(h, pubIDHeader)
	p := &d.props
	return Message{Exchange: exchange, Key: key, Publishing: amqp.Publishing{
		Headers:         h,
		ContentType:     p.contentType,
		ContentEncoding: p.contentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        p.priority,
		CorrelationId:   p.correlationID,
		ReplyTo:         p.replyTo,
		MessageId:       p.messageID,
		Timestamp:       p.timestamp,
		Type:            p.typ,
		UserId:          p.userID,
		AppId:           p.appID,
		Body:            d.Body,
	}}
}

// settledMax bounds the memory of settled deliveries: far more than can be
// in hand (a prefetch window) when a channel dies.
const settledMax = 4096

// settledSet remembers the most recently settled deliveries: those whose
// replacements (result, deferred copy, dead letter) the broker confirmed
// and that were then acked, or would have been had their channel not died.
// AMQP does not confirm acks, so an ack written just before the broker
// closed the connection may be lost, and the broker hands the delivery out
// again; handling it twice would publish a second result or deferred copy.
// A redelivered delivery found here is acked instead. The oldest entry goes
// first.
type settledSet struct {
	mu    sync.Mutex
	order []string
	keys  map[string]int
}

func newSettledSet() *settledSet { return &settledSet{keys: map[string]int{}} }

func (r *settledSet) add(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys[key]++
	r.order = append(r.order, key)
	if len(r.order) > settledMax {
		old := r.order[0]
		r.order = r.order[1:]
		if r.keys[old]--; r.keys[old] <= 0 {
			delete(r.keys, old)
		}
	}
}

func (r *settledSet) contains(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys[key] > 0
}

// fingerprint identifies a message across its redeliveries: its body, its
// headers and the properties a publisher sets. Every copy the worker
// publishes of a job (deferred, requeued) differs from the original and
// from the other copies in its headers (each publish carries its own
// pubIDHeader, and a hop through a delay tier its own x-death), so a copy
// never matches another. Two identical messages from a producer do match:
// they are the same job, with the same internalId, and one result is right.
func fingerprint(d amqp.Delivery) string {
	return fingerprintOf(d.Body, d.Headers, d.MessageId, d.CorrelationId, d.Timestamp)
}

// fingerprint is the fingerprint of the amqp.Delivery d came from.
func (d *Delivery) fingerprint() string {
	return fingerprintOf(d.Body, d.Headers, d.props.messageID, d.props.correlationID, d.props.timestamp)
}

func fingerprintOf(body []byte, headers amqp.Table, messageID, correlationID string, timestamp time.Time) string {
	// One buffer hashed at once: a hash.Hash and fmt's printing of an
	// empty header table cost more than the hashing (every job is
	// fingerprinted when it is settled).
	buf := make([]byte, 0, 512)
	buf = append(buf, body...)
	buf = append(buf, 0)
	if len(headers) > 0 {
		// fmt prints maps sorted by key, nested tables included.
		buf = fmt.Appendf(buf, "%v", map[string]any(headers))
	}
	buf = append(buf, 0)
	buf = append(buf, messageID...)
	buf = append(buf, 0)
	buf = append(buf, correlationID...)
	buf = append(buf, 0)
	buf = strconv.AppendInt(buf, timestamp.UnixNano(), 10)
	sum := sha256.Sum256(buf)
	return string(sum[:])
}

// NewDelivery builds a Delivery that is not attached to a channel (Ack and
// Requeue do nothing); for tests and benchmarks of code above the broker.
func NewDelivery(body []byte, headers amqp.Table) *Delivery {
	return &Delivery{Body: body, Headers: headers, Shard: -1}
}
