// Package testkit holds the fakes that wadispatch's tests and benchmark
// suite run against: in-memory fakes of the actors' seams (FakeBroker,
// which builds the real broker's messages and brings deferred copies back
// through emulated delay tiers; FakeSender; FakeToken), each scripted by
// Fn fields; a manually advanced clock (FakeClock) for time-based logic,
// helpers that give each integration test its own queues on the real
// RabbitMQ and clean them up, and StartFakeMeta, which starts the fake Graph
// API of package testkit/fakemeta for a test. That fake, which checks
// requests the way the Cloud API does and can be scripted per phone number
// id to fail, be slow, hang or enforce rates, lives in a package of its own
// because the demo and `wadispatch fakemeta` serve it from the production
// binary, which must not link testing.
//
// It owns no production logic. It imports broker, logging, messages,
// whatsapp and testkit/fakemeta of this module, so those packages' own
// tests that use it live in external test packages (e.g. broker_test).
package testkit
