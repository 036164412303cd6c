package testkit_test

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/testkit"
)

func TestRabbitNode(t *testing.T) {
	node := testkit.StartRabbitNode(t)
	conn, err := amqp.Dial(node.URL())
	require.NoError(t, err)
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	require.NoError(t, err)
	_, err = ch.QueueDeclare("kept", true, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.Publish("", "kept", false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("x")}))

	t.Run("CloseAllConnectionsDropsClients", func(t *testing.T) {
		node.CloseAllConnections()
		select {
		case e := <-closed:
			assert.NotNil(t, e, "closed by the broker, not by us")
		case <-time.After(10 * time.Second):
			assert.Fail(t, "connection still open")
		}
	})
	t.Run("RestartKeepsDurableMessages", func(t *testing.T) {
		node.StopApp()
		_, err := amqp.Dial(node.URL())
		assert.Error(t, err, "nothing answers while the app is stopped")
		node.StartApp()
		conn, err := amqp.Dial(node.URL())
		require.NoError(t, err)
		defer conn.Close()
		ch, err := conn.Channel()
		require.NoError(t, err)
		q, err := ch.QueueDeclarePassive("kept", true, false, false, false, nil)
		require.NoError(t, err)
		assert.Equal(t, 1, q.Messages)
	})
}
