package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pathPair is the same logger twice: through the fast path where it
// applies, and through the slow path (slog.JSONHandler, replaceBuiltin and
// the redactor) only. Both share one registry of secrets.
type pathPair struct {
	fast, slow       slog.Handler
	fastOut, slowOut *bytes.Buffer
}

func newPathPair(secrets *Secrets) pathPair {
	p := pathPair{fastOut: &bytes.Buffer{}, slowOut: &bytes.Buffer{}}
	opts := Options{Level: slog.LevelDebug, Version: "1.2.3", Secrets: secrets}
	p.fast = NewHandler(p.fastOut, opts)
	slow := NewHandler(p.slowOut, opts).(*handler)
	slow.root.fast = false
	p.slow = slow
	return p
}

func (p pathPair) with(attrs ...slog.Attr) pathPair {
	p.fast, p.slow = p.fast.WithAttrs(attrs), p.slow.WithAttrs(attrs)
	return p
}

func (p pathPair) withGroup(name string) pathPair {
	p.fast, p.slow = p.fast.WithGroup(name), p.slow.WithGroup(name)
	return p
}

// handle logs r through both and returns both lines, and whether the fast
// one was written by the fast path.
func (p pathPair) handle(tb testing.TB, r slog.Record) (fast, slow string, tookFastPath bool) {
	tb.Helper()
	h := p.fast.(*handler)
	tookFastPath = h.current(h.root.opts.Secrets.snapshot()).fast && fastRecord(r)
	p.fastOut.Reset()
	p.slowOut.Reset()
	require.NoError(tb, p.fast.Handle(context.Background(), r))
	require.NoError(tb, p.slow.Handle(context.Background(), r))
	return p.fastOut.String(), p.slowOut.String(), tookFastPath
}

type textError string

func (e textError) Error() string { return string(e) }

// marshalingError is an error that is also a json.Marshaler: the redactor
// logs its text, slog alone would marshal it.
type marshalingError struct{}

func (marshalingError) Error() string                { return "as text" }
func (marshalingError) MarshalJSON() ([]byte, error) { return []byte(`"as json"`), nil }

// secretValuer resolves to a string holding a secret.
type secretValuer struct{}

func (secretValuer) LogValue() slog.Value { return slog.StringValue("valued " + fastSecret) }

const (
	fastSecret      = "EAAGfastPathSecret"
	fastShortSecret = "pw-42"
)

// fastStrings are strings that stress the encoding and the redaction.
var fastStrings = []string{
	"", "acme", "order-1042-confirmation", "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
	`say "hi"`, `back\slash`, "line one\nline two", "tab\there", "cr\rlf",
	"\x00\x01\x07\x1b\x1f\x7f", "<b>&amp;</b>", "invalid \xff\xfe utf-8", "cut \xe2\x80",
	"\u2028 and \u2029", "héllo wörld", "日本語", "emoji 🎉", "\ufffd replacement",
	fastSecret, "Bearer " + fastSecret, fastSecret + fastSecret, "x" + fastShortSecret + "y",
	fastShortSecret, "EAAGfastPath", Redacted, "[REDACT" + fastShortSecret,
	strings.Repeat("long ", 100),
}

// fastKeys are keys: ordinary, reserved, sensitive, needing escapes,
// holding secrets.
var fastKeys = []string{
	"tenantId", "attempts", "duration", "", "time", "msg", "level", "source", "timestamp",
	"event", "service", "version", "attr_msg", "token", "accessToken", "SystemUserAccessToken",
	"brokerPassWord", "clientSecret", "X-Authorization", "tokensAvailable", "to\u212aen",
	`k"q`, "k\\b", "k\nl", "k\xff", "k\u2028", "<&>", "key-" + fastSecret, fastShortSecret,
}

var fastFloats = []float64{
	0, math.Copysign(0, -1), 1, -1, 0.1, 1.5, 1e20, 1e21, 123456789012345678901, 1e-6, 9.99e-7,
	1e-7, 5e-324, math.MaxFloat64, math.SmallestNonzeroFloat64, -1e-9, 3.141592653589793,
	1e100, -2.5e-300, float64(math.MaxInt64), math.NaN(), math.Inf(1), math.Inf(-1),
}

