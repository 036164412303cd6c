package broker

import (
	"context"
	"log/slog"
	"time"
)

// Backpressure decides the consumer's prefetch from the job queue's depth:
// above High it switches to Reduced, below Low back to Normal, and in
// between it keeps what it has (hysteresis). It never switches twice within
// Dwell. It is a pure state machine: the caller passes the time.
type Backpressure struct {
	High, Low       int           // depths that turn backpressure on and off
	Normal, Reduced int           // prefetch without and with backpressure
	Dwell           time.Duration // least time between two switches

	current    int
	lastSwitch time.Time
}

// NewBackpressure starts at the normal prefetch.
func NewBackpressure(high, low, normal, reduced int, dwell time.Duration) *Backpressure {
	return &Backpressure{High: high, Low: low, Normal: normal, Reduced: reduced, Dwell: dwell, current: normal}
}

// Prefetch is the prefetch the last decision chose.
func (p *Backpressure) Prefetch() int { return p.current }

// Decide returns the prefetch for a queue depth read at now, and whether it
// differs from the current one.
func (p *Backpressure) Decide(now time.Time, depth int) (prefetch int, changed bool) {
	want := p.current
	switch {
	case depth > p.High:
		want = p.Reduced
	case depth < p.Low:
		want = p.Normal
	}
	if want == p.current || (!p.lastSwitch.IsZero() && now.Sub(p.lastSwitch) < p.Dwell) {
		return p.current, false
	}
	p.current, p.lastSwitch = want, now
	return want, true
}

// BackpressureOptions configure Broker.RunBackpressure.
type BackpressureOptions struct {
	Interval        time.Duration // how often the depth is read
	High, Low       int
	Normal, Reduced int
	// OnDepth and OnChange, when set, see every depth read and every switch
	// (for metrics). They must not block.
	OnDepth  func(depth int)
	OnChange func(depth, from, to int)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// RunBackpressure reads the job queue's depth every Interval until ctx ends
// and switches the consumer's prefetch as Backpressure decides, logging
// prefetch_changed. A failed depth read changes nothing (the consumer is
// reconnecting, and Run logs that).
func (b *Broker) RunBackpressure(ctx context.Context, opts BackpressureOptions) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := NewBackpressure(opts.High, opts.Low, opts.Normal, opts.Reduced, opts.Interval)
	p.current = b.Prefetch()
	tick := time.NewTicker(opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		depth, err := b.QueueDepth(ctx)
		if err != nil {
			b.logger.Debug("queue_depth_unavailable", slog.String("error", err.Error()))
			continue
		}
		if opts.OnDepth != nil {
			opts.OnDepth(depth)
		}
		from := p.Prefetch()
		to, changed := p.Decide(opts.Now(), depth)
		if !changed {
			continue
		}
		b.SetPrefetch(to)
		b.logger.Info("prefetch_changed", slog.Int("queueDepth", depth),
			slog.Int("previousPrefetch", from), slog.Int("prefetch", to))
		if opts.OnChange != nil {
			opts.OnChange(depth, from, to)
		}
	}
}
