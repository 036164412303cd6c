package fakemeta_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

const (
	phoneID = "106540352242922"
	token   = "EAAG-test-token"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// reply is a decoded Graph API answer.
type reply struct {
	Status int
	Raw    []byte
	Header http.Header

	MessagingProduct string `json:"messaging_product"`
	Contacts         []struct {
		Input string `json:"input"`
		WAID  string `json:"wa_id"`
	} `json:"contacts"`
	Messages []struct {
		ID string `json:"id"`
	} `json:"messages"`
	Error *struct {
		Message   string `json:"message"`
		Type      string `json:"type"`
		Code      int    `json:"code"`
		Subcode   int    `json:"error_subcode"`
		ErrorData *struct {
			MessagingProduct string `json:"messaging_product"`
			Details          string `json:"details"`
		} `json:"error_data"`
		FBTraceID string `json:"fbtrace_id"`
	} `json:"error"`
}

func textBody(to string) []byte {
	return fmt.Appendf(nil, `{"messaging_product":"whatsapp","recipient_type":"individual","to":%q,"type":"text","text":{"body":"hi"}}`, to)
}

func newFake(t *testing.T) *fakemeta.Server {
	t.Helper()
	f := testkit.StartFakeMeta(t)
	f.AddTenant(phoneID, token)
	return f
}

// post sends one request; it reports problems as errors so goroutines can
// call it too.
func post(client *http.Client, url, tok string, body []byte) (reply, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	r := reply{Status: resp.StatusCode, Raw: raw, Header: resp.Header}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r); err != nil {
			return reply{}, fmt.Errorf("decode %s: %w", raw, err)
		}
	}
	return r, nil
}

func send(t *testing.T, f *fakemeta.Server, phone, tok string, body []byte) reply {
	t.Helper()
	r, err := post(http.DefaultClient, messagesURL(f, phone), tok, body)
	require.NoError(t, err)
	return r
}

func messagesURL(f *fakemeta.Server, phone string) string {
	return f.URL() + "/v23.0/" + phone + "/messages"
}

func requireGraphError(t *testing.T, r reply, status, code int) {
	t.Helper()
	require.Equal(t, status, r.Status, "body: %s", r.Raw)
	require.NotNil(t, r.Error, "body: %s", r.Raw)
	assert.Equal(t, code, r.Error.Code)
	assert.NotEmpty(t, r.Error.Message)
	assert.NotEmpty(t, r.Error.Type)
	assert.True(t, strings.HasPrefix(r.Error.FBTraceID, "A"), "fbtrace_id %q", r.Error.FBTraceID)
	assert.Empty(t, r.Messages)
}

func TestFakeMetaAnswers(t *testing.T) {
	t.Run("SuccessAnswersUniqueWamids", func(t *testing.T) {
		f := newFake(t)
		seen := map[string]bool{}
		for i := range 5 {
			to := fmt.Sprintf("1555000000%d", i)
			r := send(t, f, phoneID, token, textBody(to))
			require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Raw)
			assert.Equal(t, "whatsapp", r.MessagingProduct)
			require.Len(t, r.Contacts, 1)
			assert.Equal(t, to, r.Contacts[0].Input)
			assert.Equal(t, to, r.Contacts[0].WAID)
			require.Len(t, r.Messages, 1)
			id := r.Messages[0].ID
			assert.True(t, strings.HasPrefix(id, "wamid."), id)
			assert.False(t, seen[id], "duplicate wamid %s", id)
			seen[id] = true
			assert.Nil(t, r.Error)
		}
	})

	t.Run("WrongTokenAnswers401Code190", func(t *testing.T) {
		f := newFake(t)
		r := send(t, f, phoneID, "wrong", textBody("15551234567"))
		requireGraphError(t, r, http.StatusUnauthorized, 190)
		assert.Equal(t, "OAuthException", r.Error.Type)
		assert.NotContains(t, string(r.Raw), token)
	})

	t.Run("MissingTokenAnswers401Code190", func(t *testing.T) {
		f := newFake(t)
		r := send(t, f, phoneID, "", textBody("15551234567"))
		requireGraphError(t, r, http.StatusUnauthorized, 190)
		assert.Equal(t, "OAuthException", r.Error.Type)
	})

	t.Run("ReplacedTokenIsTheOnlyOneAccepted", func(t *testing.T) {
		f := newFake(t)
		f.AddTenant(phoneID, "rotated")
		requireGraphError(t, send(t, f, phoneID, token, textBody("1")), http.StatusUnauthorized, 190)
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, "rotated", textBody("1")).Status)
	})

	t.Run("UnknownPhoneAnswersCode100", func(t *testing.T) {
		f := newFake(t)
		r := send(t, f, "999", token, textBody("15551234567"))
		requireGraphError(t, r, http.StatusBadRequest, 100)
		assert.Contains(t, r.Error.Message, "Unsupported post request")
	})

	t.Run("UnknownPathAnswers404Code100", func(t *testing.T) {
		f := newFake(t)
		for _, path := range []string{"/v23.0/" + phoneID + "/media", "/latest/" + phoneID + "/messages", "/v23.0/messages", "/"} {
			r, err := post(http.DefaultClient, f.URL()+path, token, textBody("1"))
			require.NoError(t, err)
			requireGraphError(t, r, http.StatusNotFound, 100)
		}
		resp, err := http.Get(messagesURL(f, phoneID))
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	})

	t.Run("BadPayloadAnswersCode100", func(t *testing.T) {
		f := newFake(t)
		for name, body := range map[string]string{
			"NotJSON":           `hello`,
			"Array":             `[{"messaging_product":"whatsapp","to":"1","type":"text"}]`,
			"Null":              `null`,
			"WrongProduct":      `{"messaging_product":"sms","to":"1","type":"text"}`,
			"MissingProduct":    `{"to":"1","type":"text"}`,
			"EmptyTo":           `{"messaging_product":"whatsapp","to":"","type":"text"}`,
			"MissingType":       `{"messaging_product":"whatsapp","to":"1"}`,
			"NumberTo":          `{"messaging_product":"whatsapp","to":1,"type":"text"}`,
			"TruncatedObject":   `{"messaging_product":"whatsapp","to":"1","type":"text"`,
			"EmptyBody":         ``,
			"WhitespaceOnlyObj": `   `,
		} {
			r := send(t, f, phoneID, token, []byte(body))
			requireGraphError(t, r, http.StatusBadRequest, 100)
			require.NotNil(t, r.Error.ErrorData, name)
			assert.NotEmpty(t, r.Error.ErrorData.Details, name)
		}
	})

	t.Run("AuthIsCheckedBeforePayload", func(t *testing.T) {
		f := newFake(t)
		requireGraphError(t, send(t, f, phoneID, "wrong", []byte(`nope`)), http.StatusUnauthorized, 190)
	})
}

