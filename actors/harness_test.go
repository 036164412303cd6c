package actors

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// The harness runs a router, its tenant actors, a FakeSender, a FakeToken
// per tenant and a FakeBroker that brings deferred and requeued copies back
// to the router, all inside a testing/synctest bubble: time.Now, timers and
// sleeps are virtual, so a schedule of minutes runs in milliseconds and
// every instant is exact. Tests see the actors only through the router's
// messages, the broker's settlements, the sender's calls and the log.

// ownRecipient, as a job's recipient, gives the job a recipient of its
// own (derived from its internal id), so that its tenant's jobs are not
// kept in one recipient's order unless a test means them to be.
const ownRecipient = ""

// recipientFor is the recipient of its own of the job with internal id id.
func recipientFor(id string) string {
	h := fnv.New32a()
	h.Write([]byte(id))
	return fmt.Sprintf("1555%07d", h.Sum32()%10_000_000)
}

// tenant returns a tenant whose limits do not bind unless a test tightens
// them: 6000/min with a burst of 100, a breaker of 5 failures open for
// 30 s, 5 attempts, an hour's max age.
func tenant(id string) config.Tenant {
	return config.Tenant{
		ID:            id,
		PhoneNumberID: "phone-" + id,
		RateLimit:     config.RateLimit{PerMinute: 6000, Burst: 100},
		Breaker:       config.Breaker{FailureThreshold: 5, OpenFor: 30 * time.Second},
		MaxAttempts:   5,
		MaxAge:        time.Hour,
	}
}

// call is one call the fake Meta received.
type call struct {
	Tenant, InternalID, To, Token string
	Start                         time.Duration // since the bubble's start
	End                           time.Duration // zero while running or when it panicked
	Err                           error
	Panicked                      bool
}

// reply is what the fake Meta answers to one call: after Delay (cut short
// by the context's end, which is then the error), Err, or success; Panic
// makes the send panic instead.
type reply struct {
	Delay time.Duration
	Err   error
	Panic any
}

// metaFunc decides the fake Meta's reply to a call.
type metaFunc func(c call) reply

// harness is one router and its fakes, inside a synctest bubble.
type harness struct {
	t        *testing.T
	t0       time.Time
	system   *actor.ActorSystem
	root     *actor.RootContext
	router   *actor.PID
	broker   *testkit.FakeBroker
	sender   *testkit.FakeSender
	log      *testkit.SyncBuffer
	cancel   context.CancelFunc
	stopping atomic.Bool

	phones map[string]string // phone number id → tenant id

	mu    sync.Mutex
	meta  metaFunc
	calls []call
}

// startHarness starts a router for cfg.Tenants. It must run inside a
// synctest bubble. Unset fields of cfg get the harness's fakes: a FakeToken
// "token-<id>" per tenant, the harness's FakeSender (answering with meta,
// see answer) and FakeBroker, a JSON logger at debug level into a buffer,
// a cancellable context and a jitter that always waits the whole backoff
// (so retry times are exact). Cleanup stops it all (see stop).
func startHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, t0: time.Now(), log: &testkit.SyncBuffer{}, phones: map[string]string{}}
	h.meta = func(call) reply { return reply{} }
	for _, tn := range cfg.Tenants {
		h.phones[tn.PhoneNumberID] = tn.ID
	}
	if cfg.Tokens == nil {
		cfg.Tokens = map[string]whatsapp.TokenSource{}
		for _, tn := range cfg.Tenants {
			cfg.Tokens[tn.ID] = &testkit.FakeToken{Value: "token-" + tn.ID}
		}
	}
	h.sender = &testkit.FakeSender{SendFn: h.send}
	h.broker = &testkit.FakeBroker{Redeliver: func(d *messages.Deliver) {
		if !h.stopping.Load() { // a delay queue outlives the worker; its copies wait there
			h.root.Send(h.router, d)
		}
	}}
	cfg.Sender, cfg.Broker = h.sender, h.broker
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.Jitter == nil {
		cfg.Jitter = func(max time.Duration) time.Duration { return max }
	}
	var ctx context.Context
	ctx, h.cancel = context.WithCancel(context.Background())
	cfg.Context = ctx

	h.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	h.root = h.system.Root
	router, err := h.root.SpawnNamed(NewRouterProps(cfg), "router")
	require.NoError(t, err)
	h.router = router
	t.Cleanup(h.stop)
	return h
}

