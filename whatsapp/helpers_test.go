package whatsapp_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wadispatch/wadispatch/whatsapp"
)

const (
	testVersion = "v23.0"
	testPhoneID = "106540352242922"
	testToken   = "EAAGtestSECRETtoken0123456789"
	testTimeout = 5 * time.Second
)

var textPayload = []byte(`{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"hi"}}`)

// fakeMeta is a Graph API stand-in over real HTTP that counts the
// connections it accepts.
type fakeMeta struct {
	*httptest.Server
	newConns atomic.Int64
}

// newFakeMeta serves h and stops the server at the end of the test. A
// handler that hangs is released first, so Close does not wait on it.
func newFakeMeta(tb testing.TB, h http.HandlerFunc) *fakeMeta {
	tb.Helper()
	m := &fakeMeta{}
	m.Server = httptest.NewUnstartedServer(h)
	m.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			m.newConns.Add(1)
		}
	}
	m.Start()
	tb.Cleanup(m.Close)
	return m
}

// newHangingMeta never answers: each request waits until the client gives
// up or the test ends.
func newHangingMeta(tb testing.TB) *fakeMeta {
	tb.Helper()
	release := make(chan struct{})
	m := newFakeMeta(tb, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	tb.Cleanup(func() { close(release) }) // runs before the server's Close
	return m
}

func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if body != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

func acceptedBody(wamid string) string {
	return `{"messaging_product":"whatsapp","contacts":[{"input":"15551234567","wa_id":"15551234567"}],` +
		`"messages":[{"id":"` + wamid + `","message_status":"accepted"}]}`
}

// closedPortURL is a URL on which nothing listens, so a dial is refused.
func closedPortURL(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		tb.Fatalf("close: %v", err)
	}
	return "http://" + addr
}

func send(tb testing.TB, baseURL string, timeout time.Duration) (whatsapp.Response, error) {
	tb.Helper()
	c := whatsapp.NewClient(baseURL, testVersion, timeout)
	tb.Cleanup(c.CloseIdleConnections)
	return c.Send(tb.Context(), whatsapp.Request{PhoneNumberID: testPhoneID, Token: testToken, Payload: textPayload})
}