func TestFakeMetaFailures(t *testing.T) {
	t.Run("FailCodeTwiceThenSucceeds", func(t *testing.T) {
		f := newFake(t)
		f.Behave(phoneID, fakemeta.Behaviour{FailCode: 131000, FailTimes: 2})
		for range 2 {
			r := send(t, f, phoneID, token, textBody("1"))
			requireGraphError(t, r, http.StatusInternalServerError, 131000)
			require.NotNil(t, r.Error.ErrorData)
			assert.Equal(t, "whatsapp", r.Error.ErrorData.MessagingProduct)
		}
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("1")).Status)
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("1")).Status)
	})

	t.Run("FailCodeWithoutTimesFailsForever", func(t *testing.T) {
		f := newFake(t)
		f.Behave(phoneID, fakemeta.Behaviour{FailCode: 131026})
		for range 4 {
			requireGraphError(t, send(t, f, phoneID, token, textBody("1")), http.StatusBadRequest, 131026)
		}
	})

	t.Run("FailStatusDefaultsByCode", func(t *testing.T) {
		for _, tc := range []struct{ code, status int }{
			{4, 429}, {80007, 429}, {130429, 429},
			{190, 401}, {1, 500}, {2, 500}, {131000, 500},
			{100, 400}, {131056, 400}, {368, 400},
		} {
			f := newFake(t)
			f.Behave(phoneID, fakemeta.Behaviour{FailCode: tc.code})
			requireGraphError(t, send(t, f, phoneID, token, textBody("1")), tc.status, tc.code)
		}
	})

	t.Run("FailHTTPAndSubcodeAreAnswered", func(t *testing.T) {
		f := newFake(t)
		f.Behave(phoneID, fakemeta.Behaviour{FailCode: 190, FailSubcode: 463, FailHTTP: 400})
		r := send(t, f, phoneID, token, textBody("1"))
		requireGraphError(t, r, http.StatusBadRequest, 190)
		assert.Equal(t, 463, r.Error.Subcode)
	})

	t.Run("FailHTTPAloneScriptsCode0", func(t *testing.T) {
		f := newFake(t)
		f.Behave(phoneID, fakemeta.Behaviour{FailHTTP: 401})
		r := send(t, f, phoneID, token, textBody("1"))
		requireGraphError(t, r, http.StatusUnauthorized, 0)
	})

	t.Run("FailRawAnswersBareStatusWithEmptyBody", func(t *testing.T) {
		f := newFake(t)
		f.Behave(phoneID, fakemeta.Behaviour{FailRaw: 500, FailTimes: 1})
		r := send(t, f, phoneID, token, textBody("1"))
		assert.Equal(t, http.StatusInternalServerError, r.Status)
		assert.Empty(t, r.Raw)
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("1")).Status)
	})

	t.Run("BehaveReplacesAndResetsCount", func(t *testing.T) {
		f := newFake(t)
		f.Behave(phoneID, fakemeta.Behaviour{FailCode: 2, FailTimes: 1})
		requireGraphError(t, send(t, f, phoneID, token, textBody("1")), http.StatusInternalServerError, 2)
		f.Behave(phoneID, fakemeta.Behaviour{FailCode: 2, FailTimes: 1})
		requireGraphError(t, send(t, f, phoneID, token, textBody("1")), http.StatusInternalServerError, 2)
		f.Behave(phoneID, fakemeta.Behaviour{})
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("1")).Status)
	})

	t.Run("BehaviourIsPerPhone", func(t *testing.T) {
		f := newFake(t)
		f.AddTenant("2", "other")
		f.Behave(phoneID, fakemeta.Behaviour{FailCode: 131000})
		assert.Equal(t, http.StatusOK, send(t, f, "2", "other", textBody("1")).Status)
	})

	t.Run("BehaviourWithoutTenantStillAnswersUnknownPhone", func(t *testing.T) {
		f := newFake(t)
		f.Behave("777", fakemeta.Behaviour{FailCode: 131000})
		requireGraphError(t, send(t, f, "777", token, textBody("1")), http.StatusBadRequest, 100)
	})
}