// stop is the one teardown: it ends the context (which ends the router's
// send/settle pool and any send still waiting on it), stops the router and
// its tenants, and shuts the actor system down. Every goroutine of the
// bubble should then be gone. One that is still blocked fails the test
// with its stack; time is then let run so that it can end, only so the
// bubble can exit (synctest would otherwise abort the whole test binary
// with "blocked goroutines remain", and every later test with it).
func (h *harness) stop() {
	h.stopping.Store(true)
	h.cancel()
	_ = h.root.PoisonFuture(h.router).Wait()
	h.system.Shutdown()
	h.settle()
	left := blockedInBubble()
	if len(left) == 0 {
		return
	}
	h.t.Errorf("%d goroutine(s) of the bubble still blocked after teardown:\n\n%s",
		len(left), strings.Join(left, "\n\n"))
	for range 120 {
		time.Sleep(time.Minute)
		h.settle()
		if len(blockedInBubble()) == 0 {
			return
		}
	}
}

// bubbleHeader matches a goroutine's header in a stack dump, capturing its
// bubble.
var bubbleHeader = regexp.MustCompile(`^goroutine \d+ \[[^\]]*synctest bubble (\d+)\]:`)

// blockedInBubble returns the stacks of the goroutines of the caller's
// bubble other than the caller and synctest's own.
func blockedInBubble() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	stacks := strings.Split(string(buf), "\n\n")
	self := bubbleHeader.FindStringSubmatch(stacks[0]) // the caller's comes first
	if self == nil {
		return nil
	}
	var out []string
	for _, g := range stacks[1:] {
		m := bubbleHeader.FindStringSubmatch(g)
		if m == nil || m[1] != self[1] ||
			strings.Contains(g, "internal/synctest.Run(") || strings.Contains(g, "testing/synctest.testingSynctestTest(") {
			continue
		}
		out = append(out, strings.TrimSpace(g))
	}
	return out
}

// answer sets what the fake Meta answers from now on.
func (h *harness) answer(f metaFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.meta = f
}