var fastTimes = []time.Time{
	{}, time.Date(2026, 11, 27, 11, 30, 0, 123456789, time.FixedZone("CET", 3600)),
	time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
	time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
	time.Date(-1, 6, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 29, 1, 59, 59, 1, time.FixedZone("", -(9*3600+30*60+17))),
	time.Unix(0, 0), time.Now(), time.Date(1999, 12, 31, 23, 59, 59, 100, time.Local),
}

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

// fastValue returns a value of a random kind; depth bounds nested groups.
// If simple, the kinds are those the fast path writes (a NaN aside).
func fastValue(rng *rand.Rand, depth int, simple bool) slog.Value {
	kind := rng.IntN(16)
	if simple && kind >= 12 && kind <= 14 {
		kind = 15
	}
	switch kind {
	case 0, 1, 2:
		return slog.StringValue(pick(rng, fastStrings))
	case 3:
		return slog.Int64Value(pick(rng, []int64{0, 1, -1, 42, math.MaxInt64, math.MinInt64, rng.Int64()}))
	case 4:
		return slog.Uint64Value(pick(rng, []uint64{0, 7, math.MaxUint64, rng.Uint64()}))
	case 5:
		if rng.IntN(2) == 0 {
			return slog.Float64Value(math.Float64frombits(rng.Uint64()))
		}
		return slog.Float64Value(pick(rng, fastFloats))
	case 6:
		return slog.BoolValue(rng.IntN(2) == 0)
	case 7:
		return slog.DurationValue(pick(rng, []time.Duration{0, 212 * time.Millisecond, -time.Second, math.MaxInt64, time.Duration(rng.Int64())}))
	case 8:
		return slog.TimeValue(pick(rng, fastTimes))
	case 9, 10:
		errs := []error{
			errors.New("plain"), textError("Authorization: Bearer " + fastSecret), textError(pick(rng, fastStrings)),
			fmt.Errorf("wrapped: %w", errors.New(fastShortSecret)), marshalingError{}, (*panicError)(nil),
		}
		return slog.AnyValue(pick(rng, errs))
	case 11:
		if depth <= 0 {
			return slog.StringValue("leaf")
		}
		n := rng.IntN(4) // 0: an empty group
		attrs := make([]slog.Attr, n)
		for i := range attrs {
			attrs[i] = fastAttrOf(rng, depth-1, simple)
		}
		return slog.GroupValue(attrs...)
	case 12:
		anys := []any{
			nil, sensitiveConfig{Name: "acme", AccessToken: canary}, map[string]any{"a": 1, "token": canary},
			[]byte("bytes " + fastSecret), []string{"x", fastSecret}, json.RawMessage(`{"password":"p","n":1}`),
			slog.Level(3), struct{}{}, &url0,
		}
		return slog.AnyValue(pick(rng, anys))
	case 13:
		return slog.AnyValue(secretValuer{})
	case 14:
		return slog.AnyValue(credentials{user: "u", password: canary})
	default:
		return slog.StringValue(randomText(rng))
	}
}

var url0 = url.URL{Scheme: "amqp", User: url.UserPassword("guest", canary), Host: "broker:5672"}

func randomText(rng *rand.Rand) string {
	b := make([]byte, rng.IntN(24))
	for i := range b {
		if rng.IntN(3) == 0 {
			b[i] = byte(rng.IntN(256))
		} else {
			b[i] = byte(' ' + rng.IntN(95))
		}
	}
	return string(b)
}

func fastAttrOf(rng *rand.Rand, depth int, simple bool) slog.Attr {
	if !simple && rng.IntN(40) == 0 {
		return slog.Attr{} // elided by slog
	}
	key := pick(rng, fastKeys)
	if rng.IntN(8) == 0 {
		key = randomText(rng)
	}
	return slog.Attr{Key: key, Value: fastValue(rng, depth, simple)}
}

