// Package fakemeta is a fake WhatsApp Cloud API (Graph API) server for the
// tests, the demo, the benchmark suite and `wadispatch fakemeta`. It serves
// POST /{version}/{phone-number-id}/messages over real HTTP, checks the
// bearer token and the payload the way the Cloud API does, answers unique
// wamids, logs every call (CallLog, with arrival and answer times), and can
// be scripted per phone number id, or for all of them at once, to fail, be
// slow (a fixed or log-normal Latency), hang or enforce Meta's throughput and
// pair rates (Behaviour).
//
// It imports nothing outside the standard library, so the production binary
// can serve it without linking testing or any test library; the helper that
// starts one for a test is testkit.StartFakeMeta.
package fakemeta

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxBodyBytes bounds what the fake reads of a request body; jobs are at most
// 256 KiB, so anything near this is a client bug worth a 400.
const maxBodyBytes = 4 << 20

// closeDrainTimeout bounds how long Close waits for released handlers to log
// their calls, so a stuck client can never hang a test's cleanup.
const closeDrainTimeout = 5 * time.Second

// pairSweepSize is the number of remembered recipients per phone id above
// which full pair-rate buckets are swept, keeping long benchmarks bounded.
const pairSweepSize = 4096

// tokenEpsilon absorbs float rounding in refills, so that e.g. 6 s at 10 a
// minute always makes a whole token however the 6 s were split.
const tokenEpsilon = 1e-9

// Rate is a token bucket: Burst tokens at most, refilled at PerMinute. A
// bucket starts full.
type Rate struct {
	PerMinute float64 // values at or below 0 never refill
	Burst     int     // values below 1 count as 1
}

// bucket is one token bucket's state.
type bucket struct {
	tokens float64
	at     time.Time // last refill
}

func fullBucket(r *Rate, now time.Time) bucket {
	return bucket{tokens: float64(max(r.Burst, 1)), at: now}
}

// refill adds what r made since the last refill. Clock readings taken by
// concurrent requests may arrive out of order; an older one refills nothing.
func (b *bucket) refill(r *Rate, now time.Time) {
	burst := float64(max(r.Burst, 1))
	if elapsed := now.Sub(b.at); elapsed > 0 && r.PerMinute > 0 {
		b.tokens = min(burst, b.tokens+elapsed.Minutes()*r.PerMinute)
	}
	if now.After(b.at) {
		b.at = now
	}
}

func (b *bucket) has() bool { return b.tokens >= 1-tokenEpsilon }

// full reports whether b would be full at now, i.e. no different from a
// bucket never used.
func (b bucket) full(r *Rate, now time.Time) bool {
	b.refill(r, now)
	return b.tokens >= float64(max(r.Burst, 1))-tokenEpsilon
}

// Latency is how long the fake takes to answer: fixed at Median when Sigma
// is 0, else log-normal with median Median and Sigma the standard deviation
// of the underlying normal (0.5 gives a p90 of about 1.9 x Median and a p99
// of about 3.2 x Median). Max caps every sample, fixed ones included; 0
// means no cap. Meta's Cloud API is roughly {Median: 300ms, Sigma: 0.5,
// Max: 5s}.
type Latency struct {
	Median time.Duration
	Max    time.Duration
	Sigma  float64
}

// Sample draws one latency using r (the global source when r is nil). It
// draws from r only when Sigma > 0 and Median > 0, so fixed latencies leave
// r untouched.
func (l Latency) Sample(r *rand.Rand) time.Duration {
	d := l.Median
	if l.Sigma > 0 && d > 0 {
		z := rand.NormFloat64()
		if r != nil {
			z = r.NormFloat64()
		}
		x := float64(d) * math.Exp(l.Sigma*z)
		if x >= math.MaxInt64 {
			d = math.MaxInt64
		} else {
			d = time.Duration(x)
		}
	}
	if l.Max > 0 && d > l.Max {
		d = l.Max
	}
	return max(d, 0)
}

// Validate reports a latency that cannot be meant: negative durations or a
// negative or non-finite Sigma.
func (l Latency) Validate() error {
	switch {
	case l.Median < 0:
		return fmt.Errorf("latency median %s is negative", l.Median)
	case l.Max < 0:
		return fmt.Errorf("latency max %s is negative", l.Max)
	case l.Sigma < 0 || math.IsNaN(l.Sigma) || math.IsInf(l.Sigma, 0):
		return fmt.Errorf("latency sigma %g must be a finite number >= 0", l.Sigma)
	}
	return nil
}

