package whatsapp_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/whatsapp"
)

func TestClientSend(t *testing.T) {
	t.Run("PostsPayloadByteForByteWithBearerToken", func(t *testing.T) {
		// Odd spacing, key order and escapes must survive untouched.
		payload := []byte("{ \"to\":\"15551234567\",\n\t\"messaging_product\" : \"whatsapp\",\"type\":\"text\"," +
			"\"text\":{\"body\":\"h\\u00e9llo <b>&amp; \u00fc\"} }")
		type seen struct {
			method, path, rawURI, auth, contentType string
			contentLength                           int64
			body                                    []byte
		}
		got := make(chan seen, 1)
		meta := newFakeMeta(t, func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			assert.NoError(t, err)
			got <- seen{r.Method, r.URL.Path, r.RequestURI, r.Header.Get("Authorization"),
				r.Header.Get("Content-Type"), r.ContentLength, body}
			answer(http.StatusOK, acceptedBody("wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI"))(w, r)
		})
		c := whatsapp.NewClient(meta.URL, testVersion, testTimeout)

		resp, err := c.Send(t.Context(), whatsapp.Request{PhoneNumberID: testPhoneID, Token: testToken, Payload: payload})

		require.NoError(t, err)
		assert.Equal(t, whatsapp.Response{WAMID: "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI", HTTPStatus: http.StatusOK}, resp)
		s := <-got
		assert.Equal(t, http.MethodPost, s.method)
		assert.Equal(t, "/v23.0/106540352242922/messages", s.path)
		assert.Equal(t, "Bearer "+testToken, s.auth)
		assert.Equal(t, "application/json", s.contentType)
		assert.Equal(t, int64(len(payload)), s.contentLength)
		assert.Equal(t, payload, s.body)
	})

	t.Run("NormalisesSlashesInBaseURLAndVersion", func(t *testing.T) {
		paths := make(chan string, 1)
		meta := newFakeMeta(t, func(w http.ResponseWriter, r *http.Request) {
			paths <- r.URL.Path
			answer(http.StatusOK, acceptedBody("wamid.1"))(w, r)
		})
		c := whatsapp.NewClient(meta.URL+"/", "/v23.0/", testTimeout)

		_, err := c.Send(t.Context(), whatsapp.Request{PhoneNumberID: testPhoneID, Token: testToken, Payload: textPayload})

		require.NoError(t, err)
		assert.Equal(t, "/v23.0/106540352242922/messages", <-paths)
	})

	t.Run("EscapesPhoneNumberIDSoItStaysOnePathSegment", func(t *testing.T) {
		uris := make(chan string, 1)
		meta := newFakeMeta(t, func(w http.ResponseWriter, r *http.Request) {
			uris <- r.RequestURI
			answer(http.StatusOK, acceptedBody("wamid.1"))(w, r)
		})
		c := whatsapp.NewClient(meta.URL, testVersion, testTimeout)

		_, err := c.Send(t.Context(), whatsapp.Request{PhoneNumberID: "1/../2", Token: testToken, Payload: textPayload})

		require.NoError(t, err)
		assert.Equal(t, "/v23.0/1%2F..%2F2/messages", <-uris)
	})

	t.Run("ParsesEveryFieldOfTheErrorObject", func(t *testing.T) {
		meta := newFakeMeta(t, answer(http.StatusBadRequest, `{"error":{
			"message":"(#131026) Message undeliverable","type":"OAuthException","code":131026,
			"error_subcode":2494010,"error_data":{"messaging_product":"whatsapp","details":"Recipient is not a WhatsApp user"},
			"error_user_title":"ignored","fbtrace_id":"AbCdEf123"}}`))

		_, err := send(t, meta.URL, testTimeout)

		var apiErr *whatsapp.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, whatsapp.APIError{
			HTTPStatus: http.StatusBadRequest,
			Code:       131026,
			Subcode:    2494010,
			Type:       "OAuthException",
			Message:    "(#131026) Message undeliverable",
			FBTraceID:  "AbCdEf123",
			Details:    "Recipient is not a WhatsApp user",
			HasCode:    true,
		}, *apiErr)
		assert.Equal(t, "meta api: code 131026 (http 400): (#131026) Message undeliverable (Recipient is not a WhatsApp user)", err.Error())
		assert.Equal(t, whatsapp.ClassPermanent, apiErr.Class())
	})

	t.Run("ReadsErrorDataGivenAsAString", func(t *testing.T) {
		meta := newFakeMeta(t, answer(http.StatusBadRequest,
			`{"error":{"message":"bad","code":100,"error_data":"Param to is invalid","fbtrace_id":"X"}}`))

		_, err := send(t, meta.URL, testTimeout)

		var apiErr *whatsapp.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, "Param to is invalid", apiErr.Details)
		assert.Equal(t, 100, apiErr.Code)
	})

	t.Run("ReadsACodeSentAsAString", func(t *testing.T) {
		meta := newFakeMeta(t, answer(http.StatusUnauthorized, `{"error":{"message":"expired","code":"190","error_subcode":null}}`))

		_, err := send(t, meta.URL, testTimeout)

		var apiErr *whatsapp.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, 190, apiErr.Code)
		assert.True(t, apiErr.HasCode)
	})

	t.Run("ReportsBodyWithoutErrorObjectByStatusAndQuotesIt", func(t *testing.T) {
		meta := newFakeMeta(t, answer(http.StatusBadGateway, "<html>upstream connect error</html>"))

		_, err := send(t, meta.URL, testTimeout)

		var apiErr *whatsapp.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.False(t, apiErr.HasCode)
		assert.Equal(t, `meta api: http 502: no error object in response body: "<html>upstream connect error</html>"`, err.Error())
	})

	t.Run("ReportsRedirectInsteadOfFollowingIt", func(t *testing.T) {
		followed := make(chan struct{}, 1)
		meta := newFakeMeta(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/elsewhere" {
				followed <- struct{}{}
				return
			}
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		})

		_, err := send(t, meta.URL, testTimeout)

		var apiErr *whatsapp.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, http.StatusFound, apiErr.HTTPStatus)
		assert.Equal(t, whatsapp.ClassTransient, whatsapp.Classify(err))
		assert.Empty(t, followed)
	})

	t.Run("CutsOversizeBodyAndReportsTransient", func(t *testing.T) {
		big := strings.Repeat("x", 3<<20)
		meta := newFakeMeta(t, answer(http.StatusOK, big))

		_, err := send(t, meta.URL, testTimeout)

		var apiErr *whatsapp.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, whatsapp.ClassTransient, apiErr.Class())
		assert.Less(t, len(err.Error()), 300)
	})

	t.Run("TimesOutWithErrTimeoutAndDeadlineExceeded", func(t *testing.T) {
		meta := newHangingMeta(t)

		_, err := send(t, meta.URL, 50*time.Millisecond)

		require.Error(t, err)
		assert.ErrorIs(t, err, whatsapp.ErrTimeout)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, "meta api: request timed out after 50ms: context deadline exceeded", err.Error())
		assert.Equal(t, whatsapp.ClassTransient, whatsapp.Classify(err))
	})

	t.Run("CallerDeadlineIsNotReportedAsClientTimeout", func(t *testing.T) {
		meta := newHangingMeta(t)
		c := whatsapp.NewClient(meta.URL, testVersion, testTimeout)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()

		_, err := c.Send(ctx, whatsapp.Request{PhoneNumberID: testPhoneID, Token: testToken, Payload: textPayload})

		require.Error(t, err)
		assert.NotErrorIs(t, err, whatsapp.ErrTimeout)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, whatsapp.ClassTransient, whatsapp.Classify(err))
	})

	t.Run("CallerCancelIsTransient", func(t *testing.T) {
		meta := newFakeMeta(t, answer(http.StatusOK, acceptedBody("wamid.1")))
		c := whatsapp.NewClient(meta.URL, testVersion, testTimeout)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()

		_, err := c.Send(ctx, whatsapp.Request{PhoneNumberID: testPhoneID, Token: testToken, Payload: textPayload})

		assert.ErrorIs(t, err, context.Canceled)
		assert.NotErrorIs(t, err, whatsapp.ErrTimeout)
		assert.Equal(t, whatsapp.ClassTransient, whatsapp.Classify(err))
	})

	t.Run("ConnectionRefusedIsTransient", func(t *testing.T) {
		_, err := send(t, closedPortURL(t), testTimeout)

		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
		assert.Equal(t, whatsapp.ClassTransient, whatsapp.Classify(err))
	})

	t.Run("ServerClosingWithoutAnswerIsTransient", func(t *testing.T) {
		meta := newFakeMeta(t, func(w http.ResponseWriter, _ *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if assert.NoError(t, err) {
				_ = conn.Close()
			}
		})

		_, err := send(t, meta.URL, testTimeout)

		assert.ErrorIs(t, err, io.EOF)
		assert.Equal(t, whatsapp.ClassTransient, whatsapp.Classify(err))
	})

	t.Run("ConnectionResetIsTransient", func(t *testing.T) {
		meta := newFakeMeta(t, func(w http.ResponseWriter, _ *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if !assert.NoError(t, err) {
				return
			}
			if tcp, ok := conn.(*net.TCPConn); ok {
				_ = tcp.SetLinger(0) // close with RST
			}
			_ = conn.Close()
		})

		_, err := send(t, meta.URL, testTimeout)

		require.Error(t, err)
		assert.Equal(t, whatsapp.ClassTransient, whatsapp.Classify(err))
	})
}

