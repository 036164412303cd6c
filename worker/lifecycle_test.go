package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
	"github.com/wadispatch/wadispatch/testkit/localrun"
)

// These tests take the broker away from a running worker, or stop or kill
// the worker's process, and account for every job. A test that stops the
// broker does it to a private node (testkit.StartRabbitNode), never to the
// shared one other tests are using at the same time.

// lifecycleDefaults are limits that never bind, so every deferral seen is
// caused by the disruption (or a tenant's MaxHeld), not by a rate.
const lifecycleDefaults = "rate_limit: {per_minute: 60000, burst: 1000}\nbreaker: {failure_threshold: 50, open_for: 5s}\nmax_attempts: 100"

// readyWithin is how soon after the broker is back the worker must consume.
const readyWithin = 10 * time.Second

func TestBrokerRestartMidStreamLosesNoJobAndSendsNoneTwice(t *testing.T) {
	const jobs = 2000
	node := testkit.StartRabbitNode(t)
	tenants := defaultTenants(5)
	h := startNodeWorker(t, node, tenants)
	for _, tn := range tenants {
		h.fake.Behave(tn.Phone, fakemeta.Behaviour{Latency: fakemeta.Latency{Median: 30 * time.Millisecond}})
	}
	ids := lifecycleJobs(tenants, jobs, "restart")
	publishOn(t, node.URL(), h.topo.Queue, ids)

	var readyAfter []time.Duration
	for _, at := range []int{jobs / 4, jobs * 3 / 5} {
		require.True(t, waitDepthOn(t, node.URL(), h.topo.ResultsQueue(), at, 60*time.Second),
			"%d results before restarting the broker", at)
		node.StopApp()
		assert.Eventually(t, func() bool { return !h.worker.Ready() }, 10*time.Second, 10*time.Millisecond,
			"not ready while the broker is down")
		time.Sleep(2 * time.Second)
		node.StartApp()
		back := time.Now()
		require.Eventually(t, h.worker.Ready, 30*time.Second, 10*time.Millisecond, "the worker never consumed again")
		readyAfter = append(readyAfter, time.Since(back))
	}
	t.Logf("ready again %v after the broker came back", readyAfter)
	for i, d := range readyAfter {
		assert.LessOrEqual(t, d, readyWithin, "restart %d: ready %s after the broker came back", i+1, d)
	}

	c := newResultCollector(t, node.URL(), h.topo.ResultsQueue())
	require.True(t, c.waitAll(ids, 90*time.Second), "every job has a result")
	waitCopiesTaken(t, node.URL(), h.topo)
	h.stop()
	results, twice := c.collect(), c.twice
	assertOneResultEach(t, ids, results)
	assert.Zero(t, depthOn(t, node.URL(), h.topo.JobQueues()...), "no job left")
	for id, r := range results {
		assert.Equal(t, messages.StatusSent, r.Status, id)
	}
	// A result whose confirm was lost with the connection may or may not
	// have reached the queue; the job comes back and its result goes out
	// again. A result known to be confirmed is not published twice: a
	// delivery settled before its channel died is acked when it comes
	// back. Either way only the deliveries in hand at a restart, at most a
	// prefetch window, can end with a second result.
	ambiguous := ambiguousSettles(h)
	unexplained := 0
	for id := range twice {
		if !ambiguous[id] {
			unexplained++
		}
	}
	dups := duplicateSends(h.fake.Calls())
	t.Logf("2 broker restarts: %d jobs with a second result (%d of them without a lost confirm), "+
		"%d redeliveries acked as already settled, %d duplicate sends",
		len(twice), unexplained, len(h.events("redelivery_acked")), len(dups))
	assert.LessOrEqual(t, len(twice), 2*10, "at most a prefetch window per restart")
	assert.Empty(t, dups, "a job redelivered after a restart is not sent again")
	assert.Zero(t, depthOn(t, node.URL(), h.topo.DLQ()), "nothing dead-lettered")
	assert.GreaterOrEqual(t, len(h.events("broker_connection_lost")), 2)
	assert.GreaterOrEqual(t, len(h.events("broker_connected")), 3)
}

