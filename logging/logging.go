// Package logging is wadispatch's log/slog handler: one JSON object per line
// (timestamp, level, service, version, event, then the attributes), with
// redaction built in so that no call site can forget it.
//
// Redaction has two halves. By key: any attribute, group, map key, struct
// field or json tag whose name contains one of SensitiveKeyWords
// (case-insensitively) has its value replaced by Redacted, at any depth. By
// value: every secret registered in a Secrets (access tokens, the broker
// password) is cut out of every string that reaches a line — the message,
// keys, string values, error texts, fmt.Stringer and []byte values — and
// replaced by Redacted. Redaction works on copies and never changes the
// caller's values, and it fails safe: what cannot be walked is Redacted.
//
// The package owns the line format and redaction only. Which events are
// logged, and with which fields, belongs to the packages that log them; where
// the lines go (stdout) is main's choice.
package logging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/wadispatch/wadispatch/messages"
)

// Keys the handler writes on every line.
const (
	keyTimestamp = "timestamp"
	keyEvent     = "event"
	keyService   = "service"
	keyVersion   = "version"
)

// Defaults for Options.
const (
	DefaultService = "wadispatch"
	DefaultVersion = "dev"
)

// ErrUnknownLevel is returned by ParseLevel for anything but debug, info,
// warn and error.
var ErrUnknownLevel = errors.New("unknown log level")

// Options configures NewHandler. The zero value logs at info level, as
// service "wadispatch", version "dev", with no secrets registered.
type Options struct {
	Level   slog.Leveler // minimum level; nil means slog.LevelInfo
	Service string       // "" means DefaultService
	Version string       // "" means DefaultVersion
	Secrets *Secrets     // secrets to scrub; may be nil (keys are still redacted)
}

// LevelNames names the levels ParseLevel accepts, for messages.
const LevelNames = "debug, info, warn or error"

// ParseLevel parses a LOG_LEVEL value: debug, info, warn or error, in any
// case, surrounding spaces ignored. It is the one definition of LOG_LEVEL's
// values; config parses the setting with it.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%w %q: use %s", ErrUnknownLevel, s, LevelNames)
}

// ValidLevel reports whether l is one of the levels ParseLevel returns.
func ValidLevel(l slog.Level) bool {
	switch l {
	case slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError:
		return true
	}
	return false
}

// New returns a logger writing through NewHandler(w, opts).
func New(w io.Writer, opts Options) *slog.Logger {
	return slog.New(NewHandler(w, opts))
}

// NewHandler returns a handler that writes one JSON object per line to w,
// redacted as the package comment describes. It is safe for concurrent use;
// each line is written with one Write call.
//
// Top-level attributes and groups whose keys the handler writes itself
// (timestamp, level, event, service, version, and slog's time, msg, source)
// are renamed with the prefix "attr_" so they cannot clash with them.
//
// Attributes given to With are redacted when With is called, and again
// (from the redacted copy) whenever secrets are added later.
func NewHandler(w io.Writer, opts Options) slog.Handler {
	if opts.Level == nil {
		opts.Level = slog.LevelInfo
	}
	if opts.Service == "" {
		opts.Service = DefaultService
	}
	if opts.Version == "" {
		opts.Version = DefaultVersion
	}
	// The JSON handler and the fast path (fastline.go) write through one
	// lock, so that their lines never interleave on w.
	out := &lockedWriter{w: w}
	inner := slog.NewJSONHandler(out, &slog.HandlerOptions{
		Level:       opts.Level,
		ReplaceAttr: replaceBuiltin,
	})
	return &handler{root: &root{json: inner, out: out, opts: opts, fast: true}}
}

// lockedWriter serialises the Write calls of all handlers sharing a root.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// replaceBuiltin renames and formats slog's built-in attributes. Only the
// built-ins reach it with these keys at the top level: the handler renames
// callers' attributes that would collide.
func replaceBuiltin(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		if a.Value.Kind() == slog.KindTime {
			// The contract's instant: RFC 3339, UTC, milliseconds.
			var buf [len(messages.TimeLayout)]byte
			return slog.String(keyTimestamp, string(messages.AppendTime(buf[:0], a.Value.Time())))
		}
	case slog.LevelKey:
		// As a string: handed over as a slog.Level, the JSON handler would
		// run it through encoding/json.
		if l, ok := a.Value.Any().(slog.Level); ok {
			return slog.String(slog.LevelKey, l.String())
		}
	case slog.MessageKey:
		a.Key = keyEvent
	}
	return a
}

// root is what all handlers derived from one NewHandler share.
type root struct {
	json slog.Handler // the bare JSON handler, no attributes
	out  *lockedWriter
	opts Options
	fast bool // use the fast path where it applies; false only in tests
}

