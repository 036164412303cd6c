package broker

import (
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
)

func TestSettledDeliveryIsRecognisedWhenItComesBack(t *testing.T) {
	orig := amqp.Delivery{Body: []byte(`{"job":1}`), MessageId: "m1", Timestamp: time.Unix(1700000000, 0),
		Headers: amqp.Table{"b": int64(2), "a": amqp.Table{"y": "1", "x": []any{"p", int32(3)}}}, DeliveryTag: 7}
	again := orig
	again.DeliveryTag, again.Redelivered = 99, true
	again.Headers = amqp.Table{"a": amqp.Table{"x": []any{"p", int32(3)}, "y": "1"}, "b": int64(2)}
	copied := (&Delivery{Body: orig.Body, Headers: orig.Headers, props: propsOf(&orig)}).Copy("", "q.delay.1s",
		map[string]any{"x-not-before": int64(5)}).Publishing

	t.Run("RedeliveryMatchesItsOriginal", func(t *testing.T) {
		assert.Equal(t, fingerprint(orig), fingerprint(again), "tag, flag and header order do not count")
	})
	t.Run("CopyWithOtherHeadersDoesNotMatch", func(t *testing.T) {
		back := amqp.Delivery{Body: copied.Body, Headers: copied.Headers, MessageId: copied.MessageId,
			Timestamp: copied.Timestamp, Redelivered: true}
		assert.NotEqual(t, fingerprint(orig), fingerprint(back))
	})
	t.Run("SuccessiveCopiesOfAJobDoNotMatch", func(t *testing.T) {
		// The publisher stamps each publish with its own id.
		hop := func(pub string) amqp.Delivery {
			h := amqp.Table{}
			for k, v := range copied.Headers {
				h[k] = v
			}
			h[pubIDHeader] = pub
			return amqp.Delivery{Body: copied.Body, Headers: h, Timestamp: copied.Timestamp, Redelivered: true}
		}
		assert.NotEqual(t, fingerprint(hop("7")), fingerprint(hop("8")))
	})
	t.Run("WithoutHeadersTheBodyAndPropertiesCount", func(t *testing.T) {
		plain := amqp.Delivery{Body: []byte(`{"job":2}`), MessageId: "m2", Timestamp: time.Unix(1700000000, 0)}
		same := plain
		same.Headers, same.Redelivered = amqp.Table{}, true
		assert.Equal(t, fingerprint(plain), fingerprint(same), "no table and an empty one are the same")
		for _, other := range []func(d *amqp.Delivery){
			func(d *amqp.Delivery) { d.Body = []byte(`{"job":3}`) },
			func(d *amqp.Delivery) { d.MessageId = "m3" },
			func(d *amqp.Delivery) { d.CorrelationId = "c" },
			func(d *amqp.Delivery) { d.Timestamp = d.Timestamp.Add(time.Second) },
			func(d *amqp.Delivery) { d.Headers = amqp.Table{"k": "v"} },
		} {
			d := plain
			other(&d)
			assert.NotEqual(t, fingerprint(plain), fingerprint(d), "%+v", d)
		}
	})
	t.Run("OldestEntriesAreForgottenBeyondTheBound", func(t *testing.T) {
		r := newSettledSet()
		for i := range settledMax + 10 {
			r.add(fmt.Sprint(i % (settledMax + 5)))
		}
		assert.False(t, r.contains("6"))
		assert.True(t, r.contains("4"), "added again since")
		assert.True(t, r.contains(fmt.Sprint(settledMax+4)))
		assert.LessOrEqual(t, len(r.keys), settledMax)
	})
}

// A delivery keeps of its amqp.Delivery only what a copy carries on and
// what identifies it; both must come through whole.
func TestDeliveryKeepsTheProducersProperties(t *testing.T) {
	orig := amqp.Delivery{Body: []byte(`{"job":4}`), Headers: amqp.Table{"k": "v"}, ContentType: "application/json",
		ContentEncoding: "identity", Priority: 3, CorrelationId: "c1", ReplyTo: "r1", MessageId: "m1",
		Timestamp: time.Unix(1700000000, 0), Type: "t1", UserId: "u1", AppId: "a1", DeliveryTag: 7}
	d := &Delivery{Body: orig.Body, Headers: orig.Headers, props: propsOf(&orig)}

	t.Run("ItsFingerprintIsTheOneItsRedeliveryIsCheckedBy", func(t *testing.T) {
		assert.Equal(t, fingerprint(orig), d.fingerprint())
	})
	t.Run("ACopyCarriesEveryPropertyOn", func(t *testing.T) {
		p := d.Copy("x", "k", nil).Publishing
		assert.Equal(t, amqp.Publishing{Headers: amqp.Table{"k": "v"}, ContentType: "application/json",
			ContentEncoding: "identity", DeliveryMode: amqp.Persistent, Priority: 3, CorrelationId: "c1",
			ReplyTo: "r1", MessageId: "m1", Timestamp: time.Unix(1700000000, 0), Type: "t1", UserId: "u1",
			AppId: "a1", Body: orig.Body}, p)
	})
}

// A tracker wakes whoever waits for a change, and only makes a new channel
// for the next change when someone took the current one.
func TestTrackerWakesWaitersOfEveryChange(t *testing.T) {
	tr := newTracker()
	tr.add(1)
	tr.add(1)
	assert.Equal(t, 2, tr.count())
	n, changed := tr.state()
	assert.Equal(t, 2, n)
	select {
	case <-changed:
		t.Fatal("closed before any change")
	default:
	}
	tr.add(-1)
	select {
	case <-changed:
	default:
		t.Fatal("the change after state did not close its channel")
	}
	n, next := tr.state()
	assert.Equal(t, 1, n)
	assert.NotEqual(t, changed, next, "a new channel for the next change")
	tr.add(-1)
	<-next
	assert.Equal(t, 0, tr.count())
}