func TestKilledWorkerLosesNoJobAndRestartFinishesThem(t *testing.T) {
	const jobs = 800
	tenants := defaultTenants(4)
	h, args := processHarness(t, tenants)
	for _, tn := range tenants {
		h.fake.Behave(tn.Phone, fakemeta.Behaviour{Latency: fakemeta.Latency{Median: 15 * time.Millisecond}})
	}
	ids := lifecycleJobs(tenants, jobs, "kill")
	h.publishAll(bodiesOf(ids))

	first := startProcess(t, h, args)
	waitCalls(t, h.fake, jobs/3)
	first.kill()
	killedAt := len(h.fake.Calls())

	second := startProcess(t, h, args)
	c := newResultCollector(t, testkit.AMQPURL(), h.topo.ResultsQueue())
	require.True(t, c.waitAll(ids, 60*time.Second), "every job has a result")
	waitCopiesTaken(t, testkit.AMQPURL(), h.topo)
	took := second.terminate(t)
	assert.Less(t, took, 5*time.Second)
	require.True(t, waitDrained(t, h, 20*time.Second), "delay queues drained")
	results, twice := c.collect(), c.twice
	assertOneResultEach(t, ids, results)
	assert.Zero(t, h.queued())
	if !assert.Zero(t, h.depth(h.topo.DLQ())) {
		for _, d := range h.dlq(h.depth(h.topo.DLQ()), 5*time.Second) {
			t.Logf("dead letter: %v %v", d.Headers[messages.HeaderDLQReason], d.Headers[messages.HeaderDLQDetail])
		}
	}

	dups := duplicateSends(h.fake.Calls())
	t.Logf("SIGKILL after %d calls: %d jobs sent twice %v, %d jobs with a second result %v",
		killedAt, len(dups), dups, len(twice), twice)
	// Only what the killed process held unacked can be handled again, and
	// it held at most a prefetch window of shard jobs and one of intake
	// jobs being moved (a move confirmed but not acked is moved twice; the
	// copy behind the first is then suppressed as a duplicate, but still
	// reported). A job whose result (or deferred
	// copy) reached the broker just before the kill, but whose ack did
	// not, comes back and ends with a second result: sent again when the
	// new process does not know it, or suppressed as a duplicate of its
	// deferred copy but still reported. At-least-once, not exactly once,
	// across a SIGKILL.
	assert.LessOrEqual(t, len(dups), 10, "duplicate sends bounded by the prefetch window")
	assert.LessOrEqual(t, len(twice), 20, "second results bounded by the prefetch windows of shards and intake")
}

