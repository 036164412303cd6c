package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/admin"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
)

const testToken = "adm-7f3e9c1b5d2a4e6f8091"

// fakeTenants is an admin.Tenants whose methods call its Fn fields; a nil
// field fails the test's request with a 500.
type fakeTenants struct {
	ListFn         func(ctx context.Context) ([]messages.TenantInfo, error)
	GetFn          func(ctx context.Context, id string) (messages.TenantInfo, error)
	PauseFn        func(ctx context.Context, id string) (messages.TenantInfo, error)
	ResumeFn       func(ctx context.Context, id string) (messages.TenantInfo, error)
	ResetBreakerFn func(ctx context.Context, id string) (messages.TenantInfo, error)
}

var _ admin.Tenants = (*fakeTenants)(nil)

var errNotFaked = errors.New("not faked")

func (f *fakeTenants) List(ctx context.Context) ([]messages.TenantInfo, error) {
	if f.ListFn == nil {
		return nil, errNotFaked
	}
	return f.ListFn(ctx)
}

func (f *fakeTenants) Get(ctx context.Context, id string) (messages.TenantInfo, error) {
	return call(ctx, f.GetFn, id)
}

func (f *fakeTenants) Pause(ctx context.Context, id string) (messages.TenantInfo, error) {
	return call(ctx, f.PauseFn, id)
}

func (f *fakeTenants) Resume(ctx context.Context, id string) (messages.TenantInfo, error) {
	return call(ctx, f.ResumeFn, id)
}

func (f *fakeTenants) ResetBreaker(ctx context.Context, id string) (messages.TenantInfo, error) {
	return call(ctx, f.ResetBreakerFn, id)
}

func call(ctx context.Context, fn func(context.Context, string) (messages.TenantInfo, error), id string) (messages.TenantInfo, error) {
	if fn == nil {
		return messages.TenantInfo{}, errNotFaked
	}
	return fn(ctx, id)
}

// noAnswer is an error like the ones actors.Directory returns when nobody
// answered in time.
type noAnswer string

func (e noAnswer) Error() string        { return string(e) }
func (e noAnswer) Is(target error) bool { return target == messages.ErrNoAnswer }

// silentTenants fails every question with text, as a stuck router would.
func silentTenants(text string) *fakeTenants {
	fail := func(context.Context, string) (messages.TenantInfo, error) {
		return messages.TenantInfo{}, noAnswer(text)
	}
	return &fakeTenants{
		ListFn:         func(context.Context) ([]messages.TenantInfo, error) { return nil, noAnswer(text) },
		GetFn:          fail,
		PauseFn:        fail,
		ResumeFn:       fail,
		ResetBreakerFn: fail,
	}
}

// newTenants answers the way the router does, from a fixed set of tenants
// whose state the commands change.
func newTenants() *fakeTenants {
	var mu sync.Mutex
	ids := []string{"acme", "globex"}
	tenants := map[string]*messages.TenantInfo{
		"acme": {ID: "acme", Active: true, CircuitState: "OPEN", ConsecutiveFailures: 5,
			TokensAvailable: 12, TokensMax: 80, InFlight: 37, Window: 64, RecipientsWaiting: 5,
			Sent: 41, Failed: 2, LastError: "transient: HTTP 503"},
		"globex": {ID: "globex", CircuitState: "CLOSED", TokensAvailable: 20, TokensMax: 20, Quarantined: true},
	}
	change := func(f func(*messages.TenantInfo)) func(context.Context, string) (messages.TenantInfo, error) {
		return func(_ context.Context, id string) (messages.TenantInfo, error) {
			mu.Lock()
			defer mu.Unlock()
			t, ok := tenants[id]
			if !ok {
				// Bare, so the test proves the 404 text is the server's own.
				return messages.TenantInfo{}, messages.ErrUnknownTenant
			}
			f(t)
			return *t, nil
		}
	}
	return &fakeTenants{
		ListFn: func(context.Context) ([]messages.TenantInfo, error) {
			mu.Lock()
			defer mu.Unlock()
			var list []messages.TenantInfo
			for _, id := range ids {
				list = append(list, *tenants[id])
			}
			return list, nil
		},
		GetFn: change(func(*messages.TenantInfo) {}),
		ResetBreakerFn: change(func(t *messages.TenantInfo) {
			t.CircuitState, t.ConsecutiveFailures = "CLOSED", 0
		}),
		PauseFn:  change(func(t *messages.TenantInfo) { t.Paused = true }),
		ResumeFn: change(func(t *messages.TenantInfo) { t.Paused, t.Quarantined = false, false }),
	}
}

