package main

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestFakeMetaLatencyFlags(t *testing.T) {
	t.Run("AreTheDefaultLatency", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // serve nothing: just start and stop
		var stdout bytes.Buffer
		code := run(ctx, []string{"fakemeta", "--addr", "127.0.0.1:0", "--tenant", "1=t",
			"--latency-median", "300ms", "--latency-sigma", "0.5", "--latency-max", "5s"}, nil, &stdout, io.Discard)
		assert.Equal(t, exitOK, code)
		assert.Contains(t, stdout.String(), "latency log-normal median 300ms sigma 0.5 max 5s")
	})
	t.Run("BadValuesAreUsageErrors", func(t *testing.T) {
		for _, args := range [][]string{
			{"--latency-sigma", "-1"},
			{"--latency-median", "-1s"},
			{"--latency-max", "-1s"},
			{"--latency-sigma", "NaN"},
		} {
			var stderr bytes.Buffer
			code := run(context.Background(), append([]string{"fakemeta", "--addr", "127.0.0.1:0"}, args...), nil, io.Discard, &stderr)
			assert.Equal(t, exitConfig, code, "%v", args)
			assert.Contains(t, stderr.String(), "latency", "%v", args)
		}
	})
}
