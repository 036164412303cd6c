package whatsapp

import (
	"errors"
	"strconv"
)

// ErrTimeout wraps a send that ran into the client timeout (errors.Is(err,
// ErrTimeout) and errors.Is(err, context.DeadlineExceeded) both hold) so
// callers can log it as a timeout.
var ErrTimeout = errors.New("meta api: request timed out")

// APIError is the typed error for every non-accepted answer from Meta, found
// with errors.As. It never holds the access token.
type APIError struct {
	HTTPStatus int
	Code       int    // error.code (0 when absent)
	Subcode    int    // error.error_subcode
	Type       string // error.type
	Message    string // error.message, or what was wrong with a body without an error object
	FBTraceID  string // error.fbtrace_id
	Details    string // error.error_data.details

	// HasCode is set when the body held an error object with a code, so
	// that code 0 (AuthException) is told apart from a body without one.
	// Class also treats a non-zero Code as present, so a hand-built
	// &APIError{Code: 131026} classifies without it.
	HasCode bool
}

// Error reads "meta api: code 131026 (http 400): <message>", or
// "meta api: http 503: <message>" when Meta gave no code.
func (e *APIError) Error() string {
	s := "meta api: "
	if e.codeKnown() {
		s += "code " + strconv.Itoa(e.Code) + " (http " + strconv.Itoa(e.HTTPStatus) + ")"
	} else {
		s += "http " + strconv.Itoa(e.HTTPStatus)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Details != "" {
		s += " (" + e.Details + ")"
	}
	return s
}

// Class tells what the answer means for the job and the tenant: by the
// error code when there is one, by the HTTP status otherwise.
func (e *APIError) Class() Class {
	if e.codeKnown() {
		if c, ok := classOfCode(e.Code); ok {
			return c
		}
	}
	return classOfStatus(e.HTTPStatus)
}

func (e *APIError) codeKnown() bool { return e.HasCode || e.Code != 0 }

// Class is what an answer from Meta (or the lack of one) means (see
// docs/contract.md, Meta's answers).
type Class int

// The classes of docs/contract.md's table of Meta's answers.
const (
	ClassAccepted      Class = iota // not an error; for completeness
	ClassThrottled                  // 4, 80007, 130429, HTTP 429
	ClassPairRate                   // 131056
	ClassAuth                       // 0, 190
	ClassTenantBlocked              // 10, 200–299, 368, 131031, 131048, 133010
	ClassTransient                  // 1, 2, 131000, HTTP 5xx, timeout, connection error
	ClassPermanent                  // 100, 131008, 131009, 131021, 131026, 131047, 131051, 132000, 132001, 135000, other 4xx
)

var classNames = [...]string{
	ClassAccepted:      "accepted",
	ClassThrottled:     "throttled",
	ClassPairRate:      "pair_rate",
	ClassAuth:          "auth",
	ClassTenantBlocked: "tenant_blocked",
	ClassTransient:     "transient",
	ClassPermanent:     "permanent",
}

// String is the class's name as used in logs and metrics labels.
func (c Class) String() string {
	if c >= 0 && int(c) < len(classNames) {
		return classNames[c]
	}
	return "Class(" + strconv.Itoa(int(c)) + ")"
}

// IsBreakerFailure reports whether the answer counts against the tenant's
// circuit breaker. For ClassAuth the caller decides: it re-reads the token
// first and counts a failure only when the token did not change.
func (c Class) IsBreakerFailure() bool {
	switch c {
	case ClassAuth, ClassTenantBlocked, ClassTransient:
		return true
	default:
		return false
	}
}

// Classify returns the class of any error returned by Send.
//
//   - nil is ClassAccepted.
//   - An *APIError is classified by its Graph API code, never by its subcode
//     (deprecated by Meta) and not by the HTTP status, which varies for the
//     same code. Code 0 counts only when the body really held it.
//   - An *APIError without a code, or with a code the table does not list,
//     falls back to the HTTP status: 429 throttled, other 4xx permanent,
//     anything else transient. That includes 5xx and a 2xx without messages[0].id:
//     Meta may or may not have taken such a message, and failing the job
//     would lose it for sure while a retry at worst sends it twice, which
//     at-least-once delivery allows (and bounds with max_attempts).
//   - Every other error means no answer came: the client timeout, a network
//     timeout, connection refused or reset, EOF, the caller's cancelled
//     context. All are ClassTransient, and so is any error this package does
//     not recognise, for the same reason as above: nothing proves the job
//     itself is at fault.
func Classify(err error) Class {
	if err == nil {
		return ClassAccepted
	}
	if apiErr, ok := errors.AsType[*APIError](err); ok {
		return apiErr.Class()
	}
	return ClassTransient
}

// classOfCode is the table of Meta's answers in docs/contract.md; ok is
// false for unlisted codes.
func classOfCode(code int) (c Class, ok bool) {
	switch code {
	case 4, 80007, 130429:
		return ClassThrottled, true
	case 131056:
		return ClassPairRate, true
	case 0, 190:
		return ClassAuth, true
	case 10, 368, 131031, 131048, 133010:
		return ClassTenantBlocked, true
	case 1, 2, 131000:
		return ClassTransient, true
	case 100, 131008, 131009, 131021, 131026, 131047, 131051, 132000, 132001, 135000:
		return ClassPermanent, true
	}
	if code >= 200 && code <= 299 { // permission errors
		return ClassTenantBlocked, true
	}
	return 0, false
}

// classOfStatus is the fallback when the code does not decide; only a 4xx
// says the request itself is wrong.
func classOfStatus(status int) Class {
	switch {
	case status == 429:
		return ClassThrottled
	case status >= 400 && status <= 499:
		return ClassPermanent
	default:
		return ClassTransient
	}
}