// startServer starts a Server on a free loopback port and returns its base
// URL; opts.Tenants defaults to newTenants().
func startServer(tb testing.TB, opts admin.Options) (*admin.Server, string) {
	tb.Helper()
	if opts.Tenants == nil {
		opts.Tenants = newTenants()
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	s, err := admin.New(opts)
	require.NoError(tb, err)
	require.NoError(tb, s.Start())
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(tb, s.Shutdown(ctx))
	})
	return s, "http://" + s.Addr()
}

type response struct {
	status int
	header http.Header
	body   string
}

func do(tb testing.TB, method, url, token string) response {
	tb.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(tb, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return doRequest(tb, req)
}

func doRequest(tb testing.TB, req *http.Request) response {
	tb.Helper()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func decode[T any](tb testing.TB, r response) T {
	tb.Helper()
	var v T
	require.NoError(tb, json.Unmarshal([]byte(r.body), &v), "body: %s", r.body)
	return v
}

func TestRoutes(t *testing.T) {
	var ready atomic.Bool
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, "wadispatch_up 1\n")
	})
	_, base := startServer(t, admin.Options{Ready: ready.Load, Metrics: metrics})

	t.Run("HealthzIsAlwaysOK", func(t *testing.T) {
		r := do(t, http.MethodGet, base+"/healthz", "")
		assert.Equal(t, http.StatusOK, r.status)
		assert.Equal(t, "application/json", r.header.Get("Content-Type"))
		assert.JSONEq(t, `{"status":"ok"}`, r.body)
	})

	t.Run("ReadyzFollowsReady", func(t *testing.T) {
		ready.Store(false)
		r := do(t, http.MethodGet, base+"/readyz", "")
		assert.Equal(t, http.StatusServiceUnavailable, r.status)
		assert.Equal(t, "application/json", r.header.Get("Content-Type"))
		assert.JSONEq(t, `{"status":"not ready"}`, r.body)

		ready.Store(true)
		r = do(t, http.MethodGet, base+"/readyz", "")
		assert.Equal(t, http.StatusOK, r.status)
		assert.JSONEq(t, `{"status":"ready"}`, r.body)
	})

	t.Run("MetricsServesTheGivenHandler", func(t *testing.T) {
		r := do(t, http.MethodGet, base+"/metrics", "")
		assert.Equal(t, http.StatusOK, r.status)
		assert.Equal(t, "wadispatch_up 1\n", r.body)
	})

	t.Run("ListReturnsEveryTenant", func(t *testing.T) {
		r := do(t, http.MethodGet, base+"/v1/tenants", "")
		require.Equal(t, http.StatusOK, r.status, r.body)
		assert.Equal(t, "application/json", r.header.Get("Content-Type"))
		body := decode[struct {
			Tenants []messages.TenantInfo `json:"tenants"`
		}](t, r)
		require.Len(t, body.Tenants, 2)
		assert.Equal(t, "acme", body.Tenants[0].ID)
		assert.Equal(t, "OPEN", body.Tenants[0].CircuitState)
		assert.InDelta(t, 12.0, body.Tenants[0].TokensAvailable, 1e-9)
		assert.Equal(t, 80, body.Tenants[0].TokensMax)
		assert.Equal(t, "globex", body.Tenants[1].ID)
		assert.True(t, body.Tenants[1].Quarantined)
	})

	t.Run("GetReturnsTheTenant", func(t *testing.T) {
		r := do(t, http.MethodGet, base+"/v1/tenants/acme", "")
		require.Equal(t, http.StatusOK, r.status, r.body)
		assert.Equal(t, "application/json", r.header.Get("Content-Type"))
		info := decode[messages.TenantInfo](t, r)
		assert.Equal(t, "acme", info.ID)
		assert.Equal(t, int64(41), info.Sent)
		assert.Equal(t, "transient: HTTP 503", info.LastError)
		assert.Contains(t, r.body, `"circuitState":"OPEN"`, "field names follow TenantInfo's JSON tags")
		assert.Contains(t, r.body, `"inFlight":37,"window":64,"recipientsWaiting":5`, "the send window's fields")
	})

	t.Run("UnknownTenantIs404", func(t *testing.T) {
		for _, c := range []struct{ method, path string }{
			{http.MethodGet, "/v1/tenants/nope"},
			{http.MethodPost, "/v1/tenants/nope/breaker/reset"},
			{http.MethodPost, "/v1/tenants/nope/pause"},
			{http.MethodPost, "/v1/tenants/nope/resume"},
		} {
			r := do(t, c.method, base+c.path, "")
			assert.Equal(t, http.StatusNotFound, r.status, c.path)
			assert.Equal(t, "application/json", r.header.Get("Content-Type"), c.path)
			assert.JSONEq(t, `{"error":"tenant \"nope\" is not configured"}`, r.body, c.path)
		}
	})

	t.Run("BreakerResetReturnsTheClosedBreaker", func(t *testing.T) {
		r := do(t, http.MethodPost, base+"/v1/tenants/acme/breaker/reset", "")
		require.Equal(t, http.StatusOK, r.status, r.body)
		info := decode[messages.TenantInfo](t, r)
		assert.Equal(t, "CLOSED", info.CircuitState)
		assert.Zero(t, info.ConsecutiveFailures)
	})

	t.Run("PauseAndResumeReturnTheChangedTenant", func(t *testing.T) {
		r := do(t, http.MethodPost, base+"/v1/tenants/acme/pause", "")
		require.Equal(t, http.StatusOK, r.status, r.body)
		assert.True(t, decode[messages.TenantInfo](t, r).Paused)

		r = do(t, http.MethodGet, base+"/v1/tenants/acme", "")
		assert.True(t, decode[messages.TenantInfo](t, r).Paused, "the pause sticks")

		r = do(t, http.MethodPost, base+"/v1/tenants/globex/resume", "")
		require.Equal(t, http.StatusOK, r.status, r.body)
		assert.False(t, decode[messages.TenantInfo](t, r).Quarantined, "resume lifts a quarantine")

		r = do(t, http.MethodPost, base+"/v1/tenants/acme/resume", "")
		require.Equal(t, http.StatusOK, r.status, r.body)
		assert.False(t, decode[messages.TenantInfo](t, r).Paused)
	})

	t.Run("WrongMethodIs405", func(t *testing.T) {
		for _, c := range []struct{ method, path, allow string }{
			{http.MethodDelete, "/v1/tenants/acme", "GET, HEAD"},
			{http.MethodPost, "/v1/tenants", "GET, HEAD"},
			{http.MethodGet, "/v1/tenants/acme/pause", "POST"},
			{http.MethodGet, "/v1/tenants/acme/breaker/reset", "POST"},
			{http.MethodPost, "/healthz", "GET, HEAD"},
		} {
			r := do(t, c.method, base+c.path, "")
			assert.Equal(t, http.StatusMethodNotAllowed, r.status, c.path)
			assert.Equal(t, c.allow, r.header.Get("Allow"), c.path)
			assert.Equal(t, "application/json", r.header.Get("Content-Type"), c.path)
			assert.Contains(t, decode[map[string]string](t, r)["error"], "not allowed", c.path)
		}
	})

	t.Run("UnknownRouteIs404JSON", func(t *testing.T) {
		r := do(t, http.MethodGet, base+"/v2/everything", "")
		assert.Equal(t, http.StatusNotFound, r.status)
		assert.Equal(t, "application/json", r.header.Get("Content-Type"))
		assert.Contains(t, decode[map[string]string](t, r)["error"], "/v2/everything")
	})

	t.Run("CrossOriginBrowserPostIsRefused", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, base+"/v1/tenants/acme/pause", nil)
		require.NoError(t, err)
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		req.Header.Set("Origin", "https://evil.example")
		r := doRequest(t, req)
		assert.Equal(t, http.StatusForbidden, r.status)
		assert.Equal(t, "application/json", r.header.Get("Content-Type"))

		info := decode[messages.TenantInfo](t, do(t, http.MethodGet, base+"/v1/tenants/acme", ""))
		assert.False(t, info.Paused, "the refused request changed nothing")
	})
}