func TestTerminatedWorkerExitsInTimeAndAcksNothingWithoutItsResult(t *testing.T) {
	const jobs = 600
	const shutdownTimeout = 5 * time.Second
	tenants := defaultTenants(4)
	// A slow tenant with a few jobs, so the stop has sends in flight.
	slow := testTenant{ID: "slow", Phone: "800000000000001", Token: "EAAtoken-slow-s3cr3t"}
	h, args := processHarness(t, append(tenants, slow), "--shutdown-timeout", shutdownTimeout.String())
	for _, tn := range tenants {
		h.fake.Behave(tn.Phone, fakemeta.Behaviour{Latency: fakemeta.Latency{Median: 15 * time.Millisecond}})
	}
	h.fake.Behave(slow.Phone, fakemeta.Behaviour{Latency: fakemeta.Latency{Median: time.Second}})
	ids := append(lifecycleJobs([]testTenant{slow}, 4, "slow"), lifecycleJobs(tenants, jobs, "term")...)
	h.publishAll(bodiesOf(ids))

	first := startProcess(t, h, args)
	waitCalls(t, h.fake, jobs/3)
	inFlight := h.fake.InFlight()
	firstTook := first.terminate(t)
	assert.LessOrEqual(t, firstTook, shutdownTimeout, "exit within SHUTDOWN_TIMEOUT")

	// Every job is accounted for: it has a result, or it is back in the job
	// queue (a deferred copy is waited for until it is), or dead-lettered.
	require.True(t, waitDrained(t, h, 20*time.Second), "deferred copies back in the job queue")
	before, twice := resultsByID(t, drainOn(t, testkit.AMQPURL(), h.topo.ResultsQueue()))
	assert.Empty(t, twice)
	queued := peekIDs(t, h.topo.JobQueues()...)
	dead := h.depth(h.topo.DLQ())
	for id := range before {
		assert.NotContains(t, queued, id, "%s has a result and is still queued", id)
	}
	missing := 0
	for _, j := range ids {
		if _, ok := before[j.id]; !ok && !queued[j.id] {
			missing++
		}
	}
	assert.Zero(t, missing, "jobs neither with a result nor in the queue")
	assert.Zero(t, dead)
	assert.Equal(t, len(ids), len(before)+len(queued)+dead, "results + queued + DLQ = all jobs")
	require.NotEmpty(t, queued, "the test stopped the worker mid-stream")

	h.fake.Behave(slow.Phone, fakemeta.Behaviour{Latency: fakemeta.Latency{Median: 15 * time.Millisecond}})
	second := startProcess(t, h, args)
	after := h.results(len(queued), 60*time.Second) // fails on a duplicate
	for id := range after {
		assert.NotContains(t, before, id, "second result for %s", id)
	}
	for id, r := range before {
		after[id] = r
	}
	assertOneResultEach(t, ids, after)
	secondTook := second.terminate(t)
	assert.LessOrEqual(t, secondTook, shutdownTimeout)
	t.Logf("shutdown took %s mid-stream (%d sends in flight, %d results before, %d queued), %s idle",
		firstTook, inFlight, len(before), len(queued), secondTook)
	assert.Empty(t, duplicateSends(h.fake.Calls()), "a graceful stop sends nothing twice")
	assert.Empty(t, h.events("settle_failed"), "a graceful stop fails no settlement")
	assert.Zero(t, h.queued())
}

