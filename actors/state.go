package actors

import (
	"container/list"
	"time"

	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// TenantState is everything a tenant actor owns. The router creates it once
// per tenant and hands it to every incarnation of the actor, so a restart
// after a panic keeps the bucket, the breaker, the counters and the jobs in
// hand. Only the tenant actor's goroutine touches it.
type TenantState struct {
	cfg    config.Tenant
	tokens whatsapp.TokenSource
	sched  *Schedule
	// epoch names this state's reservations (see messages.JobState).
	epoch string

	sending *messages.Dispatch
	// waiting are admitted jobs (each holds its token), sent in order once
	// due; wakeAt is when a timer will next look at them.
	waiting []waitingJob
	wakeAt  time.Time
	// current is the message being handled, so a crash can requeue it.
	current *messages.Dispatch

	paused      bool
	quarantined bool

	sent, failed, deferredTotal, deadLettered int64
	deferred                                  int
	restarts                                  int
	restartTimes                              []time.Time
	lastError                                 string
	lastErrorAt                               time.Time

	recent *idCache
}

func newTenantState(t config.Tenant, tokens whatsapp.TokenSource, epoch string, now time.Time, maxHeld int) *TenantState {
	return &TenantState{
		cfg:    t,
		tokens: tokens,
		epoch:  epoch,
		sched: NewSchedule(ScheduleConfig{
			PerMinute:        t.RateLimit.PerMinute,
			Burst:            t.RateLimit.Burst,
			FailureThreshold: t.Breaker.FailureThreshold,
			OpenFor:          t.Breaker.OpenFor,
			MaxHeld:          maxHeld,
		}, now),
	}
}

type waitingJob struct {
	m   *messages.Dispatch
	due time.Time
}

func (s *TenantState) held() int {
	n := len(s.waiting)
	if s.sending != nil {
		n++
	}
	return n
}

func (s *TenantState) info(now time.Time, active bool) messages.TenantInfo {
	st := s.sched.Stats(now)
	inFlight := 0
	if s.sending != nil {
		inFlight = 1
	}
	return messages.TenantInfo{
		ID:                  s.cfg.ID,
		Active:              active,
		CircuitState:        st.Breaker.State.String(),
		ConsecutiveFailures: st.Breaker.ConsecutiveFailures,
		OpenUntil:           st.Breaker.OpenUntil,
		BreakerOpened:       st.Breaker.OpenedCount,
		TokensAvailable:     max(0, st.TokensAvailable),
		TokensMax:           st.TokensMax,
		RatePerMinute:       s.cfg.RateLimit.PerMinute,
		EffectivePerMinute:  st.EffectivePerMinute,
		NextSlot:            st.NextSlot,
		InFlight:            inFlight,
		Held:                s.held(),
		Deferred:            s.deferred,
		Sent:                s.sent,
		Failed:              s.failed,
		DeferredTotal:       s.deferredTotal,
		DeadLettered:        s.deadLettered,
		Restarts:            s.restarts,
		Paused:              s.paused,
		Quarantined:         s.quarantined,
		LastError:           s.lastError,
		LastErrorAt:         s.lastErrorAt,
		LatencyMs:           float64(st.LatencyEWMA) / float64(time.Millisecond),
	}
}

// idCache remembers the wamids of recently sent internal ids, so a job
// redelivered after a crash is not sent twice. Bounded, least recently
// added first out; allocated on first use.
type idCache struct {
	max   int
	order *list.List
	byID  map[string]*list.Element
}

type idEntry struct{ id, wamid string }

func newIDCache(max int) *idCache {
	return &idCache{max: max, order: list.New(), byID: make(map[string]*list.Element)}
}

func (c *idCache) get(id string) (string, bool) {
	if c == nil {
		return "", false
	}
	e, ok := c.byID[id]
	if !ok {
		return "", false
	}
	return e.Value.(idEntry).wamid, true
}

func (c *idCache) add(id, wamid string) {
	if e, ok := c.byID[id]; ok {
		e.Value = idEntry{id, wamid}
		return
	}
	c.byID[id] = c.order.PushBack(idEntry{id, wamid})
	if c.order.Len() > c.max {
		oldest := c.order.Front()
		c.order.Remove(oldest)
		delete(c.byID, oldest.Value.(idEntry).id)
	}
}
