package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/testkit/localrun"
)

// reloadTenants is the size of the reload rows' tenants file.
const reloadTenants = 100_000

// reload measures reloading a large tenants file: how long a reload takes
// when every tenant changed (the defaults' rate, so each of them is a
// changed tenant), and a drain's jobs/s while reloads run back to back
// against the same drain without.
func (e *benchEnv) reload(ctx context.Context) ([]benchRow, error) {
	n, jobs := reloadTenants, 3000
	if e.quick {
		n, jobs = 10_000, 1000
	}
	tenants := make([]localrun.Tenant, n)
	for i := range tenants {
		id := fmt.Sprintf("r%06d", i)
		tenants[i] = localrun.Tenant{ID: id, Phone: fmt.Sprintf("4%014d", i), Token: "EAAtoken-" + id}
	}
	const defaultsA = "rate_limit: {per_minute: 600000, burst: 10000}\nmax_attempts: 10"
	start := time.Now()
	bw, err := e.newBenchWorker(ctx, "reload", tenants, defaultsA, io.Discard,
		"--prefetch", "100", "--prefetch-reduced", "100", "--backpressure-high", "100000000", "--backpressure-low", "1",
		"--tenants-watch", "off")
	if err != nil {
		return nil, err
	}
	defer bw.close()
	bw.start()
	if err := waitFor(ctx, 60*time.Second, func() bool {
		o := bw.w.Ownership()
		return bw.w.Ready() && len(o.Owned) == o.Shards
	}); err != nil {
		return nil, fmt.Errorf("reload: the worker did not own its shards: %w", err)
	}
	e.progress("reload: worker with %d tenants ready in %.1fs", n, time.Since(start).Seconds())
	fileA, err := os.ReadFile(bw.cfg.TenantsFile)
	if err != nil {
		return nil, err
	}
	fileB := []byte(strings.Replace(string(fileA), "per_minute: 600000", "per_minute: 500000", 1))
	if string(fileB) == string(fileA) {
		return nil, fmt.Errorf("reload: the defaults block %q was not found in the tenants file", defaultsA)
	}
	flip := false
	reloadOnce := func() (time.Duration, error) {
		next := fileB
		if flip {
			next = fileA
		}
		flip = !flip
		if err := writeAtomically(bw.cfg.TenantsFile, next); err != nil {
			return 0, err
		}
		t0 := time.Now()
		res, err := bw.w.Reload(ctx, "bench")
		if err != nil {
			return 0, err
		}
		if len(res.Updated) != n {
			return 0, fmt.Errorf("reload changed %d tenants, want %d", len(res.Updated), n)
		}
		return time.Since(t0), nil
	}

	var took []float64
	for range max(e.reps, 3) {
		d, err := reloadOnce()
		if err != nil {
			return nil, err
		}
		took = append(took, d.Seconds()*1000)
	}
	e.progress("reload: %d tenants changed, reloads took %v ms", n, took)

	pub, err := dialBenchPublisher(e.amqpURL, true)
	if err != nil {
		return nil, err
	}
	defer pub.close()
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = tenants[i*(n/len(ids))].ID
	}
	seq := 0
	drain := func(reloading bool) (float64, int, error) {
		base, err := benchQueueDepth(pub.ch, bw.topo.ResultsQueue())
		if err != nil {
			return 0, 0, err
		}
		stop := make(chan struct{})
		reloads := make(chan int, 1)
		go func() {
			count := 0
			defer func() { reloads <- count }()
			for reloading {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := reloadOnce(); err != nil {
					e.progress("reload during the drain failed: %v", err)
					return
				}
				count++
			}
		}()
		now := time.Now()
		bodies := make([][]byte, jobs)
		for i := range bodies {
			bodies[i] = benchJobBody(ids[i%len(ids)], seq, now)
			seq++
		}
		t0 := time.Now()
		if err := publishDirect(ctx, pub, bw.topo, func(i int) string { return ids[i%len(ids)] }, bodies); err != nil {
			close(stop)
			return 0, 0, err
		}
		done, err := benchWaitDepth(ctx, pub.ch, bw.topo.ResultsQueue(), base+jobs, t0.Add(60*time.Second), 5*time.Millisecond)
		elapsed := time.Since(t0)
		close(stop)
		count := <-reloads
		if err != nil {
			return 0, 0, err
		}
		if done < base+jobs {
			return 0, count, fmt.Errorf("drain: %d of %d results in 60s", done-base, jobs)
		}
		return float64(jobs) / elapsed.Seconds(), count, nil
	}
	var quiet, busy, ratios []float64
	reloadsDuring := 0
	for rep := range e.reps {
		order := []bool{false, true}
		if rep%2 == 1 {
			order = []bool{true, false}
		}
		var q, b float64
		for _, reloading := range order {
			rate, count, err := drain(reloading)
			if err != nil {
				return nil, err
			}
			if reloading {
				b, reloadsDuring = rate, reloadsDuring+count
			} else {
				q = rate
			}
		}
		quiet, busy, ratios = append(quiet, q), append(busy, b), append(ratios, b/q)
		e.progress("reload: rep %d: %.0f jobs/s without reloads, %.0f jobs/s beside back-to-back reloads", rep+1, q, b)
	}
	tookMs := benchMedian(took)
	ratio := benchMedian(ratios)
	return []benchRow{
		{
			Measure: fmt.Sprintf("reload %s tenants, every one changed", benchThousands(n)),
			Value:   fmt.Sprintf("%.0f ms (median of %d; load, diff, apply in the router)", tookMs, len(took)),
			Goal:    "reported",
			Status:  statusInfo,
			Numbers: map[string]float64{"reloadMs": tookMs, "tenants": float64(n)},
		},
		{
			Measure: fmt.Sprintf("jobs/s beside reloads of %s tenants", benchThousands(n)),
			Value: fmt.Sprintf("%.0f/s beside back-to-back reloads (%d in all), %.0f/s without, ratio %.2f",
				benchMedian(busy), reloadsDuring, benchMedian(quiet), ratio),
			Goal:    "reported",
			Status:  statusInfo,
			Numbers: map[string]float64{"ratio": ratio, "withReloads": benchMedian(busy), "without": benchMedian(quiet)},
		},
	}, nil
}

// publishDirect publishes bodies to their tenants' shards (tenantOf names
// body i's tenant) through the shards exchange, in windows of 500 confirms.
func publishDirect(ctx context.Context, pub *benchPublisher, topo broker.Topology, tenantOf func(int) string, bodies [][]byte) error {
	const window = 500
	for start := 0; start < len(bodies); start += window {
		end := min(start+window, len(bodies))
		confirms := make([]*amqp.DeferredConfirmation, 0, end-start)
		for i := start; i < end; i++ {
			dc, err := pub.ch.PublishWithDeferredConfirmWithContext(ctx, topo.ShardsExchange(),
				broker.ShardKey(topo.ShardOf(tenantOf(i))), true, false,
				amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: bodies[i]})
			if err != nil {
				return err
			}
			confirms = append(confirms, dc)
		}
		for _, dc := range confirms {
			if ok, err := dc.WaitContext(ctx); err != nil || !ok {
				return fmt.Errorf("publish to %s not confirmed: %v", topo.ShardsExchange(), err)
			}
		}
	}
	return nil
}

func writeAtomically(path string, content []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// waitFor polls ok every 10 ms until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