func TestClientReusesConnections(t *testing.T) {
	t.Run("FiftySequentialSendsUseOneConnection", func(t *testing.T) {
		meta := newFakeMeta(t, answer(http.StatusOK, acceptedBody("wamid.1")))
		c := whatsapp.NewClient(meta.URL, testVersion, testTimeout)
		req := whatsapp.Request{PhoneNumberID: testPhoneID, Token: testToken, Payload: textPayload}

		for range 50 {
			_, err := c.Send(t.Context(), req)
			require.NoError(t, err)
		}

		assert.Equal(t, int64(1), meta.newConns.Load())
	})

	t.Run("ErrorAnswersKeepTheConnection", func(t *testing.T) {
		answers := []http.HandlerFunc{
			answer(http.StatusOK, acceptedBody("wamid.1")),
			answer(http.StatusBadRequest, `{"error":{"message":"bad","code":131026,"fbtrace_id":"X"}}`),
			answer(http.StatusServiceUnavailable, ""),
			answer(http.StatusTooManyRequests, ""),
			answer(http.StatusOK, `{"messages":[]}`),
		}
		var n atomic.Int64
		meta := newFakeMeta(t, func(w http.ResponseWriter, r *http.Request) {
			i := n.Add(1) - 1
			answers[i%int64(len(answers))](w, r)
		})
		c := whatsapp.NewClient(meta.URL, testVersion, testTimeout)
		req := whatsapp.Request{PhoneNumberID: testPhoneID, Token: testToken, Payload: textPayload}

		for range 50 {
			_, _ = c.Send(t.Context(), req)
		}

		assert.Equal(t, int64(50), n.Load())
		assert.Equal(t, int64(1), meta.newConns.Load())
	})
	t.Run("BodyJustOverTheReadLimitIsDrainedAndKeepsTheConnection", func(t *testing.T) {
		meta := newFakeMeta(t, answer(http.StatusInternalServerError, strings.Repeat("x", 1<<20+1<<10)))
		c := whatsapp.NewClient(meta.URL, testVersion, testTimeout)
		req := whatsapp.Request{PhoneNumberID: testPhoneID, Token: testToken, Payload: textPayload}

		for range 3 {
			_, err := c.Send(t.Context(), req)
			require.Error(t, err)
		}

		assert.Equal(t, int64(1), meta.newConns.Load())
	})
}