func TestMetricsNotConfigured(t *testing.T) {
	_, base := startServer(t, admin.Options{})
	r := do(t, http.MethodGet, base+"/metrics", "")
	assert.Equal(t, http.StatusNotFound, r.status)
	assert.Equal(t, "application/json", r.header.Get("Content-Type"))
}

func TestTenantsThatDoNotAnswer(t *testing.T) {
	var logs testkit.SyncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	const reason = "tenant actor did not answer within 100ms"
	_, base := startServer(t, admin.Options{Tenants: silentTenants(reason), Logger: logger})

	for _, c := range []struct{ name, method, path, pattern string }{
		{"List", http.MethodGet, "/v1/tenants", "GET /v1/tenants"},
		{"Get", http.MethodGet, "/v1/tenants/acme", "GET /v1/tenants/{id}"},
		{"Reset", http.MethodPost, "/v1/tenants/acme/breaker/reset", "POST /v1/tenants/{id}/breaker/reset"},
		{"Pause", http.MethodPost, "/v1/tenants/acme/pause", "POST /v1/tenants/{id}/pause"},
		{"Resume", http.MethodPost, "/v1/tenants/acme/resume", "POST /v1/tenants/{id}/resume"},
	} {
		t.Run(c.name+"Is503WithTheReason", func(t *testing.T) {
			r := do(t, c.method, base+c.path, "")
			assert.Equal(t, http.StatusServiceUnavailable, r.status)
			assert.Equal(t, "application/json", r.header.Get("Content-Type"))
			assert.JSONEq(t, `{"error":"`+reason+`"}`, r.body)
			assert.Contains(t, logs.String(), `"msg":"admin_ask_failed","request":"`+c.pattern+`","error":"`+reason+`"`)
		})
	}
	assert.NotContains(t, logs.String(), "admin_command", "a command that got no answer is not audited")
}

