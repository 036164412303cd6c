package fakemeta

import (
	"cmp"
	"slices"
	"sort"
	"time"
)

// CallLog is a list of calls, as Server.Calls returns it (arrival order),
// with the checks that tests and benchmarks of concurrent sends want. Each
// call is in flight from At until AnsweredAt; two calls overlap when each
// arrived before the other was answered, so a call arriving the instant
// another is answered does not overlap it, and a call with no duration
// (AnsweredAt not after At, e.g. under a clock that does not move) overlaps
// nothing. The checks take every call logged, errors and abandoned ones
// included, and phone "" means every phone number id.
type CallLog []Call

// recipient identifies a (phone number id, "to") pair.
type recipient struct{ phone, to string }

func (l CallLog) matches(c Call, phone string) bool {
	return phone == "" || c.PhoneNumberID == phone
}

// MaxInFlight returns the largest number of calls to phone in flight at one
// instant: at least 1 when there is any call, 0 when there is none.
func (l CallLog) MaxInFlight(phone string) int {
	type event struct {
		at    time.Time
		delta int
	}
	var (
		events []event
		peak   int
	)
	for _, c := range l {
		if !l.matches(c, phone) {
			continue
		}
		peak = 1
		if c.AnsweredAt.After(c.At) {
			events = append(events, event{c.At, 1}, event{c.AnsweredAt, -1})
		}
	}
	// At one instant, answers come before arrivals: they do not overlap.
	slices.SortFunc(events, func(a, b event) int {
		if n := a.at.Compare(b.at); n != 0 {
			return n
		}
		return cmp.Compare(a.delta, b.delta)
	})
	cur := 0
	for _, e := range events {
		cur += e.delta
		peak = max(peak, cur)
	}
	return peak
}

// Overlaps returns the number of pairs of calls from phone to the same
// recipient that were in flight at the same time: 0 for a sender that waits
// for each answer before sending to that recipient again. Calls without a
// "to" are left out.
func (l CallLog) Overlaps(phone string) int {
	type span struct{ at, end time.Time }
	byTo := map[recipient][]span{}
	for _, c := range l {
		if l.matches(c, phone) && c.To != "" && c.AnsweredAt.After(c.At) {
			k := recipient{c.PhoneNumberID, c.To}
			byTo[k] = append(byTo[k], span{c.At, c.AnsweredAt})
		}
	}
	total := 0
	for _, spans := range byTo {
		// Of n spans, the pairs that do not overlap are those where one
		// ended before (or as) the other arrived; count them per arrival.
		ends := make([]time.Time, len(spans))
		for i, s := range spans {
			ends[i] = s.end
		}
		slices.SortFunc(ends, time.Time.Compare)
		n := len(spans)
		apart := 0
		for _, s := range spans {
			apart += sort.Search(n, func(i int) bool { return ends[i].After(s.at) })
		}
		total += n*(n-1)/2 - apart
	}
	return total
}

// OutOfOrder returns the number of calls from phone that arrived after an
// earlier call (in the log's order) to the same recipient with a higher
// key, where key reads the message's place in its recipient's sequence from
// the call, e.g. a number in the payload. Retries repeat a key and are not
// out of order. Calls without a "to" are left out.
func (l CallLog) OutOfOrder(phone string, key func(Call) int) int {
	highest := map[recipient]int{}
	n := 0
	for _, c := range l {
		if !l.matches(c, phone) || c.To == "" {
			continue
		}
		k, v := recipient{c.PhoneNumberID, c.To}, key(c)
		if hi, seen := highest[k]; seen && v < hi {
			n++
			continue
		}
		highest[k] = v
	}
	return n
}
