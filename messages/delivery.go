package messages

import "time"

// Delivery is one message taken from the job queue, as the actors see it:
// a handle they keep while the job is theirs and give back to be settled.
// The broker implements it; nothing here knows about AMQP.
type Delivery interface {
	// Stale reports whether the channel that delivered it has closed: the
	// broker has put it back in the queue and will hand it out again.
	Stale() bool
	// Requeue gives it back to the queue unsettled.
	Requeue() error
}

// Deliver hands one delivery from the job queue to the router.
type Deliver struct {
	Body     []byte
	Headers  map[string]any
	Delivery Delivery
	// Intake is set for a delivery from the intake, which the router moves
	// to its tenant's shard; otherwise it came from shard Shard.
	Intake bool
	Shard  int
}

// Dispatch is a decoded job the router hands to its tenant's actor, with the
// delivery that must be settled and the state its headers carried.
type Dispatch struct {
	Job      Job
	Delivery Delivery
	State    JobState
	// Place is the job's place in its recipient's line while a tenant
	// holds it (Placed). State.Place, which a deferred job carries in its
	// headers, is written from it only when the job leaves with its state.
	Place  uint64
	Placed bool
}

// SendDone is the outcome of one send, reported by the goroutine that made
// the call back to the tenant actor that started it.
type SendDone struct {
	Dispatch *Dispatch
	WAMID    string
	Err      error
	// Calls is the number of calls made (2 when a refreshed token was tried).
	Calls int
	// Started is when the send began (the actor's clock); Duration how
	// long it took.
	Started  time.Time
	Duration time.Duration
	// AuthErr is set when Meta rejected the token (code 190 or 0) and its
	// source was re-read; TokenChanged when that produced a different
	// token, which was then tried once.
	AuthErr      error
	TokenChanged bool
	// Panic is what the send goroutine recovered, if it panicked; the actor
	// re-raises it so supervision handles it.
	Panic any
}
