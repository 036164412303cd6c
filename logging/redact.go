package logging

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Redacted replaces every secret and every value under a sensitive key.
const Redacted = "[REDACTED]"

// maxDepth bounds how deep a value is walked; anything deeper (a cycle, most
// likely) is logged as Redacted.
const maxDepth = 32

// IsSensitiveKey reports whether key contains, case-insensitively, one of
// the words token, accesstoken, systemuseraccesstoken, password, secret or
// authorization ("token" covers the two it is part of). Unicode case folding
// counts too, so "to\u212Aen" with a Kelvin sign is sensitive. The value
// of an attribute, group, map key or struct field with such a name is logged
// as Redacted, whatever it is: "tokensAvailable" is redacted as well, so
// name counters otherwise.
func IsSensitiveKey(key string) bool {
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c >= utf8.RuneSelf {
			return isSensitiveFolded(key)
		}
		// c|0x20 lower-cases an ASCII letter; the only other bytes it maps
		// onto a lower-case letter are the upper-case ones.
		switch c | 0x20 {
		case 't':
			if hasFoldPrefix(key[i:], "token") {
				return true
			}
		case 'p':
			if hasFoldPrefix(key[i:], "password") {
				return true
			}
		case 's':
			if hasFoldPrefix(key[i:], "secret") {
				return true
			}
		case 'a':
			if hasFoldPrefix(key[i:], "authorization") {
				return true
			}
		}
	}
	return false
}

// hasFoldPrefix reports whether s starts with word (lower-case ASCII letters),
// ignoring ASCII case.
func hasFoldPrefix(s, word string) bool {
	if len(s) < len(word) {
		return false
	}
	for i := 0; i < len(word); i++ {
		if s[i]|0x20 != word[i] {
			return false
		}
	}
	return true
}

// isSensitiveFolded is the slow path for keys with non-ASCII runes: each rune
// whose case-folding orbit holds an ASCII letter (K for the Kelvin sign, s for
// the long s) is replaced by that letter, then the ASCII check runs.
func isSensitiveFolded(key string) bool {
	var b strings.Builder
	b.Grow(len(key))
	for _, r := range key {
		b.WriteRune(asciiFold(r))
	}
	folded := b.String()
	for i := 0; i < len(folded); i++ {
		if folded[i] >= utf8.RuneSelf {
			continue
		}
		if hasFoldPrefix(folded[i:], "token") || hasFoldPrefix(folded[i:], "password") ||
			hasFoldPrefix(folded[i:], "secret") || hasFoldPrefix(folded[i:], "authorization") {
			return true
		}
	}
	return false
}

func asciiFold(r rune) rune {
	if r < utf8.RuneSelf {
		return r
	}
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < utf8.RuneSelf {
			return f
		}
	}
	return r
}

// reservedKeys are the top-level keys the handler writes itself (or that
// ReplaceAttr would mistake for the built-in ones). A caller's top-level
// attribute with one of these keys is renamed with reservedPrefix.
func isReservedKey(key string) bool {
	switch key {
	case slog.TimeKey, slog.LevelKey, slog.MessageKey, slog.SourceKey,
		keyTimestamp, keyEvent, keyService, keyVersion:
		return true
	}
	return false
}

const reservedPrefix = "attr_"

// key returns the key (or group name) to write for key: renamed if it is
// reserved and at the top level, scrubbed of secrets.
func (r redactor) key(key string, top bool) string {
	if top && isReservedKey(key) {
		key = reservedPrefix + key
	}
	return r.set.scrub(key)
}

// redactor applies both redactions against one snapshot of the secrets.
type redactor struct {
	set *secretSet
}

// clean reports whether a can go to the JSON handler as it is: no sensitive
// key, no secret in its key or string value, nothing that needs walking.
// It is the fast path and must not allocate.
func (r redactor) clean(a slog.Attr, top bool) bool {
	if IsSensitiveKey(a.Key) || r.set.contains(a.Key) || (top && isReservedKey(a.Key)) {
		return false
	}
	switch a.Value.Kind() {
	case slog.KindString:
		return !r.set.contains(a.Value.String())
	case slog.KindAny, slog.KindLogValuer:
		return false
	case slog.KindGroup:
		for _, sub := range a.Value.Group() {
			if !r.clean(sub, top && a.Key == "") {
				return false
			}
		}
		return true
	default: // numbers, bools, durations, times hold no text
		return true
	}
}

