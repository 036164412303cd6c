package whatsapp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/whatsapp"
)

func metaError(code, subcode int) string {
	return fmt.Sprintf(`{"error":{"message":"(#%d) test","type":"OAuthException","code":%d,"error_subcode":%d,"fbtrace_id":"AbC"}}`,
		code, code, subcode)
}

// TestClassifyContractTable sends over real HTTP and checks every row and
// code of the table of Meta's answers in docs/contract.md, plus the cases
// that prove the code (not the HTTP status, not the subcode) decides.
func TestClassifyContractTable(t *testing.T) {
	type row struct {
		name   string
		status int
		body   string
		want   whatsapp.Class
	}
	rows := []row{
		{"Accepted200WithWAMID", 200, acceptedBody("wamid.X"), whatsapp.ClassAccepted},

		{"Code4IsThrottled", 400, metaError(4, 0), whatsapp.ClassThrottled},
		{"Code80007IsThrottled", 400, metaError(80007, 0), whatsapp.ClassThrottled},
		{"Code130429IsThrottled", 400, metaError(130429, 0), whatsapp.ClassThrottled},
		{"HTTP429WithoutBodyIsThrottled", 429, "", whatsapp.ClassThrottled},
		{"HTTP429WithUnknownCodeIsThrottled", 429, metaError(999999, 0), whatsapp.ClassThrottled},

		{"Code131056IsPairRate", 400, metaError(131056, 0), whatsapp.ClassPairRate},
		{"Code131056On429IsPairRate", 429, metaError(131056, 0), whatsapp.ClassPairRate},

		{"Code0IsAuth", 401, metaError(0, 0), whatsapp.ClassAuth},
		{"Code190IsAuth", 401, metaError(190, 463), whatsapp.ClassAuth},
		{"Code190On400IsAuth", 400, metaError(190, 0), whatsapp.ClassAuth},

		{"Code10IsTenantBlocked", 403, metaError(10, 0), whatsapp.ClassTenantBlocked},
		{"Code200IsTenantBlocked", 403, metaError(200, 0), whatsapp.ClassTenantBlocked},
		{"Code250IsTenantBlocked", 403, metaError(250, 0), whatsapp.ClassTenantBlocked},
		{"Code299IsTenantBlocked", 403, metaError(299, 0), whatsapp.ClassTenantBlocked},
		{"Code368IsTenantBlocked", 403, metaError(368, 0), whatsapp.ClassTenantBlocked},
		{"Code131031IsTenantBlocked", 400, metaError(131031, 0), whatsapp.ClassTenantBlocked},
		{"Code131048IsTenantBlocked", 400, metaError(131048, 0), whatsapp.ClassTenantBlocked},
		{"Code133010IsTenantBlocked", 400, metaError(133010, 0), whatsapp.ClassTenantBlocked},
		{"Code199JustBelowRangeFallsBackToStatus", 403, metaError(199, 0), whatsapp.ClassPermanent},
		{"Code300JustAboveRangeFallsBackToStatus", 403, metaError(300, 0), whatsapp.ClassPermanent},

		{"Code1IsTransient", 500, metaError(1, 0), whatsapp.ClassTransient},
		{"Code2IsTransient", 503, metaError(2, 0), whatsapp.ClassTransient},
		{"Code2On400IsTransient", 400, metaError(2, 0), whatsapp.ClassTransient},
		{"Code131000IsTransient", 500, metaError(131000, 0), whatsapp.ClassTransient},
		{"HTTP500WithoutBodyIsTransient", 500, "", whatsapp.ClassTransient},
		{"HTTP502WithoutBodyIsTransient", 502, "", whatsapp.ClassTransient},
		{"HTTP503WithoutBodyIsTransient", 503, "", whatsapp.ClassTransient},
		{"HTTP503WithUnknownCodeIsTransient", 503, metaError(999999, 0), whatsapp.ClassTransient},
		{"HTTP200WithoutMessagesIsTransient", 200, `{"messaging_product":"whatsapp"}`, whatsapp.ClassTransient},
		{"HTTP200WithEmptyMessagesIsTransient", 200, `{"messages":[]}`, whatsapp.ClassTransient},
		{"HTTP200WithEmptyIDIsTransient", 200, `{"messages":[{"id":""}]}`, whatsapp.ClassTransient},
		{"HTTP200WithoutBodyIsTransient", 200, "", whatsapp.ClassTransient},

		{"Code100IsPermanent", 400, metaError(100, 0), whatsapp.ClassPermanent},
		{"Code131008IsPermanent", 400, metaError(131008, 0), whatsapp.ClassPermanent},
		{"Code131009IsPermanent", 400, metaError(131009, 0), whatsapp.ClassPermanent},
		{"Code131021IsPermanent", 400, metaError(131021, 0), whatsapp.ClassPermanent},
		{"Code131026IsPermanent", 400, metaError(131026, 0), whatsapp.ClassPermanent},
		{"Code131047IsPermanent", 400, metaError(131047, 0), whatsapp.ClassPermanent},
		{"Code131051IsPermanent", 400, metaError(131051, 0), whatsapp.ClassPermanent},
		{"Code132000IsPermanent", 400, metaError(132000, 0), whatsapp.ClassPermanent},
		{"Code132001IsPermanent", 400, metaError(132001, 0), whatsapp.ClassPermanent},
		{"Code135000IsPermanent", 400, metaError(135000, 0), whatsapp.ClassPermanent},
		{"Code131026On500IsPermanent", 500, metaError(131026, 0), whatsapp.ClassPermanent},
		{"HTTP404WithUnknownCodeIsPermanent", 404, metaError(999999, 0), whatsapp.ClassPermanent},
		{"HTTP400WithoutBodyIsPermanent", 400, "", whatsapp.ClassPermanent},

		// A body without an error code is not code 0.
		{"HTTP401WithoutBodyIsPermanentNotAuth", 401, "", whatsapp.ClassPermanent},
		{"HTTP401WithErrorObjectWithoutCodeIsPermanentNotAuth", 401, `{"error":{"message":"no code"}}`, whatsapp.ClassPermanent},
		{"HTTP401WithNonJSONBodyIsPermanentNotAuth", 401, "Unauthorized", whatsapp.ClassPermanent},

		// The subcode never decides.
		{"Code100WithPairRateSubcodeIsPermanent", 400, metaError(100, 131056), whatsapp.ClassPermanent},
		{"Code131000WithAuthSubcodeIsTransient", 500, metaError(131000, 190), whatsapp.ClassTransient},
		{"Code131026WithThrottleSubcodeIsPermanent", 400, metaError(131026, 130429), whatsapp.ClassPermanent},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			meta := newFakeMeta(t, answer(r.status, r.body))

			resp, err := send(t, meta.URL, testTimeout)

			assert.Equal(t, r.want, whatsapp.Classify(err), "err: %v", err)
			if r.want == whatsapp.ClassAccepted {
				assert.Equal(t, "wamid.X", resp.WAMID)
				return
			}
			var apiErr *whatsapp.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, r.status, apiErr.HTTPStatus)
			assert.Equal(t, r.want, apiErr.Class())
			assert.Empty(t, resp.WAMID)
		})
	}

	t.Run("TimeoutIsTransient", func(t *testing.T) {
		_, err := send(t, newHangingMeta(t).URL, 50*time.Millisecond)

		assert.ErrorIs(t, err, whatsapp.ErrTimeout)
		assert.Equal(t, whatsapp.ClassTransient, whatsapp.Classify(err))
	})

	t.Run("ConnectionRefusedIsTransient", func(t *testing.T) {
		_, err := send(t, closedPortURL(t), testTimeout)

		require.Error(t, err)
		assert.Equal(t, whatsapp.ClassTransient, whatsapp.Classify(err))
	})
}

