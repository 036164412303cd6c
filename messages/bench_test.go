package messages

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// benchJob is a typical text job as producers send it.
const benchJob = `{"metadata":{"tenantId":"acme","internalId":"order-1042-confirmation","source":"shop","orderId":1042},` +
	`"wabaPayload":{"messaging_product":"whatsapp","recipient_type":"individual","to":"15551234567","type":"text",` +
	`"text":{"body":"Your order 1042 is confirmed"}}}`

// benchTemplateJob is a template job with 40 parameters (about 4 KiB).
func benchTemplateJob() []byte {
	params := make([]map[string]any, 40)
	for i := range params {
		params[i] = map[string]any{"type": "text", "text": strings.Repeat("p", 80)}
	}
	b, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"tenantId": "acme", "internalId": "campaign-7-15551234567"},
		"wabaPayload": map[string]any{"messaging_product": "whatsapp", "to": "15551234567", "type": "template",
			"template": map[string]any{"name": "order_update", "language": map[string]any{"code": "en_US"},
				"components": []map[string]any{{"type": "body", "parameters": params}}}},
	})
	return b
}

// BenchmarkDecodeJob measures what the router does to every delivery before
// it reaches a tenant: decode and validate the body, and read the job's
// state from its headers.
func BenchmarkDecodeJob(b *testing.B) {
	run := func(b *testing.B, body []byte) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, err := DecodeJob(body); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("Text", func(b *testing.B) { run(b, []byte(benchJob)) })
	b.Run("Template4KiB", func(b *testing.B) { run(b, benchTemplateJob()) })
}

// BenchmarkReadJobState measures reading the headers of a job that has been
// deferred once (the common case for a rate-limited tenant).
func BenchmarkReadJobState(b *testing.B) {
	h := map[string]any{}
	JobState{Attempts: 1, Deferrals: 1, NotBefore: time.UnixMilli(1_800_000_000_000), Reservation: "a1b2c3d4e5f6",
		FirstSeen: time.UnixMilli(1_799_999_990_000)}.WriteTo(h)
	b.ReportAllocs()
	for b.Loop() {
		if s := ReadJobState(h); s.Deferrals != 1 {
			b.Fatal("wrong state")
		}
	}
}

// BenchmarkResultMarshal encodes a sent job's result: Marshal, MarshalFor
// (as the tenant writes its decoded job's result: the metadata is not
// checked again) and encoding/json's reflection for comparison.
func BenchmarkResultMarshal(b *testing.B) {
	r := Result{TenantID: "acme", InternalID: "order-12345", Status: StatusSent, WAMID: "wamid.HBgLMTU1NTAwMDAwMDEVAgARGBI",
		Attempts: 1, DurationMs: 312, At: "2026-11-27T10:30:00.123Z", Metadata: json.RawMessage(`{"tenantId":"acme","internalId":"order-12345"}`)}
	b.Run("Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = r.Marshal()
		}
	})
	// The tenant's case: the result of a decoded job, At written from
	// the clock reading it already has.
	job, err := DecodeJob([]byte(benchJob))
	if err != nil {
		b.Fatal(err)
	}
	at := time.UnixMilli(1764239400123)
	ofJob := r
	ofJob.At, ofJob.TenantID, ofJob.InternalID, ofJob.Metadata = "", job.TenantID, job.InternalID, job.Metadata
	b.Run("MarshalForDecodedJob", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = ofJob.MarshalFor(&job, at)
		}
	})
	b.Run("MarshalAtDecodedJob", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = ofJob.MarshalAt(at)
		}
	})
	b.Run("EncodingJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = r.marshalJSON()
		}
	})
}