// attrs returns redacted copies of as; force redacts every value (the attrs
// sit under a group whose name is sensitive).
func (r redactor) attrs(as []slog.Attr, top, force bool) []slog.Attr {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = r.attr(a, top, force)
	}
	return out
}

// attr returns a redacted copy of a. It never modifies a or anything a
// refers to. If anything panics on the way, the whole value is Redacted.
func (r redactor) attr(a slog.Attr, top, force bool) (out slog.Attr) {
	key := r.key(a.Key, top)
	defer func() {
		if recover() != nil {
			out = slog.String(key, Redacted)
		}
	}()

	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup && (a.Key == "" || (force && !IsSensitiveKey(a.Key))) {
		// An inlined group, or the members of a sensitive WithGroup: keep
		// the shape, redact the leaves.
		return slog.Attr{Key: key, Value: slog.GroupValue(r.attrs(v.Group(), top && a.Key == "", force)...)}
	}
	if force || IsSensitiveKey(a.Key) {
		return slog.String(key, Redacted)
	}
	switch v.Kind() {
	case slog.KindString:
		return slog.String(key, r.set.scrub(v.String()))
	case slog.KindGroup:
		return slog.Attr{Key: key, Value: slog.GroupValue(r.attrs(v.Group(), false, false)...)}
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			// Like slog.JSONHandler: an error is logged as its text.
			return slog.String(key, r.set.scrub(callString(err.Error)))
		}
		return slog.Attr{Key: key, Value: slog.AnyValue(r.value(v.Any(), 0))}
	default:
		return slog.Attr{Key: key, Value: v}
	}
}

// callString calls f, turning a panic into Redacted (a nil pointer whose
// Error or String method dereferences it, for one).
func callString(f func() string) (s string) {
	defer func() {
		if recover() != nil {
			s = Redacted
		}
	}()
	return f()
}

// object is a JSON object that keeps its members in order. The walk turns
// maps and structs into objects, so that nothing of the caller's is shared
// with (or changed by) the redacted copy.
type object []member

type member struct {
	Key   string
	Value any // nil, string, bool, int64, uint64, float32, float64, json.Number, []any or object
}

// MarshalJSON writes the members in order.
func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(m.Key)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(m.Value)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// value returns a redacted, JSON-ready copy of v. Values render as
// encoding/json would render them (which is what slog.JSONHandler does),
// except that:
//   - an error renders as its Error() text, a []byte as text, a *url.URL
//     with its password masked, a slog.LogValuer as its LogValue();
//   - a fmt.Stringer that is not a struct (or pointer to one) renders as
//     its String(); structs render field by field, like encoding/json;
//   - every string is scrubbed of secrets, every key and struct field whose
//     name (or json tag) is sensitive has its value Redacted;
//   - what cannot be walked (channels, funcs, anything deeper than maxDepth,
//     anything that panics) is Redacted.
func (r redactor) value(v any, depth int) (out any) {
	if v == nil {
		return nil
	}
	if depth > maxDepth {
		return Redacted
	}
	defer func() {
		if recover() != nil {
			out = Redacted
		}
	}()
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice:
		if rv.IsNil() {
			return nil
		}
	}

	switch x := v.(type) {
	case string:
		return r.set.scrub(x)
	case []byte:
		return r.set.scrub(string(x))
	case bool, int64, uint64, json.Number:
		return x
	case float64:
		return finite(x)
	case object:
		out := make(object, len(x))
		for i, m := range x {
			out[i] = r.member(m.Key, m.Value, depth)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = r.value(e, depth+1)
		}
		return out
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case time.Duration:
		return int64(x)
	case *url.URL:
		if x == nil {
			return nil
		}
		return r.set.scrub(RedactURL(x.String()))
	case url.URL:
		return r.set.scrub(RedactURL(x.String()))
	case slog.LogValuer:
		return r.slogValue(slog.AnyValue(x).Resolve(), depth)
	case slog.Value:
		return r.slogValue(x.Resolve(), depth)
	case slog.Attr:
		return object{r.member(x.Key, x.Value, depth)}
	case error:
		return r.set.scrub(callString(x.Error))
	case json.Marshaler:
		return r.fromJSON(x, depth)
	case encoding.TextMarshaler:
		text, err := x.MarshalText()
		if err != nil {
			return Redacted
		}
		return r.set.scrub(string(text))
	case fmt.Stringer:
		if !isStructLike(rv.Type()) {
			return r.set.scrub(callString(x.String))
		}
	}
	return r.reflectValue(rv, depth)
}

