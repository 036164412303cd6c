// Package compose checks deploy/compose/compose.yaml, the local stack of
// wadispatch, without a container engine: its test loads the file with the
// compose-spec loader (compose-go, schema validation on, so an unknown key
// fails), asserts the worker's deployment properties (exec probe, start
// order, hardening, stop grace period, mounted configuration) and validates
// the sample tenants file with the real binary (`wadispatch check`).
//
// It is a module of its own, so that compose-go and its dependencies stay out
// of the worker's go.mod. Run it from the repository root:
//
//	cd deploy/check/compose && GOWORK=off go test ./...
package compose
