package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/testkit/localrun"
	"github.com/wadispatch/wadispatch/worker"
)

const loadcheckUsage = `Usage: wadbench loadcheck [flags]

loadcheck is a load check of one rate limit: one tenant is offered --rate
jobs/s for --duration at 80/min (burst 80) while --quiet other tenants send
one job per second each. It reports the loud tenant's sends per minute
(expect 80 plus the initial burst), its deferrals per job, and the quiet
tenants' publish-to-send p50/p99 without and with that load.
`

// ErrUsage marks a command-line mistake (cmd/wadbench exits with code 2).
var ErrUsage = errors.New("usage")

// Main is the wadbench command: the benchmark suite, or one of its
// subcommands: loadcheck, and scale (one scale measurement, which the suite
// runs as a child process of the same binary). args are the command's
// arguments; getenv is read for AMQP_URL. A command-line mistake wraps
// ErrUsage, --help returns flag.ErrHelp, and an unmet goal is no error.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "loadcheck":
			return runLoadCheck(ctx, args[1:], getenv, stdout, stderr)
		case "scale":
			return runScale(ctx, args[1:], stdout, stderr)
		case shardsChildCommand:
			return runShardWorker(ctx, args[1:], getenv, stdout, stderr)
		}
	}
	return runSuite(ctx, args, getenv, stdout, stderr)
}

func runLoadCheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wadbench loadcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	amqpURL := fs.String("amqp-url", firstNonEmpty(getenv("AMQP_URL"), testkit.DefaultAMQPURL), "broker URL")
	duration := fs.Duration("duration", 60*time.Second, "how long the loud tenant is offered load")
	baseline := fs.Duration("baseline", 20*time.Second, "how long the quiet tenants run alone first")
	rate := fs.Int("rate", 100, "jobs per second offered for the loud tenant")
	quiet := fs.Int("quiet", 5, "number of quiet tenants (1 job/s each)")
	fs.Usage = func() { fmt.Fprint(stderr, loadcheckUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	fake, dir, cleanup, err := localrun.StartMeta("wadispatch-bench-")
	if err != nil {
		return err
	}
	defer cleanup()
	names := []string{"loud"}
	for i := range *quiet {
		names = append(names, fmt.Sprintf("quiet%02d", i))
	}
	phones := map[string]string{}
	tenants := make([]localrun.Tenant, len(names))
	for i, n := range names {
		tenants[i] = localrun.Tenant{ID: n, Phone: fmt.Sprintf("3000000000%05d", i), Token: "bench-token-" + n}
		phones[tenants[i].Phone] = n
	}
	path, getBenchEnv, err := localrun.WriteTenants(dir, "rate_limit: {per_minute: 80, burst: 80}", tenants, fake, nil)
	if err != nil {
		return err
	}
	queue := fmt.Sprintf("bench.loadcheck.%d", time.Now().UnixNano())
	cfg, err := config.Load(getBenchEnv, []string{"--amqp-url", *amqpURL, "--amqp-queue", queue,
		"--results-exchange", queue + ".results", "--tenants-file", path, "--meta-base-url", fake.URL(),
		"--admin-addr", "off", "--shutdown-timeout", "2s"}, stderr)
	if err != nil {
		return err
	}
	w, err := worker.New(ctx, cfg, worker.Options{Getenv: getBenchEnv})
	if err != nil {
		return err
	}
	defer func() { _ = broker.NewTopology(cfg.Queue, cfg.ResultsExchange).Delete(cfg.AMQPURL) }()
	runCtx, stop := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(runCtx) }()
	defer func() { stop(); <-stopped }()

	conn, ch, err := localrun.DialChannel(cfg.AMQPURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	seq := 0
	publish := func(tenant string) error {
		seq++
		body := loadcheckBody(tenant, fmt.Sprintf("%s-%d", tenant, seq), "1555"+strconv.Itoa(seq),
			"t="+strconv.FormatInt(time.Now().UnixNano(), 10))
		return ch.PublishWithContext(ctx, "", cfg.Queue, false, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body})
	}
	// drive publishes quiet jobs every second and loud ones at rate/s.
	drive := func(d time.Duration, loud int) error {
		tick := time.NewTicker(time.Second / time.Duration(max(loud, 1)))
		defer tick.Stop()
		end := time.Now().Add(d)
		nextQuiet := time.Now()
		for time.Now().Before(end) {
			if !time.Now().Before(nextQuiet) {
				for _, n := range names[1:] {
					if err := publish(n); err != nil {
						return err
					}
				}
				nextQuiet = nextQuiet.Add(time.Second)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
				if loud > 0 {
					if err := publish("loud"); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	fmt.Fprintf(stdout, "loadcheck: %d quiet tenants alone for %s, then loud at %d jobs/s for %s (80/min, burst 80)\n",
		*quiet, *baseline, *rate, *duration)
	aStart := time.Now()
	if err := drive(*baseline, 0); err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // let the last quiet jobs land
	bStart := time.Now()
	if err := drive(*duration, *rate); err != nil {
		return err
	}
	bEnd := time.Now()
	time.Sleep(2 * time.Second)
	calls := fake.Calls()
	var alone, loaded []time.Duration
	loudSent := 0
	for _, c := range calls {
		if c.Status != 200 {
			continue
		}
		tenant := phones[c.PhoneNumberID]
		if tenant == "loud" {
			if !c.At.Before(bStart) && c.At.Before(bEnd) {
				loudSent++
			}
			continue
		}
		var p struct{ Text struct{ Body string } }
		if json.Unmarshal(c.Body, &p) != nil {
			continue
		}
		ns, err := strconv.ParseInt(strings.TrimPrefix(p.Text.Body, "t="), 10, 64)
		if err != nil {
			continue
		}
		published := time.Unix(0, ns)
		lat := c.At.Sub(published)
		switch {
		case published.After(aStart) && published.Before(bStart):
			alone = append(alone, lat)
		case !published.Before(bStart) && published.Before(bEnd):
			loaded = append(loaded, lat)
		}
	}
	info, err := w.TenantInfo("loud")
	if err != nil {
		return err
	}
	offered := *rate * int(duration.Seconds())
	perMinute := float64(loudSent) / bEnd.Sub(bStart).Minutes()
	fmt.Fprintf(stdout, "\n%-44s %s\n", "measure", "value")
	fmt.Fprintf(stdout, "%-44s %d\n", "loud jobs offered", offered)
	fmt.Fprintf(stdout, "%-44s %d in %.1fs (%.1f/min; expect 80/min + burst 80)\n", "loud jobs sent during the load", loudSent, bEnd.Sub(bStart).Seconds(), perMinute)
	fmt.Fprintf(stdout, "%-44s %.2f\n", "loud deferrals per job offered", float64(info.DeferredTotal)/float64(offered))
	fmt.Fprintf(stdout, "%-44s p50 %s  p99 %s  (n=%d)\n", "quiet publish-to-send, alone", pct(alone, 50), pct(alone, 99), len(alone))
	fmt.Fprintf(stdout, "%-44s p50 %s  p99 %s  (n=%d)\n", "quiet publish-to-send, with loud load", pct(loaded, 50), pct(loaded, 99), len(loaded))
	if a, b := pct(alone, 99), pct(loaded, 99); a > 0 {
		fmt.Fprintf(stdout, "%-44s %.2f\n", "quiet p99 ratio (loaded / alone)", float64(b)/float64(a))
	}
	return nil
}

// loadcheckBody is a text job whose text is the publish time.
func loadcheckBody(tenant, id, to, text string) []byte {
	b, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"tenantId": tenant, "internalId": id, "source": "bench"},
		"wabaPayload": map[string]any{"messaging_product": "whatsapp", "recipient_type": "individual",
			"to": to, "type": "text", "text": map[string]any{"body": text}},
	})
	return b
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// pct is the p-th percentile (nearest rank) of ds, rounded to 0.1 ms.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))].Round(100 * time.Microsecond)
}