func TestReturnedDeferralLeavesTheJobInTheQueueAndTheTopologyIsRestored(t *testing.T) {
	tn := testTenant{ID: "deferring", Phone: "700000000000001", Token: "EAAtoken-deferring-s3cr3t",
		Extra: "rate_limit: {per_minute: 60, burst: 1}"}
	h := startHarness(t, []testTenant{tn}, harnessOptions{})
	// With the delay queues gone, a deferral publish has nowhere to go: the
	// broker returns it.
	for _, q := range h.topo.WaitQueues() {
		_, err := h.ch.QueueDelete(q, false, false, false)
		require.NoError(t, err)
	}
	h.publish(job(tn.ID, "first", "15550000011"))
	h.publish(job(tn.ID, "second", "15550000012")) // no token: deferred

	// The bucket starts empty (the shard was just acquired), so both wait
	// for a token, and their deferrals come back unroutable.
	// Had a returned deferral's job been acked, it would be lost.
	// It went back to the queue instead, came again after the worker had
	// declared its topology anew, and was deferred and sent.
	results := h.results(2, 20*time.Second) // fails on a duplicate
	assert.Equal(t, messages.StatusSent, results["first"].Status)
	assert.Equal(t, messages.StatusSent, results["second"].Status)
	returned := 0
	for _, e := range h.events("settle_failed") {
		if msg, _ := e["error"].(string); strings.Contains(msg, broker.ErrReturned.Error()) {
			returned++
		}
	}
	assert.Positive(t, returned, "the deferral was returned")
	assert.LessOrEqual(t, returned, 4, "each job bounced once or so, not in a loop")
	assert.NotEmpty(t, h.events("topology_redeclared"))
	for _, q := range h.topo.WaitQueues() {
		_, err := h.ch.QueueDeclarePassive(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		require.NoError(t, err, "%s declared again", q)
	}
	assert.Len(t, h.fake.Calls(), 2, "each job sent once")
	h.stop()
	assert.Zero(t, h.queued())
	assert.Zero(t, h.depth(h.topo.DLQ()))
}

// startNodeWorker runs a worker in this process against a private node, on
// queues of its own, with the fake Meta; it stops when the test ends.
func startNodeWorker(t *testing.T, node *testkit.RabbitNode, tenants []testTenant) *harness {
	t.Helper()
	return startHarness(t, tenants, harnessOptions{AMQPURL: node.URL(), Defaults: lifecycleDefaults,
		Args: []string{"--log-level", "info"}})
}

// processHarness builds the wadispatch binary (./cmd/wadispatch) and
// prepares queues, a fake Meta and a tenants file (tokens in files) for
// `wadispatch run` processes on the shared broker. It returns the harness (whose worker is nil) and
// the command line of such a process: the binary, then its flags.
func processHarness(t *testing.T, tenants []testTenant, extra ...string) (*harness, []string) {
	t.Helper()
	h := &harness{tb: t, fake: testkit.StartFakeMeta(t), topo: testkit.Topology(t), logs: &testkit.SyncBuffer{},
		tenants: map[string]testTenant{}, stop: func() {}, defaults: lifecycleDefaults}
	dir := t.TempDir()
	for i := range tenants {
		tenants[i].TokenFile = filepath.Join(dir, tenants[i].ID+".token")
		require.NoError(t, os.WriteFile(tenants[i].TokenFile, []byte(tenants[i].Token), 0o600))
		h.tenants[tenants[i].ID] = tenants[i]
	}
	path, _, err := localrun.WriteTenants(dir, lifecycleDefaults, tenants, h.fake, nil)
	require.NoError(t, err)
	h.ch = testkit.Channel(t)
	// The worker declares the same queue; publishing may come first.
	_, err = h.ch.QueueDeclare(h.topo.Queue, true, false, false, false, nil)
	require.NoError(t, err)
	t.Cleanup(h.checkLogs)
	bin := filepath.Join(dir, "wadispatch")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/wadispatch/wadispatch/cmd/wadispatch").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	args := append([]string{bin,
		"--amqp-url", testkit.AMQPURL(), "--amqp-queue", h.topo.Queue, "--results-exchange", h.topo.ResultsExchange,
		"--tenants-file", path, "--meta-base-url", h.fake.URL(), "--meta-timeout", "2s",
		"--admin-addr", "off", "--log-level", "info",
	}, extra...)
	return h, args
}

// workerProcess is one `wadispatch run` process.
type workerProcess struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *testkit.SyncBuffer
	exited chan struct{}
	err    error
}

// startProcess starts `wadispatch run` (built by processHarness) with args,
// its log lines going to h.logs; it returns once the process consumes, and
// kills it if the test ends first.
func startProcess(t *testing.T, h *harness, args []string) *workerProcess {
	t.Helper()
	p := &workerProcess{t: t, stderr: &testkit.SyncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(args[0], append([]string{"run"}, args[1:]...)...)
	p.cmd.Env = os.Environ()
	p.cmd.Stdout, p.cmd.Stderr = h.logs, p.stderr
	mark := strings.Count(h.logs.String(), `"broker_connected"`)
	require.NoError(t, p.cmd.Start())
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	ok := assert.Eventually(t, func() bool {
		select {
		case <-p.exited:
			return true
		default:
		}
		return strings.Count(h.logs.String(), `"broker_connected"`) > mark
	}, 30*time.Second, 10*time.Millisecond)
	select {
	case <-p.exited:
		require.Failf(t, "worker exited at start", "%v\n%s", p.err, p.stderr.String())
	default:
	}
	require.True(t, ok, "the worker did not connect: %s", p.stderr.String())
	return p
}

// kill sends SIGKILL and waits for the process to end.
func (p *workerProcess) kill() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.exited
}

// terminate sends SIGTERM, requires exit code 0 within 30 s and returns how
// long the process took to exit.
func (p *workerProcess) terminate(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		require.FailNow(t, "the worker did not exit within 30s of SIGTERM")
	}
	took := time.Since(start)
	require.NoError(t, p.err, "exit status after SIGTERM; stderr: %s", p.stderr.String())
	return took
}