func (l Latency) String() string {
	s := l.Median.String()
	if l.Sigma > 0 {
		s = fmt.Sprintf("log-normal median %s sigma %g", l.Median, l.Sigma)
	}
	if l.Max > 0 {
		s += " max " + l.Max.String()
	}
	return s
}

// Behaviour scripts how the fake answers one phone number id. The zero value
// answers every valid request with success at once.
type Behaviour struct {
	// Latency is how long the fake waits before answering a request that
	// passed the auth and payload checks, whatever the answer (success,
	// scripted failure or rate refusal). It is sampled per request, and
	// waited in real time (a synctest bubble's time in such a test): the
	// clock of SetClock does not drive it.
	Latency Latency
	// Hang never answers: the call ends when the client gives up (its request
	// context is done) or the server is closed, and is logged with Status 0.
	Hang bool
	// FailCode is the Graph error code to answer with. 0 means no scripted
	// failure unless FailHTTP is set, which scripts code 0 (AuthException).
	FailCode int
	// FailSubcode is the error_subcode to answer with FailCode (0 = none).
	FailSubcode int
	// FailHTTP is the HTTP status of the scripted failure; 0 picks it from
	// the code: 429 for 4/80007/130429, 401 for 0/190, 500 for 1/2/131000,
	// 400 otherwise.
	FailHTTP int
	// FailTimes answers the failure this many times, then succeeds;
	// 0 fails forever. It applies to FailRaw as well.
	FailTimes int
	// FailRaw answers this bare HTTP status with an empty body (e.g. 500),
	// taking precedence over FailCode.
	FailRaw int
	// RateLimit enforces a token bucket per phone id (Meta: 80 messages a
	// second, e.g. {PerMinute: 4800, Burst: 80}; 1,000 a second upgraded). The
	// token is taken when the request arrives, before Latency, so requests
	// in flight at once all count. A request above it is answered code
	// 130429 (HTTP 429) after Latency, takes no token and is counted by
	// RateLimited.
	RateLimit *Rate
	// PairRate enforces a token bucket per recipient ("to") of the phone id:
	// Meta allows about one message every 6 s to the same user, in bursts of
	// up to 45 that borrow from later, i.e. {PerMinute: 10, Burst: 45}. It
	// is checked at arrival, before RateLimit takes its token; a request
	// above it is answered code 131056 (HTTP 400) after Latency, takes no
	// token of either bucket and is counted by PairLimited. Full buckets are
	// forgotten, so memory follows the recipients sent to lately.
	PairRate *Rate
}

// clone copies b so the caller may reuse its Rates.
func (b Behaviour) clone() Behaviour {
	if b.RateLimit != nil {
		r := *b.RateLimit
		b.RateLimit = &r
	}
	if b.PairRate != nil {
		r := *b.PairRate
		b.PairRate = &r
	}
	return b
}

// Call is one request the fake received, as logged once it was answered.
type Call struct {
	PhoneNumberID string
	Token         string    // bearer token received; compare, never print
	Body          []byte    // request body exactly as received
	To            string    // payload "to", when the body had one
	At            time.Time // when the request arrived
	AnsweredAt    time.Time // when the answer was decided, just before it was written (or the call abandoned); same clock as At
	Status        int       // HTTP status answered; 0 when none was (hang, client gone)
	WAMID         string    // answered wamid, "" on error
	ErrorCode     int       // answered Graph error code, 0 on success
}

// Server is a fake WhatsApp Cloud API (Graph API) server over real HTTP.
// It serves POST /{version}/{phone-number-id}/messages, checks the bearer
// token registered for the phone number id and the payload, answers a unique
// wamid and logs every call. Each phone number id can be scripted with a
// Behaviour. Safe for concurrent use; no lock is held while a request waits.
type Server struct {
	srv      *http.Server
	ln       net.Listener
	closed   chan struct{}
	closeOne sync.Once
	closeErr error

	now    atomic.Pointer[func() time.Time]
	seq    atomic.Uint64 // arrival order
	wamids atomic.Uint64

	randMu sync.Mutex
	rng    *rand.Rand // latency samples

	phonesMu sync.RWMutex
	phones   map[string]*phoneState
	def      Behaviour // for phones without Behave of their own

	logMu    sync.Mutex
	calls    []loggedCall
	inFlight int
	changed  chan struct{} // closed on any log or in-flight change; nil while nobody waits
}