func TestFakeMetaTiming(t *testing.T) {
	t.Run("LatencyDelaysTheAnswer", func(t *testing.T) {
		f := newFake(t)
		const latency = 80 * time.Millisecond
		f.Behave(phoneID, fakemeta.Behaviour{Latency: fakemeta.Latency{Median: latency}})
		start := time.Now()
		r := send(t, f, phoneID, token, textBody("1"))
		assert.Equal(t, http.StatusOK, r.Status)
		assert.GreaterOrEqual(t, time.Since(start), latency)
	})

	t.Run("HangEndsWhenClientGivesUp", func(t *testing.T) {
		f := newFake(t)
		f.Behave(phoneID, fakemeta.Behaviour{Hang: true})
		client := &http.Client{Timeout: 100 * time.Millisecond}
		_, err := post(client, messagesURL(f, phoneID), token, textBody("1"))
		require.Error(t, err)

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, f.WaitCalls(ctx, 1))
		calls := f.Calls()
		assert.Equal(t, 0, calls[0].Status)
		assert.Empty(t, calls[0].WAMID)
		assert.Equal(t, 0, f.InFlight())
	})

	t.Run("HangEndsOnClose", func(t *testing.T) {
		f := newFake(t)
		f.Behave(phoneID, fakemeta.Behaviour{Hang: true})
		errs := make(chan error, 1)
		go func() {
			_, err := post(http.DefaultClient, messagesURL(f, phoneID), token, textBody("1"))
			errs <- err
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, f.WaitInFlight(ctx, 1))

		require.NoError(t, f.Close())
		select {
		case err := <-errs:
			assert.Error(t, err)
		case <-ctx.Done():
			require.FailNow(t, "client still hung after Close")
		}
		calls := f.Calls()
		require.Len(t, calls, 1, "Close waits for released calls to be logged")
		assert.Equal(t, 0, calls[0].Status)
		assert.Equal(t, 0, f.InFlight())
		assert.NoError(t, f.Close(), "second Close")
	})

	t.Run("LatencyEndsWhenClientGivesUp", func(t *testing.T) {
		f := newFake(t)
		f.Behave(phoneID, fakemeta.Behaviour{Latency: fakemeta.Latency{Median: time.Hour}})
		client := &http.Client{Timeout: 50 * time.Millisecond}
		_, err := post(client, messagesURL(f, phoneID), token, textBody("1"))
		require.Error(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, f.WaitCalls(ctx, 1))
		assert.Equal(t, 0, f.Calls()[0].Status)
	})
}

