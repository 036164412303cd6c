package actors

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// rotatingToken is a token source holding "old" until it is refreshed,
// then "new".
func rotatingToken() *testkit.FakeToken {
	var mu sync.Mutex
	value := "old"
	return &testkit.FakeToken{
		TokenFn: func() (string, error) {
			mu.Lock()
			defer mu.Unlock()
			return value, nil
		},
		RefreshFn: func() (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			changed := value != "new"
			value = "new"
			return changed, nil
		},
	}
}

// rejectToken answers 190 to calls made with token, success to others.
func rejectToken(token string) metaFunc {
	return func(c call) reply {
		if c.Token == token {
			return reply{Err: errAuth}
		}
		return reply{}
	}
}

func TestAuthErrorIsRetriedAtOnceWithTheRefreshedToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, Config{Tenants: []config.Tenant{tenant("a")},
			Tokens: map[string]whatsapp.TokenSource{"a": rotatingToken()}})
		h.answer(rejectToken("old"))
		h.publish("a", "j1")

		calls := h.callsFor("j1")
		require.Len(t, calls, 2)
		assert.Equal(t, []string{"old", "new"}, []string{calls[0].Token, calls[1].Token})
		assert.Equal(t, []time.Duration{0, 0}, []time.Duration{calls[0].Start, calls[1].Start})
		res := h.result("j1")
		assert.Equal(t, messages.StatusSent, res.Status)
		assert.Equal(t, "wamid.j1", res.WAMID)
		assert.Equal(t, 2, res.Attempts, "attempts count the calls made to Meta")
		assert.Empty(t, h.deferReasons("j1"))

		auth := h.logs("meta_api_auth_error", "a")
		require.Len(t, auth, 1)
		assert.Equal(t, true, auth[0]["cacheInvalidated"])
		assert.Equal(t, true, auth[0]["tokenChanged"])
		assert.EqualValues(t, 190, auth[0]["errorCode"])
		info := h.info("a")
		assert.Equal(t, "CLOSED", info.CircuitState)
		assert.Equal(t, 0, info.ConsecutiveFailures, "a token the refresh fixed is not the API failing")
	})
}

func TestAuthErrorWithAnUnchangedTokenIsABreakerFailureAndRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := tenant("a")
		a.MaxAttempts = 3
		h := startHarness(t, Config{Tenants: []config.Tenant{a}})
		h.answer(rejectToken("token-a"))
		h.publish("a", "j1")

		require.Len(t, h.callsFor("j1"), 1, "the same token is not tried twice")
		auth := h.logs("meta_api_auth_error", "a")
		require.Len(t, auth, 1)
		assert.Equal(t, true, auth[0]["cacheInvalidated"])
		assert.Equal(t, false, auth[0]["tokenChanged"])
		assert.Equal(t, 1, h.info("a").ConsecutiveFailures)
		assert.Equal(t, []string{"retry"}, h.deferReasons("j1"))
		deferred := h.copies(testkit.KindDeferred, "j1")
		require.Len(t, deferred, 1)
		assert.Equal(t, time.Second, testkit.WaitOf(deferred[0]), "the first retry backs off 1 s")

		h.advanceTo(time.Minute)
		var starts []time.Duration
		for _, c := range h.callsFor("j1") {
			starts = append(starts, c.Start)
		}
		assert.Equal(t, []time.Duration{0, time.Second, 3 * time.Second}, starts, "backoff 1 s, then 2 s")
		res := h.result("j1")
		assert.Equal(t, messages.StatusDeadLettered, res.Status)
		assert.Equal(t, messages.ReasonRetriesExhausted, res.Reason)
		assert.Equal(t, 190, res.ErrorCode)
		assert.Equal(t, messages.ReasonRetriesExhausted, h.deadLetter("j1").Publishing.Headers[messages.HeaderDLQReason])
		assert.Equal(t, 3, h.info("a").ConsecutiveFailures)
	})
}
