package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestProbeExitsFromTheWorkersAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			_, _ = io.WriteString(w, `{"status":"ok"}`)
		case "/readyz":
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"status":"not ready","role":"connecting to the broker"}`)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	probe := func(args ...string) (int, string) {
		var errb bytes.Buffer
		return run(context.Background(), append([]string{"probe", "--addr", addr}, args...), nil, io.Discard, &errb), errb.String()
	}
	code, _ := probe()
	assert.Equal(t, exitOK, code, "alive")
	code, errs := probe("--ready")
	assert.Equal(t, exitFailed, code, "not ready")
	assert.Contains(t, errs, "503")
	assert.Contains(t, errs, "connecting to the broker")
	srv.Close()
	code, _ = probe()
	assert.Equal(t, exitFailed, code, "nobody listening")
}

func TestProbeAddrFollowsTheWorkersVariables(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	assert.Equal(t, "127.0.0.1:8081", probeAddr(env(nil)))
	assert.Equal(t, "127.0.0.1:9000", probeAddr(env(map[string]string{"ADMIN_ADDR": "0.0.0.0:9000"})))
	assert.Equal(t, "127.0.0.1:9090", probeAddr(env(map[string]string{"ADMIN_ADDR": "0.0.0.0:9000", "METRICS_ADDR": ":9090"})))
	assert.Equal(t, "10.0.0.5:9000", probeAddr(env(map[string]string{"ADMIN_ADDR": "10.0.0.5:9000", "METRICS_ADDR": "off"})))
}
