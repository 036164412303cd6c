package whatsapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// DefaultBaseURL is the Graph API base used when NewClient gets an empty one.
const DefaultBaseURL = "https://graph.facebook.com"

// DefaultTimeout bounds a send when NewClient gets no positive timeout: an
// unbounded send would hold a prefetch slot for as long as Meta hangs.
const DefaultTimeout = 10 * time.Second

const (
	// maxBodyBytes caps how much of a response is read; Meta's answers are a
	// few hundred bytes, anything larger is not an answer we can use.
	maxBodyBytes = 1 << 20
	// maxDrainBytes caps how much unread body is discarded to keep the
	// connection reusable; beyond it closing the connection is cheaper.
	maxDrainBytes = 64 << 10
	// maxSnippetBytes caps the part of a body without an error object that is
	// quoted in APIError.Message, enough to recognise a proxy's error page.
	maxSnippetBytes = 120
)

// Sender sends one message for one tenant. Implemented by *Client; fakes
// implement it in tests.
type Sender interface {
	Send(ctx context.Context, req Request) (Response, error)
}

// Request is one message to send.
type Request struct {
	PhoneNumberID string
	Token         string          // bearer token; never put into any error text
	Payload       json.RawMessage // wabaPayload, sent byte-for-byte as the HTTP body
}

// String keeps the token out of fmt output (%v, %s, %+v).
func (r Request) String() string {
	return fmt.Sprintf("whatsapp.Request{PhoneNumberID:%q Token:[REDACTED] Payload:%d bytes}", r.PhoneNumberID, len(r.Payload))
}

// GoString keeps the token out of %#v.
func (r Request) GoString() string { return r.String() }

// LogValue keeps the token out of slog output.
func (r Request) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("phoneNumberId", r.PhoneNumberID),
		slog.Int("payloadBytes", len(r.Payload)),
	)
}

// Response is Meta's acceptance of a message.
type Response struct {
	WAMID      string // messages[0].id
	HTTPStatus int
}

// Client sends messages to the Graph API. It is safe for concurrent use and
// meant to be shared by all tenants: one tuned transport keeps connections to
// Meta alive across sends.
type Client struct {
	prefix  string // "{base}/{version}/", so a send only appends the phone number id
	timeout time.Duration
	http    *http.Client
}

var _ Sender = (*Client)(nil)