type loggedCall struct {
	seq  uint64
	call Call
}

// phoneState is one phone number id's registration and scripted state.
type phoneState struct {
	mu      sync.Mutex
	known   bool
	token   string
	own     bool // b was set by Behave, not SetDefault
	b       Behaviour
	failed  int
	rate    bucket
	pairs   map[string]bucket // recipients whose pair bucket is not full
	sweepAt int

	rateLimited int // 130429 answers from RateLimit since the last Reset
	pairLimited int // 131056 answers from PairRate since the last Reset
}

// behave replaces p's behaviour and resets its failure count, rate bucket
// and pair-rate memory; the refusal counts are kept. p.mu must be held.
func (p *phoneState) behave(b Behaviour, now time.Time) {
	p.b = b
	p.failed = 0
	p.rate = bucket{}
	if b.RateLimit != nil {
		p.rate = fullBucket(b.RateLimit, now)
	}
	p.pairs = nil
	p.sweepAt = 0
}

// New starts a server on addr (":0" or "127.0.0.1:0" for a free
// port). Close stops it.
func New(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fakemeta: listen on %s: %w", addr, err)
	}
	f := newServer()
	f.ln = ln
	f.srv = &http.Server{
		Handler:           f,
		ReadHeaderTimeout: 10 * time.Second,
		// Aborted hangs and clients that give up are expected here.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = f.srv.Serve(ln) }()
	return f, nil
}

func newServer() *Server {
	f := &Server{
		closed: make(chan struct{}),
		phones: make(map[string]*phoneState),
	}
	now := time.Now
	f.now.Store(&now)
	f.rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	return f
}

// URL returns the base URL, e.g. http://127.0.0.1:12345; clients add
// /{version}/{phone-number-id}/messages.
func (f *Server) URL() string {
	return "http://" + f.ln.Addr().String()
}

// Handler returns the fake's HTTP handler, for mounting it elsewhere.
func (f *Server) Handler() http.Handler {
	return f
}

// Close stops the server, releases hung handlers and waits (briefly) until
// they have logged their calls. It is safe to call more than once.
func (f *Server) Close() error {
	f.closeOne.Do(func() {
		close(f.closed)
		if f.srv != nil {
			f.closeErr = f.srv.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), closeDrainTimeout)
		defer cancel()
		_ = f.waitFor(ctx, func() bool { return f.inFlight == 0 })
	})
	return f.closeErr
}

// SetClock makes the fake read time from now (for Call.At and AnsweredAt,
// the rate bucket and pair rate), e.g. a testkit.FakeClock's Now. Latency
// and Hang still use real time. The default is time.Now.
func (f *Server) SetClock(now func() time.Time) {
	f.now.Store(&now)
}

// SetRand seeds the source latency samples are drawn from (by default a
// random seed), so that a test gets the same latencies on every run.
// Samples are drawn in the order requests are admitted, so each request's
// own latency is reproducible only when requests come one at a time.
func (f *Server) SetRand(seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	f.randMu.Lock()
	defer f.randMu.Unlock()
	f.rng = r
}

func (f *Server) sampleLatency(l Latency) time.Duration {
	if l.Sigma <= 0 || l.Median <= 0 {
		return l.Sample(nil) // draws nothing
	}
	f.randMu.Lock()
	defer f.randMu.Unlock()
	return l.Sample(f.rng)
}

// AddTenant registers a phone number id and the bearer token it accepts,
// replacing a previous token. Behaviour is kept.
func (f *Server) AddTenant(phoneNumberID, token string) {
	p := f.phone(phoneNumberID, true)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.known = true
	p.token = token
}

// Behave sets how the fake answers one phone number id, replacing previous
// behaviour (its own or the default) and resetting its failure count, rate
// bucket and pair-rate memory.
func (f *Server) Behave(phoneNumberID string, b Behaviour) {
	b = b.clone()
	p := f.phone(phoneNumberID, true)
	now := f.clock()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.own = true
	p.behave(b, now)
}

