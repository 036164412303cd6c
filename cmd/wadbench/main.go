// Command wadbench is wadispatch's benchmark suite: throughput against a
// bare baseline consumer, fairness between tenants, memory per tenant at
// scale, deferrals under a burst and the hot path, against the local
// RabbitMQ and an in-process fake Graph API (see wadbench --help).
//
//	wadbench [--quick] [flags]   the benchmark suite, one table
//	wadbench loadcheck [flags]   one tenant's rate limit under load
//	wadbench scale --tenants N   one scale measurement (the suite runs it as a child)
//	wadbench shard-worker FLAGS  one worker (the shards rows run it as a child to kill)
//
// It is a separate binary so that the worker's (cmd/wadispatch) links
// neither the suite nor the test helpers it uses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/wadispatch/wadispatch/bench"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/worker"
)

// Exit codes, as wadispatch's.
const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2
)

func main() {
	// The bench's queues are named bench.*.<random>, so one left by a
	// second signal never disturbs the next run.
	ctx := worker.SignalContext("wadbench", exitFailed)
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is the whole program; main only wires the process to it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	err := bench.Main(ctx, args, getenv, stdout, stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, config.ErrConfig), errors.Is(err, bench.ErrUsage):
		fmt.Fprintln(stderr, "wadbench:", err)
		return exitConfig
	default:
		fmt.Fprintln(stderr, "wadbench:", err)
		return exitFailed
	}
}