func TestUnexpectedErrorIs500(t *testing.T) {
	var logs testkit.SyncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	odd := &fakeTenants{
		ListFn: func(context.Context) ([]messages.TenantInfo, error) {
			return nil, errors.New("unexpected answer *messages.TenantInfo")
		},
		GetFn: func(context.Context, string) (messages.TenantInfo, error) {
			return messages.TenantInfo{}, errors.New("unexpected answer *messages.TenantList")
		},
	}
	_, base := startServer(t, admin.Options{Tenants: odd, Logger: logger})

	r := do(t, http.MethodGet, base+"/v1/tenants", "")
	assert.Equal(t, http.StatusInternalServerError, r.status)
	assert.JSONEq(t, `{"error":"unexpected answer *messages.TenantInfo"}`, r.body)
	r = do(t, http.MethodGet, base+"/v1/tenants/acme", "")
	assert.Equal(t, http.StatusInternalServerError, r.status)
	assert.JSONEq(t, `{"error":"unexpected answer *messages.TenantList"}`, r.body)
	assert.Contains(t, logs.String(), `"level":"ERROR","msg":"admin_unexpected_answer","request":"GET /v1/tenants/{id}"`)
}

func TestEmptyListIsAnEmptyArray(t *testing.T) {
	none := &fakeTenants{ListFn: func(context.Context) ([]messages.TenantInfo, error) { return nil, nil }}
	_, base := startServer(t, admin.Options{Tenants: none})
	r := do(t, http.MethodGet, base+"/v1/tenants", "")
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.JSONEq(t, `{"tenants":[]}`, r.body)
}