// member returns the redacted member key: value.
func (r redactor) member(key string, v any, depth int) member {
	if IsSensitiveKey(key) {
		return member{r.set.scrub(key), Redacted}
	}
	return member{r.set.scrub(key), r.value(v, depth+1)}
}

func isStructLike(t reflect.Type) bool {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct
}

func finite(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, 64) // json.Marshal rejects them
	}
	return f
}

// elem walks a value reached by reflection: through its interfaces when it
// can be, by kind when it cannot (a field promoted from an unexported
// embedded struct).
func (r redactor) elem(rv reflect.Value, depth int) any {
	if !rv.IsValid() {
		return nil
	}
	if rv.CanInterface() {
		return r.value(rv.Interface(), depth)
	}
	return r.reflectValue(rv, depth)
}

func (r redactor) reflectValue(rv reflect.Value, depth int) any {
	if depth > maxDepth {
		return Redacted
	}
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil
		}
		return r.elem(rv.Elem(), depth+1)
	case reflect.String:
		return r.set.scrub(rv.String())
	case reflect.Bool:
		return rv.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return rv.Uint()
	case reflect.Float32:
		if f := rv.Float(); !math.IsNaN(f) && !math.IsInf(f, 0) {
			return float32(f) // so that it prints with float32 precision
		}
		return finite(rv.Float())
	case reflect.Float64:
		return finite(rv.Float())
	case reflect.Complex64, reflect.Complex128:
		return strconv.FormatComplex(rv.Complex(), 'g', -1, 128)
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return nil
		}
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			b := make([]byte, rv.Len())
			for i := range b {
				b[i] = byte(rv.Index(i).Uint())
			}
			return r.set.scrub(string(b))
		}
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = r.elem(rv.Index(i), depth+1)
		}
		return out
	case reflect.Map:
		if rv.IsNil() {
			return nil
		}
		out := make(object, 0, rv.Len())
		iter := rv.MapRange()
		for iter.Next() {
			key := mapKey(iter.Key())
			if IsSensitiveKey(key) {
				out = append(out, member{r.set.scrub(key), Redacted})
				continue
			}
			out = append(out, member{r.set.scrub(key), r.elem(iter.Value(), depth+1)})
		}
		// Sorted like encoding/json, so lines are reproducible.
		slices.SortFunc(out, func(a, b member) int { return strings.Compare(a.Key, b.Key) })
		return out
	case reflect.Struct:
		return r.structValue(rv, depth)
	default: // channels, funcs, unsafe pointers: nothing JSON can show
		return Redacted
	}
}

// mapKey renders a map key as encoding/json does (text marshalers, numbers),
// falling back to fmt for the rest.
func mapKey(k reflect.Value) string {
	if k.Kind() == reflect.String {
		return k.String()
	}
	if k.CanInterface() {
		if tm, ok := k.Interface().(encoding.TextMarshaler); ok {
			if text, err := tm.MarshalText(); err == nil {
				return string(text)
			}
		}
	}
	switch k.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(k.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.FormatUint(k.Uint(), 10)
	}
	if k.CanInterface() {
		return fmt.Sprint(k.Interface())
	}
	return k.Type().String()
}

// field is a struct field found on the walk, with how deep it was embedded
// (encoding/json's dominance rule: the shallowest field of a name wins).
type field struct {
	member
	embed int
}

