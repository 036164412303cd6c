// Package worker is one wadispatch process put together: it connects the
// broker (consumer and confirming publisher, topology, backpressure), the
// actor system (the router and, under it, one actor per tenant), the
// Prometheus metrics and the admin API, and runs them as one unit: New
// starts everything but the consumer, Run consumes until its context ends
// and then shuts down.
//
// Shutdown order: stop consuming; let the jobs in hand settle within
// SHUTDOWN_TIMEOUT (whatever has not settled by then goes back to the queue
// unacked when the connections close); cancel the sends still running and
// stop the router and its tenants; close the broker connections; stop the
// admin API last, so an operator can watch the shutdown to the end.
//
// It owns the wiring and the order, not the parts: scheduling, rate limits,
// breakers and supervision are package actors, AMQP is package broker, the
// Graph API client is package whatsapp, configuration is package config,
// the HTTP API is package admin. It handles no signals and parses no
// command line beyond handing args to config.Load (Main); that is
// cmd/wadispatch. The demo (package demo) and the benchmark suite (package
// bench) build workers with New; the end-to-end tests of the whole process
// live here.
package worker
