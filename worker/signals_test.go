package worker

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The first signal ends the context (an orderly shutdown); a second one
// exits the process at once with the given code. The test runs itself as
// the process that gets the signals.
func TestSignalContextEndsOnTheFirstSignalAndExitsOnTheSecond(t *testing.T) {
	if os.Getenv("WADISPATCH_SIGNAL_CHILD") == "1" {
		ctx := SignalContext("child", 7)
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		<-ctx.Done()
		os.Stdout.WriteString("context ended\n")
		_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
		select {} // the second signal exits
	}
	// The minute is a safety net for a child that never exits, not a
	// measure of anything.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^TestSignalContextEndsOnTheFirstSignalAndExitsOnTheSecond$")
	cmd.Env = append(os.Environ(), "WADISPATCH_SIGNAL_CHILD=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "the child exited on its own: %v", err)
	assert.Equal(t, 7, exit.ExitCode())
	assert.Contains(t, stdout.String(), "context ended")
	assert.Contains(t, stderr.String(), "child: second signal, exiting now")
}
