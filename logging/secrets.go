package logging

import (
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Secrets is the registry of secret values (access tokens, the broker
// password) that are scrubbed from every log line. It is safe for concurrent
// use: Add may run while other goroutines log, e.g. after a token file was
// re-read. The zero value holds no secrets; a nil *Secrets holds none either
// (but Add on it panics, so a registration can never be lost silently).
//
// Every non-empty value is registered, however short. A very short secret is
// still scrubbed everywhere it occurs, so it will also mangle unrelated text
// that happens to contain it; that is the price of never logging it.
type Secrets struct {
	mu  sync.Mutex // serialises Add; readers never take it
	set atomic.Pointer[secretSet]
}

// secretSet is an immutable snapshot of the registry. Handlers load one
// snapshot per line, so a line is scrubbed against one consistent set.
type secretSet struct {
	gen    uint64   // bumped by every Add that registers something new
	values []string // distinct, non-empty, in registration order
	minLen int      // length of the shortest value: shorter text cannot hold one
}

// NewSecrets returns a registry holding values (empty ones are ignored).
func NewSecrets(values ...string) *Secrets {
	s := &Secrets{}
	s.Add(values...)
	return s
}

// Add registers values; empty strings and values already held are ignored.
func (s *Secrets) Add(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.set.Load()
	var next secretSet
	if old != nil {
		next = *old
		next.values = slices.Clone(old.values)
	}
	added := false
	for _, v := range values {
		if v == "" || slices.Contains(next.values, v) {
			continue
		}
		next.values = append(next.values, v)
		added = true
	}
	if !added {
		return
	}
	next.minLen = len(next.values[0])
	for _, v := range next.values[1:] {
		next.minLen = min(next.minLen, len(v))
	}
	next.gen++
	s.set.Store(&next)
}

// Len reports how many distinct secrets are registered.
func (s *Secrets) Len() int {
	return len(s.snapshot().list())
}

// Scrub returns text with every occurrence of every registered secret
// replaced by Redacted. Overlapping and adjacent occurrences (also of
// different secrets) are merged into one Redacted, so no part of any
// occurrence survives.
func (s *Secrets) Scrub(text string) string {
	return s.snapshot().scrub(text)
}

func (s *Secrets) snapshot() *secretSet {
	if s == nil {
		return nil
	}
	return s.set.Load()
}

func (set *secretSet) list() []string {
	if set == nil {
		return nil
	}
	return set.values
}

func (set *secretSet) generation() uint64 {
	if set == nil {
		return 0
	}
	return set.gen
}

// contains reports whether text holds any registered secret. It is the hot
// path: one length check, then one strings.Contains per secret.
func (set *secretSet) contains(text string) bool {
	return set.first(text) >= 0
}

// first returns the index of the first secret (in registration order) that
// occurs in text, or -1.
func (set *secretSet) first(text string) int {
	if set == nil || len(text) < set.minLen {
		return -1
	}
	for i, v := range set.values {
		if strings.Contains(text, v) {
			return i
		}
	}
	return -1
}

type span struct{ start, end int }

func (set *secretSet) scrub(text string) string {
	i := set.first(text)
	if i < 0 {
		return text
	}
	// Collect every occurrence, overlapping ones included, of every secret
	// from the first hit on (earlier secrets did not occur at all).
	var buf [8]span
	spans := buf[:0]
	for _, v := range set.values[i:] {
		for off := 0; off+len(v) <= len(text); {
			j := strings.Index(text[off:], v)
			if j < 0 {
				break
			}
			start := off + j
			spans = append(spans, span{start, start + len(v)})
			off = start + 1
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return a.start - b.start })

	var b strings.Builder
	b.Grow(len(text))
	pos := 0
	for k := 0; k < len(spans); {
		cur := spans[k]
		for k++; k < len(spans) && spans[k].start <= cur.end; k++ {
			cur.end = max(cur.end, spans[k].end)
		}
		b.WriteString(text[pos:cur.start])
		b.WriteString(Redacted)
		pos = cur.end
	}
	b.WriteString(text[pos:])
	return b.String()
}

// PasswordFromURL returns the password of an amqp(s) URL, percent-decoded,
// or "" when it has none. It also copes with URLs that net/url rejects (such
// a URL is quoted verbatim in connection errors, so its password still has
// to be registered).
func PasswordFromURL(raw string) string {
	u, err := url.Parse(raw)
	if err == nil {
		if u.User == nil {
			return ""
		}
		p, _ := u.User.Password()
		return p
	}
	p := rawPassword(raw, false)
	if d, err := url.PathUnescape(p); err == nil {
		return d
	}
	return p
}

// URLPasswords returns every form in which the password of raw can show up
// in text: as written in the URL (percent-encoded) and decoded. Register all
// of them: an error that quotes the URL carries the first form, one that
// quotes the credentials the second.
func URLPasswords(raw string) []string {
	_, err := url.Parse(raw)
	var out []string
	for _, p := range []string{rawPassword(raw, err == nil), PasswordFromURL(raw)} {
		if p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// rawPassword cuts the password out of scheme://user:password@host/... as
// written, without decoding. For a URL that net/url accepts the authority
// ends at the first '/', '?' or '#'. For one it rejects, the userinfo is
// taken to end at the last '@' anywhere, since an unencoded '/' or '@' in a
// password is the usual reason for the rejection; that may register too
// much, never too little.
func rawPassword(raw string, wellFormed bool) string {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return ""
	}
	if end := strings.IndexAny(rest, "/?#"); end >= 0 && wellFormed {
		rest = rest[:end]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, password, ok := strings.Cut(rest[:at], ":")
	if !ok {
		return ""
	}
	return password
}
