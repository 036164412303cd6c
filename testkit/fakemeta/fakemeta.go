// Package fakemeta is a fake WhatsApp Cloud API (Graph API) server for the
// tests, the demo, the benchmark suite and `wadispatch fakemeta`. It serves
// POST /{version}/{phone-number-id}/messages over real HTTP, checks the
// bearer token and the payload the way the Cloud API does, answers unique
// wamids, logs every call, and can be scripted per phone number id to fail,
// be slow, hang or enforce rates (Behaviour).
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
// which expired pair-rate entries are swept, keeping long benchmarks bounded.
const pairSweepSize = 4096

// Rate is a token bucket: Burst tokens at most, refilled at PerMinute.
type Rate struct {
	PerMinute float64
	Burst     int // values below 1 count as 1
}

// Behaviour scripts how the fake answers one phone number id. The zero value
// answers every valid request with success at once.
type Behaviour struct {
	// Latency is added before answering.
	Latency time.Duration
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
	// RateLimit enforces a token bucket per phone id; a request above it is
	// answered code 130429 (HTTP 429) and takes no token.
	RateLimit *Rate
	// PairRate is the minimum interval between two accepted sends to the
	// same "to"; a faster one is answered code 131056 (HTTP 400).
	PairRate time.Duration
}

// Call is one request the fake received, as logged once it was answered.
type Call struct {
	PhoneNumberID string
	Token         string    // bearer token received; compare, never print
	Body          []byte    // request body exactly as received
	To            string    // payload "to", when the body had one
	At            time.Time // when the request arrived
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

	phonesMu sync.RWMutex
	phones   map[string]*phoneState

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
	mu       sync.Mutex
	known    bool
	token    string
	b        Behaviour
	failed   int
	tokens   float64
	refilled time.Time
	lastSend map[string]time.Time
	sweepAt  int
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

// SetClock makes the fake read time from now (for Call.At, the rate bucket
// and pair rate), e.g. a testkit.FakeClock's Now. Latency and Hang still
// use real time. The default is time.Now.
func (f *Server) SetClock(now func() time.Time) {
	f.now.Store(&now)
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
// behaviour and resetting its failure count, rate bucket and pair-rate memory.
func (f *Server) Behave(phoneNumberID string, b Behaviour) {
	if b.RateLimit != nil {
		r := *b.RateLimit
		b.RateLimit = &r // the caller may reuse its Rate
	}
	p := f.phone(phoneNumberID, true)
	now := f.clock()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.b = b
	p.failed = 0
	p.tokens = 0
	if b.RateLimit != nil {
		p.tokens = float64(max(b.RateLimit.Burst, 1))
	}
	p.refilled = now
	p.lastSend = nil
	p.sweepAt = 0
}

// Calls returns a copy of the call log in arrival order. A call is logged
// when it is answered, or abandoned for a hang.
func (f *Server) Calls() []Call {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	out := make([]Call, len(f.calls))
	for i, c := range f.calls {
		out[i] = c.call
	}
	return out
}

// Reset clears the call log; tenants and behaviour are kept.
func (f *Server) Reset() {
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
		ans = f.decide(r.Context(), phoneID, call.Token, p.To, payloadErr)
	} else {
		ans = graphError(http.StatusNotFound, 100, 0, "OAuthException",
			fmt.Sprintf("Unsupported %s request. Unknown path %q.", r.Method, r.URL.Path), "")
	}

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

// decide runs the checks in Meta's order: auth, payload, then behaviour.
func (f *Server) decide(ctx context.Context, phoneID, token, to string, payloadErr error) answer {
	p := f.phone(phoneID, false)
	var (
		known bool
		want  string
		b     Behaviour
	)
	if p != nil {
		p.mu.Lock()
		known, want, b = p.known, p.token, p.b
		p.mu.Unlock()
	}
	switch {
	case !known:
		return graphError(http.StatusBadRequest, 100, 33, "GraphMethodException",
			fmt.Sprintf("Unsupported post request. Object with ID '%s' does not exist, cannot be loaded due to missing permissions, or does not support this operation.", phoneID), "")
	case token == "":
		return graphError(http.StatusUnauthorized, 190, 0, "OAuthException",
			"An access token is required to request this resource.", "")
	case subtle.ConstantTimeCompare([]byte(token), []byte(want)) != 1:
		return graphError(http.StatusUnauthorized, 190, 0, "OAuthException",
			"Invalid OAuth access token - Cannot parse access token", "")
	case payloadErr != nil:
		return graphError(http.StatusBadRequest, 100, 0, "OAuthException",
			"(#100) Invalid parameter", payloadErr.Error())
	}

	if b.Hang {
		select {
		case <-ctx.Done():
		case <-f.closed:
		}
		return answer{abort: true}
	}
	if b.Latency > 0 {
		t := time.NewTimer(b.Latency)
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
	return f.account(p, phoneID, to)
}

// account applies the scripted failures and rates under the phone's lock,
// which is never held while waiting.
func (f *Server) account(p *phoneState, phoneID, to string) answer {
	now := f.clock()
	p.mu.Lock()
	defer p.mu.Unlock()
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
		burst := float64(max(r.Burst, 1))
		if elapsed := now.Sub(p.refilled); elapsed > 0 && r.PerMinute > 0 {
			p.tokens = min(burst, p.tokens+elapsed.Minutes()*r.PerMinute)
		}
		if now.After(p.refilled) {
			p.refilled = now
		}
		if p.tokens < 1 {
			msg, details := codeText(130429)
			return graphError(http.StatusTooManyRequests, 130429, 0, "OAuthException", msg, details)
		}
	}

	if b.PairRate > 0 {
		if last, ok := p.lastSend[to]; ok && now.Sub(last) < b.PairRate {
			msg, details := codeText(131056)
			return graphError(http.StatusBadRequest, 131056, 0, "OAuthException", msg, details)
		}
		if p.lastSend == nil {
			p.lastSend = make(map[string]time.Time)
		}
		if len(p.lastSend) >= max(p.sweepAt, pairSweepSize) {
			for k, t := range p.lastSend {
				if now.Sub(t) >= b.PairRate {
					delete(p.lastSend, k)
				}
			}
			// Amortised: sweep again only once the live set has doubled.
			p.sweepAt = 2 * len(p.lastSend)
		}
		p.lastSend[to] = now
	}
	if b.RateLimit != nil {
		p.tokens--
	}

	return answer{
		status: http.StatusOK,
		wamid:  "wamid.FAKE." + phoneID + "." + strconv.FormatUint(f.wamids.Add(1), 10),
	}
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