func (r redactor) structValue(rv reflect.Value, depth int) any {
	var fields []field
	r.collectFields(rv, depth, 0, &fields)
	out := make(object, 0, len(fields))
	for i, f := range fields {
		dominated := slices.ContainsFunc(fields, func(g field) bool {
			return g.Key == f.Key && g.embed < f.embed
		}) || slices.ContainsFunc(fields[:i], func(g field) bool {
			return g.Key == f.Key && g.embed == f.embed
		})
		if !dominated {
			out = append(out, f.member)
		}
	}
	return out
}

func (r redactor) collectFields(rv reflect.Value, depth, embed int, out *[]field) {
	t := rv.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		fv := rv.Field(i)
		if sf.Anonymous && name == "" {
			ft := sf.Type
			if ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct {
				if fv.IsNil() {
					continue
				}
				fv, ft = fv.Elem(), ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if embed < maxDepth {
					r.collectFields(fv, depth, embed+1, out)
				}
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		if hasOpt(opts, "omitempty") && isEmptyValue(fv) || hasOpt(opts, "omitzero") && fv.IsZero() {
			continue
		}
		m := member{Key: r.set.scrub(name), Value: Redacted}
		if !IsSensitiveKey(sf.Name) && !IsSensitiveKey(name) {
			m.Value = r.elem(fv, depth+1)
		}
		*out = append(*out, field{m, embed})
	}
}

func hasOpt(opts, opt string) bool {
	for opts != "" {
		var o string
		o, opts, _ = strings.Cut(opts, ",")
		if o == opt {
			return true
		}
	}
	return false
}

// isEmptyValue is encoding/json's omitempty test.
func isEmptyValue(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Interface, reflect.Pointer:
		return v.IsZero()
	}
	return false
}

// slogValue renders a resolved slog.Value met inside another value (a
// nested LogValuer, for one).
func (r redactor) slogValue(v slog.Value, depth int) any {
	switch v.Kind() {
	case slog.KindString:
		return r.set.scrub(v.String())
	case slog.KindInt64:
		return v.Int64()
	case slog.KindUint64:
		return v.Uint64()
	case slog.KindFloat64:
		return finite(v.Float64())
	case slog.KindBool:
		return v.Bool()
	case slog.KindDuration:
		return int64(v.Duration())
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindGroup:
		out := make(object, 0, len(v.Group()))
		for _, a := range v.Group() {
			out = append(out, r.member(a.Key, a.Value, depth))
		}
		return out
	default:
		return r.value(v.Any(), depth+1)
	}
}

// fromJSON renders a json.Marshaler by decoding what it marshals (keeping
// member order) and redacting that, so that sensitive keys inside, say, a
// json.RawMessage are caught too. Output that does not decode is Redacted.
func (r redactor) fromJSON(m json.Marshaler, depth int) any {
	raw, err := m.MarshalJSON()
	if err != nil {
		return Redacted
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := r.decodeJSON(dec, depth)
	if err != nil {
		return Redacted
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Redacted // trailing data
	}
	return v
}

var errJSONShape = errors.New("unexpected JSON token")

func (r redactor) decodeJSON(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			out := object{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, ok := kt.(string)
				if !ok {
					return nil, errJSONShape
				}
				v, err := r.decodeJSON(dec, depth+1)
				if err != nil {
					return nil, err
				}
				if IsSensitiveKey(key) || depth > maxDepth {
					v = Redacted
				}
				out = append(out, member{r.set.scrub(key), v})
			}
			_, err := dec.Token() // '}'
			return out, err
		case '[':
			out := []any{}
			for dec.More() {
				v, err := r.decodeJSON(dec, depth+1)
				if err != nil {
					return nil, err
				}
				if depth > maxDepth {
					v = Redacted
				}
				out = append(out, v)
			}
			_, err := dec.Token() // ']'
			return out, err
		}
		return nil, errJSONShape
	case string:
		return r.set.scrub(t), nil
	default: // json.Number, bool, nil
		return t, nil
	}
}
