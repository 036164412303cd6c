package broker

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/wadispatch/wadispatch/messages"
)

// ResultMessage is a result event for the results exchange, routed by its
// status, stamped at (the time its body gives as "at").
func (t Topology) ResultMessage(status string, body []byte, at time.Time) Message {
	return Message{Exchange: t.ResultsExchange, Key: status, Publishing: amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		Timestamp:    at,
		Body:         body,
	}}
}

// DeferMessage is d's copy for the delay tier that brings it back after
// about wait (never later than wait plus the smallest tier), to the queue
// it came from: its shard, or the intake.
func (t Topology) DeferMessage(d *Delivery, wait time.Duration, headers map[string]any) Message {
	return d.Copy(t.DelayExchange(), tierName(t.Tier(wait))+"."+d.routeKey(), headers)
}

// RequeueMessage is d's copy for the queue it came from, e.g. after a
// crash.
func (t Topology) RequeueMessage(d *Delivery, headers map[string]any) Message {
	return d.Copy(t.ShardsExchange(), d.routeKey(), headers)
}

// MoveMessage is d's copy for shard i: a job taken from the intake, or from
// a shard its tenant does not belong to.
func (t Topology) MoveMessage(d *Delivery, shard int) Message {
	return d.Copy(t.ShardsExchange(), ShardKey(shard), nil)
}

// DeadLetterMessage is d's copy for the dead letter queue.
func (t Topology) DeadLetterMessage(d *Delivery, headers map[string]any) Message {
	return d.Copy("", t.DLQ(), headers)
}

// The Broker's own message builders take the actors' view of a delivery
// (messages.Delivery), which must be one this package handed out.

// ResultMessage is Topology.ResultMessage for this broker's topology.
func (b *Broker) ResultMessage(status string, body []byte, at time.Time) Message {
	return b.opts.Topology.ResultMessage(status, body, at)
}

// DeferMessage is Topology.DeferMessage for this broker's topology.
func (b *Broker) DeferMessage(d messages.Delivery, wait time.Duration, headers map[string]any) Message {
	return b.opts.Topology.DeferMessage(own(d), wait, headers)
}

// RequeueMessage is Topology.RequeueMessage for this broker's topology.
func (b *Broker) RequeueMessage(d messages.Delivery, headers map[string]any) Message {
	return b.opts.Topology.RequeueMessage(own(d), headers)
}

// MoveMessage is Topology.MoveMessage for this broker's topology.
func (b *Broker) MoveMessage(d messages.Delivery, shard int) Message {
	return b.opts.Topology.MoveMessage(own(d), shard)
}

// ShardOf is Topology.ShardOf for this broker's topology.
func (b *Broker) ShardOf(tenantID string) int { return b.opts.Topology.ShardOf(tenantID) }

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