// send is the FakeSender's SendFn: it records the call and answers as the
// current metaFunc says.
func (h *harness) send(ctx context.Context, req whatsapp.Request) (whatsapp.Response, error) {
	var p struct {
		To   string `json:"to"`
		Text struct {
			Body string `json:"body"`
		} `json:"text"`
	}
	_ = json.Unmarshal(req.Payload, &p)
	c := call{Tenant: h.phones[req.PhoneNumberID], InternalID: p.Text.Body, To: p.To, Token: req.Token, Start: h.now()}
	h.mu.Lock()
	i := len(h.calls)
	h.calls = append(h.calls, c)
	meta := h.meta
	h.mu.Unlock()

	r := meta(c)
	if r.Panic != nil {
		h.mu.Lock()
		h.calls[i].Panicked = true
		h.mu.Unlock()
		panic(r.Panic)
	}
	err := r.Err
	if r.Delay > 0 {
		select {
		case <-time.After(r.Delay):
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	h.mu.Lock()
	h.calls[i].End, h.calls[i].Err = h.now(), err
	h.mu.Unlock()
	if err != nil {
		return whatsapp.Response{}, err
	}
	return whatsapp.Response{WAMID: "wamid." + c.InternalID, HTTPStatus: 200}, nil
}

// Replies of the fake Meta.
var (
	// errTransient is Meta's HTTP 500 with code 1 (an unknown error).
	errTransient = &whatsapp.APIError{HTTPStatus: 500, Code: 1, HasCode: true, Message: "An unknown error occurred"}
	// errPermanent is 131026: the message is undeliverable.
	errPermanent = &whatsapp.APIError{HTTPStatus: 400, Code: 131026, HasCode: true, Message: "Message undeliverable"}
	// errAuth is 190: the access token expired or was revoked.
	errAuth = &whatsapp.APIError{HTTPStatus: 401, Code: 190, HasCode: true, Message: "Error validating access token"}
	// errThrottled is 130429: the number's throughput limit.
	errThrottled = &whatsapp.APIError{HTTPStatus: 429, Code: 130429, HasCode: true, Message: "Rate limit hit"}
	// errTimeout is the client timing out.
	errTimeout = fmt.Errorf("send: %w", whatsapp.ErrTimeout)
)

// always returns a metaFunc that gives every call r.
func always(r reply) metaFunc { return func(call) reply { return r } }

// forTenant returns a metaFunc giving tenant's calls r and the others
// success.
func forTenant(tenant string, r reply) metaFunc {
	return func(c call) reply {
		if c.Tenant == tenant {
			return r
		}
		return reply{}
	}
}

// now is the virtual time since the bubble started.
func (h *harness) now() time.Duration { return time.Since(h.t0) }

// at is the instant d after the bubble started.
func (h *harness) at(d time.Duration) time.Time { return h.t0.Add(d) }

// settle waits until every goroutine of the bubble is blocked: every
// message handled, every send and settlement that can finish finished, at
// the current instant.
func (h *harness) settle() { synctest.Wait() }

// advanceTo lets virtual time run until d after the start, then settles.
func (h *harness) advanceTo(d time.Duration) {
	h.t.Helper()
	require.GreaterOrEqual(h.t, d, h.now(), "time only runs forward")
	time.Sleep(d - h.now())
	h.settle()
}

// advance lets virtual time run for d, then settles.
func (h *harness) advance(d time.Duration) { h.advanceTo(h.now() + d) }

// jobBody is a job for tenant with internal id id to recipient to. The
// message text is the internal id, so the fake Meta can tell jobs apart.
func jobBody(tenant, id, to string) []byte {
	if to == ownRecipient {
		to = recipientFor(id)
	}
	b, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"tenantId": tenant, "internalId": id},
		"wabaPayload": map[string]any{"messaging_product": "whatsapp", "to": to, "type": "text",
			"text": map[string]any{"body": id}},
	})
	if err != nil {
		panic(err)
	}
	return b
}

// deliver hands a delivery to the router without waiting.
func (h *harness) deliver(body []byte, headers map[string]any) {
	h.root.Send(h.router, testkit.NewFakeDelivery(body, headers))
}

// publishTo delivers a job for tenant to recipient to and settles.
func (h *harness) publishTo(tenant, id, to string) {
	h.deliver(jobBody(tenant, id, to), nil)
	h.settle()
}

// publish delivers a job for tenant to a recipient of its own and settles.
func (h *harness) publish(tenant, id string) { h.publishTo(tenant, id, ownRecipient) }

// ask sends msg to the router and returns its answer.
func (h *harness) ask(msg any) any {
	h.t.Helper()
	res, err := h.root.RequestFuture(h.router, msg, AskTimeout).Result()
	require.NoError(h.t, err)
	return res
}

// askTenant sends an admin message about one tenant and returns its info.
func (h *harness) askTenant(msg any) messages.TenantInfo {
	h.t.Helper()
	res := h.ask(msg)
	info, ok := res.(*messages.TenantInfo)
	require.True(h.t, ok, "answer is a *TenantInfo, got %T", res)
	return *info
}

// info asks the router for one tenant's info (starting its actor if it
// has none, as GetTenant does).
func (h *harness) info(tenant string) messages.TenantInfo {
	return h.askTenant(&messages.GetTenant{TenantID: tenant})
}

// listed returns one tenant's entry of ListTenants, which starts no actor.
func (h *harness) listed(tenant string) messages.TenantInfo {
	h.t.Helper()
	res := h.ask(&messages.ListTenants{})
	list, ok := res.(*messages.TenantList)
	require.True(h.t, ok, "answer is a *TenantList, got %T", res)
	for _, info := range list.Tenants {
		if info.ID == tenant {
			return info
		}
	}
	require.FailNow(h.t, "tenant not listed", tenant)
	return messages.TenantInfo{}
}

