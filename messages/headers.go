package messages

import (
	"strconv"
	"time"
)

// Headers a job carries between its deliveries. They are the job's own state
// (attempts, deferrals, crashes, its reserved send time), so a worker restart
// loses none of it.
const (
	HeaderDLQReason   = "x-dlq-reason"
	HeaderDLQDetail   = "x-dlq-detail"
	HeaderErrorCode   = "x-error-code"
	HeaderFBTraceID   = "x-fbtrace-id"
	HeaderAttempts    = "x-attempts"
	HeaderDeferrals   = "x-deferrals"
	HeaderCrashes     = "x-crashes"
	HeaderNotBefore   = "x-not-before"
	HeaderReservation = "x-reservation"
	HeaderFirstSeen   = "x-first-seen"
	HeaderDeferReason = "x-defer-reason"
	// HeaderPlace is the job's place in its recipient's line ("epoch:n"),
	// so that a deferred job keeps its place behind and ahead of the
	// recipient's other jobs.
	HeaderPlace = "x-place"
)

// JobState is what a job's headers say about its history.
type JobState struct {
	Attempts  int       // real calls made to Meta
	Deferrals int       // times the tenant deferred it
	Crashes   int       // times a tenant actor crashed while handling it
	NotBefore time.Time // when it may be sent; zero for none
	// Reservation names the schedule the job holds a token of ("" for none);
	// a token of another process or incarnation is worthless.
	Reservation string
	FirstSeen   time.Time // first time a worker saw the job, for max_age
	// Place is its place in its recipient's line ("epoch:n"; "" for none).
	Place string
}

// ReadJobState reads a job's state from its headers; absent or malformed
// values read as zero.
func ReadJobState(h map[string]any) JobState {
	return JobState{
		Attempts:    int(headerInt(h, HeaderAttempts)),
		Deferrals:   int(headerInt(h, HeaderDeferrals)),
		Crashes:     int(headerInt(h, HeaderCrashes)),
		NotBefore:   headerTime(h, HeaderNotBefore),
		Reservation: headerString(h, HeaderReservation),
		FirstSeen:   headerTime(h, HeaderFirstSeen),
		Place:       headerString(h, HeaderPlace),
	}
}

// WriteTo stores s into h, a map of header changes: a zero value is stored
// as nil, which means "remove this header" to broker.Delivery.Copy.
func (s JobState) WriteTo(h map[string]any) {
	setInt(h, HeaderAttempts, s.Attempts)
	setInt(h, HeaderDeferrals, s.Deferrals)
	setInt(h, HeaderCrashes, s.Crashes)
	setTime(h, HeaderNotBefore, s.NotBefore)
	setTime(h, HeaderFirstSeen, s.FirstSeen)
	setString(h, HeaderReservation, s.Reservation)
	setString(h, HeaderPlace, s.Place)
}

func setString(h map[string]any, k, v string) {
	if v == "" {
		h[k] = nil
		return
	}
	h[k] = v
}

func setInt(h map[string]any, k string, v int) {
	if v == 0 {
		h[k] = nil
		return
	}
	h[k] = int64(v)
}

func setTime(h map[string]any, k string, t time.Time) {
	if t.IsZero() {
		h[k] = nil
		return
	}
	h[k] = t.UnixMilli()
}

func headerInt(h map[string]any, k string) int64 {
	switch v := h[k].(type) {
	case int64:
		return v
	case int32:
		return int64(v)
	case int:
		return int64(v)
	case int16:
		return int64(v)
	case int8:
		return int64(v)
	case uint8:
		return int64(v)
	case uint16:
		return int64(v)
	case uint32:
		return int64(v)
	case float64:
		return int64(v)
	case float32:
		return int64(v)
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 0
}

func headerTime(h map[string]any, k string) time.Time {
	ms := headerInt(h, k)
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func headerString(h map[string]any, k string) string {
	switch v := h[k].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}