// TestFastPathMatchesSlowPath logs many varied records, through handlers
// with varied With and WithGroup chains, through both paths, and requires
// the same bytes.
func TestFastPathMatchesSlowPath(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	records := 20_000
	if testing.Short() {
		records = 2_000
	}
	fastLines := 0
	for i := range records {
		secrets := NewSecrets(fastSecret)
		if rng.IntN(2) == 0 {
			secrets.Add(fastShortSecret)
		}
		p := newPathPair(secrets)
		for range rng.IntN(4) {
			if rng.IntN(5) == 0 {
				p = p.withGroup(pick(rng, fastKeys))
				continue
			}
			attrs := make([]slog.Attr, 1+rng.IntN(3))
			for j := range attrs {
				attrs[j] = fastAttrOf(rng, 2, rng.IntN(2) == 0)
			}
			p = p.with(attrs...)
		}
		if rng.IntN(6) == 0 {
			// Registered after With: the handlers must rebuild.
			secrets.Add(pick(rng, []string{"acme", "line", "héllo", "1.2.3", "wadispatch", "order", "k"}))
		}

		at := time.Time{}
		if rng.IntN(8) != 0 {
			at = pick(rng, fastTimes)
		}
		level := pick(rng, []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError,
			slog.LevelInfo + 1, slog.LevelDebug - 3, slog.LevelError + 4})
		msg := pick(rng, fastStrings)
		if rng.IntN(4) == 0 {
			msg = randomText(rng)
		}
		r := slog.NewRecord(at, level, msg, 0)
		simple := rng.IntN(2) == 0 // else most records take the slow path
		for range rng.IntN(7) {
			r.AddAttrs(fastAttrOf(rng, 3, simple))
		}

		fast, slow, tookFastPath := p.handle(t, r)
		if fast != slow {
			t.Fatalf("record %d: the fast path wrote\n%q\nthe slow path\n%q", i, fast, slow)
		}
		if tookFastPath {
			fastLines++
		}
		assert.NotContains(t, fast, fastSecret)
	}
	t.Logf("%d of %d lines took the fast path", fastLines, records)
	assert.Greater(t, fastLines, records/10, "too few lines exercised the fast path")
}

// TestFastPathMatchesSlowPathOnEdgeCases goes through every tricky string,
// key, float and time of the random test in every place, deterministically.
func TestFastPathMatchesSlowPathOnEdgeCases(t *testing.T) {
	secrets := NewSecrets(fastSecret, fastShortSecret)
	at := time.Date(2026, 11, 27, 11, 30, 0, 123456789, time.UTC)
	withs := map[string]pathPair{}
	base := newPathPair(secrets)
	withs["none"] = base
	withs["tenant"] = base.with(slog.String("tenantId", "acme"))
	withs["struct"] = base.with(slog.String("lib", "Proto.Actor"), slog.Any("cfg", sensitiveConfig{Name: "acme", AccessToken: canary}))
	withs["group"] = base.with(slog.Group("g", slog.Int("a", 1), slog.Group("h", slog.String("b", fastSecret))))
	// slog leaves out the comma after a group that comes out empty.
	withs["emptied group"] = base.with(slog.Group("g", slog.Attr{}), slog.Int("b", 2))
	withs["reserved"] = base.with(slog.String("msg", "m"), slog.String("service", "s"))
	withs["chain"] = base.with(slog.String("a", "1")).with(slog.Any("b", []int{1, 2})).with(slog.Duration("c", time.Second))

	var records []slog.Record
	add := func(msg string, attrs ...slog.Attr) {
		r := slog.NewRecord(at, slog.LevelInfo, msg, 0)
		r.AddAttrs(attrs...)
		records = append(records, r)
	}
	for _, s := range fastStrings {
		add(s)
		add("e", slog.String("k", s))
		add("e", slog.String(s, "v"))
		add("e", slog.Group(s, slog.String(s, s)))
		add("e", slog.Any("err", textError(s)))
	}
	for _, k := range fastKeys {
		add("e", slog.Int(k, 1), slog.Group(k, slog.Bool("b", true)), slog.Group("", slog.String(k, "inlined")))
		add("e", slog.Any(k, errors.New("e")), slog.Float64(k, 1.5), slog.Time(k, at))
	}
	for _, f := range fastFloats {
		add("e", slog.Float64("f", f))
		add("e", slog.Float64("token", f))
	}
	for _, tm := range fastTimes {
		add("e", slog.Time("t", tm))
		r := slog.NewRecord(tm, slog.LevelWarn, "at", 0)
		records = append(records, r)
	}
	add("e", slog.Group("g", slog.Attr{}), slog.Int("b", 2))
	add("e", slog.Any("err", (*panicError)(nil)), slog.Any("m", marshalingError{}))
	add("e", slog.Group("outer", slog.Group("", slog.String("msg", "kept")), slog.Group("inner", slog.Int("n", 1))))
	add("", slog.Any("v", secretValuer{}))
	huge := strings.Repeat("x\"", maxPooledLine) // more than a pooled buffer holds
	add(huge, slog.String("huge", huge))
	add("after huge", slog.String("k", "v"))

	for name, p := range withs {
		for i, r := range records {
			fast, slow, _ := p.handle(t, r)
			require.Equal(t, slow, fast, "with %s, record %d", name, i)
		}
	}
}

