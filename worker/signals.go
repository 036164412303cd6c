package worker

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// SignalContext returns a context that ends at the first SIGINT or
// SIGTERM, so the program can shut down in order. A second signal exits the
// process at once with code, after a line on stderr naming prog: unacked
// jobs go back to the queue when the connections drop, so nothing is lost.
// Both signals are caught by one registration, made before this returns,
// so a second signal can never find the process between two handlers.
func SignalContext(prog string, code int) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		<-sigs
		fmt.Fprintf(os.Stderr, "%s: second signal, exiting now\n", prog)
		os.Exit(code)
	}()
	return ctx
}

// ReloadSignals returns a channel with a value for every SIGHUP, the signal
// operators and systemd's ExecReload send for "reload": the process no
// longer dies of it (Go's default), it reloads its tenants file.
func ReloadSignals() <-chan struct{} {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP)
	out := make(chan struct{}, 1)
	go func() {
		for range sigs {
			select {
			case out <- struct{}{}:
			default: // one reload pending is enough
			}
		}
	}()
	return out
}