type netTimeout struct{}

func (netTimeout) Error() string   { return "i/o timeout" }
func (netTimeout) Timeout() bool   { return true }
func (netTimeout) Temporary() bool { return true }

var _ net.Error = netTimeout{}

func TestClassifyErrors(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want whatsapp.Class
	}{
		{"NilIsAccepted", nil, whatsapp.ClassAccepted},
		{"WrappedAPIErrorIsFoundThroughWrapping", fmt.Errorf("tenant acme: %w", &whatsapp.APIError{HTTPStatus: 400, Code: 131026, HasCode: true}), whatsapp.ClassPermanent},
		{"HandBuiltCodeNeedsNoFlag", &whatsapp.APIError{Code: 130429}, whatsapp.ClassThrottled},
		{"HandBuiltCode0WithFlagIsAuth", &whatsapp.APIError{HTTPStatus: 401, HasCode: true}, whatsapp.ClassAuth},
		{"HandBuiltStatusOnly401IsPermanent", &whatsapp.APIError{HTTPStatus: 401}, whatsapp.ClassPermanent},
		{"HandBuiltStatusOnly429IsThrottled", &whatsapp.APIError{HTTPStatus: 429}, whatsapp.ClassThrottled},
		{"HandBuiltStatusOnly503IsTransient", &whatsapp.APIError{HTTPStatus: 503}, whatsapp.ClassTransient},
		{"ErrTimeoutIsTransient", fmt.Errorf("%w: %w", whatsapp.ErrTimeout, context.DeadlineExceeded), whatsapp.ClassTransient},
		{"DeadlineExceededIsTransient", context.DeadlineExceeded, whatsapp.ClassTransient},
		{"CanceledIsTransient", context.Canceled, whatsapp.ClassTransient},
		{"NetTimeoutIsTransient", &net.OpError{Op: "read", Net: "tcp", Err: netTimeout{}}, whatsapp.ClassTransient},
		{"ConnectionRefusedIsTransient", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, whatsapp.ClassTransient},
		{"ConnectionResetIsTransient", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, whatsapp.ClassTransient},
		{"EOFIsTransient", fmt.Errorf("meta api: %w", io.EOF), whatsapp.ClassTransient},
		{"UnexpectedEOFIsTransient", io.ErrUnexpectedEOF, whatsapp.ClassTransient},
		{"UnknownErrorIsTransient", errors.New("something else"), whatsapp.ClassTransient},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, whatsapp.Classify(tc.err))
		})
	}
}

