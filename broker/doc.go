// Package broker is wadispatch's RabbitMQ side: it declares the topology (job
// queue, dead letter queue, delay tiers, results exchange and queue), consumes
// jobs with manual acks, and publishes results, deferred copies and dead
// letters with publisher confirms and the mandatory flag.
//
// It knows AMQP, not jobs: it never decodes a body. The one rule it enforces
// for everyone is the order of settlement: a delivery is acked only after
// every message that replaces it has been confirmed by the broker
// (Broker.Settle); if any of them is nacked, returned or not confirmed in
// time, the delivery goes back to the queue instead.
//
// Publishing and consuming use separate connections, so a publisher blocked
// by a resource alarm cannot stall acks. amqp091-go's automatic recovery is
// not used: a delivery tag is only valid on the channel that delivered it.
package broker