func TestTokenNeverInErrorText(t *testing.T) {
	echoAuth := func(status int, wrap func(string) string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			answer(status, wrap(r.Header.Get("Authorization")))(w, r)
		}
	}
	cases := []struct {
		name string
		url  func(tb testing.TB) string
	}{
		{"AuthErrorEchoingTheToken", func(t testing.TB) string {
			return newFakeMeta(t, echoAuth(http.StatusUnauthorized, func(a string) string {
				return `{"error":{"message":"Invalid OAuth access token ` + a + `","type":"OAuthException","code":190,` +
					`"error_data":{"details":"token ` + a + `"},"fbtrace_id":"X"}}`
			})).URL
		}},
		{"ProxyPageEchoingTheToken", func(t testing.TB) string {
			return newFakeMeta(t, echoAuth(http.StatusBadGateway, func(a string) string {
				return "<html>Authorization: " + a + "</html>"
			})).URL
		}},
		{"AcceptedWithoutWAMIDEchoingTheToken", func(t testing.TB) string {
			return newFakeMeta(t, echoAuth(http.StatusOK, func(a string) string { return `{"echo":"` + a + `"}` })).URL
		}},
		{"ServerError", func(t testing.TB) string {
			return newFakeMeta(t, answer(http.StatusInternalServerError, "")).URL
		}},
		{"Timeout", func(t testing.TB) string { return newHangingMeta(t).URL }},
		{"ConnectionRefused", closedPortURL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := send(t, tc.url(t), 50*time.Millisecond)

			require.Error(t, err)
			assert.NotContains(t, err.Error(), testToken)
			assert.NotContains(t, fmt.Sprintf("%+v", err), testToken)
			assert.NotContains(t, fmt.Sprintf("%#v", err), testToken)
		})
	}

	t.Run("RequestPrintsWithoutTheToken", func(t *testing.T) {
		req := whatsapp.Request{PhoneNumberID: testPhoneID, Token: testToken, Payload: textPayload}
		var logged strings.Builder
		slog.New(slog.NewJSONHandler(&logged, nil)).Info("send", "req", req)

		for _, s := range []string{fmt.Sprint(req), fmt.Sprintf("%+v", req), fmt.Sprintf("%#v", req), logged.String()} {
			assert.NotContains(t, s, testToken)
			assert.Contains(t, s, testPhoneID)
		}
	})
}

func TestClientDefaults(t *testing.T) {
	t.Run("NonPositiveTimeoutStillBoundsASend", func(t *testing.T) {
		// Only checks that a zero timeout does not mean "expire at once".
		meta := newFakeMeta(t, answer(http.StatusOK, acceptedBody("wamid.1")))

		resp, err := send(t, meta.URL, 0)

		require.NoError(t, err)
		assert.Equal(t, "wamid.1", resp.WAMID)
	})
}
