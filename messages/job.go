package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"unicode"
)

// MaxJobSize is the largest job body accepted (256 KiB); a larger one is
// dead-lettered as oversize.
const MaxJobSize = 256 << 10

// Dead-letter reasons, the values of the x-dlq-reason header.
const (
	ReasonInvalidJSON      = "invalid_json"
	ReasonInvalidJob       = "invalid_job"
	ReasonUnknownTenant    = "unknown_tenant"
	ReasonOversize         = "oversize"
	ReasonPermanentError   = "permanent_error"
	ReasonRetriesExhausted = "retries_exhausted"
	ReasonExpired          = "expired"
	ReasonPoison           = "poison"
)

// TenantIDPattern is the form the contract requires of a tenant id, in a
// job and in the tenants file alike; TenantIDRule says it in words, for
// error messages. ValidTenantID checks it without a regexp, since it runs
// on every delivery.
const (
	TenantIDPattern = `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`
	TenantIDRule    = "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
)

// tenantIDPattern is TenantIDPattern compiled, as quoted in job errors.
var tenantIDPattern = regexp.MustCompile(TenantIDPattern)

// ValidTenantID reports whether id has the form the contract requires
// (TenantIDPattern). It is the one check of a tenant id.
func ValidTenantID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := range len(id) {
		switch c := id[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// Job is a decoded and validated send job. Its Metadata and Payload may
// share the memory of the body it was decoded from (a delivery's body,
// which nothing changes), so they are read-only.
type Job struct {
	TenantID   string
	InternalID string
	// Metadata is the producer's metadata object exactly as received; it is
	// echoed in the result.
	Metadata json.RawMessage
	// Payload is the wabaPayload exactly as received; it is sent to Meta
	// byte-for-byte.
	Payload json.RawMessage
	// To is wabaPayload.to, the recipient: a tenant's jobs to one
	// recipient are sent one at a time, in order.
	To string
	// decoded is set on a job DecodeJob returned, whose Metadata it found
	// valid JSON: its result need not check it again (MarshalFor).
	decoded bool
}

// Identity is what a result needs to name a job. A job whose identity cannot
// be read is only dead-lettered, never reported.
type Identity struct {
	TenantID   string
	InternalID string
	Metadata   json.RawMessage
}

// InvalidJobError says why a delivery is not a valid job and which
// dead-letter reason applies. Identity is set when the tenant and internal id
// could still be read, so a result can be published.
type InvalidJobError struct {
	Reason   string
	Detail   string
	Identity *Identity
}

func (e *InvalidJobError) Error() string { return e.Reason + ": " + e.Detail }

// ErrInvalidJob is matched by every *InvalidJobError via errors.Is.
var ErrInvalidJob = errors.New("invalid job")

// Is makes errors.Is(err, ErrInvalidJob) true for every InvalidJobError.
func (e *InvalidJobError) Is(target error) bool { return target == ErrInvalidJob }

type rawEnvelope struct {
	Metadata    json.RawMessage `json:"metadata"`
	WABAPayload json.RawMessage `json:"wabaPayload"`
}

type rawMetadata struct {
	TenantID   *string `json:"tenantId"`
	InternalID *string `json:"internalId"`
}

type rawPayload struct {
	MessagingProduct string `json:"messaging_product"`
	To               string `json:"to"`
	Type             string `json:"type"`
}

// DecodeJob decodes and validates one job body. It checks the size, the JSON,
// the identity fields and the minimal shape of wabaPayload; whether the tenant
// is configured is the router's question.
func DecodeJob(body []byte) (Job, error) {
	if job, ok := scanJob(body); ok {
		return job, nil
	}
	return decodeJob(body)
}

// decodeJob is DecodeJob by encoding/json: the definition of what a valid
// job is, and the only place that says why a job is not.
func decodeJob(body []byte) (Job, error) {
	var env rawEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		if len(body) > MaxJobSize {
			return Job{}, &InvalidJobError{Reason: ReasonOversize, Detail: fmt.Sprintf("body is %d bytes, limit %d", len(body), MaxJobSize)}
		}
		return Job{}, &InvalidJobError{Reason: ReasonInvalidJSON, Detail: jsonDetail(err)}
	}
	id, idErr := decodeIdentity(env.Metadata)
	if len(body) > MaxJobSize {
		return Job{}, &InvalidJobError{Reason: ReasonOversize, Detail: fmt.Sprintf("body is %d bytes, limit %d", len(body), MaxJobSize), Identity: id}
	}
	if idErr != nil {
		return Job{}, &InvalidJobError{Reason: ReasonInvalidJob, Detail: idErr.Error(), Identity: id}
	}
	to, err := checkPayload(env.WABAPayload)
	if err != nil {
		return Job{}, &InvalidJobError{Reason: ReasonInvalidJob, Detail: err.Error(), Identity: id}
	}
	return Job{TenantID: id.TenantID, InternalID: id.InternalID, Metadata: id.Metadata, Payload: env.WABAPayload, To: to, decoded: true}, nil
}

// decodeIdentity returns the identity whenever tenantId and internalId are
// readable strings, even when they break a rule, together with the first rule
// they break.
func decodeIdentity(raw json.RawMessage) (*Identity, error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, errors.New("metadata is missing")
	}
	var md rawMetadata
	if err := json.Unmarshal(raw, &md); err != nil {
		return nil, errors.New("metadata must be a JSON object")
	}
	if md.TenantID == nil || *md.TenantID == "" {
		return nil, errors.New("metadata.tenantId is missing")
	}
	if md.InternalID == nil || *md.InternalID == "" {
		return nil, errors.New("metadata.internalId is missing")
	}
	id := &Identity{TenantID: *md.TenantID, InternalID: *md.InternalID, Metadata: raw}
	if !ValidTenantID(id.TenantID) {
		// An id of the wrong shape is not echoed in a result: it may be
		// anything a producer sent, and results are routed per tenant.
		return nil, fmt.Errorf("metadata.tenantId %q does not match %s", truncate(id.TenantID, 80), tenantIDPattern)
	}
	if !validInternalID(id.InternalID) {
		return nil, fmt.Errorf("metadata.internalId must be 1-128 printable characters")
	}
	return id, nil
}

func validInternalID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func checkPayload(raw json.RawMessage) (to string, err error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return "", errors.New("wabaPayload must be a JSON object")
	}
	var p rawPayload
	if err := json.Unmarshal(raw, &p); err != nil {
		return "", errors.New("wabaPayload fields messaging_product, to and type must be strings")
	}
	switch {
	case p.MessagingProduct != "whatsapp":
		return "", errors.New(`wabaPayload.messaging_product must be "whatsapp"`)
	case p.To == "":
		return "", errors.New("wabaPayload.to is missing")
	case p.Type == "":
		return "", errors.New("wabaPayload.type is missing")
	}
	return p.To, nil
}

func jsonDetail(err error) string {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Sprintf("not valid JSON at byte %d", syn.Offset)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Sprintf("body must be a JSON object with metadata and wabaPayload (got %s)", typ.Value)
	}
	return "not valid JSON"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