// lifecycleJobs names n jobs spread round-robin over tenants and returns
// their bodies by internal id, in publishing order.
func lifecycleJobs(tenants []testTenant, n int, prefix string) []lifecycleJob {
	out := make([]lifecycleJob, n)
	for i := range out {
		tn := tenants[i%len(tenants)]
		id := fmt.Sprintf("%s-%s-%04d", prefix, tn.ID, i)
		out[i] = lifecycleJob{id: id, body: job(tn.ID, id, fmt.Sprintf("1555%07d", i))}
	}
	return out
}

type lifecycleJob struct {
	id   string
	body []byte
}

func bodiesOf(jobs []lifecycleJob) [][]byte {
	out := make([][]byte, len(jobs))
	for i, j := range jobs {
		out[i] = j.body
	}
	return out
}

// assertOneResultEach asserts that results holds exactly the jobs' ids.
func assertOneResultEach(t *testing.T, jobs []lifecycleJob, results map[string]messages.Result) {
	t.Helper()
	missing := 0
	for _, j := range jobs {
		if _, ok := results[j.id]; !ok {
			missing++
		}
	}
	assert.Zero(t, missing, "jobs without a result")
	assert.Equal(t, len(jobs), len(results), "one result per job")
}

// resultsByID decodes result events by internal id, and counts the jobs
// with more than one (by how many more).
func resultsByID(t *testing.T, ds []amqp.Delivery) (map[string]messages.Result, map[string]int) {
	t.Helper()
	out, twice := map[string]messages.Result{}, map[string]int{}
	for _, d := range ds {
		var r messages.Result
		require.NoError(t, json.Unmarshal(d.Body, &r))
		if _, dup := out[r.InternalID]; dup {
			twice[r.InternalID]++
		}
		out[r.InternalID] = r
	}
	return out, twice
}

// ambiguousSettles are the jobs whose settlement failed without knowing
// whether the broker took the publish: its confirm was lost with the
// connection, or did not come in time.
func ambiguousSettles(h *harness) map[string]bool {
	out := map[string]bool{}
	for _, e := range h.events("settle_failed") {
		msg, _ := e["error"].(string)
		if strings.Contains(msg, broker.ErrConnectionLost.Error()) || strings.Contains(msg, broker.ErrUnconfirmed.Error()) {
			id, _ := e["internalId"].(string)
			out[id] = true
		}
	}
	return out
}

// duplicateSends returns, by internal id, how many more times than once
// the fake Meta accepted each job.
func duplicateSends(calls []fakemeta.Call) map[string]int {
	accepted := map[string]int{}
	for _, c := range calls {
		if c.Status != 200 {
			continue
		}
		var body struct {
			Text struct{ Body string } `json:"text"`
		}
		if json.Unmarshal(c.Body, &body) == nil {
			accepted[strings.TrimPrefix(body.Text.Body, "job ")]++
		}
	}
	dups := map[string]int{}
	for id, n := range accepted {
		if n > 1 {
			dups[id] = n - 1
		}
	}
	return dups
}

func waitCalls(t *testing.T, fake *fakemeta.Server, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, fake.WaitCalls(ctx, n), "%d calls at the fake Meta", n)
}

// waitCopiesTaken waits, with the workers still running, until nothing is
// ready in the job queues or the delay queues on url. A job handled twice
// around a fault can have its result while a second copy is still on its
// way back from a delay queue (behind its own first copy in its
// recipient's line, it waits as long as that one was late); a worker
// takes it and suppresses it as a duplicate, but one stopped first would
// leave it queued.
func waitCopiesTaken(t *testing.T, url string, topo broker.Topology) {
	t.Helper()
	queues := append(topo.JobQueues(), topo.WaitQueues()...)
	require.Eventually(t, func() bool {
		n, err := readyIn(url, queues...)
		return err == nil && n == 0
	}, 60*time.Second, 100*time.Millisecond, "every copy back from the delay queues and taken")
}

