package logging

import (
	"maps"
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
	set atomic.Pointer[secretSet]
	// known is a read-only set of registered values, so that Add of a value
	// already held (the worker re-registers its token on every send) needs
	// neither the lock nor an allocation. It lags behind set: values
	// registered since it was last rebuilt are in recent.
	known atomic.Pointer[map[string]struct{}]

	mu     sync.Mutex          // serialises registration; readers never take it
	recent map[string]struct{} // registered, not yet in known
	misses int                 // Adds that took mu since known was rebuilt
}

// NewSecrets returns a registry holding values (empty ones are ignored).
func NewSecrets(values ...string) *Secrets {
	s := &Secrets{}
	s.Add(values...)
	return s
}

// Add registers values; empty strings and values already held are ignored.
func (s *Secrets) Add(values ...string) {
	known := s.known.Load()
	for i, v := range values {
		if v != "" && !holds(known, v) {
			s.register(values[i:])
			return
		}
	}
}

func (s *Secrets) register(values []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	known := s.known.Load()
	var added []string
	for _, v := range values {
		if v == "" || holds(known, v) {
			continue
		}
		s.misses++
		if _, ok := s.recent[v]; ok {
			continue
		}
		if s.recent == nil {
			s.recent = make(map[string]struct{})
		}
		s.recent[v] = struct{}{}
		added = append(added, v)
	}
	if len(added) > 0 {
		s.set.Store(s.set.Load().with(added))
	}
	// Rebuilding known copies every value, so it waits until as many Adds
	// have taken the lock as known holds: each Add pays O(1) for it
	// amortized, and a value added once soon takes the lock-free path.
	if known == nil || s.misses >= len(*known) {
		next := make(map[string]struct{}, s.set.Load().count()+1)
		if known != nil {
			maps.Copy(next, *known)
		}
		maps.Copy(next, s.recent)
		s.known.Store(&next)
		s.recent, s.misses = nil, 0
	}
}

func holds(known *map[string]struct{}, v string) bool {
	if known == nil {
		return false
	}
	_, ok := (*known)[v]
	return ok
}

// Len reports how many distinct secrets are registered.
func (s *Secrets) Len() int {
	return s.snapshot().count()
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

// secretSet is an immutable snapshot of the registry. Handlers load one
// snapshot per line, so a line is scrubbed against one consistent set.
//
// The secrets are held in sorted runs whose sizes are distinct powers of
// two, like the digits of a binary counter: registering a secret adds a run
// of one and merges runs of equal size, so each secret is copied O(log n)
// times over its life, runs are shared between snapshots, and there are at
// most log2(n)+1 of them.
//
// Matching is one pass over the text: only at a byte that starts some
// secret are the runs searched for the longest secret that is a prefix of
// the rest of the text (by binary search, or a scan of a small run). That
// keeps the common case (no secret in the text) at about a nanosecond per
// byte however many secrets there are, and many secrets with a common first
// byte (all of Meta's tokens start with "EAA") cost O(log² n) comparisons
// per such byte, not n.
type secretSet struct {
	gen    uint64    // bumped by every Add that registers something new
	n      int       // how many secrets
	minLen int       // length of the shortest secret: shorter text cannot hold one
	starts [256]bool // starts[c]: some secret starts with byte c
	runs   []*secretRun
}

// secretRun is an immutable, sorted list of distinct secrets.
type secretRun struct {
	values []string
	minLen int     // length of the shortest value
	first  byteSet // the first bytes of values
}

// byteSet is a set of bytes.
type byteSet [4]uint64

func (b *byteSet) add(c byte)      { b[c>>6] |= 1 << (c & 63) }
func (b *byteSet) has(c byte) bool { return b[c>>6]&(1<<(c&63)) != 0 }
func (b *byteSet) union(o *byteSet) {
	b[0], b[1], b[2], b[3] = b[0]|o[0], b[1]|o[1], b[2]|o[2], b[3]|o[3]
}

// with returns a snapshot holding set's secrets and added, which are
// distinct, non-empty and not in set.
func (set *secretSet) with(added []string) *secretSet {
	next := &secretSet{minLen: len(added[0])}
	if set != nil {
		*next = *set
		next.runs = slices.Clone(set.runs) // set's own slice stays untouched
	}
	next.gen++
	for _, v := range added {
		next.n++
		next.minLen = min(next.minLen, len(v))
		next.starts[v[0]] = true
		r := &secretRun{values: []string{v}, minLen: len(v)}
		r.first.add(v[0])
		for len(next.runs) > 0 && len(next.runs[len(next.runs)-1].values) <= len(r.values) {
			r = mergeRuns(next.runs[len(next.runs)-1], r)
			next.runs = next.runs[:len(next.runs)-1]
		}
		next.runs = append(next.runs, r)
	}
	return next
}

// mergeRuns returns a run holding the secrets of a and b, which share none.
func mergeRuns(a, b *secretRun) *secretRun {
	out := &secretRun{
		values: make([]string, 0, len(a.values)+len(b.values)),
		minLen: min(a.minLen, b.minLen),
		first:  a.first,
	}
	out.first.union(&b.first)
	x, y := a.values, b.values
	for len(x) > 0 && len(y) > 0 {
		if x[0] < y[0] {
			out.values, x = append(out.values, x[0]), x[1:]
		} else {
			out.values, y = append(out.values, y[0]), y[1:]
		}
	}
	out.values = append(append(out.values, x...), y...)
	return out
}

func (set *secretSet) count() int {
	if set == nil {
		return 0
	}
	return set.n
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
		if set.starts[text[i]] && set.longestAt(text, i) > 0 {
			return i
		}
	}
	return -1
}

