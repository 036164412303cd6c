package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wadispatch/wadispatch/messages"
)

// Errors the Client returns, wrapped with an operator-facing message.
var (
	ErrUnreachable  = errors.New("worker not reachable")
	ErrUnauthorized = errors.New("admin API refused the token")
	ErrNotFound     = errors.New("not found")
)

// clientTimeout bounds a whole request when NewClient is given no client;
// it is above the server's ask timeout so the server's 503 arrives first.
const clientTimeout = 10 * time.Second

// maxResponseBytes bounds what the Client reads of an answer.
const maxResponseBytes = 16 << 20

// Client talks to a running worker's admin API.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// NewClient returns a client for the admin API at baseURL
// ("http://127.0.0.1:8081"; a bare host:port such as ADMIN_ADDR is taken as
// http). token may be empty; hc nil means a client with a 10 s timeout.
func NewClient(baseURL, token string, hc *http.Client) *Client {
	base := strings.TrimRight(baseURL, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	if hc == nil {
		hc = &http.Client{Timeout: clientTimeout}
	}
	return &Client{base: base, token: token, hc: hc}
}

// List returns every configured tenant's state, ordered by id.
func (c *Client) List(ctx context.Context) ([]messages.TenantInfo, error) {
	var body tenantList
	if err := c.get(ctx, "/v1/tenants", &body); err != nil {
		return nil, err
	}
	return body.Tenants, nil
}

// Get returns one tenant's state; an unconfigured id is ErrNotFound.
func (c *Client) Get(ctx context.Context, id string) (messages.TenantInfo, error) {
	var info messages.TenantInfo
	if err := c.get(ctx, "/v1/tenants/"+url.PathEscape(id), &info); err != nil {
		return messages.TenantInfo{}, err
	}
	return info, nil
}

func (c *Client) get(ctx context.Context, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return fmt.Errorf("admin API address %q: %w", c.base, err)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("ask worker at %s: %w", c.base, ctxErr)
		}
		return fmt.Errorf("%w at %s (%s); is \"wadispatch run\" running with this ADMIN_ADDR?",
			ErrUnreachable, c.base, transportReason(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("read answer from worker at %s: %w", c.base, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if err := json.Unmarshal(raw, into); err != nil {
			return fmt.Errorf("worker at %s answered %s with something that is not the admin API's JSON: %w", c.base, path, err)
		}
		return nil
	case http.StatusUnauthorized:
		if c.token == "" {
			return fmt.Errorf("%w: the worker at %s requires its ADMIN_TOKEN; pass it with --admin-token or ADMIN_TOKEN", ErrUnauthorized, c.base)
		}
		return fmt.Errorf("%w: the worker at %s did not accept the given token; pass the worker's ADMIN_TOKEN", ErrUnauthorized, c.base)
	case http.StatusNotFound:
		return fmt.Errorf("%w: %s", ErrNotFound, serverMessage(resp, raw))
	}
	return fmt.Errorf("worker at %s answered %s: %s", c.base, resp.Status, serverMessage(resp, raw))
}

// serverMessage is the error text of an admin API error body, or a short
// description of an answer that is not one.
func serverMessage(resp *http.Response, raw []byte) string {
	var body errorBody
	if json.Unmarshal(raw, &body) == nil && body.Error != "" {
		return body.Error
	}
	return fmt.Sprintf("%s %s answered %s", resp.Request.Method, resp.Request.URL.Path, resp.Status)
}

// transportReason names why a request failed to reach the server, as
// briefly as an operator needs: "connection refused", "timed out", or the
// innermost error.
func transportReason(err error) string {
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return "timed out"
	}
	for {
		inner := errors.Unwrap(err)
		if inner == nil {
			return err.Error()
		}
		err = inner
	}
}