func TestFakeMetaRates(t *testing.T) {
	t.Run("RateLimitAllowsBurstThenAnswers130429", func(t *testing.T) {
		f := newFake(t)
		f.Behave(phoneID, fakemeta.Behaviour{RateLimit: &fakemeta.Rate{PerMinute: 1, Burst: 3}})
		for i := range 3 {
			assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody(fmt.Sprint(i))).Status)
		}
		requireGraphError(t, send(t, f, phoneID, token, textBody("9")), http.StatusTooManyRequests, 130429)
	})

	t.Run("RateLimitRefillsWithTheClock", func(t *testing.T) {
		f := newFake(t)
		clock := testkit.NewFakeClock(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
		f.SetClock(clock.Now)
		f.Behave(phoneID, fakemeta.Behaviour{RateLimit: &fakemeta.Rate{PerMinute: 60, Burst: 2}})
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("1")).Status)
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("2")).Status)
		requireGraphError(t, send(t, f, phoneID, token, textBody("3")), http.StatusTooManyRequests, 130429)

		clock.Advance(time.Second)
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("4")).Status)
		requireGraphError(t, send(t, f, phoneID, token, textBody("5")), http.StatusTooManyRequests, 130429)

		clock.Advance(time.Hour)
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("6")).Status)
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("7")).Status)
		requireGraphError(t, send(t, f, phoneID, token, textBody("8")), http.StatusTooManyRequests, 130429)
	})

	t.Run("PairRateRejectsSameRecipientOnly", func(t *testing.T) {
		f := newFake(t)
		f.SetClock(testkit.NewFakeClock(t0).Now)
		f.Behave(phoneID, fakemeta.Behaviour{PairRate: &fakemeta.Rate{PerMinute: 1, Burst: 1}})
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("111")).Status)
		requireGraphError(t, send(t, f, phoneID, token, textBody("111")), http.StatusBadRequest, 131056)
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("222")).Status)
	})

	t.Run("PairRatePassesAfterTheInterval", func(t *testing.T) {
		f := newFake(t)
		clock := testkit.NewFakeClock(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
		f.SetClock(clock.Now)
		f.Behave(phoneID, fakemeta.Behaviour{PairRate: &fakemeta.Rate{PerMinute: 10, Burst: 1}})
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("111")).Status)
		clock.Advance(5 * time.Second)
		requireGraphError(t, send(t, f, phoneID, token, textBody("111")), http.StatusBadRequest, 131056)
		clock.Advance(time.Second)
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("111")).Status)
	})

	t.Run("PairRateRejectionTakesNoRateToken", func(t *testing.T) {
		f := newFake(t)
		f.SetClock(testkit.NewFakeClock(t0).Now)
		f.Behave(phoneID, fakemeta.Behaviour{PairRate: &fakemeta.Rate{PerMinute: 1, Burst: 1}, RateLimit: &fakemeta.Rate{PerMinute: 1, Burst: 2}})
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("111")).Status)
		requireGraphError(t, send(t, f, phoneID, token, textBody("111")), http.StatusBadRequest, 131056)
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("222")).Status)
		requireGraphError(t, send(t, f, phoneID, token, textBody("333")), http.StatusTooManyRequests, 130429)
	})
	t.Run("PairRateIsABucketPerRecipient", func(t *testing.T) {
		f := newFake(t)
		clock := testkit.NewFakeClock(t0)
		f.SetClock(clock.Now)
		// Meta: about one message every 6 s to one user, bursts of up to 45.
		f.Behave(phoneID, fakemeta.Behaviour{PairRate: &fakemeta.Rate{PerMinute: 10, Burst: 45}})
		for i := range 45 {
			require.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("111")).Status, "burst send %d", i)
		}
		requireGraphError(t, send(t, f, phoneID, token, textBody("111")), http.StatusBadRequest, 131056)
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("222")).Status, "another recipient has its own bucket")

		clock.Advance(5 * time.Second)
		requireGraphError(t, send(t, f, phoneID, token, textBody("111")), http.StatusBadRequest, 131056)
		clock.Advance(time.Second) // 6 s since the burst: one token
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("111")).Status)
		requireGraphError(t, send(t, f, phoneID, token, textBody("111")), http.StatusBadRequest, 131056)

		clock.Advance(time.Hour) // refills to the burst, not beyond
		for i := range 45 {
			require.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("111")).Status, "second burst send %d", i)
		}
		requireGraphError(t, send(t, f, phoneID, token, textBody("111")), http.StatusBadRequest, 131056)

		assert.Equal(t, 4, f.PairLimited(phoneID))
		assert.Zero(t, f.RateLimited(phoneID))
		assert.Zero(t, f.PairLimited("unknown"))
	})

	t.Run("RefillInStepsMakesWholeTokens", func(t *testing.T) {
		f := newFake(t)
		clock := testkit.NewFakeClock(t0)
		f.SetClock(clock.Now)
		f.Behave(phoneID, fakemeta.Behaviour{RateLimit: &fakemeta.Rate{PerMinute: 10, Burst: 1}})
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("111")).Status)
		for range 5 { // each refused try refills a sixth of a token
			clock.Advance(time.Second)
			requireGraphError(t, send(t, f, phoneID, token, textBody("111")), http.StatusTooManyRequests, 130429)
		}
		clock.Advance(time.Second)
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("111")).Status, "six sixths make a token despite float rounding")
	})

	t.Run("RatesCopyTheCallersRate", func(t *testing.T) {
		f := newFake(t)
		f.SetClock(testkit.NewFakeClock(t0).Now)
		pair, rate := &fakemeta.Rate{Burst: 1}, &fakemeta.Rate{Burst: 2}
		f.Behave(phoneID, fakemeta.Behaviour{PairRate: pair, RateLimit: rate})
		pair.Burst, rate.Burst = 100, 100
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("111")).Status)
		requireGraphError(t, send(t, f, phoneID, token, textBody("111")), http.StatusBadRequest, 131056)
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("222")).Status)
		requireGraphError(t, send(t, f, phoneID, token, textBody("333")), http.StatusTooManyRequests, 130429)
	})

	t.Run("RateLimitIsExactForRequestsInFlightAtOnce", func(t *testing.T) {
		f := newFake(t)
		f.AddTenant("2", "other")
		f.SetClock(testkit.NewFakeClock(t0).Now) // no refill: exactly the burst passes
		const burst, senders = 10, 40
		// The latency keeps the requests in flight together; nothing below
		// depends on how long it is.
		f.Behave(phoneID, fakemeta.Behaviour{
			RateLimit: &fakemeta.Rate{PerMinute: 60, Burst: burst},
			Latency:   fakemeta.Latency{Median: 50 * time.Millisecond},
		})
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders}}
		start := make(chan struct{})
		statuses := make([]int, senders)
		var wg sync.WaitGroup
		for i := range senders {
			wg.Go(func() {
				<-start
				r, err := post(client, messagesURL(f, phoneID), token, textBody(fmt.Sprint(i)))
				if assert.NoError(t, err) {
					statuses[i] = r.Status
				}
			})
		}
		close(start)
		wg.Wait()

		count := map[int]int{}
		for _, s := range statuses {
			count[s]++
		}
		assert.Equal(t, map[int]int{http.StatusOK: burst, http.StatusTooManyRequests: senders - burst}, count)
		assert.Equal(t, senders-burst, f.RateLimited(phoneID))
		assert.Zero(t, f.RateLimited("2"))
		throttled := 0
		for _, c := range f.Calls() {
			if c.ErrorCode == 130429 {
				throttled++
			}
		}
		assert.Equal(t, senders-burst, throttled)

		f.Behave(phoneID, fakemeta.Behaviour{})
		assert.Equal(t, senders-burst, f.RateLimited(phoneID), "Behave keeps the count")
		f.Reset()
		assert.Zero(t, f.RateLimited(phoneID), "Reset clears it")
	})

	t.Run("ScriptedThrottlingIsNotCountedAsRateLimited", func(t *testing.T) {
		f := newFake(t)
		f.Behave(phoneID, fakemeta.Behaviour{FailCode: 130429, FailTimes: 1})
		requireGraphError(t, send(t, f, phoneID, token, textBody("1")), http.StatusTooManyRequests, 130429)
		assert.Zero(t, f.RateLimited(phoneID))
	})
}