type ctxKey struct{}

// Each question gets the request's context, so a client that goes away
// stops the wait, and the id exactly as the path has it.
func TestQuestionsGetTheRequestContextAndID(t *testing.T) {
	type question struct {
		op, id string
		value  any
	}
	asked := make(chan question, 1)
	record := func(op string) func(context.Context, string) (messages.TenantInfo, error) {
		return func(ctx context.Context, id string) (messages.TenantInfo, error) {
			asked <- question{op, id, ctx.Value(ctxKey{})}
			return messages.TenantInfo{ID: id}, nil
		}
	}
	f := &fakeTenants{
		ListFn: func(ctx context.Context) ([]messages.TenantInfo, error) {
			asked <- question{"list", "", ctx.Value(ctxKey{})}
			return nil, nil
		},
		GetFn: record("get"), PauseFn: record("pause"), ResumeFn: record("resume"), ResetBreakerFn: record("reset"),
	}
	s, err := admin.New(admin.Options{Addr: "127.0.0.1:0", Tenants: f})
	require.NoError(t, err)

	for _, c := range []struct{ method, path, op, id string }{
		{http.MethodGet, "/v1/tenants", "list", ""},
		{http.MethodGet, "/v1/tenants/a.b-c_9", "get", "a.b-c_9"},
		{http.MethodPost, "/v1/tenants/acme/pause", "pause", "acme"},
		{http.MethodPost, "/v1/tenants/acme/resume", "resume", "acme"},
		{http.MethodPost, "/v1/tenants/acme/breaker/reset", "reset", "acme"},
	} {
		req := httptest.NewRequestWithContext(context.WithValue(context.Background(), ctxKey{}, c.path), c.method, c.path, nil)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		assert.Equal(t, http.StatusOK, rec.Code, c.path)
		select {
		case q := <-asked:
			assert.Equal(t, question{c.op, c.id, c.path}, q)
		default:
			assert.Fail(t, "not asked", c.path)
		}
	}
}

