package logging

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSecretsScrub(t *testing.T) {
	cases := []struct {
		name    string
		secrets []string
		text    string
		want    string
	}{
		{"LeavesTextWithoutSecretsUnchanged", []string{"EAAGtoken"}, "message_delivered", "message_delivered"},
		{"LeavesTextShorterThanEverySecretUnchanged", []string{"EAAGtoken"}, "EAAG", "EAAG"},
		{"ReplacesTheWholeText", []string{"EAAGtoken"}, "EAAGtoken", Redacted},
		{"ReplacesEveryOccurrence", []string{"EAAGtoken"}, "a EAAGtoken b EAAGtoken c", "a " + Redacted + " b " + Redacted + " c"},
		{"ReplacesEachOfSeveralSecrets", []string{"tok1", "pw22"}, "u:pw22 t:tok1", "u:" + Redacted + " t:" + Redacted},
		{"MergesAdjacentOccurrences", []string{"abcd"}, "abcdabcd!", Redacted + "!"},
		{"MergesOverlappingOccurrencesOfOneSecret", []string{"aaaa"}, "xaaaaay", "x" + Redacted + "y"},
		{"CoversASecretThatContainsAnother", []string{"abcd", "xxabcdyy"}, "<xxabcdyy>", "<" + Redacted + ">"},
		{"CoversOverlappingDifferentSecrets", []string{"abcd", "cdef"}, "-abcdef-", "-" + Redacted + "-"},
		{"ScrubsVeryShortSecretsToo", []string{"pw"}, "pw=pw", Redacted + "=" + Redacted},
		{"IgnoresEmptySecrets", []string{""}, "anything", "anything"},
		{"MatchesCaseSensitively", []string{"EAAGtoken"}, "eaagtoken", "eaagtoken"},
		{"HandlesSecretsStartingWithAnyByte", []string{"\xffkey", "\x00nul"}, "a\xffkey\xff\x00nul", "a" + Redacted + "\xff" + Redacted},
		{"HandlesMultiByteText", []string{"gëhéim"}, "wört gëhéim ünd", "wört " + Redacted + " ünd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, NewSecrets(tc.secrets...).Scrub(tc.text))
		})
	}

	t.Run("NilAndZeroRegistriesScrubNothing", func(t *testing.T) {
		var nilSecrets *Secrets
		assert.Equal(t, "EAAGtoken", nilSecrets.Scrub("EAAGtoken"))
		assert.Equal(t, "EAAGtoken", (&Secrets{}).Scrub("EAAGtoken"))
		assert.Zero(t, nilSecrets.Len())
	})
}

func TestSecretsAdd(t *testing.T) {
	t.Run("IgnoresDuplicatesAndEmptyValues", func(t *testing.T) {
		s := NewSecrets("a1", "a1", "")
		s.Add("a1", "b2", "")
		assert.Equal(t, 2, s.Len())
	})

	t.Run("ScrubsAValueAddedLater", func(t *testing.T) {
		s := NewSecrets("first")
		require.Equal(t, "second", s.Scrub("second"))
		s.Add("second")
		assert.Equal(t, Redacted, s.Scrub("second"))
	})

	t.Run("AcceptsAddsWhileScrubbingConcurrently", func(t *testing.T) {
		s := NewSecrets()
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for i := range 100 {
					v := fmt.Sprintf("secret-%d-%d", g, i)
					s.Add(v)
					assert.Equal(t, "x"+Redacted, s.Scrub("x"+v))
				}
			})
		}
		wg.Wait()
		assert.Equal(t, 400, s.Len())
	})
}

func TestSecretsAddAtScale(t *testing.T) {
	const n = 5000
	token := func(i int) string { return fmt.Sprintf("EAAG%dZBm0PBxZC", i) }
	s := NewSecrets()
	for i := range n {
		s.Add(token(i))
	}
	require.Equal(t, n, s.Len())

	t.Run("ScrubsEveryRegisteredValue", func(t *testing.T) {
		for i := range n {
			require.Equal(t, "<"+Redacted+">", s.Scrub("<"+token(i)+">"), "token %d", i)
		}
	})

	t.Run("ReAddingAHeldValueLeavesTheSnapshotAlone", func(t *testing.T) {
		before := s.snapshot()
		s.Add(token(0), token(n-1), "")
		assert.Same(t, before, s.snapshot(), "handlers rebuild on a new generation")
		assert.Equal(t, n, s.Len())
	})

	t.Run("ReAddingAHeldValueDoesNotAllocate", func(t *testing.T) {
		for range 2 { // enough Adds that every value reaches the lock-free set
			for i := range n {
				s.Add(token(i))
			}
		}
		v := token(n / 2)
		assert.Zero(t, testing.AllocsPerRun(100, func() { s.Add(v) }))
	})
}

func TestSecretsScrubMatchesReference(t *testing.T) {
	// Secrets over a two-letter alphabet overlap, nest and abut in every
	// way; each text is compared with a scrub that marks every byte any
	// occurrence covers and redacts each maximal run of marked bytes.
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(maxLen int) string {
		b := make([]byte, 1+rng.IntN(maxLen))
		for i := range b {
			b[i] = "ab"[rng.IntN(2)]
		}
		return string(b)
	}
	for round := range 300 {
		s := NewSecrets()
		var secrets []string
		for range 1 + rng.IntN(80) { // beyond linearRun, so runs are binary searched
			v := word(7)
			s.Add(v)
			secrets = append(secrets, v)
			text := "x" + word(20) + "x" + word(20)
			require.Equal(t, referenceScrub(secrets, text), s.Scrub(text), "round %d: secrets %q, text %q", round, secrets, text)
		}
	}
}

