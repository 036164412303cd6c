package broker

import (
	"errors"
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
	ContentType string
	MessageID   string
	Redelivered bool
	Timestamp   time.Time
	// ReceivedAt is when the worker took the delivery from the broker.
	ReceivedAt time.Time

	tag     uint64
	ch      *amqp.Channel
	props   amqp.Delivery
	tracker *tracker
	done    atomic.Bool
}

// tracker counts deliveries handed out and not yet settled.
type tracker struct {
	mu      sync.Mutex
	n       int
	changed chan struct{}
}

func newTracker() *tracker { return &tracker{changed: make(chan struct{})} }

func (t *tracker) add(d int) {
	t.mu.Lock()
	t.n += d
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

func (t *tracker) state() (int, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n, t.changed
}

func (d *Delivery) settled() {
	if d.tracker != nil && d.done.CompareAndSwap(false, true) {
		d.tracker.add(-1)
	}
}

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
	p := d.props
	return Message{Exchange: exchange, Key: key, Publishing: amqp.Publishing{
		Headers:         h,
		ContentType:     p.ContentType,
		ContentEncoding: p.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        p.Priority,
		CorrelationId:   p.CorrelationId,
		ReplyTo:         p.ReplyTo,
		MessageId:       p.MessageId,
		Timestamp:       p.Timestamp,
		Type:            p.Type,
		UserId:          p.UserId,
		AppId:           p.AppId,
		Body:            d.Body,
	}}
}

// NewDelivery builds a Delivery that is not attached to a channel (Ack and
// Requeue do nothing); for tests and benchmarks of code above the broker.
func NewDelivery(body []byte, headers amqp.Table) *Delivery {
	return &Delivery{Body: body, Headers: headers, ReceivedAt: time.Now(), props: amqp.Delivery{Body: body, Headers: headers}}
}