// waitDrained waits until the job queue has no consumer (a stopped
// worker's unacked jobs are back) and every delay queue is empty (deferred
// copies are back in the job queue).
func waitDrained(t *testing.T, h *harness, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		q, err := h.ch.QueueDeclarePassive(h.topo.MembersQueue(), true, false, false, false, nil)
		require.NoError(t, err)
		waiting := 0
		for _, w := range h.topo.WaitQueues() {
			waiting += h.depth(w)
		}
		if q.Consumers == 0 && waiting == 0 {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// peekIDs returns the internal ids of the jobs ready in queue, leaving them
// there: they are taken unacked and go back when the channel closes.
func peekIDs(t *testing.T, queues ...string) map[string]bool {
	t.Helper()
	conn, err := amqp.Dial(testkit.AMQPURL())
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	ids := map[string]bool{}
	for _, queue := range queues {
		for {
			d, ok, err := ch.Get(queue, false)
			require.NoError(t, err)
			if !ok {
				break
			}
			j, err := messages.DecodeJob(d.Body)
			require.NoError(t, err)
			assert.False(t, ids[j.InternalID], "%s is twice in the queues", j.InternalID)
			ids[j.InternalID] = true
		}
	}
	require.NoError(t, ch.Close())
	return ids
}

// onNode runs f on a channel of a fresh connection to url.
func onNode(url string, f func(ch *amqp.Channel) error) error {
	conn, ch, err := localrun.DialChannel(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	return f(ch)
}

// publishOn publishes the jobs' bodies to queue on url, persistent and
// confirmed.
func publishOn(t *testing.T, url, queue string, jobs []lifecycleJob) {
	t.Helper()
	require.NoError(t, onNode(url, func(ch *amqp.Channel) error {
		(&harness{tb: t, ch: ch, topo: broker.Topology{Queue: queue}}).publishAll(bodiesOf(jobs))
		return nil
	}))
}

// depthOn is the number of ready messages in queue on url; -1 while the
// broker does not answer.
func depthOn(t *testing.T, url string, queues ...string) int {
	t.Helper()
	n, err := readyIn(url, queues...)
	var aerr *amqp.Error
	if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
		require.NoError(t, err)
	}
	if err != nil {
		return -1
	}
	return n
}

// waitDepthOn waits until queue on url holds at least n ready messages.
func waitDepthOn(t *testing.T, url, queue string, n int, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if depthOn(t, url, queue) >= n {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// resultCollector takes result events off a results queue (reconnecting
// while the broker is away) and keeps them by internal id.
type resultCollector struct {
	t       *testing.T
	url     string
	queue   string
	results map[string]messages.Result
	twice   map[string]int
}

func newResultCollector(t *testing.T, url, queue string) *resultCollector {
	return &resultCollector{t: t, url: url, queue: queue, results: map[string]messages.Result{}, twice: map[string]int{}}
}

// collect takes what is in the queue now and returns all results so far.
func (c *resultCollector) collect() map[string]messages.Result {
	c.t.Helper()
	_ = onNode(c.url, func(ch *amqp.Channel) error {
		for {
			d, ok, err := ch.Get(c.queue, true)
			if err != nil || !ok {
				return err
			}
			var r messages.Result
			require.NoError(c.t, json.Unmarshal(d.Body, &r))
			if _, dup := c.results[r.InternalID]; dup {
				c.twice[r.InternalID]++
			}
			c.results[r.InternalID] = r
		}
	})
	return c.results
}

// waitAll collects until every job has a result.
func (c *resultCollector) waitAll(jobs []lifecycleJob, timeout time.Duration) bool {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c.collect()
		missing := 0
		for _, j := range jobs {
			if _, ok := c.results[j.id]; !ok {
				missing++
			}
		}
		if missing == 0 {
			return true
		}
		if time.Now().After(deadline) {
			c.t.Logf("%d jobs still without a result", missing)
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// drainOn takes (and acks) every message ready in queue on url.
func drainOn(t *testing.T, url, queue string) []amqp.Delivery {
	t.Helper()
	var out []amqp.Delivery
	require.NoError(t, onNode(url, func(ch *amqp.Channel) error {
		for {
			d, ok, err := ch.Get(queue, true)
			if err != nil || !ok {
				return err
			}
			out = append(out, d)
		}
	}))
	return out
}
