// Package actors holds wadispatch's actors and the pure state machines they
// own.
//
// The router actor (one per process) decodes and validates each delivery,
// dead-letters bad ones, spawns each configured tenant's actor on first use,
// forwards jobs to it, supervises it and answers admin questions by asking
// it. A tenant actor owns that tenant's schedule (token bucket, circuit
// breaker, send latency), counters and in-hand jobs, and handles its jobs one
// at a time. No other goroutine touches that state, so it needs no locks.
// Every blocking operation (the HTTP send, publishing with confirms, acks)
// runs on a goroutine of its own and reports back by message, so a tenant's
// mailbox keeps answering while its Meta call hangs.
//
// Bucket, Breaker and Schedule are plain types whose methods take the current
// time; they are tested without actors, sleeps or locks.
package actors