func TestFakeMetaDefault(t *testing.T) {
	t.Run("AppliesToEveryPhoneWithoutItsOwn", func(t *testing.T) {
		f := newFake(t)
		f.SetDefault(fakemeta.Behaviour{FailCode: 131026})
		f.AddTenant("2", "other") // registered after SetDefault
		requireGraphError(t, send(t, f, phoneID, token, textBody("1")), http.StatusBadRequest, 131026)
		requireGraphError(t, send(t, f, "2", "other", textBody("1")), http.StatusBadRequest, 131026)

		f.Behave("2", fakemeta.Behaviour{})
		assert.Equal(t, http.StatusOK, send(t, f, "2", "other", textBody("1")).Status, "Behave overrides the default")
		f.SetDefault(fakemeta.Behaviour{FailCode: 131000})
		assert.Equal(t, http.StatusOK, send(t, f, "2", "other", textBody("1")).Status, "a new default leaves own behaviour alone")
		requireGraphError(t, send(t, f, phoneID, token, textBody("1")), http.StatusInternalServerError, 131000)

		f.UseDefault("2")
		requireGraphError(t, send(t, f, "2", "other", textBody("1")), http.StatusInternalServerError, 131000)
		f.UseDefault("never-seen") // no-op

		f.SetDefault(fakemeta.Behaviour{})
		assert.Equal(t, http.StatusOK, send(t, f, phoneID, token, textBody("1")).Status)
		assert.Equal(t, http.StatusOK, send(t, f, "2", "other", textBody("1")).Status, "back on the default, 2 follows its changes")
	})

	t.Run("EachPhoneHasItsOwnBucketAndCount", func(t *testing.T) {
		f := newFake(t)
		f.SetClock(testkit.NewFakeClock(t0).Now)
		f.AddTenant("2", "other")
		rate := &fakemeta.Rate{PerMinute: 1, Burst: 1}
		f.SetDefault(fakemeta.Behaviour{RateLimit: rate, FailCode: 131000, FailTimes: 1})
		rate.Burst = 100 // SetDefault copied it
		f.AddTenant("3", "third")
		for _, ph := range []struct{ id, tok string }{{phoneID, token}, {"2", "other"}, {"3", "third"}} {
			requireGraphError(t, send(t, f, ph.id, ph.tok, textBody("1")), http.StatusInternalServerError, 131000)
			assert.Equal(t, http.StatusOK, send(t, f, ph.id, ph.tok, textBody("1")).Status, ph.id)
			requireGraphError(t, send(t, f, ph.id, ph.tok, textBody("1")), http.StatusTooManyRequests, 130429)
			assert.Equal(t, 1, f.RateLimited(ph.id))
		}
	})
}

