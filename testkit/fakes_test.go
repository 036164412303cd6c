package testkit_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit"
	"github.com/wadispatch/wadispatch/whatsapp"
)

func TestFakeBroker(t *testing.T) {
	t.Run("BuildsTheRealBrokersMessagesAndRecordsSettlements", func(t *testing.T) {
		b := &testkit.FakeBroker{}
		d := testkit.NewFakeDelivery([]byte(`{"job":1}`), map[string]any{"x-attempts": int64(2)})
		res := b.ResultMessage(messages.StatusSent, []byte(`{"tenantId":"acme","internalId":"j1","status":"sent"}`), time.Now())
		dl := b.DeadLetterMessage(d.Delivery, map[string]any{messages.HeaderDLQReason: "poison"})
		require.NoError(t, b.Settle(context.Background(), d.Delivery, res, dl))

		assert.Equal(t, "results", res.Exchange)
		assert.Equal(t, messages.StatusSent, res.Key)
		assert.Equal(t, "jobs.dlq", dl.Key)
		assert.Equal(t, []byte(`{"job":1}`), dl.Publishing.Body)
		assert.Equal(t, int64(2), dl.Publishing.Headers["x-attempts"], "the delivery's headers are kept")
		require.Len(t, b.Settlements(), 1)
		assert.Len(t, b.Messages(testkit.KindDeadLetter), 1)
		require.Len(t, b.Results(), 1)
		assert.Equal(t, "j1", b.Results()[0].InternalID)
	})
	t.Run("BringsADeferralBackAfterItsDelayTier", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			back := make(chan time.Duration, 4)
			start := time.Now()
			b := &testkit.FakeBroker{Redeliver: func(d *messages.Deliver) {
				assert.Equal(t, []byte("body"), d.Body)
				assert.Nil(t, d.Headers["x-testkit-kind"], "the fake's marks are gone")
				back <- time.Since(start)
			}}
			d := testkit.NewFakeDelivery([]byte("body"), nil)
			m := b.DeferMessage(d.Delivery, 3*time.Second, map[string]any{"x-not-before": "later"})
			assert.Equal(t, 3*time.Second, testkit.WaitOf(m))
			require.NoError(t, b.Settle(context.Background(), d.Delivery, m))
			require.NoError(t, b.Settle(context.Background(), d.Delivery, b.RequeueMessage(d.Delivery, nil)))
			time.Sleep(time.Minute)
			assert.Equal(t, time.Duration(0), <-back, "a requeue comes back at once")
			assert.Equal(t, 2*time.Second, <-back, "3 s takes the 2 s tier and comes back early, as on RabbitMQ")
		})
	})
	t.Run("SettleFnDecidesAndAFailedSettlementBringsNothingBack", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			boom := errors.New("nacked")
			b := &testkit.FakeBroker{
				SettleFn:  func(context.Context, messages.Delivery, ...broker.Message) error { return boom },
				Redeliver: func(*messages.Deliver) { t.Error("a failed settlement must not redeliver") },
			}
			d := testkit.NewFakeDelivery([]byte("body"), nil)
			assert.ErrorIs(t, b.Settle(context.Background(), d.Delivery, b.DeferMessage(d.Delivery, time.Second, nil)), boom)
			time.Sleep(time.Minute)
			assert.ErrorIs(t, b.Settlements()[0].Err, boom)
			assert.Empty(t, b.Messages(testkit.KindDeferred), "failed settlements publish nothing")
		})
	})
}

func TestFakeSenderAndToken(t *testing.T) {
	s := &testkit.FakeSender{}
	resp, err := s.Send(context.Background(), whatsapp.Request{PhoneNumberID: "p1", Token: "t"})
	require.NoError(t, err)
	assert.Equal(t, "wamid.FAKE.1", resp.WAMID)
	s.SendFn = func(context.Context, whatsapp.Request) (whatsapp.Response, error) {
		return whatsapp.Response{}, whatsapp.ErrTimeout
	}
	_, err = s.Send(context.Background(), whatsapp.Request{PhoneNumberID: "p2"})
	assert.ErrorIs(t, err, whatsapp.ErrTimeout)
	calls := s.Calls()
	require.Len(t, calls, 2)
	assert.Equal(t, "p1", calls[0].Request.PhoneNumberID)
	assert.ErrorIs(t, calls[1].Err, whatsapp.ErrTimeout)

	tok := &testkit.FakeToken{Value: "v1"}
	v, _ := tok.Token()
	changed, _ := tok.Refresh()
	assert.Equal(t, "v1", v)
	assert.False(t, changed)
	tok.TokenFn = func() (string, error) { return "v2", nil }
	tok.RefreshFn = func() (bool, error) { return true, nil }
	v, _ = tok.Token()
	changed, _ = tok.Refresh()
	assert.Equal(t, "v2", v)
	assert.True(t, changed)
}
