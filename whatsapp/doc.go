// Package whatsapp is a client for Meta's WhatsApp Cloud API (Graph API
// "POST /{version}/{phone_number_id}/messages") and the classification of its
// answers into what the worker does next (see docs/contract.md, Meta's
// answers).
//
// It owns the HTTP transport to Meta, the parsing of Meta's success and error
// bodies, the error classes (throttled, auth, transient, ...) and the cache
// of a tenant's access token, re-read on demand (reading it from its
// variable or file is config.Tenant.ReadToken's job). It does not own retries, rate limits, circuit
// breakers or scheduling: those belong to the tenant actor, which acts on the
// Class this package reports. Access tokens never appear in an error text.
package whatsapp
