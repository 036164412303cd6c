package actors

import (
	"math"
	"time"

	"github.com/wadispatch/wadispatch/config"
)

// Window sizing.
const (
	// InitialWindow is the window of a tenant whose latency is not known
	// yet, and after its breaker closes: one send in flight, as a
	// cautious TCP would start.
	InitialWindow = 1
	// DefaultMaxInFlight caps a window when the tenant sets no
	// max_in_flight (config's default).
	DefaultMaxInFlight = config.DefaultMaxInFlight
	// windowHeadroom multiplies Little's law's in-flight count, for the
	// latency tail beyond the estimate and for rate recovering from a
	// throttle.
	windowHeadroom = 1.25
)

// Window sizes how many sends a tenant may have in flight. Two limits
// apply: the bucket decides how many sends start per second (exactly), the
// window how many may be in flight at once. By Little's law a tenant
// sending R messages per second at latency L needs about R × L in flight;
// the window's ceiling is that, from the tenant's current rate and a high
// estimate of its latency (smoothed latency plus twice its mean deviation,
// as TCP estimates a retransmission timeout), with headroom, capped by
// max_in_flight. Below the ceiling it is AIMD, as TCP's congestion window:
// it starts at InitialWindow, grows by one on every success, and halves on
// throttling, 5xx and timeouts. It is not safe for concurrent use.
type Window struct {
	max    int
	primed bool // the first success set cwnd to the ceiling
	cwnd   float64
	srtt   time.Duration // smoothed latency; 0 = no sample yet
	rttvar time.Duration // smoothed mean deviation
	cutAt  time.Time     // the last Cut that halved the window
}

// NewWindow returns a window capped at max (DefaultMaxInFlight when < 1).
func NewWindow(max int) Window {
	if max < 1 {
		max = DefaultMaxInFlight
	}
	return Window{max: max, cwnd: InitialWindow}
}

// SetMax changes the cap (max_in_flight, on a reload); what the window
// learnt stays, below the new cap.
func (w *Window) SetMax(max int) {
	if max < 1 {
		max = DefaultMaxInFlight
	}
	w.max = max
	w.cwnd = min(w.cwnd, float64(max))
}

// Size is how many sends may be in flight at a send rate of perSecond.
func (w *Window) Size(perSecond float64) int {
	return max(1, min(int(w.cwnd), w.Ceiling(perSecond)))
}

// Ceiling is Little's law's in-flight count for perSecond at the high
// latency estimate, with headroom, at most max. Until a latency is known it
// is InitialWindow.
func (w *Window) Ceiling(perSecond float64) int {
	if w.srtt <= 0 {
		return min(InitialWindow, w.max)
	}
	need := perSecond * w.High().Seconds() * windowHeadroom
	if need >= float64(w.max) || math.IsNaN(need) {
		return w.max
	}
	return min(int(math.Ceil(need))+1, w.max)
}

// High is the high latency estimate: srtt + 2·rttvar.
func (w *Window) High() time.Duration { return w.srtt + 2*w.rttvar }

// Latency is the smoothed latency (0 while none is known).
func (w *Window) Latency() time.Duration { return w.srtt }

// Observe feeds one send's latency into the estimate (RFC 6298's gains:
// 1/8 for the mean, 1/4 for the deviation; the first sample is taken as
// is, with half of it as deviation).
func (w *Window) Observe(d time.Duration) {
	if d < 0 {
		return
	}
	if w.srtt == 0 {
		w.srtt, w.rttvar = max(d, time.Nanosecond), d/2
		return
	}
	dev := w.srtt - d
	if dev < 0 {
		dev = -dev
	}
	w.rttvar += (dev - w.rttvar) / 4
	w.srtt += (d - w.srtt) / 8
}

// Grow is one success: the window grows by one, up to the ceiling at
// perSecond (so an idle headroom does not accumulate). The very first
// success, which gives the first latency, opens it to the ceiling at once:
// there is nothing to probe for before Meta has ever been asked to slow
// down, and a tenant must not spend its first seconds a send at a time.
func (w *Window) Grow(perSecond float64) {
	ceiling := float64(max(w.Ceiling(perSecond), InitialWindow))
	if !w.primed && w.srtt > 0 {
		w.primed = true
		w.cwnd = ceiling
		return
	}
	w.cwnd = min(w.cwnd+1, ceiling)
}

// Cut is congestion (throttling, 5xx, a timeout) seen at now: the window
// halves, down to one send, at most once per round trip (the high latency
// estimate, at least a second): the sends in flight when Meta pushed back
// all come back with the same answer, and that is one event, as TCP
// counts it.
func (w *Window) Cut(now time.Time) {
	if !w.cutAt.IsZero() && now.Sub(w.cutAt) < w.RoundTrip() {
		return
	}
	w.cutAt = now
	w.cwnd = max(1, w.cwnd/2)
}

// RoundTrip is how long one event's answers keep coming back: the high
// latency estimate, at least a second.
func (w *Window) RoundTrip() time.Duration { return max(time.Second, w.High()) }

// Restart starts the window small again (after the breaker closes); the
// latency estimate is kept.
func (w *Window) Restart() { w.cwnd = InitialWindow }