func TestLatencySample(t *testing.T) {
	t.Run("LogNormalHasItsMedianSpreadAndCap", func(t *testing.T) {
		l := fakemeta.Latency{Median: 300 * time.Millisecond, Sigma: 0.5, Max: time.Second}
		r := rand.New(rand.NewPCG(1, 2))
		n := 20001
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = l.Sample(r)
		}
		slices.Sort(s)
		within := func(got, want time.Duration, tol float64, what string) {
			t.Helper()
			assert.InDelta(t, float64(want), float64(got), tol*float64(want), "%s: got %s, want %s", what, got, want)
		}
		within(s[n/2], l.Median, 0.03, "median")
		// One sigma above the median is the 84.13th percentile.
		within(s[int(0.8413*float64(n))], time.Duration(float64(l.Median)*math.Exp(0.5)), 0.05, "p84")
		within(s[int(0.1587*float64(n))], time.Duration(float64(l.Median)*math.Exp(-0.5)), 0.05, "p16")
		assert.Positive(t, s[0])
		assert.Equal(t, l.Max, s[n-1], "the cap is reached and never passed")
		// P(sample > 1 s) = P(Z > ln(10/3)/0.5) = 0.8%.
		capped := n - slices.Index(s, l.Max)
		assert.InDelta(t, 0.008*float64(n), capped, 0.004*float64(n), "samples at the cap")
	})

	t.Run("SameSeedSameSamples", func(t *testing.T) {
		l := fakemeta.Latency{Median: 300 * time.Millisecond, Sigma: 0.5}
		a, b, c := rand.New(rand.NewPCG(7, 7)), rand.New(rand.NewPCG(7, 7)), rand.New(rand.NewPCG(8, 8))
		var sa, sb, sc []time.Duration
		for range 10 {
			sa, sb, sc = append(sa, l.Sample(a)), append(sb, l.Sample(b)), append(sc, l.Sample(c))
		}
		assert.Equal(t, sa, sb)
		assert.NotEqual(t, sa, sc)
	})

	t.Run("FixedIsTheMedianCappedAndDrawsNothing", func(t *testing.T) {
		r, twin := rand.New(rand.NewPCG(3, 4)), rand.New(rand.NewPCG(3, 4))
		assert.Equal(t, 300*time.Millisecond, fakemeta.Latency{Median: 300 * time.Millisecond}.Sample(r))
		assert.Equal(t, 200*time.Millisecond, fakemeta.Latency{Median: 300 * time.Millisecond, Max: 200 * time.Millisecond}.Sample(r))
		assert.Zero(t, fakemeta.Latency{}.Sample(r))
		assert.Zero(t, fakemeta.Latency{Sigma: 0.5}.Sample(r), "no median, no latency")
		assert.Equal(t, twin.Uint64(), r.Uint64(), "r was not drawn from")
	})

	t.Run("NilSourceUsesTheGlobalOne", func(t *testing.T) {
		l := fakemeta.Latency{Median: time.Millisecond, Sigma: 0.5, Max: 2 * time.Millisecond}
		d := l.Sample(nil)
		assert.Positive(t, d)
		assert.LessOrEqual(t, d, l.Max)
	})

	t.Run("Validate", func(t *testing.T) {
		assert.NoError(t, fakemeta.Latency{}.Validate())
		assert.NoError(t, fakemeta.Latency{Median: time.Second, Sigma: 0.5, Max: 5 * time.Second}.Validate())
		for _, l := range []fakemeta.Latency{
			{Median: -time.Second}, {Max: -time.Second}, {Sigma: -0.1}, {Sigma: math.NaN()}, {Sigma: math.Inf(1)},
		} {
			assert.Error(t, l.Validate(), "%+v", l)
		}
	})

	t.Run("String", func(t *testing.T) {
		assert.Equal(t, "0s", fakemeta.Latency{}.String())
		assert.Equal(t, "300ms", fakemeta.Latency{Median: 300 * time.Millisecond}.String())
		assert.Equal(t, "log-normal median 300ms sigma 0.5 max 5s",
			fakemeta.Latency{Median: 300 * time.Millisecond, Sigma: 0.5, Max: 5 * time.Second}.String())
	})
}

// span builds a call to phone and to, in flight from ms a to ms b after t0.
func span(phone, to string, a, b int) fakemeta.Call {
	return fakemeta.Call{
		PhoneNumberID: phone, To: to,
		At:         t0.Add(time.Duration(a) * time.Millisecond),
		AnsweredAt: t0.Add(time.Duration(b) * time.Millisecond),
	}
}

