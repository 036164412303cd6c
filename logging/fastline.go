package logging

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/wadispatch/wadispatch/messages"
)

// The fast path writes the common line itself: a record whose attributes
// are all of simple kinds, from a handler with no group open. Going through
// slog.JSONHandler costs a ReplaceAttr call per attribute (and a string
// allocation for the timestamp), a handle state taken from and put back
// into pools, and a walk over the attributes after the redaction scan has
// walked them. Here a cheap walk over the kinds decides, and one more
// redacts and encodes each attribute straight into a pooled buffer.
//
// The bytes must be exactly those of the slow path (slog.JSONHandler with
// replaceBuiltin, fed the redacted record), so:
//   - only what is simple to mirror is written here: strings, integers,
//     finite floats, bools, durations, times with four-digit years, errors
//     (which the redactor turns into their text) and groups of those; a
//     record holding anything else (a LogValuer, any other value, a NaN)
//     takes the slow path as a whole, before anything of it is evaluated;
//   - each value is encoded by the rules of slog's JSON handler (its string
//     escaping, encoding/json's float format, durations in nanoseconds,
//     times as RFC 3339 with nanoseconds);
//   - the service, version and With attributes are formatted once per With
//     (and per set of secrets) by appendWithAttrs, and every line copies
//     those bytes; With attributes of other kinds are formatted there by a
//     slog.JSONHandler itself, so they need not stop the fast path.
//
// fastline_test.go compares the two paths byte for byte.

// fastRecord reports whether every attribute of r can be written by the
// fast path.
func fastRecord(r slog.Record) bool {
	ok := true
	r.Attrs(func(a slog.Attr) bool {
		ok = fastAttr(a)
		return ok
	})
	return ok
}

// fastAttr reports whether the fast path can write a: it does not judge
// keys (the writer redacts and renames them), only whether the value is one
// the writer mirrors slog's encoding of.
func fastAttr(a slog.Attr) bool {
	v := a.Value
	switch v.Kind() {
	case slog.KindString, slog.KindInt64, slog.KindUint64, slog.KindBool, slog.KindDuration:
		return true
	case slog.KindFloat64:
		// encoding/json rejects NaN and ±Inf; slog then writes an error
		// text in their place.
		f := v.Float64()
		return !math.IsNaN(f) && !math.IsInf(f, 0)
	case slog.KindTime:
		// slog writes an error text before a year outside 0..9999.
		y := v.Time().Year()
		return y >= 0 && y <= 9999
	case slog.KindAny:
		// The redactor logs an error as its (scrubbed) text. Attr{} is
		// KindAny with a nil value: slog elides it, the slow path copes.
		_, isErr := v.Any().(error)
		return isErr
	case slog.KindGroup:
		for _, m := range v.Group() {
			if !fastAttr(m) {
				return false
			}
		}
		return true
	default: // KindLogValuer: resolving calls the caller's code
		return false
	}
}

// linePool holds the buffers lines are built in.
var linePool = sync.Pool{New: func() any { return new(lineBuffer) }}

type lineBuffer struct{ b []byte }

// maxPooledLine bounds the buffers kept for reuse, so that one huge line
// does not pin its buffer for good (slog uses the same bound).
const maxPooledLine = 16 << 10

// writeFast writes r, whose attributes fastRecord accepted, for a handler
// whose steps were built into b against set. Like slog's JSON handler it
// makes one Write call.
func (rt *root) writeFast(b *built, set *secretSet, r slog.Record) error {
	lb := linePool.Get().(*lineBuffer)
	buf := append(lb.b[:0], '{')
	if !r.Time.IsZero() {
		buf = append(buf, `"timestamp":"`...)
		buf = messages.AppendTime(buf, r.Time) // digits and -:.TZ: nothing to escape
		buf = append(buf, `",`...)
	}
	buf = append(buf, `"level":`...)
	buf = appendLevel(buf, r.Level)
	buf = append(buf, `,"event":`...)
	buf = appendJSONString(buf, set.scrub(r.Message))
	buf = append(buf, b.attrs...)
	red := redactor{set: set}
	r.Attrs(func(a slog.Attr) bool {
		buf = red.appendAttr(buf, a, true, true)
		return true
	})
	buf = append(buf, '}', '\n')

	_, err := rt.out.Write(buf)
	if cap(buf) <= maxPooledLine {
		lb.b = buf
		linePool.Put(lb)
	}
	return err
}