// SetDefault sets the behaviour of every phone number id that has none of
// its own from Behave, registered or not yet, e.g. the same Latency and
// RateLimit for every tenant of a benchmark. Each phone id still has its
// own failure count and buckets, which this resets.
func (f *Server) SetDefault(b Behaviour) {
	b = b.clone()
	now := f.clock()
	f.phonesMu.Lock()
	defer f.phonesMu.Unlock()
	f.def = b
	for _, p := range f.phones {
		p.mu.Lock()
		if !p.own {
			p.behave(b, now)
		}
		p.mu.Unlock()
	}
}

// UseDefault drops the behaviour Behave gave one phone number id, so that
// it follows SetDefault's again (from a fresh failure count and buckets).
func (f *Server) UseDefault(phoneNumberID string) {
	now := f.clock()
	f.phonesMu.RLock()
	defer f.phonesMu.RUnlock()
	p := f.phones[phoneNumberID]
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.own = false
	p.behave(f.def, now)
}

// RateLimited returns how many requests to a phone number id RateLimit
// refused with code 130429 since the server started or the last Reset
// (scripted FailCode answers are not counted).
func (f *Server) RateLimited(phoneNumberID string) int {
	p := f.phone(phoneNumberID, false)
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rateLimited
}

// PairLimited returns how many requests to a phone number id PairRate
// refused with code 131056 since the server started or the last Reset.
func (f *Server) PairLimited(phoneNumberID string) int {
	p := f.phone(phoneNumberID, false)
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pairLimited
}

// Calls returns a copy of the call log in arrival order. A call is logged
// when it is answered, or abandoned for a hang.
func (f *Server) Calls() CallLog {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	out := make(CallLog, len(f.calls))
	for i, c := range f.calls {
		out[i] = c.call
	}
	return out
}

// Reset clears the call log and the RateLimited and PairLimited counts;
// tenants, behaviour and the buckets' state are kept.
func (f *Server) Reset() {
	f.phonesMu.RLock()
	for _, p := range f.phones {
		p.mu.Lock()
		p.rateLimited, p.pairLimited = 0, 0
		p.mu.Unlock()
	}
	f.phonesMu.RUnlock()

	f.logMu.Lock()
	defer f.logMu.Unlock()
	f.calls = nil
	f.notifyLocked()
}

// WaitCalls blocks until at least n calls are logged or ctx is done.
func (f *Server) WaitCalls(ctx context.Context, n int) error {
	if err := f.waitFor(ctx, func() bool { return len(f.calls) >= n }); err != nil {
		return fmt.Errorf("fakemeta: waiting for %d calls: %w", n, err)
	}
	return nil
}

// InFlight returns the number of requests being handled right now (hung and
// slow ones included).
func (f *Server) InFlight() int {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	return f.inFlight
}

// WaitInFlight blocks until at least n requests are being handled at once
// (e.g. a client is stuck on a Hang) or ctx is done.
func (f *Server) WaitInFlight(ctx context.Context, n int) error {
	if err := f.waitFor(ctx, func() bool { return f.inFlight >= n }); err != nil {
		return fmt.Errorf("fakemeta: waiting for %d requests in flight: %w", n, err)
	}
	return nil
}

