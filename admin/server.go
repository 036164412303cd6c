package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
)

// Tenants is what the admin API asks about tenants. Every method is bounded
// by the implementation (the worker's is actors.Directory, which asks the
// router with a timeout) and by ctx. Errors matching messages.ErrUnknownTenant
// answer 404; errors matching messages.ErrNoAnswer answer 503 with the
// error's text as the reason, so that text must be fit for an operator and
// free of secrets; any other error answers 500.
type Tenants interface {
	List(ctx context.Context) ([]messages.TenantInfo, error)
	Get(ctx context.Context, id string) (messages.TenantInfo, error)
	Pause(ctx context.Context, id string) (messages.TenantInfo, error)
	Resume(ctx context.Context, id string) (messages.TenantInfo, error)
	ResetBreaker(ctx context.Context, id string) (messages.TenantInfo, error)
}

// The http.Server's limits. writeTimeout leaves room for the slowest
// answer: a question that runs into its timeout, or a /metrics scrape that
// asks every tenant.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 64 << 10
)

// Errors New returns.
var (
	ErrTokenRequired = config.ErrAdminTokenRequired
	ErrInvalidAddr   = errors.New("invalid ADMIN_ADDR")
)

// ErrAlreadyStarted is returned by a second Start.
var ErrAlreadyStarted = errors.New("admin server already started")

// Options configures a Server.
type Options struct {
	// Addr is ADMIN_ADDR, the host:port to listen on (port 0 picks one).
	Addr string
	// Token is ADMIN_TOKEN; when set, every route but /healthz and /readyz requires
	// "Authorization: Bearer <Token>". Required unless Addr is loopback.
	Token string
	// Tenants answers every question about tenants; required.
	Tenants Tenants
	// Ready answers /readyz; nil means always ready.
	Ready func() bool
	// Role, when set, is said by /readyz beside its status (e.g. how many
	// shards the worker owns, or that it is a standby).
	Role func() string
	// Shards answers GET /v1/shards (a JSON value); nil answers 404.
	Shards func() any
	// Config answers GET /v1/config (a JSON value); nil answers 404.
	Config func() any
	// Reload answers POST /v1/reload: 200 with its value, or 422 with the
	// error's one line; nil answers 404.
	Reload func(ctx context.Context) (any, error)
	// Metrics serves /metrics; nil answers 404.
	Metrics http.Handler
	// Logger defaults to discarding.
	Logger *slog.Logger
	// MetricsOnly serves /healthz, /readyz and /metrics and nothing else,
	// without a token (METRICS_ADDR): a scraper's listener that can neither
	// change state nor read a tenant's. Tenants is not needed then.
	MetricsOnly bool
}

// Server is the admin HTTP server. Its methods are safe for concurrent use.
type Server struct {
	opts    Options
	log     *slog.Logger
	handler http.Handler
	srv     *http.Server

	mu      sync.Mutex
	ln      net.Listener
	serving chan struct{} // closed when Serve returns
}

// New checks opts and builds a Server; it does not listen yet (see Start).
// It refuses an Addr beyond loopback (127.0.0.0/8, ::1, localhost) without a
// Token.
func New(opts Options) (*Server, error) {
	if opts.Tenants == nil && !opts.MetricsOnly {
		return nil, errors.New("admin: Options.Tenants is required")
	}
	if _, _, err := net.SplitHostPort(opts.Addr); err != nil {
		return nil, fmt.Errorf("%w: must be host:port like 127.0.0.1:8081 (got %q)", ErrInvalidAddr, opts.Addr)
	}
	if opts.MetricsOnly {
		opts.Token = ""
	} else if err := config.CheckAdminToken(opts.Addr, opts.Token); err != nil {
		return nil, err
	}
	if opts.Ready == nil {
		opts.Ready = func() bool { return true }
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: opts.Logger}
	s.handler = s.routes()
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Handler is the server's routes with authentication, for tests and for
// embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Start listens on Addr now, so that an error such as "address already in
// use" is returned here, then serves in the background until Shutdown.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return ErrAlreadyStarted
	}
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("admin: listen on ADMIN_ADDR %s: %w", s.opts.Addr, err)
	}
	s.ln = ln
	s.serving = make(chan struct{})
	event := "admin_listening"
	if s.opts.MetricsOnly {
		event = "metrics_listening"
	}
	s.log.Info(event, slog.String("addr", ln.Addr().String()), slog.Bool("auth", s.opts.Token != ""))
	go func() {
		defer close(s.serving)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin_serve_failed", slog.String("error", err.Error()))
		}
	}()
	return nil
}

// Addr is the address the server listens on (the real port when Addr asked
// for port 0), or Options.Addr before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return s.opts.Addr
	}
	return s.ln.Addr().String()
}

// Shutdown stops accepting requests and waits, within ctx, for the ones in
// progress. It is a no-op before Start.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	serving := s.serving
	s.mu.Unlock()
	if serving == nil {
		return nil
	}
	if err := s.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	select {
	case <-serving:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("admin: shutdown: %w", ctx.Err())
	}
}

type route struct {
	method, path string
	handler      http.HandlerFunc
}

// routes builds the mux. Each path also gets a method-less pattern that
// answers 405 in JSON (the mux's own 405 is plain text), and "/" answers 404
// in JSON. Cross-origin browser requests that change state are refused, so
// a web page cannot pause a tenant through a loopback listener.
func (s *Server) routes() http.Handler {
	rs := []route{
		{http.MethodGet, "/healthz", s.healthz},
		{http.MethodGet, "/readyz", s.readyz},
		{http.MethodGet, "/metrics", s.metrics},
	}
	if !s.opts.MetricsOnly {
		rs = append(rs, s.tenantRoutes()...)
	}
	return s.serve(rs)
}

