package messages

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodeJob(t *testing.T) {
	valid := `{"metadata":{"tenantId":"acme","internalId":"order-1","x":1},"wabaPayload":{"messaging_product":"whatsapp","to":"1555","type":"text","text":{"body":"hi"}}}`
	cases := []struct {
		name, body, reason string
		identity           bool
	}{
		{"Valid", valid, "", true},
		{"InvalidJSON", `{"metadata":`, ReasonInvalidJSON, false},
		{"Array", `[]`, ReasonInvalidJSON, false},
		{"NoMetadata", `{"wabaPayload":{}}`, ReasonInvalidJob, false},
		{"MetadataNotObject", `{"metadata":"x"}`, ReasonInvalidJob, false},
		{"NoTenant", `{"metadata":{"internalId":"a"}}`, ReasonInvalidJob, false},
		{"NoInternalID", `{"metadata":{"tenantId":"acme"}}`, ReasonInvalidJob, false},
		{"TenantIDWithSlash", `{"metadata":{"tenantId":"a/b","internalId":"a"}}`, ReasonInvalidJob, false},
		{"InternalIDTooLong", `{"metadata":{"tenantId":"acme","internalId":"` + strings.Repeat("a", 129) + `"}}`, ReasonInvalidJob, false},
		{"InternalIDControlChar", `{"metadata":{"tenantId":"acme","internalId":"a\u0001"}}`, ReasonInvalidJob, false},
		{"NoPayload", `{"metadata":{"tenantId":"acme","internalId":"a"}}`, ReasonInvalidJob, true},
		{"PayloadNotObject", `{"metadata":{"tenantId":"acme","internalId":"a"},"wabaPayload":"hi"}`, ReasonInvalidJob, true},
		{"WrongProduct", `{"metadata":{"tenantId":"acme","internalId":"a"},"wabaPayload":{"messaging_product":"sms","to":"1","type":"text"}}`, ReasonInvalidJob, true},
		{"NoTo", `{"metadata":{"tenantId":"acme","internalId":"a"},"wabaPayload":{"messaging_product":"whatsapp","type":"text"}}`, ReasonInvalidJob, true},
		{"NoType", `{"metadata":{"tenantId":"acme","internalId":"a"},"wabaPayload":{"messaging_product":"whatsapp","to":"1"}}`, ReasonInvalidJob, true},
		{"ToNotString", `{"metadata":{"tenantId":"acme","internalId":"a"},"wabaPayload":{"messaging_product":"whatsapp","to":1,"type":"text"}}`, ReasonInvalidJob, true},
		{"Oversize", `{"metadata":{"tenantId":"acme","internalId":"a"},"wabaPayload":{"messaging_product":"whatsapp","to":"1","type":"text","pad":"` + strings.Repeat("x", MaxJobSize) + `"}}`, ReasonOversize, true},
		{"OversizeGarbage", strings.Repeat("x", MaxJobSize+1), ReasonOversize, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j, err := DecodeJob([]byte(c.body))
			if c.reason == "" {
				require.NoError(t, err)
				assert.Equal(t, "acme", j.TenantID)
				assert.Equal(t, "order-1", j.InternalID)
				assert.JSONEq(t, `{"messaging_product":"whatsapp","to":"1555","type":"text","text":{"body":"hi"}}`, string(j.Payload))
				assert.Contains(t, valid, string(j.Payload), "payload kept byte for byte")
				return
			}
			var inv *InvalidJobError
			require.True(t, errors.As(err, &inv), "error %v", err)
			assert.True(t, errors.Is(err, ErrInvalidJob))
			assert.Equal(t, c.reason, inv.Reason)
			assert.NotEmpty(t, inv.Detail)
			assert.Equal(t, c.identity, inv.Identity != nil, "identity readable")
		})
	}
}

func TestJobStateRoundTrip(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_123)
	s := JobState{Attempts: 3, Deferrals: 2, Crashes: 1, NotBefore: now, Reservation: "ep", FirstSeen: now.Add(-time.Minute)}
	h := map[string]any{}
	s.WriteTo(h)
	assert.Equal(t, s, ReadJobState(h))

	cleared := map[string]any{}
	JobState{}.WriteTo(cleared)
	for k, v := range cleared {
		assert.Nil(t, v, "zero %s is written as nil, meaning remove", k)
	}
	assert.Equal(t, 7, ReadJobState(map[string]any{HeaderAttempts: int32(7)}).Attempts, "int32 from the broker")
	assert.Equal(t, 7, ReadJobState(map[string]any{HeaderAttempts: "7"}).Attempts)
}