// waitFor blocks until cond, evaluated under logMu, holds.
func (f *Server) waitFor(ctx context.Context, cond func() bool) error {
	for {
		f.logMu.Lock()
		if cond() {
			f.logMu.Unlock()
			return nil
		}
		if f.changed == nil {
			f.changed = make(chan struct{})
		}
		ch := f.changed
		f.logMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *Server) notifyLocked() {
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

func (f *Server) clock() time.Time {
	return (*f.now.Load())()
}

func (f *Server) phone(id string, create bool) *phoneState {
	f.phonesMu.RLock()
	p := f.phones[id]
	f.phonesMu.RUnlock()
	if p != nil || !create {
		return p
	}
	f.phonesMu.Lock()
	defer f.phonesMu.Unlock()
	if p = f.phones[id]; p == nil {
		p = &phoneState{}
		p.behave(f.def, f.clock())
		f.phones[id] = p
	}
	return p
}

// answer is what the fake decided to reply to one request.
type answer struct {
	status  int
	wamid   string
	code    int
	subcode int
	typ     string
	message string
	details string
	raw     bool // bare status, empty body
	abort   bool // no reply at all
}

// ServeHTTP answers one Graph API request and logs it.
func (f *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	seq := f.seq.Add(1)
	call := Call{At: f.clock(), Token: bearerToken(r)}
	f.enter()
	defer f.leave()

	body, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	call.Body = body
	var p payload
	payloadErr := readErr
	if payloadErr == nil {
		payloadErr = p.parse(body)
	}
	call.To = p.To

	var ans answer
	phoneID, pathOK := messagesPath(r)
	call.PhoneNumberID = phoneID
	if pathOK {
		ans = f.decide(r.Context(), phoneID, call.Token, p.To, payloadErr, call.At)
	} else {
		ans = graphError(http.StatusNotFound, 100, 0, "OAuthException",
			fmt.Sprintf("Unsupported %s request. Unknown path %q.", r.Method, r.URL.Path), "")
	}

	call.AnsweredAt = f.clock()
	if !ans.abort {
		call.Status = ans.status
	}
	call.WAMID = ans.wamid
	call.ErrorCode = ans.code
	f.log(seq, call)

	switch {
	case ans.abort:
		// Nothing may reach the client, not even net/http's implicit 200.
		panic(http.ErrAbortHandler)
	case ans.raw:
		w.WriteHeader(ans.status)
	default:
		writeAnswer(w, ans, p.To)
	}
}

// decide runs the checks in Meta's order: auth, payload, then behaviour,
// which is accounted at arrival and answered after its latency.
func (f *Server) decide(ctx context.Context, phoneID, token, to string, payloadErr error, at time.Time) answer {
	ans, latency, hang := f.admit(phoneID, token, to, payloadErr, at)
	if hang {
		select {
		case <-ctx.Done():
		case <-f.closed:
		}
		return answer{abort: true}
	}
	if d := f.sampleLatency(latency); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return answer{abort: true}
		case <-f.closed:
			t.Stop()
			return answer{abort: true}
		}
	}
	return ans
}