func TestCallLogChecks(t *testing.T) {
	t.Run("MaxInFlight", func(t *testing.T) {
		log := fakemeta.CallLog{
			span("p", "1", 0, 10),
			span("p", "2", 5, 15),
			span("p", "3", 10, 20), // arrives as the first is answered: not together
			span("p", "4", 12, 13), // with the second and third
			span("q", "1", 0, 100),
			span("q", "2", 1, 100),
		}
		assert.Equal(t, 3, log.MaxInFlight("p"))
		assert.Equal(t, 2, log.MaxInFlight("q"))
		assert.Equal(t, 5, log.MaxInFlight(""), "every phone: q's two with p's three at 12 ms")
		assert.Zero(t, log.MaxInFlight("none"))
		assert.Zero(t, fakemeta.CallLog(nil).MaxInFlight(""))

		touching := fakemeta.CallLog{span("p", "1", 0, 10), span("p", "1", 10, 20), span("p", "1", 20, 30)}
		assert.Equal(t, 1, touching.MaxInFlight("p"))
		instant := fakemeta.CallLog{span("p", "1", 5, 5), span("p", "2", 5, 5), {PhoneNumberID: "p"}}
		assert.Equal(t, 1, instant.MaxInFlight("p"), "calls without duration overlap nothing")
		nested := fakemeta.CallLog{span("p", "1", 0, 100), span("p", "2", 10, 20), span("p", "3", 30, 40), span("p", "4", 35, 36)}
		assert.Equal(t, 3, nested.MaxInFlight("p"))
	})

	t.Run("Overlaps", func(t *testing.T) {
		sequential := fakemeta.CallLog{
			span("p", "1", 0, 10), span("p", "1", 10, 20), span("p", "1", 25, 30), // each after the last answer
			span("p", "2", 5, 15), // another recipient, overlapping freely
			span("q", "1", 5, 15), // the same recipient of another phone
			{PhoneNumberID: "p", To: "1", At: t0.Add(12 * time.Millisecond)}, // no answer time: no duration
			span("p", "", 0, 30), // no recipient
			span("p", "", 0, 30),
		}
		assert.Zero(t, sequential.Overlaps("p"))
		assert.Zero(t, sequential.Overlaps(""))

		overlapping := fakemeta.CallLog{
			span("p", "1", 0, 10),
			span("p", "1", 5, 15),  // overlaps the first
			span("p", "1", 9, 30),  // overlaps the first and second
			span("p", "1", 30, 40), // after the third's answer
			span("p", "2", 0, 10),
			span("p", "2", 0, 10), // arrived together
			span("q", "1", 0, 10),
			span("q", "1", 9, 10),
		}
		assert.Equal(t, 4, overlapping.Overlaps("p"))
		assert.Equal(t, 1, overlapping.Overlaps("q"))
		assert.Equal(t, 5, overlapping.Overlaps(""))
	})

	t.Run("OutOfOrder", func(t *testing.T) {
		seq := func(phone, to string, n int) fakemeta.Call {
			return fakemeta.Call{PhoneNumberID: phone, To: to, Body: fmt.Appendf(nil, "%d", n)}
		}
		key := func(c fakemeta.Call) int {
			var n int
			_, _ = fmt.Sscan(string(c.Body), &n)
			return n
		}
		log := fakemeta.CallLog{
			seq("p", "1", 1),
			seq("p", "2", 7), // other recipients interleave freely
			seq("p", "1", 2),
			seq("p", "1", 2), // a retry
			seq("p", "1", 4),
			seq("p", "2", 8),
			seq("p", "1", 3), // after 4
			seq("p", "1", 5),
			seq("q", "1", 1), // another phone's recipient 1 starts over
			seq("q", "1", 0),
			seq("p", "", 0),
			seq("p", "3", 1),
			seq("p", "3", 4),
			seq("p", "3", 2), // both after 4
			seq("p", "3", 3),
		}
		assert.Equal(t, 3, log.OutOfOrder("p", key))
		assert.Equal(t, 1, log.OutOfOrder("q", key))
		assert.Equal(t, 4, log.OutOfOrder("", key))
		assert.Zero(t, log[:6].OutOfOrder("", key))
	})
}

