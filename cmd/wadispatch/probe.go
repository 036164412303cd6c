package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// errProbeFailed is a probe that got no 200: exit code 1, one line.
type errProbeFailed struct{ text string }

func (e errProbeFailed) Error() string { return e.text }

// runProbe is `wadispatch probe`: GET /healthz (or /readyz with --ready)
// on the worker's listener, exit 0 on 200 and 1 otherwise, for exec probes
// and compose health checks in an image without a shell or curl.
func runProbe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	fs := flag.NewFlagSet("wadispatch probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ready := fs.Bool("ready", false, "ask /readyz (connected and taking part) instead of /healthz (the process runs)")
	addr := fs.String("addr", probeAddr(getenv), "the worker's listener (default: METRICS_ADDR if set, else ADMIN_ADDR, with 0.0.0.0 asked on 127.0.0.1)")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: wadispatch probe [--ready] [--addr HOST:PORT] [--timeout DURATION]")
		fmt.Fprintln(stderr, "\nAsks a running worker whether it is alive (/healthz) or ready (/readyz) and exits 0")
		fmt.Fprintln(stderr, "if it answered 200, 1 otherwise. The probes never need ADMIN_TOKEN.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+path, nil)
	if err != nil {
		return fmt.Errorf("%w: --addr %q: %v", errUsage, *addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return errProbeFailed{fmt.Sprintf("probe %s%s: %v", *addr, path, err)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return errProbeFailed{fmt.Sprintf("probe %s%s: %s %s", *addr, path, resp.Status, body)}
	}
	fmt.Fprintf(stdout, "%s", body)
	return nil
}

// probeAddr is where the worker's probes are served, from the same
// variables the worker reads: METRICS_ADDR when set, else ADMIN_ADDR; a
// wildcard host is asked on loopback.
func probeAddr(getenv func(string) string) string {
	addr := firstNonEmpty(getenv("METRICS_ADDR"), getenv("ADMIN_ADDR"), "127.0.0.1:8081")
	if addr == "off" {
		addr = firstNonEmpty(getenv("ADMIN_ADDR"), "127.0.0.1:8081")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