// handler wraps slog.JSONHandler: it redacts each record (and With
// attributes) and hands the result on.
//
// The JSON handler pre-formats With attributes, so a secret added after
// With was called would be missed there. To avoid that, a handler remembers
// the With/WithGroup calls that made it (with attributes already redacted)
// and rebuilds its JSON handler when the set of secrets has changed. The
// fast path, which writes common lines itself, keeps the With attributes
// formatted alongside (see built).
type handler struct {
	root      *root
	steps     []step // With/WithGroup calls since NewHandler, in order
	groups    int    // open groups: 0 means attributes land at the top level
	sensitive bool   // an open group's name is sensitive: redact all values
	built     atomic.Pointer[built]
}

// step is one With (attrs set, already redacted) or WithGroup (group set).
type step struct {
	group string
	attrs []slog.Attr
}

// built is the JSON handler for a handler's steps, redacted against the
// secrets of generation gen, and what the fast path needs of them.
type built struct {
	gen  uint64
	json slog.Handler
	// fast reports whether the fast path may write lines for these steps:
	// no group is open.
	fast bool
	// attrs are the service, version and With attributes, each with its
	// leading comma, as json writes them after the event (fast only).
	attrs []byte
}

// withAttrs returns b with the redacted attrs added.
func (b *built) withAttrs(gen uint64, attrs []slog.Attr) *built {
	next := &built{gen: gen, json: b.json.WithAttrs(attrs), fast: b.fast}
	if next.fast {
		next.attrs, next.fast = appendWithAttrs(slices.Clip(b.attrs), attrs)
	}
	return next
}

// withGroup returns b with the group name (already redacted) opened.
func (b *built) withGroup(gen uint64, name string) *built {
	return &built{gen: gen, json: b.json.WithGroup(name)}
}

var _ slog.Handler = (*handler)(nil)

// Enabled reports whether level is at or above the configured level.
func (h *handler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= h.root.opts.Level.Level()
}

// Handle redacts r and writes it. Records of simple attributes from a
// handler with no group open (the common case) are written by the fast path
// (fastline.go); of the others, those without anything to redact are passed
// on to the JSON handler without being copied.
func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	set := h.root.opts.Secrets.snapshot()
	b := h.current(set)
	if b.fast && h.root.fast && fastRecord(r) {
		return h.root.writeFast(b, set, r)
	}
	inner := b.json
	red := redactor{set: set}

	r.Message = set.scrub(r.Message) // r is our copy; its attrs stay shared
	top := h.groups == 0
	dirty := h.sensitive
	if !dirty {
		r.Attrs(func(a slog.Attr) bool {
			dirty = !red.clean(a, top)
			return !dirty
		})
	}
	if !dirty {
		return inner.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(red.attr(a, top, h.sensitive))
		return true
	})
	return inner.Handle(ctx, out)
}

// WithAttrs returns a handler that adds attrs, redacted, to every line.
func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	set := h.root.opts.Secrets.snapshot()
	red := redactor{set: set}.attrs(attrs, h.groups == 0, h.sensitive)
	child := h.child(step{attrs: red})
	child.built.Store(h.current(set).withAttrs(set.generation(), red))
	return child
}

// WithGroup returns a handler that nests later attributes under name. If
// name is sensitive, every value under it is redacted.
func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	set := h.root.opts.Secrets.snapshot()
	child := h.child(step{group: name})
	child.groups++
	child.sensitive = h.sensitive || IsSensitiveKey(name)
	name = redactor{set: set}.key(name, h.groups == 0)
	child.built.Store(h.current(set).withGroup(set.generation(), name))
	return child
}

func (h *handler) child(s step) *handler {
	return &handler{
		root:      h.root,
		steps:     append(slices.Clip(h.steps), s),
		groups:    h.groups,
		sensitive: h.sensitive,
	}
}

// current returns the JSON handler for h's steps, redacted against set,
// rebuilding it if secrets were added since it was built.
func (h *handler) current(set *secretSet) *built {
	gen := set.generation()
	if b := h.built.Load(); b != nil && b.gen == gen {
		return b
	}
	red := redactor{set: set}
	opts := h.root.opts
	b := (&built{json: h.root.json, fast: true}).withAttrs(gen, []slog.Attr{
		slog.String(keyService, set.scrub(opts.Service)),
		slog.String(keyVersion, set.scrub(opts.Version)),
	})
	groups, sensitive := 0, false
	for _, s := range h.steps {
		if s.group != "" {
			b = b.withGroup(gen, red.key(s.group, groups == 0))
			groups++
			sensitive = sensitive || IsSensitiveKey(s.group)
			continue
		}
		b = b.withAttrs(gen, red.attrs(s.attrs, groups == 0, sensitive))
	}
	h.built.Store(b)
	return b
}
