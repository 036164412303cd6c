package messages

import (
	"bytes"
	"unicode/utf8"
)

// scanJob is DecodeJob's fast path for the common, valid job: one pass
// that validates the JSON (validJSON, as json.Valid), one that picks out
// the few fields DecodeJob reads, and one allocation. encoding/json
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
	if len(body) > MaxJobSize || !validJSON(body) {
		return Job{}, false
	}
	var metadata, payload []byte
	ok := eachMember(trimSpace(body), func(key, value []byte) bool {
		switch {
		case keyIs(key, "metadata"):
			metadata = value
		case keyIs(key, "wabaPayload"):
			payload = value
		}
		return true
	})
	if !ok {
		return Job{}, false
	}

	var tenantID, internalID []byte
	ok = eachMember(metadata, func(key, value []byte) bool {
		switch {
		case keyIs(key, "tenantId"):
			tenantID, ok = plainString(value)
			return ok
		case keyIs(key, "internalId"):
			internalID, ok = plainString(value)
			return ok
		}
		return true
	})
	if !ok || len(tenantID) == 0 || len(internalID) == 0 {
		return Job{}, false
	}

	var product, to, typ []byte
	ok = eachMember(payload, func(key, value []byte) bool {
		switch {
		case keyIs(key, "messaging_product"):
			product, ok = plainString(value)
			return ok
		case keyIs(key, "to"):
			to, ok = plainString(value)
			return ok
		case keyIs(key, "type"):
			typ, ok = plainString(value)
			return ok
		}
		return true
	})
	if !ok || string(product) != "whatsapp" || len(to) == 0 || len(typ) == 0 {
		return Job{}, false
	}

	// One string for the ids and the recipient.
	ids := string(tenantID) + string(internalID) + string(to)
	job := Job{TenantID: ids[:len(tenantID)], InternalID: ids[len(tenantID) : len(tenantID)+len(internalID)],
		To: ids[len(tenantID)+len(internalID):]}
	if !ValidTenantID(job.TenantID) || !validInternalID(job.InternalID) {
		return Job{}, false
	}
	// The raw values are body's own bytes (see Job), capped so that an
	// append to one cannot write over what follows it.
	job.Metadata, job.Payload = metadata[:len(metadata):len(metadata)], payload[:len(payload):len(payload)]
	return job, true
}

// eachMember calls fn with the raw key (between the quotes) and the raw
// value of every member of obj, in order, until fn returns false. obj must
// be valid JSON. It reports false if obj is not an object, a key is not
// plain ASCII, or fn returned false.
func eachMember(obj []byte, fn func(key, value []byte) bool) bool {
	if len(obj) == 0 || obj[0] != '{' {
		return false
	}
	i := skipSpace(obj, 1)
	if obj[i] == '}' {
		return true
	}
	for {
		end := skipString(obj, i)
		key := obj[i+1 : end-1]
		for _, c := range key {
			if c == '\\' || c >= utf8.RuneSelf {
				return false
			}
		}
		i = skipSpace(obj, skipSpace(obj, end)+1) // past the colon
		end = skipValue(obj, i)
		if !fn(key, obj[i:end]) {
			return false
		}
		i = skipSpace(obj, end)
		if obj[i] == '}' {
			return true
		}
		i = skipSpace(obj, i+1) // past the comma
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

// plainString returns the contents of a JSON string value that decodes to
// exactly those bytes: one without escapes, in valid UTF-8.
func plainString(value []byte) ([]byte, bool) {
	if len(value) < 2 || value[0] != '"' {
		return nil, false
	}
	s := value[1 : len(value)-1]
	return s, bytes.IndexByte(s, '\\') < 0 && utf8.Valid(s)
}

// The skip functions take valid JSON and the index of the first byte of a
// token, and return the index just past it.

func skipValue(data []byte, i int) int {
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch data[i] {
			case '"':
				i = skipString(data, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	default: // number, true, false, null
		for i < len(data) {
			switch data[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

func skipString(data []byte, i int) int {
	for i++; ; i++ {
		i += bytes.IndexByte(data[i:], '"')
		escapes := 0
		for data[i-1-escapes] == '\\' { // stops at the opening quote
			escapes++
		}
		if escapes%2 == 0 {
			return i + 1
		}
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	return i
}

func trimSpace(data []byte) []byte {
	end := len(data)
	for end > 0 && isSpace(data[end-1]) {
		end--
	}
	return data[skipSpace(data[:end], 0):end]
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
