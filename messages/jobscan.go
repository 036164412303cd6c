package messages

import (
	"bytes"
	"unicode/utf8"
)

// scanJob is DecodeJob's fast path for the common, valid job: one pass
// that validates the JSON as json.Valid does and picks out the few fields
// DecodeJob reads on the way, and one allocation. encoding/json
// (decodeJob) takes three decoding passes, each validating first, and
// allocates for every field and pointer.
//
// scanJob only ever accepts a body that decodeJob accepts, with the same
// result. Whatever it is not sure of (any invalid job, a key with an escape
// or a non-ASCII byte, a field value that is escaped, invalid UTF-8 or not a
// string) it leaves to decodeJob by returning false, so decodeJob alone
// words every error. Keys match as encoding/json matches them: ASCII case
// folded, the last of duplicates winning.
func scanJob(body []byte) (Job, bool) {
	if len(body) > MaxJobSize {
		return Job{}, false
	}
	var metadata, payload, tenantID, internalID, product, to, typ []byte
	// field reads the string value at body[at] into *dst.
	field := func(at int, dst *[]byte) (int, bool) {
		if at >= len(body) || body[at] != '"' {
			return at, false
		}
		end, ok := validString(body, at)
		if !ok {
			return end, false
		}
		*dst = body[at+1 : end-1]
		return end, bytes.IndexByte(*dst, '\\') < 0 && utf8.Valid(*dst)
	}
	// object walks the object at body[at], one of the two the job's fields
	// are in, and sets *raw to it. A duplicate starts afresh (reset): a
	// field it lacks sends the job to decodeJob, which merges duplicates
	// as encoding/json does.
	object := func(at int, raw *[]byte, reset func(), fn func(key []byte, at int) (int, bool)) (int, bool) {
		if at >= len(body) || body[at] != '{' {
			return at, false
		}
		reset()
		end, ok := members(body, at, 2, fn)
		*raw = body[at:end]
		return end, ok
	}
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return Job{}, false
	}
	end, ok := members(body, i, 1, func(key []byte, at int) (int, bool) {
		switch {
		case keyIs(key, "metadata"):
			return object(at, &metadata, func() { tenantID, internalID = nil, nil }, func(key []byte, at int) (int, bool) {
				switch {
				case keyIs(key, "tenantId"):
					return field(at, &tenantID)
				case keyIs(key, "internalId"):
					return field(at, &internalID)
				}
				return validValue(body, at, 2)
			})
		case keyIs(key, "wabaPayload"):
			return object(at, &payload, func() { product, to, typ = nil, nil, nil }, func(key []byte, at int) (int, bool) {
				switch {
				case keyIs(key, "messaging_product"):
					return field(at, &product)
				case keyIs(key, "to"):
					return field(at, &to)
				case keyIs(key, "type"):
					return field(at, &typ)
				}
				return validValue(body, at, 2)
			})
		}
		return validValue(body, at, 1)
	})
	if !ok || skipSpace(body, end) != len(body) || len(tenantID) == 0 || len(internalID) == 0 ||
		string(product) != "whatsapp" || len(to) == 0 || len(typ) == 0 {
		return Job{}, false
	}

	// One string for the ids and the recipient.
	ids := string(tenantID) + string(internalID) + string(to)
	job := Job{TenantID: ids[:len(tenantID)], InternalID: ids[len(tenantID) : len(tenantID)+len(internalID)],
		To: ids[len(tenantID)+len(internalID):], decoded: true}
	if !ValidTenantID(job.TenantID) || !validInternalID(job.InternalID) {
		return Job{}, false
	}
	// The raw values are body's own bytes (see Job), capped so that an
	// append to one cannot write over what follows it.
	job.Metadata, job.Payload = metadata[:len(metadata):len(metadata)], payload[:len(payload):len(payload)]
	return job, true
}

// members checks the object whose opening brace is data[i], at nesting
// depth, as validJSON would, and calls fn with each member's raw key
// (between its quotes) and the index its value starts at; fn checks the
// value and returns the index just past it. members returns the index
// just past the object, and false if it is invalid, a key is not plain
// ASCII, or fn reported false.
func members(data []byte, i, depth int, fn func(key []byte, at int) (int, bool)) (int, bool) {
	if depth > maxJSONDepth {
		return i, false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return i, false
		}
		end, ok := validString(data, i)
		if !ok {
			return end, false
		}
		key := data[i+1 : end-1]
		for _, c := range key {
			if c == '\\' || c >= utf8.RuneSelf {
				return end, false
			}
		}
		if i = skipSpace(data, end); i >= len(data) || data[i] != ':' {
			return i, false
		}
		if i, ok = fn(key, skipSpace(data, i+1)); !ok {
			return i, false
		}
		if i = skipSpace(data, i); i >= len(data) {
			return i, false
		}
		switch data[i] {
		case '}':
			return i + 1, true
		case ',':
			i = skipSpace(data, i+1)
		default:
			return i, false
		}
	}
}

// keyIs reports whether the plain ASCII key selects the field name, as
// encoding/json matches it.
func keyIs(key []byte, name string) bool {
	if len(key) != len(name) {
		return false
	}
	for i, c := range key {
		if lowerASCII(c) != lowerASCII(name[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	return i
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
