package actors

import (
	"strings"
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
	cfg    *config.Tenant // the router's copy: one per tenant, not one per state
	tokens whatsapp.TokenSource
	sched  *Schedule
	// epoch names this state's reservations (see messages.JobState).
	epoch string
	// shard is the tenant's shard (0 without shards).
	shard int32

	// sending are the jobs whose sends are in flight, oldest first.
	sending []inFlight
	// stallAt is the instant a stall check is armed for (watchForStall).
	stallAt time.Time
	// lines keep each recipient's jobs in order; nil while none is pending.
	lines map[string]*line
	// spareLine is a line kept for reuse (endHead), nil when idle.
	spareLine *line
	// reported is what this tenant last added to the process's count of
	// held deliveries (Config.held).
	reported int
	// waiting are admitted jobs (each holds its token), sent in order once
	// due; wakeAt is when a timer will next look at them.
	waiting []waitingJob
	wakeAt  time.Time
	// current is the message being handled, so a crash can requeue it.
	current *messages.Dispatch

	paused     bool
	quarantine Quarantine
	// crash is what the actor panicked with, for the restart's log line.
	crash any

	sent, failed, deferredTotal, deadLettered int64
	deferred                                  int
	restarts                                  int
	lastError                                 string
	lastErrorAt                               time.Time

	// recent is the duplicate memory (max 0 until the first send; a value,
	// not a separate allocation: see stateSlab).
	recent idCache
	// received counts the router's counted messages handled (jobs, admin
	// questions and commands), for passivation;
	// lastActive is when a job last came or a send ended; idleGen numbers
	// the actor incarnations' idle checks.
	received   int64
	lastActive time.Time
	idleGen    int
	idleArmed  bool
}

// newTenantState makes a tenant's state in the next block of slab.
func newTenantState(slab *stateSlab, t *config.Tenant, tokens whatsapp.TokenSource, epoch string, now time.Time,
	deps *Config) *TenantState {
	b := slab.next()
	b.sched.init(scheduleConfig(t, deps), now, &b.bucket, &b.breaker)
	b.state = TenantState{
		cfg:        t,
		tokens:     tokens,
		epoch:      epoch,
		quarantine: Quarantine{After: deps.QuarantineAfter, Window: deps.QuarantineWindow},
		sched:      &b.sched,
	}
	return &b.state
}

// tenantBlock is one tenant's long-lived state and its schedule's parts,
// made together.
type tenantBlock struct {
	state   TenantState
	sched   Schedule
	bucket  Bucket
	breaker Breaker
}

// stateSlab hands out tenant blocks from arrays of slabBlocks. A tenant's
// state lives as long as the process, while its actor's objects (mailbox,
// context, messages) come and go: made one by one, the parts of each state
// (and its duplicate memory, now inside TenantState) were scattered among the actors' short-lived objects, and the
// heap's spans they kept stayed mostly empty once the actors were
// passivated (heap in use per idle tenant was about twice the bytes the
// tenants held). In slabs they share their own spans.
type stateSlab struct{ free []tenantBlock }

const slabBlocks = 64

func (s *stateSlab) next() *tenantBlock {
	if len(s.free) == 0 {
		s.free = make([]tenantBlock, slabBlocks)
	}
	b := &s.free[0]
	s.free = s.free[1:]
	return b
}

func scheduleConfig(t *config.Tenant, deps *Config) ScheduleConfig {
	return ScheduleConfig{
		PerMinute:        t.RateLimit.PerMinute,
		Burst:            t.RateLimit.Burst,
		FailureThreshold: t.Breaker.FailureThreshold,
		OpenFor:          t.Breaker.OpenFor,
		MaxHeld:          deps.MaxHeld,
		MaxInFlight:      t.MaxInFlight,
	}
}

// reconfigure takes the tenant's settings from a reload: everything it
// holds (jobs, pause, quarantine, counters, duplicate memory) stays, and
// its limits change from now (Schedule.Reconfigure). A nil tokens keeps
// the token source.
func (s *TenantState) reconfigure(t *config.Tenant, tokens whatsapp.TokenSource, now time.Time, deps *Config) {
	s.cfg = t
	if tokens != nil {
		s.tokens = tokens
	}
	s.sched.Reconfigure(scheduleConfig(t, deps), now)
}

