package logging

import (
	"fmt"
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