// TestFastPathCoversTypicalLines makes sure the fast path is not turned off
// for lines it is meant for, which the comparisons above cannot tell.
func TestFastPathCoversTypicalLines(t *testing.T) {
	p := newPathPair(NewSecrets(fastSecret))
	delivered := slog.NewRecord(time.Now(), slog.LevelInfo, "message_delivered", 0)
	delivered.AddAttrs(slog.String("tenantId", "acme"), slog.Duration("duration", time.Second),
		slog.Int("attempts", 1), slog.Any("error", errors.New("x")), slog.Group("rateLimit", slog.Float64("available", 1.5)))
	for name, h := range map[string]pathPair{
		"root":         p,
		"tenant":       p.with(slog.String("tenantId", "acme")),
		"struct":       p.with(slog.Any("cfg", sensitiveConfig{Name: "acme"})),
		"emptiedGroup": p.with(slog.Group("g", slog.Attr{}), slog.Int("b", 2)),
	} {
		_, _, took := h.handle(t, delivered)
		assert.True(t, took, name)
	}
	_, _, took := p.withGroup("send").handle(t, delivered)
	assert.False(t, took, "a handler with a group open keeps to the slow path")
}

// TestFastPathWritesWholeLines logs through the fast and the slow path at
// once, while secrets are added, to a writer that fails on overlapping
// Write calls.
func TestFastPathWritesWholeLines(t *testing.T) {
	w := &exclusiveWriter{}
	secrets := NewSecrets(fastSecret)
	l := New(w, Options{Secrets: secrets})
	tenant := l.With("tenantId", "acme")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				token := fmt.Sprintf("EAAGrotated-%d-%d", g, i)
				secrets.Add(token)
				tenant.Info("message_delivered", "attempts", i, "header", "Bearer "+token)
				tenant.Info("config_loaded", "cfg", sensitiveConfig{Name: token}) // slow path
			}
		})
	}
	wg.Wait()
	require.False(t, w.overlapped.Load(), "two Write calls overlapped")
	out := w.buf.String()
	assert.Equal(t, 4*200*2, strings.Count(out, "\n"))
	assert.NotContains(t, out, "EAAGrotated")
}

type exclusiveWriter struct {
	busy, overlapped atomic.Bool
	buf              bytes.Buffer
}

func (w *exclusiveWriter) Write(p []byte) (int, error) {
	if !w.busy.CompareAndSwap(false, true) {
		w.overlapped.Store(true)
		return len(p), nil
	}
	defer w.busy.Store(false)
	time.Sleep(time.Microsecond) // widen the window
	return w.buf.Write(p)
}

// FuzzFastPathMatchesSlowPath compares the two paths on fuzzed text (as
// message, key, string value, error text and group name), a fuzzed float
// and instant, and a fuzzed secret.
func FuzzFastPathMatchesSlowPath(f *testing.F) {
	f.Add("message_delivered", "tenantId", "acme", "EAAGtoken", 1.5, int64(1795000000), int64(123456789))
	f.Add("say \"hi\"\n", "k\u2028", "<\xff>", "i", math.Inf(1), int64(-62167219201), int64(0)) // year -1
	f.Add("", "time", "\x00\u2029", "\u212a", 1e21, int64(253402300800), int64(-1))             // year 10000
	f.Fuzz(func(t *testing.T, msg, key, value, secret string, number float64, unixSec, nsec int64) {
		p := newPathPair(NewSecrets(secret))
		at := time.Unix(unixSec, nsec)
		records := []slog.Record{slog.NewRecord(at, slog.LevelInfo, msg, 0), slog.NewRecord(time.Time{}, slog.LevelError, value, 0)}
		records[0].AddAttrs(slog.String(key, value), slog.Float64(key, number), slog.Time(key, at),
			slog.Any(key, errors.New(value)), slog.Group(key, slog.String(value, msg)))
		records[1].AddAttrs(slog.Group("", slog.Float64(value, number)), slog.Duration(msg, time.Duration(nsec)))
		for _, h := range []pathPair{p, p.with(slog.String(key, value), slog.Float64(msg, number))} {
			for _, r := range records {
				fast, slow, _ := h.handle(t, r)
				if fast != slow {
					t.Fatalf("the fast path wrote\n%q\nthe slow path\n%q", fast, slow)
				}
			}
		}
	})
}