// longestAt returns the length of the longest secret that starts at
// text[i], or 0.
func (set *secretSet) longestAt(text string, i int) int {
	n := 0
	if !set.starts[text[i]] {
		return 0
	}
	for _, r := range set.runs {
		if r.first.has(text[i]) && len(text)-i >= r.minLen {
			n = max(n, r.longestPrefix(text[i:]))
		}
	}
	return n
}

// linearRun is the size up to which a run is searched by comparing each
// value: for the few secrets of a small deployment that beats a binary
// search, mostly because a value longer than the text is passed over at once.
const linearRun = 16

// longestPrefix returns the length of the longest secret in r that is a
// prefix of t, or 0.
//
// Every secret that is a prefix of t sorts at or below t, and so at or
// below p, the greatest secret that does; and everything between such a
// secret and t starts with it, so it is a prefix of p as well. Hence either
// p is a prefix of t (and the longest), or the answer is a prefix of the
// common prefix of p and t, which is shorter than t: search again for that.
// A small run is simply scanned.
func (r *secretRun) longestPrefix(t string) int {
	values := r.values
	if len(values) <= linearRun {
		n := 0
		for _, v := range values {
			if len(v) > n && strings.HasPrefix(t, v) {
				n = len(v)
			}
		}
		return n
	}
	for len(t) >= r.minLen {
		lo, hi := 0, len(values) // values[:lo] < t <= values[hi:]
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if values[m] < t {
				lo = m + 1
			} else {
				hi = m
			}
		}
		if lo < len(values) && values[lo] == t {
			return len(t)
		}
		if lo == 0 {
			return 0
		}
		p := values[lo-1]
		if strings.HasPrefix(t, p) {
			return len(p)
		}
		t, values = t[:commonPrefixLen(p, t)], values[:lo-1]
	}
	return 0
}

func commonPrefixLen(a, b string) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
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

// URLPasswordMask is what RedactURL puts in place of a password.
const URLPasswordMask = "****"

// RedactURL is raw with the password of its user info replaced by
// URLPasswordMask, for a message or a summary that names a broker (or any
// URL). It never returns the password, even for a URL that net/url
// rejects: then everything between the user name and the last '@' of raw,
// where a password would be, is masked (see rawPassword). It is the one
// redaction of URLs: config's summaries and errors and logged *url.URL
// values go through it.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err == nil {
		if u.User == nil {
			if at := strings.LastIndex(u.Opaque, "@"); at >= 0 {
				// "user:password@host" parses as scheme "user" and an
				// opaque rest, the password in it.
				return u.Scheme + ":" + URLPasswordMask + u.Opaque[at:]
			}
			return raw
		}
		if _, has := u.User.Password(); !has {
			return raw
		}
		// UserPassword would percent-encode the mask; put it in afterwards.
		const placeholder = "PASSWORDREDACTED"
		u.User = url.UserPassword(u.User.Username(), placeholder)
		return strings.Replace(u.String(), ":"+placeholder+"@", ":"+URLPasswordMask+"@", 1)
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return URLPasswordMask
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return raw
	}
	user, _, _ := strings.Cut(rest[:at], ":")
	return scheme + "://" + user + ":" + URLPasswordMask + rest[at:]
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