// admit decides the answer under the phone's lock, which is never held
// while waiting: the auth and payload checks (answered at once), then Hang,
// the scripted failures and the rates, whose answer waits the latency
// returned. Tokens are taken here, at arrival.
func (f *Server) admit(phoneID, token, to string, payloadErr error, now time.Time) (_ answer, _ Latency, hang bool) {
	p := f.phone(phoneID, false)
	if p == nil {
		return unknownPhone(phoneID), Latency{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case !p.known:
		return unknownPhone(phoneID), Latency{}, false
	case token == "":
		return graphError(http.StatusUnauthorized, 190, 0, "OAuthException",
			"An access token is required to request this resource.", ""), Latency{}, false
	case subtle.ConstantTimeCompare([]byte(token), []byte(p.token)) != 1:
		return graphError(http.StatusUnauthorized, 190, 0, "OAuthException",
			"Invalid OAuth access token - Cannot parse access token", ""), Latency{}, false
	case payloadErr != nil:
		return graphError(http.StatusBadRequest, 100, 0, "OAuthException",
			"(#100) Invalid parameter", payloadErr.Error()), Latency{}, false
	}
	b := p.b
	if b.Hang {
		return answer{}, Latency{}, true
	}
	return f.account(p, phoneID, to, now), b.Latency, false
}

func unknownPhone(phoneID string) answer {
	return graphError(http.StatusBadRequest, 100, 33, "GraphMethodException",
		fmt.Sprintf("Unsupported post request. Object with ID '%s' does not exist, cannot be loaded due to missing permissions, or does not support this operation.", phoneID), "")
}

// account applies the scripted failures and rates; p.mu must be held.
func (f *Server) account(p *phoneState, phoneID, to string, now time.Time) answer {
	b := p.b

	if b.FailRaw != 0 || b.FailCode != 0 || b.FailHTTP != 0 {
		if b.FailTimes == 0 || p.failed < b.FailTimes {
			p.failed++
			if b.FailRaw != 0 {
				return answer{status: b.FailRaw, raw: true}
			}
			status := b.FailHTTP
			if status == 0 {
				status = defaultHTTPStatus(b.FailCode)
			}
			msg, details := codeText(b.FailCode)
			return graphError(status, b.FailCode, b.FailSubcode, "OAuthException", msg, details)
		}
	}

	if r := b.RateLimit; r != nil {
		p.rate.refill(r, now)
		if !p.rate.has() {
			p.rateLimited++
			msg, details := codeText(130429)
			return graphError(http.StatusTooManyRequests, 130429, 0, "OAuthException", msg, details)
		}
	}

	if r := b.PairRate; r != nil {
		pair, ok := p.pairs[to]
		if !ok {
			pair = fullBucket(r, now)
		}
		pair.refill(r, now)
		if !pair.has() {
			p.pairLimited++
			msg, details := codeText(131056)
			return graphError(http.StatusBadRequest, 131056, 0, "OAuthException", msg, details)
		}
		pair.tokens--
		p.sweepPairs(r, now)
		p.pairs[to] = pair
	}
	if b.RateLimit != nil {
		p.rate.tokens--
	}

	return answer{
		status: http.StatusOK,
		wamid:  "wamid.FAKE." + phoneID + "." + strconv.FormatUint(f.wamids.Add(1), 10),
	}
}

// sweepPairs makes room for one more pair bucket, forgetting full ones
// (they are no different from a recipient never sent to) once there are
// many. Amortised: it sweeps again only once the live set has doubled.
// p.mu must be held.
func (p *phoneState) sweepPairs(r *Rate, now time.Time) {
	if p.pairs == nil {
		p.pairs = make(map[string]bucket)
	}
	if len(p.pairs) < max(p.sweepAt, pairSweepSize) {
		return
	}
	for k, b := range p.pairs {
		if b.full(r, now) {
			delete(p.pairs, k)
		}
	}
	p.sweepAt = 2 * len(p.pairs)
}

func (f *Server) enter() {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	f.inFlight++
	f.notifyLocked()
}

func (f *Server) leave() {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	f.inFlight--
	f.notifyLocked()
}

// log inserts call by arrival order. Calls finish nearly in arrival order,
// so the scan from the end is short.
func (f *Server) log(seq uint64, call Call) {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	i := len(f.calls)
	for i > 0 && f.calls[i-1].seq > seq {
		i--
	}
	f.calls = append(f.calls, loggedCall{})
	copy(f.calls[i+1:], f.calls[i:])
	f.calls[i] = loggedCall{seq: seq, call: call}
	f.notifyLocked()
}

// payload is the part of a Cloud API message object the fake checks.
type payload struct {
	MessagingProduct string `json:"messaging_product"`
	To               string `json:"to"`
	Type             string `json:"type"`
}

var (
	errNotObject        = errors.New("the request body must be a JSON object")
	errMessagingProduct = errors.New("messaging_product must be \"whatsapp\"")
	errNoTo             = errors.New("the parameter to is required")
	errNoType           = errors.New("the parameter type is required")
)

func (p *payload) parse(body []byte) error {
	trimmed := strings.TrimLeft(string(body), " \t\r\n")
	if !strings.HasPrefix(trimmed, "{") {
		return errNotObject
	}
	if err := json.Unmarshal(body, p); err != nil {
		// Keep what could be read (a usable "to") for the call log.
		var loose struct {
			To any `json:"to"`
		}
		if json.Unmarshal(body, &loose) == nil {
			if s, ok := loose.To.(string); ok {
				p.To = s
			}
		}
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	switch {
	case p.MessagingProduct != "whatsapp":
		return errMessagingProduct
	case p.To == "":
		return errNoTo
	case p.Type == "":
		return errNoType
	}
	return nil
}

// messagesPath matches /{version}/{phone}/messages for POST and returns the
// phone number id; for any other request it returns the id it could read.
func messagesPath(r *http.Request) (string, bool) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if len(parts) != 3 || parts[2] != "messages" {
		if len(parts) >= 2 {
			return parts[1], false
		}
		return "", false
	}
	return parts[1], r.Method == http.MethodPost && validVersion(parts[0]) && parts[1] != ""
}

// validVersion accepts Graph versions like v23.0.
func validVersion(v string) bool {
	rest, ok := strings.CutPrefix(v, "v")
	if !ok {
		return false
	}
	major, minor, ok := strings.Cut(rest, ".")
	return ok && allDigits(major) && allDigits(minor)
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func bearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return ""
	}
	return strings.TrimSpace(h[len(prefix):])
}

func defaultHTTPStatus(code int) int {
	switch code {
	case 4, 80007, 130429:
		return http.StatusTooManyRequests
	case 0, 190:
		return http.StatusUnauthorized
	case 1, 2, 131000:
		return http.StatusInternalServerError
	default:
		return http.StatusBadRequest
	}
}