// sendsStopped reports whether an operator pause or a crash quarantine
// keeps the tenant from sending.
func (s *TenantState) sendsStopped() bool { return s.paused || s.quarantine.On() }

type waitingJob struct {
	m   *messages.Dispatch
	due time.Time
}

type inFlight struct {
	m     *messages.Dispatch
	start time.Time
}

func (s *TenantState) held() int { return len(s.waiting) + len(s.sending) }

// dropSending forgets m's send, reporting whether it was in flight.
func (s *TenantState) dropSending(m *messages.Dispatch) bool {
	for i, f := range s.sending {
		if f.m == m {
			s.sending = append(s.sending[:i], s.sending[i+1:]...)
			return true
		}
	}
	return false
}

func (s *TenantState) info(now time.Time, active bool) messages.TenantInfo {
	st := s.sched.Stats(now)
	return messages.TenantInfo{
		ID:                  s.cfg.ID,
		Shard:               int(s.shard),
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
		InFlight:            st.InFlight,
		Window:              st.Window,
		RecipientsWaiting:   s.recipientsWaiting(),
		Held:                s.held(),
		Deferred:            s.deferred,
		Sent:                s.sent,
		Failed:              s.failed,
		DeferredTotal:       s.deferredTotal,
		DeadLettered:        s.deadLettered,
		Restarts:            s.restarts,
		Paused:              s.paused,
		Quarantined:         s.quarantine.On(),
		LastError:           s.lastError,
		LastErrorAt:         s.lastErrorAt,
		LatencyMs:           float64(st.Latency) / float64(time.Millisecond),
	}
}

// idCache remembers the wamids of recently sent internal ids, so a job
// redelivered after a crash is not sent twice. Bounded: once full, the
// oldest entry makes room. Most tenants only ever hold a few entries, so
// they are kept in a slice and searched in order; a map index is built only
// past indexAfter entries (memory per idle tenant is a goal: a list plus a
// map cost ~470 bytes for one id).
type idCache struct {
	max     int
	entries []idEntry // a ring once full; next is the oldest
	next    int
	index   map[string]int // id → position in entries; nil while small
}

type idEntry struct{ id, wamid string }

// indexAfter is the size above which idCache keeps a map index.
const indexAfter = 16

func (c *idCache) find(id string) int {
	if c.index != nil {
		if i, ok := c.index[id]; ok {
			return i
		}
		return -1
	}
	for i := range c.entries {
		if c.entries[i].id == id {
			return i
		}
	}
	return -1
}

func (c *idCache) get(id string) (string, bool) {
	if c == nil {
		return "", false
	}
	if i := c.find(id); i >= 0 {
		return c.entries[i].wamid, true
	}
	return "", false
}

// repack copies a small memory's entries and strings into new memory of
// their own: made while the tenant's jobs ran, they sit among the actors'
// short-lived objects, and the heap spans they keep stay mostly empty
// once those are gone.
func (c *idCache) repack() {
	if len(c.entries) == 0 || c.index != nil {
		return
	}
	entries := make([]idEntry, len(c.entries), cap(c.entries))
	for i, e := range c.entries {
		entries[i] = idEntry{strings.Clone(e.id), strings.Clone(e.wamid)}
	}
	c.entries = entries
}

func (c *idCache) add(id, wamid string) {
	if i := c.find(id); i >= 0 {
		c.entries[i].wamid = wamid
		return
	}
	pos := len(c.entries)
	if pos < c.max {
		c.entries = append(c.entries, idEntry{id, wamid})
	} else {
		pos = c.next
		c.next = (c.next + 1) % c.max
		if c.index != nil {
			delete(c.index, c.entries[pos].id)
		}
		c.entries[pos] = idEntry{id, wamid}
	}
	switch {
	case c.index != nil:
		c.index[id] = pos
	case len(c.entries) > indexAfter:
		c.index = make(map[string]int, len(c.entries))
		for i, e := range c.entries {
			c.index[e.id] = i
		}
	}
}