// appendAttr appends a as slog's JSON handler would write it: preceded by a
// comma unless it opens a group's members, elided if it is an empty group,
// and a group with an empty key inlined. buf holds what precedes a on the
// line (or nothing, for the start of a run of attributes that will follow
// others).
//
// If redact, a is redacted on the way as redactor.attr would redact it (a
// is at the top level if top); else a is a copy redactor.attr made, which
// is written as it is.
func (r redactor) appendAttr(buf []byte, a slog.Attr, top, redact bool) []byte {
	v := a.Value
	if v.Kind() == slog.KindGroup && a.Key == "" {
		for _, m := range v.Group() {
			buf = r.appendAttr(buf, m, top, redact)
		}
		return buf
	}
	sensitive := redact && IsSensitiveKey(a.Key)
	if v.Kind() == slog.KindGroup && !sensitive && len(v.Group()) == 0 {
		return buf
	}
	if len(buf) == 0 || buf[len(buf)-1] != '{' {
		buf = append(buf, ',')
	}
	key := a.Key
	if redact {
		key = r.key(a.Key, top)
	}
	buf = appendJSONString(buf, key)
	buf = append(buf, ':')
	if sensitive {
		return append(buf, `"`+Redacted+`"`...)
	}
	switch v.Kind() {
	case slog.KindString:
		return appendJSONString(buf, r.text(v.String(), redact))
	case slog.KindInt64:
		return strconv.AppendInt(buf, v.Int64(), 10)
	case slog.KindUint64:
		return strconv.AppendUint(buf, v.Uint64(), 10)
	case slog.KindFloat64:
		return appendJSONFloat(buf, v.Float64())
	case slog.KindBool:
		return strconv.AppendBool(buf, v.Bool())
	case slog.KindDuration:
		return strconv.AppendInt(buf, int64(v.Duration()), 10)
	case slog.KindTime:
		buf = append(buf, '"')
		buf = v.Time().AppendFormat(buf, time.RFC3339Nano)
		return append(buf, '"')
	case slog.KindGroup:
		buf = append(buf, '{')
		for _, m := range v.Group() {
			buf = r.appendAttr(buf, m, false, redact)
		}
		return append(buf, '}')
	default: // an error: fastAttr let nothing else through
		return appendJSONString(buf, r.text(callString(v.Any().(error).Error), redact))
	}
}

// text returns s scrubbed of secrets if redact, else s.
func (r redactor) text(s string, redact bool) string {
	if redact {
		return r.set.scrub(s)
	}
	return s
}

// appendLevel appends l as a JSON string, as replaceBuiltin names it.
func appendLevel(buf []byte, l slog.Level) []byte {
	switch l {
	case slog.LevelDebug:
		return append(buf, `"DEBUG"`...)
	case slog.LevelInfo:
		return append(buf, `"INFO"`...)
	case slog.LevelWarn:
		return append(buf, `"WARN"`...)
	case slog.LevelError:
		return append(buf, `"ERROR"`...)
	}
	return appendJSONString(buf, l.String())
}

// appendJSONFloat appends the finite f as encoding/json writes a float64:
// like strconv's shortest 'f' format, but with an exponent (without its
// leading zero) below 1e-6 and from 1e21 up.
func appendJSONFloat(buf []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	buf = strconv.AppendFloat(buf, f, format, -1, 64)
	if format == 'e' {
		// e-07 becomes e-7.
		if n := len(buf); n >= 4 && buf[n-4] == 'e' && buf[n-3] == '-' && buf[n-2] == '0' {
			buf[n-2] = buf[n-1]
			buf = buf[:n-1]
		}
	}
	return buf
}

// appendJSONString appends s quoted as slog's JSON handler quotes strings:
// encoding/json's escaping without the HTML escapes, so <, > and & stay,
// control characters, quotes and backslashes are escaped, invalid UTF-8
// becomes \ufffd and U+2028 and U+2029 are escaped.
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	start := 0 // s[start:i] is still to be copied
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '\\', '"':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// jsonSafe[c] reports whether the ASCII byte c stands for itself inside a
// JSON string: all but the control characters, '"' and '\\'.
var jsonSafe = func() (safe [utf8.RuneSelf]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		safe[c] = c != '"' && c != '\\'
	}
	return safe
}()

// appendWithAttrs appends attrs (already redacted) to dst as a
// slog.JSONHandler writes them when they were given to WithAttrs: the bytes
// that follow the event on every line of a handler with no group open, each
// attribute with its leading comma. ok is false if that cannot be had; the
// handler then keeps to the slow path.
//
// Attributes of the kinds the fast path writes are encoded by it, with
// nothing more to redact. Any others (structs, maps, slices, which the
// redactor has turned into JSON-ready copies) are left to slog itself:
// written after a first attribute (the primer), so that slog starts them
// from the state it is in on a real handler, where the service and version
// always come first, and cut out of the line.
func appendWithAttrs(dst []byte, attrs []slog.Attr) (_ []byte, ok bool) {
	if !slices.ContainsFunc(attrs, func(a slog.Attr) bool { return !fastAttr(a) }) {
		// The redactor has done its work on them (and the service and
		// version keep their reserved keys). Encoded on the stack first,
		// so that dst grows once.
		var scratch [256]byte
		enc := scratch[:0]
		for _, a := range attrs {
			enc = redactor{}.appendAttr(enc, a, false, false)
		}
		return append(dst, enc...), true
	}
	const primer = `,"x":0`
	var out bytes.Buffer
	h := slog.NewJSONHandler(&out, &slog.HandlerOptions{ReplaceAttr: replaceBuiltin}).
		WithAttrs([]slog.Attr{slog.Int("x", 0)}).
		WithAttrs(attrs)
	if err := h.Handle(context.Background(), slog.NewRecord(time.Time{}, slog.LevelInfo, "", 0)); err != nil {
		return nil, false
	}
	head, tail := []byte(`{"level":"INFO","event":""`+primer), []byte("}\n")
	line := out.Bytes()
	if len(line) < len(head)+len(tail) || !bytes.HasPrefix(line, head) || !bytes.HasSuffix(line, tail) {
		return nil, false
	}
	return append(dst, line[len(head):len(line)-len(tail)]...), true
}
