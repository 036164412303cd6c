package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// capture collects what a handler writes, for tests of this package only.
type capture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// raw returns everything written so far.
func (c *capture) raw() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// lines decodes every line, failing the test on anything that is not one
// JSON object per line.
func (c *capture) lines(tb testing.TB) []map[string]any {
	tb.Helper()
	raw := c.raw()
	if raw == "" {
		return nil
	}
	require.True(tb, strings.HasSuffix(raw, "\n"), "output must end with a newline: %q", raw)
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(raw, "\n"), "\n") {
		var m map[string]any
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber()
		require.NoError(tb, dec.Decode(&m), "line is not a JSON object: %s", line)
		require.False(tb, dec.More(), "more than one JSON value on a line: %s", line)
		out = append(out, m)
	}
	return out
}

// line returns the only line written.
func (c *capture) line(tb testing.TB) map[string]any {
	tb.Helper()
	lines := c.lines(tb)
	require.Len(tb, lines, 1, "want exactly one line, got: %s", c.raw())
	return lines[0]
}

// newTestLogger returns a logger at debug level writing to a capture.
func newTestLogger(tb testing.TB, secrets *Secrets) (*slog.Logger, *capture) {
	tb.Helper()
	c := &capture{}
	return New(c, Options{Level: slog.LevelDebug, Secrets: secrets, Version: "1.2.3"}), c
}

// lookup follows a dotted path ("request.headers.0.token") through decoded
// JSON; ok is false when the path does not exist.
func lookup(v any, path string) (any, bool) {
	for part := range strings.SplitSeq(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			next, ok := x[part]
			if !ok {
				return nil, false
			}
			v = next
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}