func (h *harness) pause(tenant string) messages.TenantInfo {
	return h.askTenant(&messages.PauseTenant{TenantID: tenant})
}

func (h *harness) resume(tenant string) messages.TenantInfo {
	return h.askTenant(&messages.ResumeTenant{TenantID: tenant})
}

// callsOf returns the calls Meta received for tenant (every tenant when
// tenant is ""), in the order they started, panicked ones included.
func (h *harness) callsOf(tenant string) []call {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []call
	for _, c := range h.calls {
		if tenant == "" || c.Tenant == tenant {
			out = append(out, c)
		}
	}
	return out
}

// callStarts returns when each of tenant's calls started.
func (h *harness) callStarts(tenant string) []time.Duration {
	var out []time.Duration
	for _, c := range h.callsOf(tenant) {
		out = append(out, c.Start)
	}
	return out
}

// callsFor returns the calls made for one job.
func (h *harness) callsFor(internalID string) []call {
	var out []call
	for _, c := range h.callsOf("") {
		if c.InternalID == internalID {
			out = append(out, c)
		}
	}
	return out
}

// results returns the results published for one job, in order.
func (h *harness) results(internalID string) []messages.Result {
	var out []messages.Result
	for _, r := range h.broker.Results() {
		if r.InternalID == internalID {
			out = append(out, r)
		}
	}
	return out
}

// result returns the one result of a job.
func (h *harness) result(internalID string) messages.Result {
	h.t.Helper()
	rs := h.results(internalID)
	require.Len(h.t, rs, 1, "one result for %s", internalID)
	return rs[0]
}

// statuses counts the results of the jobs of tenant by status.
func (h *harness) statuses(tenant string) map[string]int {
	out := map[string]int{}
	for _, r := range h.broker.Results() {
		if r.TenantID == tenant {
			out[r.Status]++
		}
	}
	return out
}

// copies returns the copies of kind (deferred, requeued, dead_letter)
// published for one job, in order; "" matches every job.
func (h *harness) copies(kind testkit.Kind, internalID string) []broker.Message {
	var out []broker.Message
	for _, m := range h.broker.Messages(kind) {
		if internalID == "" || internalIDOf(m.Publishing.Body) == internalID {
			out = append(out, m)
		}
	}
	return out
}

// deadLetter returns the one dead letter of a job.
func (h *harness) deadLetter(internalID string) broker.Message {
	h.t.Helper()
	dl := h.copies(testkit.KindDeadLetter, internalID)
	require.Len(h.t, dl, 1, "one dead letter for %s", internalID)
	return dl[0]
}

func internalIDOf(body []byte) string {
	var env struct {
		Metadata struct {
			InternalID string `json:"internalId"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(body, &env)
	return env.Metadata.InternalID
}

// logLine is one decoded JSON log line.
type logLine map[string]any

// At is when the line was logged, since the bubble's start.
func (l logLine) At(h *harness) time.Duration {
	ts, _ := time.Parse(time.RFC3339Nano, l["time"].(string))
	return ts.Sub(h.t0)
}

// logs returns the lines logged with message event, in order; tenant ""
// matches every tenant.
func (h *harness) logs(event, tenant string) []logLine {
	var out []logLine
	sc := bufio.NewScanner(bytes.NewReader(h.log.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			continue
		}
		if l["msg"] == event && (tenant == "" || l["tenantId"] == tenant) {
			out = append(out, l)
		}
	}
	return out
}

// deferReasons lists the reasons of one job's message_deferred lines.
func (h *harness) deferReasons(internalID string) []string {
	var out []string
	for _, l := range h.logs("message_deferred", "") {
		if l["internalId"] == internalID {
			out = append(out, l["reason"].(string))
		}
	}
	return out
}

// header reads an integer header of a copy the actors published.
func header(m broker.Message, key string) int64 {
	v, _ := m.Publishing.Headers[key].(int64)
	return v
}
