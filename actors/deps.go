package actors

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	mrand "math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/wadispatch/wadispatch/broker"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// Broker is what the actors need of the broker: building the messages that
// replace a delivery and settling it (publish them confirmed, then ack).
// *broker.Broker implements it; testkit.FakeBroker fakes it. Settle must
// not keep msgs once it returns: the slice is reused for the next
// settlement.
type Broker interface {
	Settle(ctx context.Context, d messages.Delivery, msgs ...broker.Message) error
	ResultMessage(status string, body []byte, at time.Time) broker.Message
	DeferMessage(d messages.Delivery, wait time.Duration, headers map[string]any) broker.Message
	RequeueMessage(d messages.Delivery, headers map[string]any) broker.Message
	DeadLetterMessage(d messages.Delivery, headers map[string]any) broker.Message
}

var _ Broker = (*broker.Broker)(nil)

// Sharding is how the router finds a tenant's shard and moves a job there;
// the broker implements it.
type Sharding interface {
	ShardOf(tenantID string) int
	MoveMessage(d messages.Delivery, shard int) broker.Message
	// WaitingBesides reports whether a delivery of a shard other than
	// shard is waiting for room in the prefetch window.
	WaitingBesides(shard int) bool
}

var _ Sharding = (*broker.Broker)(nil)

// Config is everything the router and its tenant actors need.
type Config struct {
	Tenants []config.Tenant
	// Tokens holds each tenant's token source, by tenant id.
	Tokens map[string]whatsapp.TokenSource
	Sender whatsapp.Sender
	Broker Broker
	Logger *slog.Logger
	// Context bounds sends and settlements; cancelling it abandons them
	// (their deliveries return to the queue). Stopping the router waits
	// for them, so cancel it first for a prompt stop.
	Context context.Context
	// MaxHeld is how many deliveries a tenant may hold (default 2: one
	// sending, one next).
	MaxHeld int
	// Prefetch is the process's prefetch window (PREFETCH), which every
	// tenant's held deliveries share: a tenant holding its fair minimum
	// takes no more once all but a tenth of it is held, while another
	// tenant's job may be waiting for a slot (one behind it in its
	// shard's queue, or one of another shard at the broker's gate) and its
	// own slots are slow to come free (heldForAdmission). 0: no sharing
	// rule (tests of one tenant).
	Prefetch int
	// DedupeSize bounds each tenant's memory of recently sent internal ids
	// (default 1024).
	DedupeSize int
	// Jitter returns a random duration in [0, max]; default math/rand.
	Jitter func(max time.Duration) time.Duration
	// Observer is told about outcomes for metrics; may be nil.
	Observer Observer
	// QuarantineAfter restarts within QuarantineWindow quarantine a tenant
	// (defaults 5 and 10 s): its jobs are deferred, not sent, until an
	// operator resumes it. Supervision itself never gives up on a tenant
	// (stopping its actor would strand the jobs in its mailbox).
	QuarantineAfter  int
	QuarantineWindow time.Duration
	// PassivateAfter stops a tenant's actor after this long without a
	// message while it has nothing in hand (default 2 min; negative:
	// never). Its state stays with the router, and the next job starts a
	// new actor on it.
	PassivateAfter time.Duration

	// Shards, when set, splits the tenants into shards, each owned by one
	// worker at a time: the router moves a job from the intake (or from
	// a shard it does not belong to) to its tenant's shard, answers for a
	// tenant of a shard it does not own that another worker owns it, and
	// starts a tenant of a shard it has just acquired with an empty
	// bucket (messages.ShardsChanged). Nil: every delivery is dispatched.
	Shards Sharding

	// pool runs the actors' mailboxes, sends and settlements; started by
	// NewRouterProps.
	pool  *pool
	lanes *lanes // runs the moves of the intake, in order per shard
	// held counts the deliveries every tenant holds (waiting or sending),
	// for Prefetch's sharing rule; each tenant adds what it changes.
	held *atomic.Int64
	// holders counts the tenants that hold at least one delivery.
	holders *atomic.Int64
	// crowded holds the shards more than one configured tenant shares;
	// the router replaces it when tenants are added or removed.
	crowded *atomic.Pointer[map[int32]bool]
}

// DefaultPassivateAfter is Config.PassivateAfter's default.
const DefaultPassivateAfter = 2 * time.Minute

// Observer receives outcome events, for metrics. Calls come from actor
// goroutines and must not block.
type Observer interface {
	JobOutcome(tenantID, outcome string)
	Deferred(tenantID, reason string)
	SendLatency(tenantID string, d time.Duration)
	TenantRestarted(tenantID string)
}

// MoveObserver, when the Observer implements it too, counts the jobs the
// router moved to their shards: reason "intake", or "misrouted" for a job
// found in a shard its tenant does not belong to.
type MoveObserver interface {
	JobMoved(reason string)
}

type nopObserver struct{}

func (nopObserver) JobOutcome(string, string)         {}
func (nopObserver) Deferred(string, string)           {}
func (nopObserver) SendLatency(string, time.Duration) {}
func (nopObserver) TenantRestarted(string)            {}

func (c *Config) withDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Context == nil {
		c.Context = context.Background()
	}
	if c.MaxHeld <= 0 {
		c.MaxHeld = 2
	}
	if c.DedupeSize <= 0 {
		c.DedupeSize = 1024
	}
	if c.Jitter == nil {
		c.Jitter = func(max time.Duration) time.Duration {
			if max <= 0 {
				return 0
			}
			return mrand.N(max + 1)
		}
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.QuarantineAfter <= 0 {
		c.QuarantineAfter = 5
	}
	switch {
	case c.PassivateAfter == 0:
		c.PassivateAfter = DefaultPassivateAfter
	case c.PassivateAfter < 0:
		c.PassivateAfter = 0
	}
	if c.QuarantineWindow <= 0 {
		c.QuarantineWindow = 10 * time.Second
	}
}

// newEpoch names this process's schedules: a reservation made by another
// process (or before a restart of this one) is not honoured.
func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
