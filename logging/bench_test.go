package logging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// benchSecrets registers what a running worker holds: nine tenants' access
// tokens (Meta's are about 200 characters) and the broker password.
func benchSecrets() *Secrets {
	s := NewSecrets("hunter2-broker-pw")
	for i := range 9 {
		s.Add(fmt.Sprintf("EAAG%dZBm0PBxZC%s", i, strings.Repeat("x7Q", 64)))
	}
	return s
}

// benchShortSecrets registers ten 12-character secrets, so that every string
// attribute is long enough to be searched for every one of them.
func benchShortSecrets() *Secrets {
	s := NewSecrets()
	for i := range 10 {
		s.Add(fmt.Sprintf("pw-%09d", i))
	}
	return s
}

func logMessageDelivered(l *slog.Logger) {
	l.LogAttrs(context.Background(), slog.LevelInfo, "message_delivered",
		slog.String("tenantId", "acme"),
		slog.String("internalId", "order-1042-confirmation"),
		slog.String("wamid", "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"),
		slog.Duration("duration", 212*time.Millisecond),
		slog.Int("attempts", 1),
	)
}

// BenchmarkMessageDelivered measures a typical message_delivered line to
// io.Discard: through this handler with 10 registered secrets, and through a
// bare slog.JSONHandler for comparison.
func BenchmarkMessageDelivered(b *testing.B) {
	run := func(b *testing.B, l *slog.Logger) {
		b.ReportAllocs()
		for b.Loop() {
			logMessageDelivered(l)
		}
	}
	b.Run("Handler", func(b *testing.B) {
		run(b, New(io.Discard, Options{Version: "1.0.0", Secrets: benchSecrets()}))
	})
	b.Run("HandlerShortSecrets", func(b *testing.B) {
		run(b, New(io.Discard, Options{Version: "1.0.0", Secrets: benchShortSecrets()}))
	})
	b.Run("HandlerWithTenantLogger", func(b *testing.B) {
		run(b, New(io.Discard, Options{Version: "1.0.0", Secrets: benchSecrets()}).With("phoneNumberId", "106540352242922"))
	})
	b.Run("BareJSONHandler", func(b *testing.B) {
		run(b, slog.New(slog.NewJSONHandler(io.Discard, nil)).With("service", "wadispatch", "version", "1.0.0"))
	})
	// The same line format without redaction: what the format alone costs.
	b.Run("BareJSONHandlerWithLineFormat", func(b *testing.B) {
		h := slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{ReplaceAttr: replaceBuiltin})
		run(b, slog.New(h).With("service", "wadispatch", "version", "1.0.0"))
	})
}

// BenchmarkSlowPath measures lines that need the slow path: a secret inside
// an error text, and a struct that is walked by reflection.
func BenchmarkSlowPath(b *testing.B) {
	secrets := benchShortSecrets()
	l := New(io.Discard, Options{Secrets: secrets})
	err := errors.New("Post https://graph.facebook.com/v23.0/1065/messages: Authorization: Bearer pw-000000007: timeout")
	b.Run("SecretInError", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l.LogAttrs(context.Background(), slog.LevelError, "meta_api_error",
				slog.String("tenantId", "acme"), slog.Any("error", err))
		}
	})
	cfg := sensitiveConfig{Name: "acme", AccessToken: "pw-000000003", Port: 5672}
	b.Run("Struct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l.LogAttrs(context.Background(), slog.LevelInfo, "config_loaded", slog.Any("cfg", cfg))
		}
	})
}

// BenchmarkSecretsAddExisting measures what the worker does on every send:
// re-register a token the registry already holds, among 10,000 tenants'.
func BenchmarkSecretsAddExisting(b *testing.B) {
	s := NewSecrets()
	tokens := make([]string, 10_000)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("EAAG%dZBm0PBxZC%s", i, strings.Repeat("x7Q", 64))
		s.Add(tokens[i])
	}
	for _, v := range tokens { // a running worker has re-registered each
		s.Add(v)
	}
	b.Run("Sequential", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			s.Add(tokens[i%len(tokens)])
			i++
		}
	})
	b.Run("Parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				s.Add(tokens[i%len(tokens)])
				i++
			}
		})
	})
}

// BenchmarkSecretsAddMany measures start-up: registering every tenant's
// token one by one.
func BenchmarkSecretsAddMany(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		tokens := make([]string, n)
		for i := range tokens {
			tokens[i] = fmt.Sprintf("EAAG%dZBm0PBxZC%s", i, strings.Repeat("x7Q", 64))
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s := NewSecrets()
				for _, v := range tokens {
					s.Add(v)
				}
			}
		})
	}
}

// BenchmarkSecretsScrubMany measures scrubbing an error text as long as a
// token, with capital Es in it, against 10,000 registered tokens: all of
// them start with an E.
func BenchmarkSecretsScrubMany(b *testing.B) {
	s := NewSecrets()
	for i := range 10_000 {
		s.Add(fmt.Sprintf("EAAG%dZBm0PBxZC%s", i, strings.Repeat("x7Q", 64)))
	}
	text := strings.Repeat("Error: Expected an EAAG token, got an Envelope. ", 5)
	b.ReportAllocs()
	for b.Loop() {
		if s.Scrub(text) != text {
			b.Fatal("scrubbed text that holds no secret")
		}
	}
}
