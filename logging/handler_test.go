package logging

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHandlerLineFormat(t *testing.T) {
	t.Run("WritesContractFieldsWithUTCMillisecondTimestamp", func(t *testing.T) {
		c := &capture{}
		h := NewHandler(c, Options{Version: "1.2.3"})
		at := time.Date(2026, 11, 27, 11, 30, 0, 123456789, time.FixedZone("CET", 3600))
		r := slog.NewRecord(at, slog.LevelInfo, "message_delivered", 0)
		r.AddAttrs(slog.String("tenantId", "acme"), slog.Int("attempts", 1))
		require.NoError(t, h.Handle(context.Background(), r))

		line := c.line(t)
		assert.Equal(t, "2026-11-27T10:30:00.123Z", line["timestamp"])
		assert.Equal(t, "INFO", line["level"])
		assert.Equal(t, "wadispatch", line["service"])
		assert.Equal(t, "1.2.3", line["version"])
		assert.Equal(t, "message_delivered", line["event"])
		assert.Equal(t, "acme", line["tenantId"])
		assert.Equal(t, json.Number("1"), line["attempts"])
		assert.NotContains(t, line, "time")
		assert.NotContains(t, line, "msg")
	})

	t.Run("KeepsThreeDigitMillisecondsOnWholeSeconds", func(t *testing.T) {
		c := &capture{}
		h := NewHandler(c, Options{})
		r := slog.NewRecord(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), slog.LevelInfo, "e", 0)
		require.NoError(t, h.Handle(context.Background(), r))
		assert.Equal(t, "2026-01-02T03:04:05.000Z", c.line(t)["timestamp"])
	})

	t.Run("DefaultsServiceAndVersion", func(t *testing.T) {
		c := &capture{}
		New(c, Options{}).Info("e")
		line := c.line(t)
		assert.Equal(t, DefaultService, line["service"])
		assert.Equal(t, DefaultVersion, line["version"])
	})

	t.Run("WritesOneObjectPerLine", func(t *testing.T) {
		l, c := newTestLogger(t, nil)
		l.Info("first", "text", "line one\nline two")
		l.Warn("second")
		lines := c.lines(t)
		require.Len(t, lines, 2)
		assert.Equal(t, "line one\nline two", lines[0]["text"])
		assert.Equal(t, "second", lines[1]["event"])
	})

	t.Run("NamesEveryLevel", func(t *testing.T) {
		l, c := newTestLogger(t, nil)
		l.Debug("d")
		l.Info("i")
		l.Warn("w")
		l.Error("e")
		var levels []any
		for _, line := range c.lines(t) {
			levels = append(levels, line["level"])
		}
		assert.Equal(t, []any{"DEBUG", "INFO", "WARN", "ERROR"}, levels)
	})

	t.Run("RenamesCallerAttrsThatCollideWithLineFields", func(t *testing.T) {
		l, c := newTestLogger(t, nil)
		l.With("service", "meta").Info("real_event",
			"msg", "m", "time", "t", "level", 7, "event", "ev", "timestamp", "ts", "version", "v")
		line := c.line(t)
		assert.Equal(t, "real_event", line["event"])
		assert.Equal(t, "wadispatch", line["service"])
		assert.Equal(t, "1.2.3", line["version"])
		assert.Equal(t, "INFO", line["level"])
		assert.Equal(t, "meta", line["attr_service"])
		assert.Equal(t, "m", line["attr_msg"])
		assert.Equal(t, "t", line["attr_time"])
		assert.Equal(t, json.Number("7"), line["attr_level"])
		assert.Equal(t, "ev", line["attr_event"])
		assert.Equal(t, "ts", line["attr_timestamp"])
		assert.Equal(t, "v", line["attr_version"])
	})

	t.Run("RenamesTopLevelGroupsThatCollideWithLineFields", func(t *testing.T) {
		l, c := newTestLogger(t, nil)
		l.WithGroup("event").Info("real_event", "a", 1, slog.Group("level", "b", 2))
		line := c.line(t)
		assert.Equal(t, "real_event", line["event"])
		assert.Equal(t, "INFO", line["level"])
		a, ok := lookup(line, "attr_event.a")
		require.True(t, ok, "line: %v", line)
		assert.Equal(t, json.Number("1"), a)
		b, ok := lookup(line, "attr_event.level.b")
		require.True(t, ok, "nested names stay: %v", line)
		assert.Equal(t, json.Number("2"), b)
	})

	t.Run("KeepsLineFieldNamesInsideGroups", func(t *testing.T) {
		l, c := newTestLogger(t, nil)
		l.WithGroup("job").Info("e", "msg", "m", slog.Group("inner", "time", "t"))
		line := c.line(t)
		v, ok := lookup(line, "job.msg")
		require.True(t, ok, "line: %v", line)
		assert.Equal(t, "m", v)
		v, ok = lookup(line, "job.inner.time")
		require.True(t, ok, "line: %v", line)
		assert.Equal(t, "t", v)
	})
}

