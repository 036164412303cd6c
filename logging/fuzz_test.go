package logging

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

type fuzzStringer string

func (s fuzzStringer) String() string { return "stringer(" + string(s) + ")" }

type fuzzLogValuer struct {
	key string
	val any
}

func (v fuzzLogValuer) LogValue() slog.Value { return slog.GroupValue(slog.Any(v.key, v.val)) }

// fuzzShape wraps v in one of the shapes a caller might log; op picks it.
func fuzzShape(op byte, key, secret string, v any) any {
	switch op % 12 {
	case 0:
		return map[string]any{key: v}
	case 1:
		return []any{key, v}
	case 2: // a struct whose json tag is the fuzzed key
		t := reflect.StructOf([]reflect.StructField{{
			Name: "F", Type: reflect.TypeFor[any](), Tag: reflect.StructTag("json:" + strconv.Quote(key)),
		}})
		s := reflect.New(t).Elem()
		if v != nil {
			s.Field(0).Set(reflect.ValueOf(v))
		}
		return s.Interface()
	case 3:
		return slog.GroupValue(slog.Any(key, v))
	case 4:
		return fmt.Errorf("%s: %v", key, v)
	case 5:
		return fuzzStringer(fmt.Sprint(v))
	case 6:
		return []byte(fmt.Sprint(v))
	case 7:
		return fuzzLogValuer{key: key, val: v}
	case 8:
		return &v
	case 9:
		return map[string]any{key + secret: v, secret: key}
	case 10:
		raw, err := json.Marshal(v)
		if err != nil {
			return v
		}
		return json.RawMessage(raw)
	default:
		return struct {
			Name any
			Err  error
		}{v, errors.New(key + secret)}
	}
}

// FuzzRedaction checks that a registered secret never survives into a line,
// whatever shape the value embedding it takes: the fuzzer picks the secret,
// the key, the text around the secret and a chain of wrappers (maps, slices,
// structs with fuzzed json tags, groups, errors, Stringers, []byte,
// LogValuers, pointers, raw JSON), and logs the result as attributes, With
// attributes, under groups and in the message.
//
// What may legitimately look like the secret afterwards is only what the
// handler writes itself (the level, the timestamp, the line's own keys) and
// the Redacted markers; so every other string and key is split at the markers
// and no piece may contain the secret.
func FuzzRedaction(f *testing.F) {
	f.Fuzz(func(t *testing.T, secret, key, prefix, suffix string, shape []byte) {
		// A secret with invalid UTF-8 or U+FFFD could be forged by JSON's
		// replacement of invalid bytes; tokens and passwords are text.
		secret = strings.ReplaceAll(strings.ToValidUTF8(secret, ""), "\uFFFD", "")
		if secret == "" {
			t.Skip()
		}
		if len(shape) > 12 {
			shape = shape[:12]
		}
		var v any = prefix + secret + suffix
		for _, op := range shape {
			v = fuzzShape(op, key, secret, v)
		}

		c := &capture{}
		l := New(c, Options{Level: slog.LevelDebug, Secrets: NewSecrets(secret)})
		l.Info(prefix+secret+suffix, slog.Any(key, v), slog.Any(secret, key))
		l.WithGroup(key).With(key, v).WithGroup(key+secret).
			Error(suffix+secret, slog.Group(key, slog.Any(key, v)), slog.Any("v", v))

		lines := c.lines(t)
		if len(lines) != 2 {
			t.Fatalf("want 2 lines, got %d: %s", len(lines), c.raw())
		}
		for _, line := range lines {
			for k, val := range line {
				if k == keyTimestamp || k == slog.LevelKey {
					continue // written by the handler, never from caller data
				}
				if k != keyEvent && k != keyService && k != keyVersion {
					assertNoSecret(t, secret, k, c.raw())
				}
				walkStrings(val, func(s string) { assertNoSecret(t, secret, s, c.raw()) })
			}
		}
	})
}

func assertNoSecret(t *testing.T, secret, s, raw string) {
	t.Helper()
	for piece := range strings.SplitSeq(s, Redacted) {
		if strings.Contains(piece, secret) {
			t.Fatalf("secret %q survived in %q\nlines: %s", secret, s, raw)
		}
	}
}

// walkStrings calls fn for every key and string value in decoded JSON.
func walkStrings(v any, fn func(string)) {
	switch x := v.(type) {
	case string:
		fn(x)
	case map[string]any:
		for k, e := range x {
			fn(k)
			walkStrings(e, fn)
		}
	case []any:
		for _, e := range x {
			walkStrings(e, fn)
		}
	}
}
