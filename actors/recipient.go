package actors

import (
	"strconv"
	"strings"
	"time"

	"github.com/wadispatch/wadispatch/messages"
)

// LostPlaceGrace is how long past the time it was due back a line waits
// for a job whose place has come before it skips it: a job whose deferral
// failed to settle comes back without its place, and its line must not
// stall behind it for ever.
const LostPlaceGrace = 10 * time.Second

// line keeps one recipient's jobs in publish order: each job takes a place
// when it first arrives, and only the job at the head may be in the
// tenant's hand (admitted, sending) — so never two sends to one recipient
// at once. A later job that arrives while the head is pending goes back to
// the broker until the head is done (sent, failed for good, or
// dead-lettered); a head that is deferred keeps its place. A line exists
// only while its recipient has jobs pending.
type line struct {
	next, head uint64 // the place the next new job takes; the head's place
	busy       bool   // the head is in the tenant's hand
	// due is when each deferred job of the line (by place) should be back,
	// so that a head that does not come back (its deferral failed to
	// settle, its delivery went stale) is skipped after LostPlaceGrace.
	due map[uint64]time.Time
	// pairHits counts Meta's recent pair-rate refusals for the recipient
	// (131056); a success clears it.
	pairHits int
}

// placeIn returns the job's place in the recipient's line, giving it the
// next one when it has none of this process (epoch) or one the line has
// already passed (a job that comes back after its place was skipped). A
// job that is back is no longer due.
func (s *TenantState) placeIn(to, place string) (*line, uint64) {
	if s.lines == nil {
		s.lines = map[string]*line{}
	}
	l := s.lines[to]
	if l == nil {
		l, s.spareLine = s.spareLine, nil
		if l == nil {
			l = &line{}
		}
		s.lines[to] = l
	}
	if n, ok := parsePlace(place, s.epoch); ok && n >= l.head && n < l.next {
		delete(l.due, n)
		return l, n
	}
	n := l.next
	l.next++
	return l, n
}

// placeOf is the place a job leaving the tenant carries in its headers:
// its place in its line, or the one it came with when it never got one.
func (s *TenantState) placeOf(m *messages.Dispatch) string {
	if !m.Placed {
		return m.State.Place
	}
	return s.epoch + ":" + strconv.FormatUint(m.Place, 10)
}

// mayGo reports whether the job at place n may be handled now: every job
// ahead of it is done, or overdue by LostPlaceGrace (it is skipped), and
// the head is not in hand.
func (l *line) mayGo(n uint64, now time.Time) bool {
	for l.head < n && !l.busy {
		if due, ok := l.due[l.head]; ok && now.Before(due.Add(LostPlaceGrace)) {
			return false
		}
		delete(l.due, l.head) // lost: skip it
		l.head++
	}
	return n == l.head && !l.busy
}

// aheadDue is the latest time a job ahead of place n is due back.
func (l *line) aheadDue(n uint64) time.Time {
	var t time.Time
	for m, due := range l.due {
		if m < n && due.After(t) {
			t = due
		}
	}
	return t
}

// followerBack is when the job at place n, which waits behind its line's
// earlier jobs, should come back: when those are likely answered. Each
// takes a send of the tenant's high latency estimate (MinBusySpacing while
// none is known), and a deferred one only starts when it is due back, so
// the job comes back that long after the latest of them is due, not at
// that moment, when it would find it sending and go round once more.
//
// When what it waits for is late already (its deferral failed to settle,
// or the broker holds it on its way back), the job comes back as late
// again, not a send later: a head that is lost costs its follower a few
// trips through the delay tiers until the line skips it, not one a send
// (200 over LostPlaceGrace at MinBusySpacing).
func (s *TenantState) followerBack(l *line, n uint64, now time.Time) time.Time {
	send := max(s.sched.HighLatency(), MinBusySpacing)
	back := now.Add(time.Duration(l.behind(n)) * send)
	if due := l.aheadDue(n); !due.IsZero() {
		back = laterTime(back, due.Add(send))
		if late := now.Sub(due); late > send {
			untilSkipped := due.Add(LostPlaceGrace + send).Sub(now) // a send after mayGo skips it
			back = laterTime(back, now.Add(min(late, untilSkipped)))
		}
	}
	return back
}

// deferredUntil records that the job at place n will come back at t.
func (l *line) deferredUntil(n uint64, t time.Time) {
	if l.due == nil {
		l.due = map[uint64]time.Time{}
	}
	l.due[n] = t
}

// behind is how many places n is behind the head.
func (l *line) behind(n uint64) uint64 { return n - l.head }

// done ends the head: the next place becomes the head. It reports whether
// the line is empty (and can be forgotten).
func (l *line) done() bool {
	delete(l.due, l.head)
	l.head++
	l.busy = false
	return l.head >= l.next
}

// recipientsWaiting is how many recipients have a job waiting behind
// another.
func (s *TenantState) recipientsWaiting() int {
	n := 0
	for _, l := range s.lines {
		if l.next-l.head > 1 {
			n++
		}
	}
	return n
}

// endHead ends the head of to's line, forgetting the line once empty.
// The emptied map and one line are kept for the next job (the common
// case, a recipient with one job at a time, then allocates nothing); an
// idle tenant gives them up (compact).
func (s *TenantState) endHead(to string) {
	if l := s.lines[to]; l != nil && l.done() {
		delete(s.lines, to)
		if l.due == nil {
			*l = line{}
			s.spareLine = l
		}
	}
}

func parsePlace(place, epoch string) (uint64, bool) {
	e, n, ok := strings.Cut(place, ":")
	if !ok || e != epoch {
		return 0, false
	}
	v, err := strconv.ParseUint(n, 10, 64)
	return v, err == nil
}

// forgetStaleLines drops the lines of an idle tenant whose jobs are all
// overdue by LostPlaceGrace: whatever they were waiting for is not coming
// back, and an idle tenant must not keep memory for it.
func (s *TenantState) forgetStaleLines(now time.Time) {
	for to, l := range s.lines {
		if !l.busy && !now.Before(l.aheadDue(l.next).Add(LostPlaceGrace)) {
			delete(s.lines, to)
		}
	}
	if len(s.lines) == 0 {
		s.lines = nil
	}
}

// compact gives up what an idle tenant keeps only to save allocations
// while it is busy (the emptied recipient map, the spare line, the emptied
// lists of sends in flight and of jobs waiting), and repacks its duplicate
// memory. Called before it is passivated.
func (s *TenantState) compact(now time.Time) {
	s.forgetStaleLines(now)
	s.spareLine = nil
	if len(s.sending) == 0 {
		s.sending = nil
	}
	if len(s.waiting) == 0 {
		s.waiting = nil
	}
	s.sched.compact()
	s.recent.repack()
}

// comingBack records that m left the tenant's hand and will be back at t
// (deferred, or put back in the queue): its line expects it then, and
// when it was the head the line's next job must still wait for it.
func (s *TenantState) comingBack(m *messages.Dispatch, t time.Time) {
	if l, n, ok := s.lineOf(m); ok {
		if n == l.head {
			l.busy = false
		}
		l.deferredUntil(n, t)
	}
}

// lineOf returns the line of m's recipient and m's place in it, when m has
// a place in a line that still exists.
func (s *TenantState) lineOf(m *messages.Dispatch) (*line, uint64, bool) {
	l := s.lines[m.Job.To]
	if l == nil {
		return nil, 0, false
	}
	if m.Placed {
		return l, m.Place, true
	}
	n, ok := parsePlace(m.State.Place, s.epoch)
	return l, n, ok
}