func TestLevelFiltering(t *testing.T) {
	cases := []struct {
		level string
		want  []any
	}{
		{"debug", []any{"d", "i", "w", "e"}},
		{"INFO", []any{"i", "w", "e"}},
		{"Warn", []any{"w", "e"}},
		{" error ", []any{"e"}},
	}
	for _, tc := range cases {
		t.Run("LogLevel_"+strings.TrimSpace(tc.level)+"_WritesOnlyLevelsAtOrAbove", func(t *testing.T) {
			level, err := ParseLevel(tc.level)
			require.NoError(t, err)
			c := &capture{}
			l := New(c, Options{Level: level})
			l.Debug("d")
			l.Info("i")
			l.Warn("w")
			l.Error("e")
			var events []any
			for _, line := range c.lines(t) {
				events = append(events, line["event"])
			}
			assert.Equal(t, tc.want, events)
		})
	}

	t.Run("FollowsALevelVarChangedAtRunTime", func(t *testing.T) {
		var lv slog.LevelVar
		lv.Set(slog.LevelError)
		c := &capture{}
		l := New(c, Options{Level: &lv})
		l.Info("dropped")
		lv.Set(slog.LevelInfo)
		l.Info("kept")
		lines := c.lines(t)
		require.Len(t, lines, 1)
		assert.Equal(t, "kept", lines[0]["event"])
	})
}

func TestParseLevel(t *testing.T) {
	good := map[string]slog.Level{
		"debug": slog.LevelDebug, "DEBUG": slog.LevelDebug,
		"info": slog.LevelInfo, "Info": slog.LevelInfo,
		"warn": slog.LevelWarn, "WARN": slog.LevelWarn,
		"error": slog.LevelError, "eRRor": slog.LevelError,
	}
	for in, want := range good {
		t.Run("Parses_"+in, func(t *testing.T) {
			got, err := ParseLevel(in)
			require.NoError(t, err)
			assert.Equal(t, want, got)
		})
	}
	for _, in := range []string{"", "verbose", "warning", "fatal", "0"} {
		t.Run("Rejects_"+in, func(t *testing.T) {
			_, err := ParseLevel(in)
			require.ErrorIs(t, err, ErrUnknownLevel)
			assert.Contains(t, err.Error(), "debug, info, warn or error")
		})
	}
}

func TestValidLevel(t *testing.T) {
	for _, name := range []string{"debug", "info", "warn", "error"} {
		l, err := ParseLevel(name)
		require.NoError(t, err)
		assert.True(t, ValidLevel(l), name)
	}
	for _, l := range []slog.Level{slog.LevelInfo + 1, slog.LevelDebug - 4, slog.LevelError + 4} {
		assert.False(t, ValidLevel(l), l.String())
	}
}

func TestHandlerConcurrency(t *testing.T) {
	t.Run("WritesWholeLinesFromManyGoroutinesWhileSecretsAreAdded", func(t *testing.T) {
		secrets := NewSecrets("EAAGinitialToken0")
		l, c := newTestLogger(t, secrets)
		tenant := l.With("tenantId", "acme").WithGroup("send")
		const goroutines, perGoroutine = 8, 50
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				for i := range perGoroutine {
					token := fmt.Sprintf("EAAGrotated-%d-%d", g, i)
					secrets.Add(token)
					tenant.Info("message_delivered", "n", i, "header", "Bearer "+token)
				}
			})
		}
		wg.Wait()

		lines := c.lines(t)
		assert.Len(t, lines, goroutines*perGoroutine)
		for _, line := range lines {
			header, ok := lookup(line, "send.header")
			require.True(t, ok)
			assert.Equal(t, "Bearer "+Redacted, header)
		}
		assert.NotContains(t, c.raw(), "EAAGrotated")
	})
}

// protoactor-go logs through the logger its LoggerFactory returns, with
// *actor.PID values and arbitrary panic reasons; both must come out as
// ordinary, redacted lines.
func TestProtoactorLines(t *testing.T) {
	t.Run("ActorSystemLinesUseTheHandler", func(t *testing.T) {
		secrets := NewSecrets("EAAGprotoToken")
		l, c := newTestLogger(t, secrets)
		system := actor.NewActorSystem(actor.WithLoggerFactory(func(s *actor.ActorSystem) *slog.Logger {
			return l.With("lib", "Proto.Actor", "system", s.ID)
		}))
		t.Cleanup(system.Shutdown)

		pid := system.NewLocalPID("tenant/acme")
		system.Logger().Info("[ACTOR] Recovering", slog.Any("self", pid),
			slog.Any("reason", fmt.Errorf("send failed: Authorization: Bearer EAAGprotoToken")))

		lines := c.lines(t)
		require.GreaterOrEqual(t, len(lines), 2)
		started := lines[0]
		assert.Equal(t, "actor system started", started["event"])
		assert.Equal(t, "Proto.Actor", started["lib"])
		assert.Equal(t, "wadispatch", started["service"])

		recovering := lines[len(lines)-1]
		assert.Equal(t, "[ACTOR] Recovering", recovering["event"])
		id, ok := lookup(recovering, "self.Id")
		require.True(t, ok, "PID should render field by field: %v", recovering)
		assert.Equal(t, "tenant/acme", id)
		assert.Equal(t, "send failed: Authorization: Bearer "+Redacted, recovering["reason"])
		assert.NotContains(t, c.raw(), "EAAGprotoToken")
	})
}
