// Package admin is wadispatch's operator HTTP API and its client.
//
// The Server answers GET /v1/tenants, GET /v1/tenants/{id}, the breaker
// reset, pause and resume commands, /healthz, /readyz and /metrics. It holds
// no tenant state: every tenant answer comes from the Tenants it is given
// (in the worker, actors.Directory, which asks the router actor with a
// timeout), so a stuck actor costs a 503, never a hung request.
// When a token is configured every route but /healthz requires it as a
// bearer token; without one the server refuses to listen beyond loopback.
//
// The Client and WriteTable serve the "wadispatch tenants" command.
//
// The package does not produce metrics (it serves the handler it is given)
// and does not decide readiness (it asks the function it is given).
package admin