func referenceScrub(secrets []string, text string) string {
	covered := make([]bool, len(text))
	for _, v := range secrets {
		for i := range len(text) - len(v) + 1 {
			if strings.HasPrefix(text[i:], v) {
				for j := range len(v) {
					covered[i+j] = true
				}
			}
		}
	}
	var b strings.Builder
	for i := 0; i < len(text); i++ {
		if !covered[i] {
			b.WriteByte(text[i])
			continue
		}
		b.WriteString(Redacted)
		for i+1 < len(text) && covered[i+1] {
			i++
		}
	}
	return b.String()
}

func TestSecretsConcurrentAddAndScrub(t *testing.T) {
	t.Run("ScrubsEveryValueOnceAddReturned", func(t *testing.T) {
		s := NewSecrets("broker-pw")
		stop := make(chan struct{})
		var readers sync.WaitGroup
		for range 2 {
			readers.Go(func() { // logs lines while tokens are registered
				for {
					select {
					case <-stop:
						return
					default:
						assert.Equal(t, "pw "+Redacted, s.Scrub("pw broker-pw"))
					}
				}
			})
		}
		added := make(chan string, 64)
		var writers sync.WaitGroup
		for g := range 3 {
			writers.Go(func() {
				for i := range 300 {
					v := fmt.Sprintf("EAAG-%d-%d", g, i)
					s.Add(v)
					s.Add(v, "broker-pw") // the per-send re-registration
					added <- v
				}
			})
		}
		go func() { writers.Wait(); close(added) }()
		for v := range added { // received after Add returned, on another goroutine
			assert.Equal(t, "t="+Redacted+";", s.Scrub("t="+v+";"))
		}
		close(stop)
		readers.Wait()
		assert.Equal(t, 901, s.Len())
	})
}

func TestPasswordFromURL(t *testing.T) {
	cases := []struct {
		name string
		url  string
		want string
	}{
		{"ReturnsThePassword", "amqp://guest:guest@127.0.0.1:5672/", "guest"},
		{"ReturnsItForAMQPS", "amqps://wadispatch:s3cret@rabbit.example:5671/prod", "s3cret"},
		{"DecodesPercentEncoding", "amqp://u:p%40ss%2Fw%23rd@host/", "p@ss/w#rd"},
		{"ReturnsEmptyWithoutUserinfo", "amqp://127.0.0.1:5672/", ""},
		{"ReturnsEmptyWithUserOnly", "amqp://guest@127.0.0.1/", ""},
		{"ReturnsEmptyForEmptyPassword", "amqp://guest:@127.0.0.1/", ""},
		{"ReturnsEmptyForGarbage", "not a url", ""},
		{"CopesWithUnencodedSlashInPassword", "amqp://u:pa/ss@host:5672/", "pa/ss"},
		{"CopesWithUnencodedAtInPassword", "amqp://u:p@ss@host:5672/", "p@ss"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, PasswordFromURL(tc.url))
		})
	}
}

func TestURLPasswords(t *testing.T) {
	t.Run("ReturnsRawAndDecodedForms", func(t *testing.T) {
		assert.Equal(t, []string{"p%40ss%2Fw%23rd", "p@ss/w#rd"}, URLPasswords("amqp://u:p%40ss%2Fw%23rd@host/"))
	})
	t.Run("ReturnsOneFormWhenNothingIsEncoded", func(t *testing.T) {
		assert.Equal(t, []string{"guest"}, URLPasswords("amqp://guest:guest@127.0.0.1:5672/"))
	})
	t.Run("ReturnsNothingWithoutPassword", func(t *testing.T) {
		assert.Empty(t, URLPasswords("amqp://127.0.0.1:5672/"))
	})
	t.Run("RegisteredFormsScrubAURLQuotedInAnError", func(t *testing.T) {
		raw := "amqp://u:p%40ss%2Fw%23rd@host/"
		s := NewSecrets(URLPasswords(raw)...)
		got := s.Scrub(fmt.Sprintf("dial %q: refused (password p@ss/w#rd)", raw))
		assert.False(t, strings.Contains(got, "p%40ss") || strings.Contains(got, "p@ss/w#rd"), got)
	})
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"ReplacesThePassword", "amqp://user:s3cr3t@broker:5672/vhost", "amqp://user:****@broker:5672/vhost"},
		{"ReplacesAnEncodedPassword", "amqp://u:p%40ss%2Fw%23rd@host/", "amqp://u:****@host/"},
		{"ReplacesAnEmptyPassword", "amqp://user:@broker/", "amqp://user:****@broker/"},
		{"LeavesAURLWithoutOne", "amqp://broker:5672/", "amqp://broker:5672/"},
		{"LeavesAUserWithoutPassword", "amqp://user@broker:5672/", "amqp://user@broker:5672/"},
		{"MasksThePasswordOfAnUnparsableURL", "amqp://user:p%zz@broker", "amqp://user:****@broker"},
		{"MasksUpToTheLastAtOfAnUnparsableURL", "amqp://user:p@ss@broker/v", "amqp://user:****@broker/v"},
		{"MasksAllOfAnUnparsableURLWithoutScheme", ":s3cr3t@broker", "****"},
		{"MasksThePasswordOfAURLWithoutSlashes", "user:s3cr3t@broker", "user:****@broker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, RedactURL(tt.in))
		})
	}
}
