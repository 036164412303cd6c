package bench

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/wadispatch/wadispatch/testkit/localrun"
)

// The deferral burst: one tenant at 600/min with a burst of 80.
const (
	deferralPerMinute = 600
	deferralBurst     = 80
)

func (e *benchEnv) deferral(ctx context.Context) ([]benchRow, error) {
	jobs := 1000
	if e.quick {
		jobs = 200
	}
	ideal := time.Duration(float64(jobs-deferralBurst) / deferralPerMinute * float64(time.Minute))
	tenant := e.tenants[0]
	events := &benchEventCounter{}
	bw, err := e.newBenchWorker(ctx, "deferral", []localrun.Tenant{tenant},
		fmt.Sprintf("rate_limit: {per_minute: %d, burst: %d}", deferralPerMinute, deferralBurst), events, "--log-level", "debug")
	if err != nil {
		return nil, err
	}
	defer bw.close()
	pub, err := dialBenchPublisher(e.amqpURL, true)
	if err != nil {
		return nil, err
	}
	defer pub.close()
	e.fake.Reset()
	defer e.fake.Reset()
	bw.start()
	e.progress("deferral: %d jobs for one tenant at %d/min, burst %d (ideal drain %s)", jobs, deferralPerMinute, deferralBurst, ideal.Round(time.Second))
	t0 := time.Now()
	if err := pub.publishAll(ctx, bw.topo.Queue, e.throughputBodies(1, jobs)); err != nil {
		return nil, err
	}
	done, err := benchWaitDepth(ctx, pub.ch, bw.topo.ResultsQueue(), jobs, t0.Add(2*ideal+30*time.Second), 50*time.Millisecond)
	drained := time.Since(t0)
	if err != nil {
		return nil, err
	}
	info, err := bw.w.TenantInfo(tenant.ID)
	if err != nil {
		return nil, err
	}
	var order []int
	for _, c := range e.fake.Calls() {
		if c.PhoneNumberID != tenant.Phone || c.Status != 200 {
			continue
		}
		if n, _, ok := benchStamp(c.Body); ok {
			order = append(order, n)
		}
	}
	reorder := benchMaxDisplacement(order)
	perJob := float64(info.DeferredTotal) / float64(jobs)
	hops := float64(events.count("message_rescheduled")) / float64(jobs)
	e.progress("deferral: %d of %d results in %s; %d deferrals, %d tier hops, largest reordering %d",
		done, jobs, drained.Round(100*time.Millisecond), info.DeferredTotal, events.count("message_rescheduled"), reorder)
	complete := ""
	if done < jobs {
		complete = fmt.Sprintf(" (only %d of %d jobs done)", done, jobs)
	}
	burst := fmt.Sprintf("deferral %d-job burst at %d/min", jobs, deferralPerMinute)
	return []benchRow{
		{Measure: burst + ": deferrals per job", Goal: "<= 2",
			Value:   fmt.Sprintf("%.2f (%d deferrals; %.2f tier hops per job)%s", perJob, info.DeferredTotal, hops, complete),
			Status:  benchMet(perJob <= 2 && done == jobs),
			Numbers: map[string]float64{"deferralsPerJob": perJob, "tierHopsPerJob": hops, "jobsDone": float64(done)}},
		{Measure: burst + ": largest reordering", Goal: "about publish order", Status: statusInfo,
			Value:   fmt.Sprintf("%d positions (of %d sends)", reorder, len(order)),
			Numbers: map[string]float64{"maxReorder": float64(reorder)}},
		{Measure: burst + ": drain time", Goal: "about the ideal", Status: statusInfo,
			Value:   fmt.Sprintf("%s (ideal %s)", drained.Round(100*time.Millisecond), ideal.Round(100*time.Millisecond)),
			Numbers: map[string]float64{"drainSeconds": drained.Seconds(), "idealSeconds": ideal.Seconds()}},
	}, nil
}

// maxDisplacement is the largest distance between a job's number (its
// place in publish order) and its place in order; a job sent twice counts
// at its first send.
func benchMaxDisplacement(order []int) int {
	seen := map[int]bool{}
	worst, pos := 0, 0
	for _, n := range order {
		if seen[n] {
			continue
		}
		seen[n] = true
		worst = max(worst, benchAbs(pos-n))
		pos++
	}
	return worst
}

func benchAbs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// eventCounter is a log writer that counts lines by event; the handler
// writes each line with one Write.
type benchEventCounter struct {
	mu   sync.Mutex
	seen map[string]int
}

func (c *benchEventCounter) Write(p []byte) (int, error) {
	const key = `"event":"`
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]int{}
	}
	for rest := p; ; {
		i := bytes.Index(rest, []byte(key))
		if i < 0 {
			break
		}
		rest = rest[i+len(key):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			c.seen[string(rest[:j])]++
			rest = rest[j:]
		}
	}
	return len(p), nil
}

func (c *benchEventCounter) count(event string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[event]
}
