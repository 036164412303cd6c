package worker_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

func TestWorkerDeliversJobsOfEveryTenant(t *testing.T) {
	tenants := defaultTenants(3)
	h := startHarness(t, tenants, harnessOptions{})
	const perTenant = 100
	bodies := map[string][]byte{}
	for i := range perTenant {
		for _, tn := range tenants {
			id := fmt.Sprintf("%s-job-%03d", tn.ID, i)
			body := job(tn.ID, id, fmt.Sprintf("1555%07d", i))
			bodies[id] = body
			h.publish(body)
		}
	}
	results := h.results(3*perTenant, 60*time.Second)

	calls := h.fake.Calls()
	require.Len(t, calls, 3*perTenant, "the fake server saw exactly one request per job")
	wamids := map[string]bool{}
	byPhone := map[string]string{}
	for _, tn := range tenants {
		byPhone[tn.Phone] = tn.ID
	}
	for _, c := range calls {
		tenant, ok := byPhone[c.PhoneNumberID]
		require.True(t, ok, "call to an unknown phone number id %s", c.PhoneNumberID)
		assert.Equal(t, h.tenants[tenant].Token, c.Token, "call for %s used its own token", tenant)
		var payload struct {
			Text struct{ Body string } `json:"text"`
		}
		require.NoError(t, json.Unmarshal(c.Body, &payload))
		id := strings.TrimPrefix(payload.Text.Body, "job ")
		require.Contains(t, bodies, id)
		var env struct{ WABAPayload json.RawMessage }
		require.NoError(t, json.Unmarshal(bodies[id], &env))
		assert.True(t, bytes.Equal(env.WABAPayload, c.Body), "payload of %s sent byte for byte", id)
		assert.True(t, strings.HasPrefix(id, tenant+"-"), "job %s went out with %s's phone number", id, tenant)
		wamids[c.WAMID] = true
	}
	for id, r := range results {
		assert.Equal(t, messages.StatusSent, r.Status, id)
		assert.True(t, wamids[r.WAMID], "result wamid %q of %s was answered by the server", r.WAMID, id)
		assert.Equal(t, 1, r.Attempts, id)
		assert.JSONEq(t, `{"k":1}`, string(mustField(t, r.Metadata, "extra")), "metadata echoed")
	}
	require.Len(t, results, 3*perTenant)

	h.stop() // closing the consumer hands back anything unacked
	assert.Zero(t, h.queued(), "job queue empty, nothing was left unacked")
	assert.Zero(t, h.depth(h.topo.DLQ()), "nothing dead-lettered")
	assert.Len(t, h.events("message_delivered"), 3*perTenant)
}

func mustField(t *testing.T, raw json.RawMessage, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &m))
	return m[key]
}

func TestBadInputIsDeadLetteredWithItsReason(t *testing.T) {
	h := startHarness(t, defaultTenants(1), harnessOptions{})
	cases := []struct {
		name, reason string
		body         []byte
		result       bool // identity readable, so a dead_lettered result is published
	}{
		{"InvalidJSON", messages.ReasonInvalidJSON, []byte(`{"metadata": {`), false},
		{"NotAnObject", messages.ReasonInvalidJSON, []byte(`[1,2,3]`), false},
		{"MissingInternalID", messages.ReasonInvalidJob, []byte(`{"metadata":{"tenantId":"tenant00"},"wabaPayload":{"messaging_product":"whatsapp","to":"1","type":"text"}}`), false},
		{"BadTenantID", messages.ReasonInvalidJob, []byte(`{"metadata":{"tenantId":"../etc","internalId":"x"},"wabaPayload":{"messaging_product":"whatsapp","to":"1","type":"text"}}`), false},
		{"MissingTo", messages.ReasonInvalidJob, []byte(`{"metadata":{"tenantId":"tenant00","internalId":"no-to"},"wabaPayload":{"messaging_product":"whatsapp","type":"text"}}`), true},
		{"WrongProduct", messages.ReasonInvalidJob, []byte(`{"metadata":{"tenantId":"tenant00","internalId":"sms"},"wabaPayload":{"messaging_product":"sms","to":"1","type":"text"}}`), true},
		{"UnknownTenant", messages.ReasonUnknownTenant, job("nobody", "stranger", "1555"), true},
		{"Oversize", messages.ReasonOversize, oversizeJob(), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.publish(c.body)
			dl := h.dlq(1, 20*time.Second)[0]
			assert.Equal(t, c.reason, dl.Headers[messages.HeaderDLQReason])
			assert.NotEmpty(t, dl.Headers[messages.HeaderDLQDetail])
			assert.Equal(t, c.body, dl.Body, "the original body is kept")
			if c.result {
				for _, r := range h.results(1, 20*time.Second) {
					assert.Equal(t, messages.StatusDeadLettered, r.Status)
					assert.Equal(t, c.reason, r.Reason)
				}
			}
			// The worker keeps consuming after each bad input.
			h.publish(job("tenant00", "after-"+c.name, "15550001111"))
			for _, r := range h.results(1, 20*time.Second) {
				assert.Equal(t, messages.StatusSent, r.Status)
			}
		})
	}
	assert.Zero(t, h.depth(h.topo.ResultsQueue()), "no result for jobs without identity")
	assert.Len(t, h.fake.Calls(), len(cases), "bad jobs never reached Meta")
}

