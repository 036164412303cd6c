// Command wadispatch delivers WhatsApp messages for many tenants: it consumes
// send jobs from RabbitMQ, sends each through Meta's WhatsApp Cloud API with
// its tenant's phone number and token, and publishes what became of it.
//
//	wadispatch run       run the worker (configuration from env and flags)
//	wadispatch demo      run the worker against a fake Meta with sample jobs
//	wadispatch tenants   show tenants of a running worker
//	wadispatch check     validate a tenants file offline
//	wadispatch probe     ask a running worker's /healthz or /readyz
//	wadispatch fakemeta  serve the fake Graph API used by tests and the demo
//	wadispatch version   print the version
//
// This package only parses the command line, handles signals and maps
// errors to exit codes; the worker is package worker, the demo package
// demo. The benchmark suite is a command of its own, cmd/wadbench.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/demo"
	"github.com/wadispatch/wadispatch/worker"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2
)

func main() {
	ctx := worker.SignalContext("wadispatch", exitFailed)
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

const usage = `wadispatch delivers WhatsApp send jobs from RabbitMQ through Meta's Cloud API,
one isolated actor per tenant.

Usage:
  wadispatch run [flags]        run the worker (every flag also has an env var; see run --help)
  wadispatch demo [flags]       run the worker on local RabbitMQ with a fake Meta and sample jobs
  wadispatch tenants [ID]       show a running worker's tenants (--json, --admin-addr, --admin-token)
  wadispatch check [flags]      validate a tenants file as a start or reload would (--tenants-file, --skip-tokens)
  wadispatch probe [--ready]    exit 0 if a running worker is alive (ready), 1 if not; for exec probes
  wadispatch fakemeta [flags]   serve the fake Graph API (for trying the worker by hand)
  wadispatch version            print the version

Exit codes: 0 ok, 1 failure, 2 configuration error.
`

// run is the whole program; main only wires the process to it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitConfig
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "run":
		err = worker.Main(ctx, rest, stderr, worker.Options{Logs: stdout, Getenv: getenv, Version: version,
			Reloads: worker.ReloadSignals()})
	case "check":
		err = runCheck(rest, getenv, stdout, stderr)
	case "probe":
		err = runProbe(ctx, rest, getenv, stdout, stderr)
	case "demo":
		err = demo.Run(ctx, rest, getenv, stdout, stderr)
	case "tenants":
		err = runTenants(ctx, rest, getenv, stdout, stderr)
	case "fakemeta":
		err = runFakeMeta(ctx, rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "wadispatch", version)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "wadispatch: unknown command %q\n\n%s", cmd, usage)
		return exitConfig
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, new(errProbeFailed)):
		fmt.Fprintln(stderr, "wadispatch:", err)
		return exitFailed
	case errors.Is(err, config.ErrConfig), errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "wadispatch:", err)
		return exitConfig
	default:
		fmt.Fprintln(stderr, "wadispatch:", err)
		return exitFailed
	}
}

// errUsage marks a command-line mistake (exit code 2).
var errUsage = errors.New("usage")

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
