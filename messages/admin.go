package messages

import (
	"errors"
	"fmt"
	"time"
)

// Errors of a question about tenants, for whoever asks them through an
// interface rather than by message (the admin API, metrics).
var (
	// ErrUnknownTenant: the question named no configured tenant (the
	// router answered *TenantNotFound).
	ErrUnknownTenant = errors.New("tenant is not configured")
	// ErrNoAnswer: the router or the tenant's actor did not answer in time,
	// or is not running; the error's text says which.
	ErrNoAnswer = errors.New("no answer")
	// ErrOwnedElsewhere: the tenant's shard is owned by another worker,
	// which holds its state and must be asked instead (the router answered
	// *TenantElsewhere).
	ErrOwnedElsewhere = errors.New("tenant is owned by another worker")
)

// ListTenants asks the router for every configured tenant's TenantInfo; the
// answer is a *TenantList.
type ListTenants struct{}

// GetTenant asks for one tenant's *TenantInfo (or *TenantNotFound).
type GetTenant struct{ TenantID string }

// ResetBreaker closes a tenant's breaker; the answer is its *TenantInfo.
type ResetBreaker struct{ TenantID string }

// PauseTenant stops sends for a tenant: its jobs are deferred, not sent and
// not lost. The answer is its *TenantInfo.
type PauseTenant struct{ TenantID string }

// ResumeTenant undoes PauseTenant and lifts a crash quarantine.
type ResumeTenant struct{ TenantID string }

// TenantNotFound answers an admin message naming no configured tenant. As
// an error it reads `tenant "<id>" is not configured` and matches
// ErrUnknownTenant.
type TenantNotFound struct{ TenantID string }

func (e *TenantNotFound) Error() string {
	return fmt.Sprintf("tenant %q is not configured", e.TenantID)
}

// Is makes errors.Is(err, ErrUnknownTenant) true for a *TenantNotFound.
func (e *TenantNotFound) Is(target error) bool { return target == ErrUnknownTenant }

// TenantElsewhere answers a command for a tenant whose shard another
// worker owns. As an error it says so and matches ErrOwnedElsewhere.
type TenantElsewhere struct {
	TenantID string
	Shard    int
}

func (e *TenantElsewhere) Error() string {
	return fmt.Sprintf("tenant %q is in shard %d, which another worker owns; ask that worker", e.TenantID, e.Shard)
}

// Is makes errors.Is(err, ErrOwnedElsewhere) true for a *TenantElsewhere.
func (e *TenantElsewhere) Is(target error) bool { return target == ErrOwnedElsewhere }

// ShardsChanged tells the router of a shard this worker acquired or
// released; Owned is every shard owned after it, ascending.
type ShardsChanged struct {
	Shard    int
	Acquired bool
	Owned    []int
}

// TenantList answers ListTenants, ordered by tenant id.
type TenantList struct{ Tenants []TenantInfo }

// TenantInfo is one tenant's state as its actor reports it.
//
// Window is the tenant's send window: sized from measured latency and rate,
// never above the tenant's max_in_flight. RecipientsWaiting counts
// recipients that have a job waiting behind an earlier job to the same
// recipient, since sends to one recipient keep their order.
type TenantInfo struct {
	ID                  string    `json:"id"`
	Active              bool      `json:"active"` // has an actor (has seen a job or an admin command)
	CircuitState        string    `json:"circuitState"`
	ConsecutiveFailures int       `json:"consecutiveFailures"`
	OpenUntil           time.Time `json:"openUntil,omitzero"`
	BreakerOpened       int       `json:"breakerOpened"`
	TokensAvailable     float64   `json:"tokensAvailable"`
	TokensMax           int       `json:"tokensMax"`
	RatePerMinute       float64   `json:"ratePerMinute"`
	EffectivePerMinute  float64   `json:"effectivePerMinute"`
	NextSlot            time.Time `json:"nextSlot,omitzero"`
	InFlight            int       `json:"inFlight"`          // sends to Meta in flight now
	Window              int       `json:"window"`            // sends it may have in flight now (its send window)
	RecipientsWaiting   int       `json:"recipientsWaiting"` // recipients with a job behind an earlier one to them
	Held                int       `json:"held"`
	Deferred            int       `json:"deferred"`
	Sent                int64     `json:"sent"`
	Failed              int64     `json:"failed"`
	DeferredTotal       int64     `json:"deferredTotal"`
	DeadLettered        int64     `json:"deadLettered"`
	Restarts            int       `json:"restarts"`
	Paused              bool      `json:"paused"`
	Quarantined         bool      `json:"quarantined"`
	LastError           string    `json:"lastError,omitempty"`
	LastErrorAt         time.Time `json:"lastErrorAt,omitzero"`
	LatencyMs           float64   `json:"latencyMs"`
	// Shard is the tenant's shard; OwnedElsewhere is set when another
	// worker owns it, and then nothing above is this worker's to say.
	Shard          int  `json:"shard"`
	OwnedElsewhere bool `json:"ownedElsewhere,omitempty"`
}