func oversizeJob() []byte {
	big := strings.Repeat("x", messages.MaxJobSize)
	b, _ := json.Marshal(map[string]any{
		"metadata":    map[string]any{"tenantId": "tenant00", "internalId": "huge"},
		"wabaPayload": map[string]any{"messaging_product": "whatsapp", "to": "1", "type": "text", "text": map[string]any{"body": big}},
	})
	return b
}

func TestPermanentErrorPublishesFailedAndDeadLetters(t *testing.T) {
	tenants := defaultTenants(1)
	h := startHarness(t, tenants, harnessOptions{})
	h.fake.Behave(tenants[0].Phone, fakemeta.Behaviour{FailCode: 131026})
	h.publish(job("tenant00", "undeliverable", "15550002222"))

	r := h.results(1, 20*time.Second)["undeliverable"]
	assert.Equal(t, messages.StatusFailed, r.Status)
	assert.Equal(t, 131026, r.ErrorCode)
	assert.NotEmpty(t, r.ErrorMessage)
	assert.NotEmpty(t, r.FBTraceID)
	assert.Equal(t, 1, r.Attempts)
	dl := h.dlq(1, 10*time.Second)[0]
	assert.Equal(t, messages.ReasonPermanentError, dl.Headers[messages.HeaderDLQReason])
	assert.EqualValues(t, 131026, dl.Headers[messages.HeaderErrorCode])
	assert.Equal(t, r.FBTraceID, dl.Headers[messages.HeaderFBTraceID])
	assert.Len(t, h.fake.Calls(), 1, "a permanent error is not retried")
}

func TestTransientErrorIsRetriedUntilSent(t *testing.T) {
	tenants := defaultTenants(1)
	h := startHarness(t, tenants, harnessOptions{})
	h.fake.Behave(tenants[0].Phone, fakemeta.Behaviour{FailRaw: 500, FailTimes: 2})
	h.publish(job("tenant00", "flaky", "15550003333"))

	r := h.results(1, 30*time.Second)["flaky"]
	assert.Equal(t, messages.StatusSent, r.Status)
	assert.Equal(t, 3, r.Attempts)
	assert.NotEmpty(t, r.WAMID)
	calls := h.fake.Calls()
	require.Len(t, calls, 3)
	assert.Equal(t, 500, calls[0].Status)
	assert.Equal(t, 500, calls[1].Status)
	assert.Equal(t, 200, calls[2].Status)
	deferred := h.events("message_deferred")
	require.Len(t, deferred, 2, "deferred once per failure")
	assert.Equal(t, "retry", deferred[0]["reason"])
	assert.Zero(t, h.depth(h.topo.DLQ()))
}

func TestRetriesExhaustedGoesToDLQ(t *testing.T) {
	tenants := defaultTenants(1)
	h := startHarness(t, tenants, harnessOptions{
		Defaults: "rate_limit: {per_minute: 60000, burst: 1000}\n  breaker: {failure_threshold: 50, open_for: 60s}\n  max_attempts: 2",
	})
	h.fake.Behave(tenants[0].Phone, fakemeta.Behaviour{FailRaw: 503})
	h.publish(job("tenant00", "doomed", "15550004444"))

	r := h.results(1, 30*time.Second)["doomed"]
	assert.Equal(t, messages.StatusDeadLettered, r.Status)
	assert.Equal(t, messages.ReasonRetriesExhausted, r.Reason)
	assert.Equal(t, 2, r.Attempts)
	dl := h.dlq(1, 10*time.Second)[0]
	assert.Equal(t, messages.ReasonRetriesExhausted, dl.Headers[messages.HeaderDLQReason])
	assert.EqualValues(t, 2, dl.Headers[messages.HeaderAttempts])
	assert.Len(t, h.fake.Calls(), 2)
}
