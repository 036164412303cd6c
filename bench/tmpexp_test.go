package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestTmpBrokerCost(t *testing.T) {
	if os.Getenv("TMPEXP") == "" {
		t.Skip()
	}
	url := "amqp://guest:guest@localhost:5672/"
	pid := listenerPID(5672)
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	_ = ch.Confirm(false)
	ch.NotifyReturn(make(chan amqp.Return, 100))
	ex, q := "tmpexp.x", "tmpexp.q"
	ch.ExchangeDeclare(ex, "topic", true, false, false, false, nil)
	ch.QueueDeclare(q, true, false, false, false, nil)
	ch.QueueBind(q, "#", ex, false, nil)
	defer ch.QueueDelete(q, false, false, false)
	body := []byte(`{"tenantId":"t1","internalId":"t1-123","metadata":{"tenantId":"t1","internalId":"t1-123"},"status":"sent","wamid":"wamid.HBgLMTU1NTAwMDAwMDAVAgARGBI","attempts":1,"durationMs":3,"at":"2026-12-01T10:00:00.000Z"}`)
	for _, variant := range []string{"plain", "mandatory", "header", "both", "plain", "both"} {
		var seq uint64
		var mu sync.Mutex
		n := 6000
		b0 := brokerCPU(pid)
		t0 := time.Now()
		var wg sync.WaitGroup
		for g := 0; g < 10; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < n/10; i++ {
					msg := amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, Timestamp: time.Now(), Body: body}
					mand := variant == "mandatory" || variant == "both"
					if variant == "header" || variant == "both" {
						mu.Lock()
						seq++
						s := seq
						mu.Unlock()
						msg.Headers = amqp.Table{"x-wadispatch-pub": strconv.FormatUint(s, 10)}
					}
					dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), ex, "sent", mand, false, msg)
					if err != nil {
						t.Error(err)
						return
					}
					dc.Wait()
				}
			}()
		}
		wg.Wait()
		el := time.Since(t0)
		fmt.Printf("%-10s %6.0f/s broker %.0f µs/publish\n", variant, float64(n)/el.Seconds(), float64((brokerCPU(pid)-b0).Microseconds())/float64(n))
		ch.QueuePurge(q, false)
	}
}
