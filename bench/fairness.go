package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

// Fairness load: 20 quiet tenants at 2 jobs/s each; the noisy tenant's
// limit is 600/min (10/s), and it floods at 10x that.
const (
	fairQuietTenants = 20
	fairQuietRate    = 2 // jobs/s per quiet tenant
	fairNoisyLimit   = 10
	fairWarmup       = time.Second
	fairGrace        = 5 * time.Second
	fairDefaults     = "rate_limit: {per_minute: 600, burst: 80}\nbreaker: {failure_threshold: 5, open_for: 5s}"
)

// fairCase is what the noisy tenant does while the quiet ones trickle.
type fairCase struct {
	name   string
	rate   int // noisy jobs per second; 0 = none
	behave fakemeta.Behaviour
}

var fairCases = []fairCase{
	{name: "(a) alone"},
	{name: "(b) one tenant floods at 10x its limit", rate: 10 * fairNoisyLimit},
	{name: "(c) one tenant's Meta hangs until timeout", rate: fairNoisyLimit, behave: fakemeta.Behaviour{Hang: true}},
	{name: "(d) one tenant's Meta answers 500", rate: fairNoisyLimit, behave: fakemeta.Behaviour{FailRaw: 500}},
}

// fairResult is one case's quiet publish-to-send times.
type fairResult struct {
	p50, p99 time.Duration
	n, late  int
}

func (e *benchEnv) fairness(ctx context.Context) ([]benchRow, error) {
	d := 8 * time.Second
	if e.quick {
		d = 4 * time.Second
	}
	results := make([][]fairResult, len(fairCases))
	for rep := range e.reps {
		for i, c := range fairCases {
			r, err := e.fairRun(ctx, c, d)
			if err != nil {
				return nil, fmt.Errorf("fairness %s: %w", c.name, err)
			}
			e.progress("fairness %s, rep %d: quiet p50 %s p99 %s (n=%d, late %d)", c.name, rep+1, benchDur(r.p50), benchDur(r.p99), r.n, r.late)
			results[i] = append(results[i], r)
		}
	}
	// Each p99 is the median over the repetitions, and so is (a)'s: a
	// stall of the machine in one run moves neither.
	var rows []benchRow
	var alone time.Duration
	for i, c := range fairCases {
		var p50s, p99s []float64
		n, late := 0, 0
		for _, r := range results[i] {
			p50s, p99s = append(p50s, float64(r.p50)), append(p99s, float64(r.p99))
			n, late = n+r.n, late+r.late
		}
		p50, p99 := time.Duration(benchMedian(p50s)), time.Duration(benchMedian(p99s))
		row := benchRow{Measure: "fairness " + c.name,
			Numbers: map[string]float64{"p50Ms": benchMs(p50), "p99Ms": benchMs(p99), "jobs": float64(n), "late": float64(late)}}
		value := fmt.Sprintf("quiet p50 %s, p99 %s (n=%d", benchDur(p50), benchDur(p99), n)
		if late > 0 {
			value += fmt.Sprintf(", %d unsent %s after the load", late, fairGrace)
		}
		if i == 0 {
			alone = p99
			row.Value, row.Goal, row.Status = value+")", "reference for (b)-(d)", statusInfo
		} else {
			ratio := float64(p99) / float64(max(alone, time.Microsecond))
			row.Value = fmt.Sprintf("%s), p99 ratio %.2f", value, ratio)
			row.Goal, row.Status = "p99 ratio <= 1.5", benchMet(ratio <= 1.5 && late == 0)
			row.Numbers["p99Ratio"] = ratio
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func benchMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fairRun runs one case on a fresh worker: warm-up, then d of load, then
// waits for the quiet jobs to be sent.
func (e *benchEnv) fairRun(ctx context.Context, c fairCase, d time.Duration) (fairResult, error) {
	quiet := e.tenants[:fairQuietTenants]
	noisy := e.tenants[fairQuietTenants]
	e.fake.Behave(noisy.Phone, c.behave)
	defer e.fake.Behave(noisy.Phone, fakemeta.Behaviour{})
	bw, err := e.newBenchWorker(ctx, "fairness", e.tenants[:fairQuietTenants+1], fairDefaults, io.Discard, "--meta-timeout", "1s")
	if err != nil {
		return fairResult{}, err
	}
	defer bw.close()
	pub, err := dialBenchPublisher(e.amqpURL, false)
	if err != nil {
		return fairResult{}, err
	}
	defer pub.close()
	e.fake.Reset()
	bw.start()

	quietPhones := map[string]bool{}
	for _, t := range quiet {
		quietPhones[t.Phone] = true
	}
	t0 := time.Now()
	measureFrom, end := t0.Add(fairWarmup), t0.Add(fairWarmup+d)
	var (
		mu      sync.Mutex
		pubErr  error
		counted = map[int]time.Time{} // quiet job number -> publish time
	)
	publish := func(tenant string, n int, count bool) {
		now := time.Now()
		_, err := pub.publish(ctx, bw.topo.Queue, benchJobBody(tenant, n, now))
		mu.Lock()
		defer mu.Unlock()
		if err != nil && pubErr == nil {
			pubErr = err
		}
		if count && err == nil {
			counted[n] = now
		}
	}
	var wg sync.WaitGroup
	// drive calls f every interval until end.
	drive := func(interval time.Duration, f func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := 0; time.Now().Before(end); i++ {
				f(i)
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
	drive(time.Second/time.Duration(fairQuietTenants*fairQuietRate), func(i int) {
		publish(quiet[i%len(quiet)].ID, i, time.Now().After(measureFrom))
	})
	if c.rate > 0 {
		drive(time.Second/time.Duration(c.rate), func(i int) { publish(noisy.ID, 1_000_000+i, false) })
	}
	wg.Wait()
	if pubErr != nil {
		return fairResult{}, pubErr
	}

	// Wait for the quiet jobs, then read their send times.
	sent := map[int]time.Time{}
	deadline := time.Now().Add(fairGrace)
	for {
		for _, call := range e.fake.Calls() {
			if !quietPhones[call.PhoneNumberID] || call.Status != 200 {
				continue
			}
			if n, _, ok := benchStamp(call.Body); ok {
				if _, seen := sent[n]; !seen {
					sent[n] = call.At
				}
			}
		}
		missing := 0
		for n := range counted {
			if _, ok := sent[n]; !ok {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		clear(sent)
		time.Sleep(200 * time.Millisecond)
	}
	var lat []time.Duration
	late := 0
	for n, published := range counted {
		at, ok := sent[n]
		if !ok {
			late++
			at = deadline
		}
		lat = append(lat, at.Sub(published))
	}
	slices.Sort(lat)
	return fairResult{p50: pct(lat, 50), p99: pct(lat, 99), n: len(lat), late: late}, ctx.Err()
}