func TestResultMarshal(t *testing.T) {
	r := Result{TenantID: "acme", InternalID: "a", Status: StatusSent, WAMID: "wamid.1", Attempts: 1,
		At: FormatTime(time.Date(2026, 11, 27, 10, 30, 0, 123e6, time.UTC)), Metadata: json.RawMessage(`{"tenantId":"acme"}`)}
	assert.JSONEq(t, `{"tenantId":"acme","internalId":"a","status":"sent","wamid":"wamid.1","attempts":1,"durationMs":0,
		"at":"2026-11-27T10:30:00.123Z","metadata":{"tenantId":"acme"}}`, string(r.Marshal()))
}

// Marshal writes what encoding/json writes, for results its own encoder
// takes and for those it hands to encoding/json: random results whose
// strings and metadata mix plain text with every character encoding/json
// escapes, strips or rejects.
func TestResultMarshalIsEncodingJSONs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"", "a", "acme", "wamid.HBgL", "job-17", " ", "\"", "\\", "<", ">", "&", "\n", "\t", "\x01",
		"é", "\u2028", "\xff", "日本", "{", "}", "0"}
	str := func() string {
		var s strings.Builder
		for range rng.IntN(5) {
			s.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return s.String()
	}
	metas := []string{"", `{"tenantId":"acme"}`, `{"a":1,"b":[true,null]}`, `{ "a": 1 }`, `{"a":"<b>"}`,
		`{"a":"\u00e9"}`, `{"a":"x\"y"}`, `{"a":"é"}`, `[1,2`, `null`, `"s"`, "{\"a\":\n1}", `{"a":"&"}`}
	for i := range 20000 {
		r := Result{TenantID: str(), InternalID: str(), Status: str(), WAMID: str(), Attempts: rng.IntN(7) - 1,
			DurationMs: rng.Int64N(100000) - 10, At: str(), ErrorCode: rng.IntN(3) * 131056, ErrorMessage: str(),
			FBTraceID: str(), Reason: str()}
		if m := metas[rng.IntN(len(metas))]; m != "" {
			r.Metadata = json.RawMessage(m)
		}
		if i%4 == 0 { // plain results, the common case, more often
			r = Result{TenantID: "acme", InternalID: fmt.Sprintf("job-%d", i), Status: StatusSent, WAMID: "wamid.X",
				Attempts: 1, DurationMs: int64(i), At: "2026-11-27T10:30:00.123Z", Metadata: r.Metadata}
		}
		require.Equal(t, string(r.marshalJSON()), string(r.Marshal()), "%#v", r)
		// MarshalAt writes an empty At from the time given, and leaves
		// one that is set alone.
		at := time.UnixMilli(rng.Int64N(4e12)).In(time.FixedZone("x", 3600))
		withAt := r
		if withAt.At == "" {
			withAt.At = FormatTime(at)
		}
		require.Equal(t, string(withAt.marshalJSON()), string(r.MarshalAt(at)), "%#v at %v", r, at)
	}
}

// MarshalFor writes the result of a job as MarshalAt writes it with the
// job's identity and metadata, whether the job was decoded (its metadata
// then not checked again) or built by hand (checked, and left out when it
// is not JSON).
func TestResultMarshalForAJob(t *testing.T) {
	at := time.UnixMilli(1764239400123)
	res := Result{Status: StatusSent, WAMID: "wamid.X", Attempts: 1, DurationMs: 7}
	for _, meta := range []string{`{"tenantId":"acme","internalId":"j1"}`, `{"tenantId":"acme","internalId":"j1","n":[1,{"b":null}]}`,
		`{ "tenantId": "acme", "internalId": "j1" }`, `{"tenantId":"acme","internalId":"j1","a":"<b>&"}`,
		`{"tenantId":"acme","internalId":"j1","a":"é\u00e9"}`} {
		job, err := DecodeJob([]byte(`{"metadata":` + meta + `,"wabaPayload":{"messaging_product":"whatsapp","to":"1555","type":"text"}}`))
		require.NoError(t, err)
		want := res
		want.TenantID, want.InternalID, want.Metadata = job.TenantID, job.InternalID, job.Metadata
		assert.Equal(t, string(want.MarshalAt(at)), string(res.MarshalFor(&job, at)), meta)
	}
	for _, meta := range []string{`{"a":1}`, `{"a":1`, `[1,,2]`, `"s`} {
		job := Job{TenantID: "acme", InternalID: "j1", Metadata: json.RawMessage(meta)}
		want := res
		want.TenantID, want.InternalID, want.Metadata, want.At = "acme", "j1", job.Metadata, FormatTime(at)
		assert.Equal(t, string(want.marshalJSON()), string(res.MarshalFor(&job, at)), meta)
	}
}