func TestAuth(t *testing.T) {
	var logs testkit.SyncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "m 1\n") })
	_, base := startServer(t, admin.Options{Token: testToken, Metrics: metrics, Logger: logger, Ready: func() bool { return true },
		Shards: func() any { return map[string]int{"shards": 32} }, Config: func() any { return map[string]int{"generation": 1} },
		Reload: func(context.Context) (any, error) { return map[string]bool{"changed": false}, nil }})

	protected := []struct{ method, path string }{
		{http.MethodGet, "/v1/tenants"},
		{http.MethodGet, "/v1/tenants/acme"},
		{http.MethodPost, "/v1/tenants/acme/breaker/reset"},
		{http.MethodPost, "/v1/tenants/acme/pause"},
		{http.MethodPost, "/v1/tenants/acme/resume"},
		{http.MethodGet, "/v1/shards"},
		{http.MethodGet, "/v1/config"},
		{http.MethodPost, "/v1/reload"},
		{http.MethodGet, "/metrics"},
		{http.MethodGet, "/nowhere"},
	}

	t.Run("MissingTokenIs401", func(t *testing.T) {
		for _, c := range protected {
			r := do(t, c.method, base+c.path, "")
			assert.Equal(t, http.StatusUnauthorized, r.status, c.path)
			assert.Contains(t, r.header.Get("WWW-Authenticate"), "Bearer", c.path)
			assert.Equal(t, "application/json", r.header.Get("Content-Type"), c.path)
			assert.Contains(t, decode[map[string]string](t, r)["error"], "bearer token", c.path)
		}
	})

	t.Run("WrongTokenIs401", func(t *testing.T) {
		for _, tok := range []string{"wrong", testToken + "x", testToken[:len(testToken)-1]} {
			r := do(t, http.MethodGet, base+"/v1/tenants", tok)
			assert.Equal(t, http.StatusUnauthorized, r.status)
			assert.NotContains(t, r.body, testToken)
		}
		req, err := http.NewRequest(http.MethodGet, base+"/v1/tenants", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Basic "+testToken)
		assert.Equal(t, http.StatusUnauthorized, doRequest(t, req).status, "the scheme must be Bearer")
	})

	t.Run("RightTokenIsAccepted", func(t *testing.T) {
		for _, c := range protected[:len(protected)-1] {
			r := do(t, c.method, base+c.path, testToken)
			assert.Equal(t, http.StatusOK, r.status, c.path)
			assert.NotContains(t, r.body, testToken, c.path)
		}
		req, err := http.NewRequest(http.MethodGet, base+"/v1/tenants", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "bearer "+testToken)
		assert.Equal(t, http.StatusOK, doRequest(t, req).status, "the scheme is case-insensitive")
	})

	t.Run("ProbesNeedNoToken", func(t *testing.T) {
		r := do(t, http.MethodGet, base+"/healthz", "")
		assert.Equal(t, http.StatusOK, r.status)
		assert.JSONEq(t, `{"status":"ok"}`, r.body)
		r = do(t, http.MethodGet, base+"/readyz", "")
		assert.Equal(t, http.StatusOK, r.status, "a kubelet's probe cannot keep a secret")
		assert.JSONEq(t, `{"status":"ready"}`, r.body)
	})

	t.Run("TokenIsNeverLogged", func(t *testing.T) {
		assert.NotContains(t, logs.String(), testToken)
		assert.Contains(t, logs.String(), "admin_listening", "the logger was used")
		assert.Contains(t, logs.String(), `"command":"pause","tenantId":"acme"`, "commands are audited")
	})
}

func TestNew(t *testing.T) {
	tenants := newTenants()

	for _, c := range []struct {
		name, addr, token string
		wantErr           error
	}{
		{"RefusesAllInterfacesWithoutToken", "0.0.0.0:8081", "", admin.ErrTokenRequired},
		{"RefusesEmptyHostWithoutToken", ":8081", "", admin.ErrTokenRequired},
		{"RefusesPublicAddressWithoutToken", "192.0.2.10:8081", "", admin.ErrTokenRequired},
		{"RefusesAddressWithoutPort", "127.0.0.1", testToken, admin.ErrInvalidAddr},
		{"AcceptsAllInterfacesWithToken", "0.0.0.0:8081", testToken, nil},
		{"AcceptsIPv4LoopbackWithoutToken", "127.0.0.1:8081", "", nil},
		{"AcceptsAnyOf127Slash8WithoutToken", "127.0.0.5:8081", "", nil},
		{"AcceptsIPv6LoopbackWithoutToken", "[::1]:8081", "", nil},
		{"AcceptsLocalhostWithoutToken", "localhost:8081", "", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := admin.New(admin.Options{Addr: c.addr, Token: c.token, Tenants: tenants})
			if c.wantErr == nil {
				require.NoError(t, err)
				assert.NotNil(t, s)
				return
			}
			require.ErrorIs(t, err, c.wantErr)
			assert.Contains(t, err.Error(), "ADMIN_ADDR")
			if c.token != "" {
				assert.NotContains(t, err.Error(), c.token)
			}
		})
	}

	t.Run("TokenErrorSaysWhatToDo", func(t *testing.T) {
		_, err := admin.New(admin.Options{Addr: "0.0.0.0:8081", Tenants: tenants})
		require.Error(t, err)
		assert.Equal(t, "ADMIN_TOKEN is required because ADMIN_ADDR 0.0.0.0:8081 listens beyond loopback; "+
			"set ADMIN_TOKEN, or bind ADMIN_ADDR to 127.0.0.1, or set it to off", err.Error())
	})

	t.Run("RefusesMissingTenants", func(t *testing.T) {
		_, err := admin.New(admin.Options{Addr: "127.0.0.1:0"})
		assert.EqualError(t, err, "admin: Options.Tenants is required")
	})
}

