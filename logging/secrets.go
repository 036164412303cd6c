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
//
// Matching is one pass over the text: only at a byte that starts some
// secret are the secrets starting with that byte compared. That keeps the
// common case (no secret in the text) at about a nanosecond per byte
// however many secrets there are, and the worst case O(len(text)) per
// secret.
type secretSet struct {
	gen    uint64   // bumped by every Add that registers something new
	values []string // distinct, non-empty, in registration order
	minLen int      // length of the shortest value: shorter text cannot hold one

	byFirst []string   // values sorted by first byte (stably)
	bucket  [257]int32 // byFirst[bucket[c]:bucket[c+1]] start with byte c
}

func newSecretSet(gen uint64, values []string) *secretSet {
	set := &secretSet{gen: gen, values: values, minLen: len(values[0])}
	for _, v := range values {
		set.minLen = min(set.minLen, len(v))
	}
	set.byFirst = slices.Clone(values)
	slices.SortStableFunc(set.byFirst, func(a, b string) int { return int(a[0]) - int(b[0]) })
	for c := range 256 {
		set.bucket[c+1] = set.bucket[c]
		for int(set.bucket[c+1]) < len(set.byFirst) && int(set.byFirst[set.bucket[c+1]][0]) == c {
			set.bucket[c+1]++
		}
	}
	return set
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
	next := slices.Clone(old.list())
	for _, v := range values {
		if v != "" && !slices.Contains(next, v) {
			next = append(next, v)
		}
	}
	if len(next) == len(old.list()) {
		return
	}
	s.set.Store(newSecretSet(old.generation()+1, next))
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
// path and does not allocate.
func (set *secretSet) contains(text string) bool {
	return set.next(text, 0) >= 0
}

// next returns the first position at or after from where a secret starts,
// or -1.
func (set *secretSet) next(text string, from int) int {
	if set == nil {
		return -1
	}
	for i := from; i <= len(text)-set.minLen; i++ {
		c := int(text[i])
		if set.bucket[c] == set.bucket[c+1] {
			continue
		}
		if set.longestAt(text, i) > 0 {
			return i
		}
	}
	return -1
}

// longestAt returns the length of the longest secret that starts at
// text[i], or 0.
func (set *secretSet) longestAt(text string, i int) int {
	c := int(text[i])
	n := 0
	for _, v := range set.byFirst[set.bucket[c]:set.bucket[c+1]] {
		if len(v) > n && strings.HasPrefix(text[i:], v) {
			n = len(v)
		}
	}
	return n
}

// scrub replaces every run of text covered by secret occurrences
// (overlapping and adjacent ones merged) by one Redacted.
func (set *secretSet) scrub(text string) string {
	i := set.next(text, 0)
	if i < 0 {
		return text
	}
	var b strings.Builder
	b.Grow(len(text))
	written := 0 // text[:written] is dealt with
	for i >= 0 {
		start, end := i, i+set.longestAt(text, i)
		// Extend the run while another occurrence starts inside or right
		// after it.
		for j := start + 1; j <= end && j <= len(text)-set.minLen; j++ {
			if n := set.longestAt(text, j); n > 0 {
				end = max(end, j+n)
			}
		}
		b.WriteString(text[written:start])
		b.WriteString(Redacted)
		written = end
		i = set.next(text, end)
	}
	b.WriteString(text[written:])
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
