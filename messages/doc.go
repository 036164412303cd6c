// Package messages holds the types that cross wadispatch's boundaries: the job
// envelope producers publish, the result event the worker publishes, the
// headers a job carries between deliveries, and every message the router and
// tenant actors exchange (one file per conversation: delivery, admin).
//
// It decodes and validates jobs, but performs no I/O and owns no state.
package messages
