package messages

import (
	"encoding/json"
	"strconv"
	"time"
)

// Result statuses; each is also the routing key of its result event.
const (
	StatusSent         = "sent"
	StatusFailed       = "failed"
	StatusDeadLettered = "dead_lettered"
)

// Result is the terminal result event published once per job.
type Result struct {
	TenantID     string          `json:"tenantId"`
	InternalID   string          `json:"internalId"`
	Status       string          `json:"status"`
	WAMID        string          `json:"wamid,omitempty"`
	Attempts     int             `json:"attempts"`
	DurationMs   int64           `json:"durationMs"`
	At           string          `json:"at"`
	ErrorCode    int             `json:"errorCode,omitempty"`
	ErrorMessage string          `json:"errorMessage,omitempty"`
	FBTraceID    string          `json:"fbtraceId,omitempty"`
	Reason       string          `json:"reason,omitempty"`
	Metadata     json.RawMessage `json:"metadata,omitempty"`
}

// Marshal encodes the result; a Result always encodes. A result whose
// strings need no escaping and whose metadata is compact ASCII, as nearly
// every result is, is written here, byte for byte as encoding/json writes
// it, without its reflection; any other goes through encoding/json.
func (r Result) Marshal() []byte { return r.MarshalAt(time.Time{}) }

// MarshalAt is Marshal with At, when it is empty, written from at (as
// FormatTime writes it) straight into the encoding: one string fewer per
// result.
func (r Result) MarshalAt(at time.Time) []byte { return r.marshalAt(at, false) }

// MarshalFor is MarshalAt for the result of job j: its tenant, internal id
// and metadata are j's. The metadata of a job DecodeJob returned is known
// to be valid JSON, and is not checked again: a job's Metadata is
// read-only (see Job), so it is still what DecodeJob checked.
func (r Result) MarshalFor(j *Job, at time.Time) []byte {
	r.TenantID, r.InternalID, r.Metadata = j.TenantID, j.InternalID, j.Metadata
	return r.marshalAt(at, j.decoded)
}

func (r Result) marshalAt(at time.Time, validMetadata bool) []byte {
	size := 160 + len(r.TenantID) + len(r.InternalID) + len(r.WAMID) + len(r.ErrorMessage) + len(r.FBTraceID) +
		len(r.Reason) + len(r.Metadata)
	if b, ok := r.appendPlain(make([]byte, 0, size), at, validMetadata); ok {
		return b
	}
	if r.At == "" && !at.IsZero() {
		r.At = FormatTime(at)
	}
	return r.marshalJSON()
}

// marshalJSON is Marshal by encoding/json.
func (r Result) marshalJSON() []byte {
	b, err := json.Marshal(r)
	if err != nil {
		// Only Metadata can fail, and it was validated JSON when decoded.
		r.Metadata = nil
		b, _ = json.Marshal(r)
	}
	return b
}

// appendPlain appends r as encoding/json would, and reports false (with b
// to be dropped) when a string or the metadata holds a byte encoding/json
// would escape or strip. An empty At is written from at, unless at is
// zero. validMetadata says the metadata is known to be valid JSON.
func (r Result) appendPlain(b []byte, at time.Time, validMetadata bool) ([]byte, bool) {
	ok := true
	str := func(key, v string) {
		b = append(b, key...)
		b = append(b, '"')
		b = append(b, v...)
		b = append(b, '"')
		ok = ok && writtenAsIs(v)
	}
	str(`{"tenantId":`, r.TenantID)
	str(`,"internalId":`, r.InternalID)
	str(`,"status":`, r.Status)
	if r.WAMID != "" {
		str(`,"wamid":`, r.WAMID)
	}
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(r.Attempts), 10)
	b = append(b, `,"durationMs":`...)
	b = strconv.AppendInt(b, r.DurationMs, 10)
	if r.At == "" && !at.IsZero() {
		b = append(b, `,"at":"`...)
		b = append(AppendTime(b, at), '"')
	} else {
		str(`,"at":`, r.At)
	}
	if r.ErrorCode != 0 {
		b = append(b, `,"errorCode":`...)
		b = strconv.AppendInt(b, int64(r.ErrorCode), 10)
	}
	if r.ErrorMessage != "" {
		str(`,"errorMessage":`, r.ErrorMessage)
	}
	if r.FBTraceID != "" {
		str(`,"fbtraceId":`, r.FBTraceID)
	}
	if r.Reason != "" {
		str(`,"reason":`, r.Reason)
	}
	if len(r.Metadata) > 0 {
		if !plainBytes(r.Metadata) || !validMetadata && !validJSON(r.Metadata) {
			return b, false
		}
		b = append(b, `,"metadata":`...)
		b = append(b, r.Metadata...)
	}
	return append(b, '}'), ok
}

// writtenAsIs reports whether encoding/json writes s as it is: printable
// ASCII without a quote, a backslash or an HTML character (<, >, &).
func writtenAsIs(s string) bool {
	for i := 0; i < len(s); i++ {
		if !plainByte(s[i]) {
			return false
		}
	}
	return true
}

// plainBytes reports whether encoding/json writes the raw value v, valid
// JSON, as it is: printable ASCII without a space or an HTML character (it
// compacts whitespace away and escapes <, > and &).
func plainBytes(v []byte) bool {
	for _, c := range v {
		if c == ' ' || (!plainByte(c) && c != '"' && c != '\\') {
			return false
		}
	}
	return true
}

func plainByte(c byte) bool {
	return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}