func TestAPIErrorText(t *testing.T) {
	t.Run("NamesCodeStatusAndMessage", func(t *testing.T) {
		err := &whatsapp.APIError{HTTPStatus: 400, Code: 131026, HasCode: true, Message: "Message undeliverable"}
		assert.Equal(t, "meta api: code 131026 (http 400): Message undeliverable", err.Error())
	})
	t.Run("NamesCode0WhenTheBodyHadIt", func(t *testing.T) {
		err := &whatsapp.APIError{HTTPStatus: 401, HasCode: true, Message: "(#0) bad"}
		assert.Equal(t, "meta api: code 0 (http 401): (#0) bad", err.Error())
	})
	t.Run("NamesOnlyStatusWithoutCode", func(t *testing.T) {
		err := &whatsapp.APIError{HTTPStatus: 503}
		assert.Equal(t, "meta api: http 503", err.Error())
	})
}

func TestClass(t *testing.T) {
	cases := []struct {
		class          whatsapp.Class
		name           string
		breakerFailure bool
	}{
		{whatsapp.ClassAccepted, "accepted", false},
		{whatsapp.ClassThrottled, "throttled", false},
		{whatsapp.ClassPairRate, "pair_rate", false},
		{whatsapp.ClassAuth, "auth", true},
		{whatsapp.ClassTenantBlocked, "tenant_blocked", true},
		{whatsapp.ClassTransient, "transient", true},
		{whatsapp.ClassPermanent, "permanent", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.name, tc.class.String())
			assert.Equal(t, tc.breakerFailure, tc.class.IsBreakerFailure())
		})
	}
	t.Run("UnknownClassPrintsItsNumber", func(t *testing.T) {
		assert.Equal(t, "Class(42)", whatsapp.Class(42).String())
		assert.False(t, whatsapp.Class(42).IsBreakerFailure())
	})
}

func BenchmarkClassify(b *testing.B) {
	errs := []error{
		nil,
		&whatsapp.APIError{HTTPStatus: 400, Code: 131026, HasCode: true},
		&whatsapp.APIError{HTTPStatus: 403, Code: 250, HasCode: true},
		&whatsapp.APIError{HTTPStatus: 503},
		fmt.Errorf("tenant acme: %w", &whatsapp.APIError{HTTPStatus: 400, Code: 130429, HasCode: true}),
		fmt.Errorf("%w after 10s: %w", whatsapp.ErrTimeout, context.DeadlineExceeded),
		&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)},
	}
	b.ReportAllocs()
	var i int
	for b.Loop() {
		_ = whatsapp.Classify(errs[i%len(errs)])
		i++
	}
}

func BenchmarkClientSend(b *testing.B) {
	meta := newFakeMeta(b, answer(http.StatusOK, acceptedBody("wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI")))
	c := whatsapp.NewClient(meta.URL, testVersion, testTimeout)
	req := whatsapp.Request{PhoneNumberID: testPhoneID, Token: testToken, Payload: textPayload}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Send(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}