func TestStartAndShutdown(t *testing.T) {
	tenants := newTenants()

	t.Run("AddrIsTheRealPort", func(t *testing.T) {
		s, base := startServer(t, admin.Options{Tenants: tenants})
		assert.NotEqual(t, "127.0.0.1:0", s.Addr())
		assert.Equal(t, http.StatusOK, do(t, http.MethodGet, base+"/healthz", "").status)
	})

	t.Run("AddressInUseFailsSynchronously", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { _ = ln.Close() })
		s, err := admin.New(admin.Options{Addr: ln.Addr().String(), Tenants: tenants})
		require.NoError(t, err)
		err = s.Start()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "ADMIN_ADDR "+ln.Addr().String())
		assert.Contains(t, err.Error(), "address already in use")
	})

	t.Run("SecondStartFails", func(t *testing.T) {
		s, _ := startServer(t, admin.Options{Tenants: tenants})
		assert.ErrorIs(t, s.Start(), admin.ErrAlreadyStarted)
	})

	t.Run("ShutdownStopsServing", func(t *testing.T) {
		s, err := admin.New(admin.Options{Addr: "127.0.0.1:0", Tenants: tenants})
		require.NoError(t, err)
		require.NoError(t, s.Start())
		addr := s.Addr()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, s.Shutdown(ctx))
		_, err = http.Get("http://" + addr + "/healthz")
		assert.Error(t, err)
	})

	t.Run("ShutdownBeforeStartIsNoop", func(t *testing.T) {
		s, err := admin.New(admin.Options{Addr: "127.0.0.1:0", Tenants: tenants})
		require.NoError(t, err)
		assert.NoError(t, s.Shutdown(context.Background()))
	})

	t.Run("HandlerServesWithoutStart", func(t *testing.T) {
		s, err := admin.New(admin.Options{Addr: "127.0.0.1:0", Tenants: tenants, Token: testToken})
		require.NoError(t, err)
		req, err := http.NewRequest(http.MethodGet, "/v1/tenants/acme", nil)
		require.NoError(t, err)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		assert.Equal(t, http.StatusUnauthorized, rec.Code, "Handler includes authentication")
	})
}

// A reload that fails on the file is 422 with its one line; one the router
// did not answer is 503; both change nothing, which is the caller's to keep.
func TestReloadRoute(t *testing.T) {
	var answer error
	_, base := startServer(t, admin.Options{Reload: func(context.Context) (any, error) {
		if answer != nil {
			return nil, answer
		}
		return map[string]bool{"changed": true}, nil
	}})
	r := do(t, http.MethodPost, base+"/v1/reload", "")
	assert.Equal(t, http.StatusOK, r.status)
	assert.JSONEq(t, `{"changed":true}`, r.body)

	answer = errors.New(`tenants.yaml: tenant "acme": rate_limit.per_minute must be > 0`)
	r = do(t, http.MethodPost, base+"/v1/reload", "")
	assert.Equal(t, http.StatusUnprocessableEntity, r.status)
	assert.JSONEq(t, `{"error":"tenants.yaml: tenant \"acme\": rate_limit.per_minute must be > 0"}`, r.body)

	answer = fmt.Errorf("router did not answer within 30s: %w", messages.ErrNoAnswer)
	r = do(t, http.MethodPost, base+"/v1/reload", "")
	assert.Equal(t, http.StatusServiceUnavailable, r.status)

	assert.Equal(t, http.StatusMethodNotAllowed, do(t, http.MethodGet, base+"/v1/reload", "").status)
}
