package broker

import (
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ResultMessage is a result event for the results exchange, routed by its
// status.
func (b *Broker) ResultMessage(status string, body []byte) Message {
	return Message{Exchange: b.opts.Topology.ResultsExchange, Key: status, Publishing: amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		Timestamp:    time.Now(),
		Body:         body,
	}}
}

// DeferMessage is d's copy for the delay tier that brings it back after
// about wait (never later than wait plus the smallest tier).
func (b *Broker) DeferMessage(d *Delivery, wait time.Duration, headers map[string]any) Message {
	t := b.opts.Topology
	return d.Copy("", t.WaitQueue(t.Tier(wait)), headers)
}

// RequeueMessage is d's copy for the job queue itself, e.g. after a crash.
func (b *Broker) RequeueMessage(d *Delivery, headers map[string]any) Message {
	return d.Copy("", b.opts.Topology.Queue, headers)
}

// DeadLetterMessage is d's copy for the dead letter queue.
func (b *Broker) DeadLetterMessage(d *Delivery, headers map[string]any) Message {
	return d.Copy("", b.opts.Topology.DLQ(), headers)
}
