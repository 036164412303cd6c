package messages

import "encoding/json"

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

// Marshal encodes the result; a Result always encodes.
func (r Result) Marshal() []byte {
	b, err := json.Marshal(r)
	if err != nil {
		// Only Metadata can fail, and it was validated JSON when decoded.
		r.Metadata = nil
		b, _ = json.Marshal(r)
	}
	return b
}
