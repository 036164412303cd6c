// Package testkit holds the fakes that wadispatch's tests, demo and benchmark
// commands run against: a fake Meta Graph API server (FakeMeta) that checks
// requests the way the Cloud API does and can be scripted per phone number id
// to fail, be slow, hang or enforce rates, and a manually advanced clock
// (FakeClock) for time-based logic, and helpers that give each integration
// test its own queues on the real RabbitMQ and clean them up.
//
// It owns no production logic. Of this module it imports only broker (for
// queue names), so broker's own tests that use it live in package
// broker_test.
package testkit