func TestFakeMetaCallLog(t *testing.T) {
	t.Run("LogsEveryCallInArrivalOrder", func(t *testing.T) {
		f := newFake(t)
		before := time.Now()
		ok := textBody("111")
		bad := []byte(`{"messaging_product":"whatsapp","to":"222"}`)
		send(t, f, phoneID, token, ok)
		send(t, f, phoneID, "wrong", textBody("333"))
		send(t, f, phoneID, token, bad)
		send(t, f, "999", token, textBody("444"))

		calls := f.Calls()
		require.Len(t, calls, 4)

		assert.Equal(t, phoneID, calls[0].PhoneNumberID)
		assert.Equal(t, token, calls[0].Token)
		assert.Equal(t, ok, calls[0].Body)
		assert.Equal(t, "111", calls[0].To)
		assert.Equal(t, http.StatusOK, calls[0].Status)
		assert.True(t, strings.HasPrefix(calls[0].WAMID, "wamid."))
		assert.Equal(t, 0, calls[0].ErrorCode)
		assert.False(t, calls[0].At.Before(before))

		assert.Equal(t, "wrong", calls[1].Token)
		assert.Equal(t, "333", calls[1].To)
		assert.Equal(t, http.StatusUnauthorized, calls[1].Status)
		assert.Equal(t, 190, calls[1].ErrorCode)
		assert.Empty(t, calls[1].WAMID)

		assert.Equal(t, bad, calls[2].Body)
		assert.Equal(t, "222", calls[2].To)
		assert.Equal(t, 100, calls[2].ErrorCode)

		assert.Equal(t, "999", calls[3].PhoneNumberID)
		assert.Equal(t, 100, calls[3].ErrorCode)

		for i := 1; i < len(calls); i++ {
			assert.False(t, calls[i].At.Before(calls[i-1].At))
		}
	})

	t.Run("OrderIsArrivalNotCompletion", func(t *testing.T) {
		f := newFake(t)
		f.AddTenant("2", "other")
		f.Behave(phoneID, fakemeta.Behaviour{Latency: fakemeta.Latency{Median: 150 * time.Millisecond}})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		slow := make(chan error, 1)
		go func() {
			_, err := post(http.DefaultClient, messagesURL(f, phoneID), token, textBody("slow"))
			slow <- err
		}()
		require.NoError(t, f.WaitInFlight(ctx, 1))
		send(t, f, "2", "other", textBody("fast"))
		require.NoError(t, <-slow)
		calls := f.Calls()
		require.Len(t, calls, 2)
		assert.Equal(t, "slow", calls[0].To)
		assert.Equal(t, "fast", calls[1].To)
	})

	t.Run("CallsReturnsACopy", func(t *testing.T) {
		f := newFake(t)
		send(t, f, phoneID, token, textBody("111"))
		calls := f.Calls()
		calls[0].To = "changed"
		assert.Equal(t, "111", f.Calls()[0].To)
	})

	t.Run("ResetClearsLogKeepsTenantsAndBehaviour", func(t *testing.T) {
		f := newFake(t)
		f.Behave(phoneID, fakemeta.Behaviour{FailCode: 131026})
		send(t, f, phoneID, token, textBody("111"))
		f.Reset()
		assert.Empty(t, f.Calls())
		requireGraphError(t, send(t, f, phoneID, token, textBody("111")), http.StatusBadRequest, 131026)
		assert.Len(t, f.Calls(), 1)
	})

	t.Run("WaitCallsReturnsOnceEnoughAreLogged", func(t *testing.T) {
		f := newFake(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		waited := make(chan error, 1)
		go func() { waited <- f.WaitCalls(ctx, 3) }()
		for i := range 3 {
			send(t, f, phoneID, token, textBody(fmt.Sprint(i)))
		}
		require.NoError(t, <-waited)
		assert.Len(t, f.Calls(), 3)
	})

	t.Run("WaitCallsFailsWhenContextEnds", func(t *testing.T) {
		f := newFake(t)
		send(t, f, phoneID, token, textBody("1"))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := f.WaitCalls(ctx, 2)
		assert.ErrorIs(t, err, context.Canceled)
		assert.NoError(t, f.WaitCalls(ctx, 1), "already satisfied")
	})
}

func TestFakeMetaConcurrentUse(t *testing.T) {
	f := newFake(t)
	f.AddTenant("2", "other")
	f.Behave("2", fakemeta.Behaviour{FailCode: 131000, FailTimes: 25})
	const workers, each = 50, 20
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var (
		mu     sync.Mutex
		wamids = map[string]bool{}
		fails  int
		wg     sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			phone, tok := phoneID, token
			if w%2 == 1 {
				phone, tok = "2", "other"
			}
			for i := range each {
				r, err := post(client, messagesURL(f, phone), tok, textBody(fmt.Sprintf("%d-%d", w, i)))
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				if r.Status == http.StatusOK {
					assert.False(t, wamids[r.Messages[0].ID], "duplicate wamid")
					wamids[r.Messages[0].ID] = true
				} else {
					fails++
				}
				mu.Unlock()
				if w == 0 && i%5 == 0 {
					_ = f.Calls()
					f.Behave(phoneID, fakemeta.Behaviour{})
				}
			}
		})
	}
	require.NoError(t, f.WaitCalls(ctx, workers*each))
	wg.Wait()
	assert.Len(t, wamids, workers*each-25)
	assert.Equal(t, 25, fails)
	assert.Len(t, f.Calls(), workers*each)
}

func BenchmarkSend(b *testing.B) {
	f := testkit.StartFakeMeta(b)
	f.AddTenant(phoneID, token)
	url := messagesURL(f, phoneID)
	body := textBody("15551234567")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