// NewClient returns a client for POST {baseURL}/{apiVersion}/{phone_number_id}/messages.
// An empty baseURL means DefaultBaseURL; a timeout <= 0 means DefaultTimeout.
// The timeout bounds each send from connect to the last byte of the answer.
func NewClient(baseURL, apiVersion string, timeout time.Duration) *Client {
	if baseURL == "" {
		baseURL = DefaultBaseURL
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	prefix := strings.TrimRight(baseURL, "/") + "/"
	if v := strings.Trim(apiVersion, "/"); v != "" {
		prefix += v + "/"
	}
	transport := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   timeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
	}
	return &Client{
		prefix:  prefix,
		timeout: timeout,
		http: &http.Client{
			Transport: transport,
			// A redirect would turn the POST into a GET without a body; Meta
			// never redirects, so a 3xx is reported as it is.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// CloseIdleConnections closes the kept-alive connections, for shutdown.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Send posts req.Payload byte-for-byte for req.PhoneNumberID. It returns the
// wamid when Meta accepted the message, an *APIError for every other answer
// from Meta, and a wrapped transport error (ErrTimeout for the client's
// timeout) when no answer came. Classify tells what any of them means.
func (c *Client) Send(ctx context.Context, req Request) (Response, error) {
	sendCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	endpoint := c.prefix + url.PathEscape(req.PhoneNumberID) + "/messages"
	httpReq, err := http.NewRequestWithContext(sendCtx, http.MethodPost, endpoint, bytes.NewReader(req.Payload))
	if err != nil {
		return Response{}, fmt.Errorf("meta api: build request: %w", err)
	}
	httpReq.Header.Set("Authorization", "Bearer "+req.Token)
	httpReq.Header.Set("Content-Type", "application/json")

	resp, err := c.http.Do(httpReq)
	if err != nil {
		return Response{}, c.transportError(ctx, sendCtx, err)
	}
	defer drainAndClose(resp.Body)

	buf := answerBuffers.Get().(*bytes.Buffer)
	defer putAnswerBuffer(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, maxBodyBytes)); err != nil {
		return Response{}, c.transportError(ctx, sendCtx, err)
	}
	// parseAnswer keeps nothing of the bytes it reads (its strings are
	// copies), so the buffer serves the next answer.
	return parseAnswer(resp.StatusCode, buf.Bytes(), req.Token)
}

// answerBuffers hold Meta's answers while they are read and classified: an
// answer is a few hundred bytes, and reading each into a new slice cost two
// allocations a send.
var answerBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// putAnswerBuffer gives buf back, unless a rare large answer grew it.
func putAnswerBuffer(buf *bytes.Buffer) {
	if buf.Cap() <= 64<<10 {
		answerBuffers.Put(buf)
	}
}

// transportError names why no answer came: the client's timeout, the
// caller's context, or the network.
func (c *Client) transportError(parent, sendCtx context.Context, err error) error {
	switch {
	case parent.Err() != nil:
		return fmt.Errorf("meta api: send abandoned: %w", parent.Err())
	case errors.Is(sendCtx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%w after %s: %w", ErrTimeout, c.timeout, context.DeadlineExceeded)
	default:
		return fmt.Errorf("meta api: %w", err)
	}
}

func drainAndClose(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, maxDrainBytes)
	_ = body.Close()
}

// successBody is the part of Meta's 200 answer the worker uses.
type successBody struct {
	Messages []struct {
		ID string `json:"id"`
	} `json:"messages"`
}

// errorBody is Graph API's error envelope. Code is a pointer so a body that
// has no code is not mistaken for code 0 (AuthException).
type errorBody struct {
	Error *struct {
		Message      string          `json:"message"`
		Type         string          `json:"type"`
		Code         *flexInt        `json:"code"`
		ErrorSubcode flexInt         `json:"error_subcode"`
		FBTraceID    string          `json:"fbtrace_id"`
		ErrorData    json.RawMessage `json:"error_data"`
	} `json:"error"`
}

// parseAnswer turns an HTTP answer into a Response or an *APIError.
func parseAnswer(status int, body []byte, token string) (Response, error) {
	if status >= 200 && status < 300 {
		var ok successBody
		if json.Unmarshal(body, &ok) == nil && len(ok.Messages) > 0 && ok.Messages[0].ID != "" {
			return Response{WAMID: ok.Messages[0].ID, HTTPStatus: status}, nil
		}
	}

	var eb errorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error != nil {
		e := eb.Error
		apiErr := &APIError{
			HTTPStatus: status,
			Subcode:    int(e.ErrorSubcode),
			Type:       e.Type,
			Message:    redact(e.Message, token),
			FBTraceID:  e.FBTraceID,
			Details:    redact(errorDetails(e.ErrorData), token),
		}
		if e.Code != nil {
			apiErr.Code = int(*e.Code)
			apiErr.HasCode = true
		}
		return Response{}, apiErr
	}

	msg := "no error object in response body"
	if status >= 200 && status < 300 {
		msg = "accepted without messages[0].id"
	}
	if s := snippet(body, token); s != "" {
		msg += ": " + s
	}
	return Response{}, &APIError{HTTPStatus: status, Message: msg}
}

// errorDetails reads error_data.details; older Graph endpoints send
// error_data as a plain string, which is kept as the details then.
func errorDetails(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var obj struct {
		Details string `json:"details"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.Details
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}

// snippet quotes the start of a body that is not a Graph API answer (a
// proxy's error page, say), printable and without the token.
func snippet(body []byte, token string) string {
	s := strings.TrimSpace(string(body))
	if s == "" {
		return ""
	}
	s = redact(s, token)
	if len(s) > maxSnippetBytes {
		s = s[:maxSnippetBytes] + "..."
	}
	s = strings.ToValidUTF8(s, "?")
	return fmt.Sprintf("%q", s)
}

// redact removes the token from text that came from the wire, in case a
// server or proxy echoes the request's credentials.
func redact(s, token string) string {
	if token == "" || !strings.Contains(s, token) {
		return s
	}
	return strings.ReplaceAll(s, token, "[REDACTED]")
}

// flexInt accepts a JSON number or a numeric string; Graph API has sent both
// for error codes over the years.
type flexInt int

func (f *flexInt) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	i, err := n.Int64()
	if err != nil {
		return err
	}
	*f = flexInt(i)
	return nil
}
