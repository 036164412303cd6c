package broker

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/wadispatch/wadispatch/messages"
)

// ResultMessage is a result event for the results exchange, routed by its
// status.
func (t Topology) ResultMessage(status string, body []byte) Message {
	return Message{Exchange: t.ResultsExchange, Key: status, Publishing: amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		Timestamp:    time.Now(),
		Body:         body,
	}}
}

// DeferMessage is d's copy for the delay tier that brings it back after
// about wait (never later than wait plus the smallest tier).
func (t Topology) DeferMessage(d *Delivery, wait time.Duration, headers map[string]any) Message {
	return d.Copy("", t.WaitQueue(t.Tier(wait)), headers)
}

// RequeueMessage is d's copy for the job queue itself, e.g. after a crash.
func (t Topology) RequeueMessage(d *Delivery, headers map[string]any) Message {
	return d.Copy("", t.Queue, headers)
}

// DeadLetterMessage is d's copy for the dead letter queue.
func (t Topology) DeadLetterMessage(d *Delivery, headers map[string]any) Message {
	return d.Copy("", t.DLQ(), headers)
}

// The Broker's own message builders take the actors' view of a delivery
// (messages.Delivery), which must be one this package handed out.

// ResultMessage is Topology.ResultMessage for this broker's topology.
func (b *Broker) ResultMessage(status string, body []byte) Message {
	return b.opts.Topology.ResultMessage(status, body)
}

// DeferMessage is Topology.DeferMessage for this broker's topology.
func (b *Broker) DeferMessage(d messages.Delivery, wait time.Duration, headers map[string]any) Message {
	return b.opts.Topology.DeferMessage(own(d), wait, headers)
}

// RequeueMessage is Topology.RequeueMessage for this broker's topology.
func (b *Broker) RequeueMessage(d messages.Delivery, headers map[string]any) Message {
	return b.opts.Topology.RequeueMessage(own(d), headers)
}

// DeadLetterMessage is Topology.DeadLetterMessage for this broker's topology.
func (b *Broker) DeadLetterMessage(d messages.Delivery, headers map[string]any) Message {
	return b.opts.Topology.DeadLetterMessage(own(d), headers)
}

// own returns the *Delivery behind d. Anything else is a wiring mistake: a
// delivery can only be settled by the broker that delivered it.
func own(d messages.Delivery) *Delivery {
	bd, ok := d.(*Delivery)
	if !ok {
		panic(fmt.Sprintf("broker: a %T is not a delivery of this broker", d))
	}
	return bd
}