// codeText returns a message and details close to what Meta sends for code.
func codeText(code int) (message, details string) {
	switch code {
	case 0:
		return "AuthException", "Authentication failed."
	case 1:
		return "An unknown error occurred", "Unknown error."
	case 2:
		return "Service temporarily unavailable", "Temporary issue due to downtime."
	case 4:
		return "(#4) Application request limit reached", "The app has reached its API call rate limit."
	case 10:
		return "(#10) Permission denied", "Permission is not granted or has been removed."
	case 100:
		return "(#100) Invalid parameter", "A parameter is missing or invalid."
	case 190:
		return "Error validating access token: Session has expired.", "The access token has expired."
	case 200:
		return "(#200) Permissions error", "Permission is not granted or has been removed."
	case 368:
		return "(#368) Temporarily blocked for policies violations", "The account is restricted for violating a policy."
	case 80007:
		return "(#80007) Rate limit issues", "The WhatsApp Business Account has reached its rate limit."
	case 130429:
		return "(#130429) Rate limit hit", "Cloud API message throughput has been reached."
	case 131000:
		return "(#131000) Something went wrong", "Message failed to send because of an unknown error."
	case 131026:
		return "(#131026) Message undeliverable", "Unable to deliver the message."
	case 131031:
		return "(#131031) Business Account locked", "The WhatsApp Business Account is locked."
	case 131047:
		return "(#131047) Re-engagement message", "More than 24 hours have passed since the recipient last replied."
	case 131048:
		return "(#131048) Spam rate limit hit", "Message failed to send because of restrictions on this phone number."
	case 131056:
		return "(#131056) (Business Account, Consumer Account) pair rate limit hit",
			"Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time."
	case 133010:
		return "(#133010) Account not registered", "The phone number is not registered on the Cloud API."
	default:
		return fmt.Sprintf("(#%d) Scripted failure", code), "Scripted failure from the fake Graph API."
	}
}

func graphError(status, code, subcode int, typ, message, details string) answer {
	return answer{status: status, code: code, subcode: subcode, typ: typ, message: message, details: details}
}

type graphErrorBody struct {
	Error graphErrorDetail `json:"error"`
}

type graphErrorDetail struct {
	Message   string     `json:"message"`
	Type      string     `json:"type"`
	Code      int        `json:"code"`
	Subcode   int        `json:"error_subcode,omitempty"`
	ErrorData *errorData `json:"error_data,omitempty"`
	FBTraceID string     `json:"fbtrace_id"`
}

type errorData struct {
	MessagingProduct string `json:"messaging_product"`
	Details          string `json:"details"`
}

type sendBody struct {
	MessagingProduct string        `json:"messaging_product"`
	Contacts         []sendContact `json:"contacts"`
	Messages         []sendMessage `json:"messages"`
}

type sendContact struct {
	Input string `json:"input"`
	WAID  string `json:"wa_id"`
}

type sendMessage struct {
	ID string `json:"id"`
}

func writeAnswer(w http.ResponseWriter, ans answer, to string) {
	var v any
	if ans.wamid != "" {
		v = sendBody{
			MessagingProduct: "whatsapp",
			Contacts:         []sendContact{{Input: to, WAID: to}},
			Messages:         []sendMessage{{ID: ans.wamid}},
		}
	} else {
		d := graphErrorDetail{
			Message:   ans.message,
			Type:      ans.typ,
			Code:      ans.code,
			Subcode:   ans.subcode,
			FBTraceID: fbtraceID(),
		}
		if ans.details != "" {
			d.ErrorData = &errorData{MessagingProduct: "whatsapp", Details: ans.details}
		}
		v = graphErrorBody{Error: d}
		if ans.status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `OAuth "Facebook Platform" "invalid_token" "`+ans.message+`"`)
		}
	}
	out, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(ans.status)
	_, _ = w.Write(out)
}

const traceAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

// fbtraceID returns an id shaped like Meta's, e.g. "AbC3x...".
func fbtraceID() string {
	var b [23]byte
	b[0] = 'A'
	for i := 1; i < len(b); i++ {
		b[i] = traceAlphabet[rand.IntN(len(traceAlphabet))]
	}
	return string(b[:])
}