// tenantRoutes are the routes that read or change tenants and the
// configuration.
func (s *Server) tenantRoutes() []route {
	return []route{
		{http.MethodGet, "/v1/tenants", s.listTenants},
		{http.MethodGet, "/v1/shards", s.shards},
		{http.MethodGet, "/v1/config", s.config},
		{http.MethodPost, "/v1/reload", s.reload},
		{http.MethodGet, "/v1/tenants/{id}", s.tenant("", s.opts.Tenants.Get)},
		{http.MethodPost, "/v1/tenants/{id}/breaker/reset", s.tenant("breaker_reset", s.opts.Tenants.ResetBreaker)},
		{http.MethodPost, "/v1/tenants/{id}/pause", s.tenant("pause", s.opts.Tenants.Pause)},
		{http.MethodPost, "/v1/tenants/{id}/resume", s.tenant("resume", s.opts.Tenants.Resume)},
	}
}

func (s *Server) serve(rs []route) http.Handler {
	mux := http.NewServeMux()
	allowed := map[string][]string{}
	var paths []string
	for _, r := range rs {
		mux.HandleFunc(r.method+" "+r.path, r.handler)
		if _, seen := allowed[r.path]; !seen {
			paths = append(paths, r.path)
		}
		allowed[r.path] = append(allowed[r.path], r.method)
		if r.method == http.MethodGet {
			allowed[r.path] = append(allowed[r.path], http.MethodHead)
		}
	}
	for _, p := range paths {
		mux.Handle(p, methodNotAllowed(allowed[p]))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such route %s %s", r.Method, r.URL.Path))
	})

	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused")
	}))
	return s.authenticate(cop.Handler(mux))
}

func methodNotAllowed(methods []string) http.Handler {
	allow := strings.Join(slices.Compact(slices.Sorted(slices.Values(methods))), ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s; use %s", r.Method, r.URL.Path, allow))
	})
}

// authenticate requires the bearer token on every path but the probes
// (/healthz, /readyz: a kubelet's probe cannot keep a secret), when a
// token is set. Both sides are hashed before the constant-time comparison
// so that not even the token's length leaks.
func (s *Server) authenticate(next http.Handler) http.Handler {
	if s.opts.Token == "" {
		return next
	}
	want := sha256.Sum256([]byte(s.opts.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		got := sha256.Sum256([]byte(strings.TrimSpace(cred)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wadispatch"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token; send the worker's ADMIN_TOKEN as \"Authorization: Bearer <token>\"")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	body := map[string]string{"status": "ready"}
	status := http.StatusOK
	if !s.opts.Ready() {
		body["status"], status = "not ready", http.StatusServiceUnavailable
	}
	if s.opts.Role != nil {
		body["role"] = s.opts.Role()
	}
	writeJSON(w, status, body)
}

func (s *Server) config(w http.ResponseWriter, _ *http.Request) {
	if s.opts.Config == nil {
		writeError(w, http.StatusNotFound, "no configuration to show")
		return
	}
	writeJSON(w, http.StatusOK, s.opts.Config())
}

// reload reloads the tenants file; a file that fails validation is 422
// with the same line a start-up would print, and nothing changes.
func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	if s.opts.Reload == nil {
		writeError(w, http.StatusNotFound, "reloading is not enabled")
		return
	}
	res, err := s.opts.Reload(r.Context())
	switch {
	case errors.Is(err, messages.ErrNoAnswer):
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	s.log.Info("admin_command", slog.String("command", "reload"), slog.String("remoteAddr", r.RemoteAddr))
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) shards(w http.ResponseWriter, _ *http.Request) {
	if s.opts.Shards == nil {
		writeError(w, http.StatusNotFound, "this worker does not shard")
		return
	}
	writeJSON(w, http.StatusOK, s.opts.Shards())
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if s.opts.Metrics == nil {
		writeError(w, http.StatusNotFound, "metrics are not enabled")
		return
	}
	s.opts.Metrics.ServeHTTP(w, r)
}

// tenantList is the body of GET /v1/tenants.
type tenantList struct {
	Tenants []messages.TenantInfo `json:"tenants"`
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) {
	tenants, err := s.opts.Tenants.List(r.Context())
	if err != nil {
		s.fail(w, r, "", err)
		return
	}
	if tenants == nil {
		tenants = []messages.TenantInfo{}
	}
	writeJSON(w, http.StatusOK, tenantList{Tenants: tenants})
}

// tenant handles a question about one tenant. A named command that reached
// its tenant is logged, as an audit trail.
func (s *Server) tenant(command string, ask func(ctx context.Context, id string) (messages.TenantInfo, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		info, err := ask(r.Context(), id)
		if err != nil {
			s.fail(w, r, id, err)
			return
		}
		if command != "" {
			s.log.Info("admin_command", slog.String("command", command), slog.String("tenantId", id),
				slog.String("remoteAddr", r.RemoteAddr))
		}
		writeJSON(w, http.StatusOK, info)
	}
}

// fail answers a question that got no tenant state: 404 for a tenant that
// is not configured, 409 for a command to a tenant another worker owns, 503 with the reason when nobody answered in time, 500
// for anything else.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, id string, err error) {
	switch {
	case errors.Is(err, messages.ErrUnknownTenant):
		writeError(w, http.StatusNotFound, fmt.Sprintf("tenant %q is not configured", id))
	case errors.Is(err, messages.ErrOwnedElsewhere):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, messages.ErrNoAnswer):
		s.log.Warn("admin_ask_failed", slog.String("request", r.Pattern), slog.String("error", err.Error()))
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		s.log.Error("admin_unexpected_answer", slog.String("request", r.Pattern), slog.String("error", err.Error()))
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// errorBody is every error response's body.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, text string) {
	writeJSON(w, status, errorBody{Error: text})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
