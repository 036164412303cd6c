package worker

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/wadispatch/wadispatch/actors"
	"github.com/wadispatch/wadispatch/config"
	"github.com/wadispatch/wadispatch/whatsapp"
)

// ConfigStatus is the tenants file in force, as GET /v1/config shows it.
type ConfigStatus struct {
	File       string    `json:"file"`
	Generation int       `json:"generation"` // 1 at start, +1 for each reload that changed something
	Hash       string    `json:"hash"`       // SHA-256 of the file in force
	LoadedAt   time.Time `json:"loadedAt"`
	Tenants    int       `json:"tenants"`
	// Watch is how often the file is looked at for a change ("off").
	Watch       string    `json:"watch"`
	LastError   string    `json:"lastError,omitempty"` // of the last reload, if it failed
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
}

// ReloadResult is what a reload changed.
type ReloadResult struct {
	// Changed is false for a file identical to the one in force: nothing
	// was done.
	Changed    bool     `json:"changed"`
	Added      []string `json:"added"`
	Updated    []string `json:"changedTenants"`
	Removed    []string `json:"removed"`
	Generation int      `json:"generation"`
	Hash       string   `json:"hash"`
}

// configState is the tenants file in force; mu makes reloads one at a time.
type configState struct {
	mu      sync.Mutex
	status  ConfigStatus
	tenants map[string]config.Tenant
}

func newConfigState(cfg config.Config) *configState {
	s := &configState{tenants: make(map[string]config.Tenant, len(cfg.Tenants))}
	for _, t := range cfg.Tenants {
		s.tenants[t.ID] = t
	}
	watch := "off"
	if cfg.TenantsWatch > 0 {
		watch = cfg.TenantsWatch.String()
	}
	s.status = ConfigStatus{File: cfg.TenantsFile, Generation: 1, Hash: cfg.TenantsHash, LoadedAt: time.Now(),
		Tenants: len(cfg.Tenants), Watch: watch}
	return s
}

// ConfigStatus returns the tenants file in force.
func (w *Worker) ConfigStatus() ConfigStatus {
	w.config.mu.Lock()
	defer w.config.mu.Unlock()
	return w.config.status
}

// Reload reads the tenants file again and applies what changed, all or
// nothing: the file is validated exactly as at start (tokens included), and
// when anything is wrong nothing changes, the error is returned (one line,
// matching config.ErrConfig) and config_reload_failed is logged. An
// identical file changes nothing. Otherwise the router takes the whole
// difference in one message (actors.Reconfigure): added tenants serve,
// changed ones keep their state with their new settings, removed ones
// finish what they hold. trigger says what asked (sighup, api, watch).
func (w *Worker) Reload(ctx context.Context, trigger string) (ReloadResult, error) {
	st := w.config
	st.mu.Lock()
	defer st.mu.Unlock()
	start := time.Now()
	f, err := config.LoadTenantsFile(w.cfg.TenantsFile, w.getenv)
	if err == nil && f.Hash == st.status.Hash {
		w.logger.Debug("config_unchanged", slog.String("trigger", trigger), slog.String("hash", f.Hash))
		w.metrics.ConfigLoaded(true, time.Now(), f.Hash)
		st.status.LastError, st.status.LastErrorAt = "", time.Time{}
		return ReloadResult{Generation: st.status.Generation, Hash: f.Hash}, nil
	}
	var msg *actors.Reconfigure
	var res ReloadResult
	if err == nil {
		msg, res, err = w.diff(st.tenants, f.Tenants)
	}
	if err == nil {
		_, err = w.tenants.Reconfigure(ctx, msg)
	}
	if err != nil {
		w.logger.Error("config_reload_failed", slog.String("trigger", trigger), slog.String("error", err.Error()))
		w.metrics.ConfigLoaded(false, time.Now(), "")
		st.status.LastError, st.status.LastErrorAt = err.Error(), time.Now()
		return ReloadResult{}, err
	}
	st.tenants = make(map[string]config.Tenant, len(f.Tenants))
	ids := make([]string, len(f.Tenants))
	for i, t := range f.Tenants {
		st.tenants[t.ID] = t
		ids[i] = t.ID
	}
	w.metrics.SetTenantIDs(ids)
	now := time.Now()
	w.metrics.ConfigLoaded(true, now, f.Hash)
	st.status.Generation++
	st.status.Hash, st.status.LoadedAt, st.status.Tenants = f.Hash, now, len(f.Tenants)
	st.status.LastError, st.status.LastErrorAt = "", time.Time{}
	res.Changed, res.Generation, res.Hash = true, st.status.Generation, f.Hash
	w.logger.Info("config_reloaded", slog.String("trigger", trigger), slog.Int("added", len(res.Added)),
		slog.Int("changed", len(res.Updated)), slog.Int("removed", len(res.Removed)),
		slog.Int("generation", res.Generation), slog.String("hash", f.Hash),
		slog.Int64("duration", time.Since(start).Milliseconds()))
	return res, nil
}

// diff compares the tenants in force with the file's and reads the token
// of every added or changed tenant (registering it with the redactor).
func (w *Worker) diff(old map[string]config.Tenant, next []config.Tenant) (*actors.Reconfigure, ReloadResult, error) {
	msg := &actors.Reconfigure{Tokens: map[string]whatsapp.TokenSource{}}
	res := ReloadResult{Added: []string{}, Updated: []string{}, Removed: []string{}}
	seen := make(map[string]bool, len(next))
	for _, t := range next {
		seen[t.ID] = true
		was, ok := old[t.ID]
		if ok && was == t {
			continue
		}
		src, err := w.tokenSource(t)
		if err != nil {
			return nil, ReloadResult{}, fmt.Errorf("%w: %s: tenant %q: %v", config.ErrConfig, w.cfg.TenantsFile, t.ID, err)
		}
		msg.Tokens[t.ID] = src
		if ok {
			msg.Changed = append(msg.Changed, t)
			res.Updated = append(res.Updated, t.ID)
		} else {
			msg.Added = append(msg.Added, t)
			res.Added = append(res.Added, t.ID)
		}
	}
	for id := range old {
		if !seen[id] {
			msg.Removed = append(msg.Removed, id)
			res.Removed = append(res.Removed, id)
		}
	}
	slices.Sort(res.Removed)
	return msg, res, nil
}

// tokenSource is a tenant's token source, read once now so a missing token
// is an error before anything changes, and registered with the redactor.
func (w *Worker) tokenSource(t config.Tenant) (whatsapp.TokenSource, error) {
	getenv := w.getenv
	src := registeringToken{whatsapp.NewTokenSource(func() (string, error) { return t.ReadToken(getenv) }), w.secrets}
	if _, err := src.Token(); err != nil {
		return nil, err
	}
	return src, nil
}

// watchTenants reloads the tenants file when its content has changed and
// stayed the same for one more look (a file being written is not taken
// half-way), until ctx ends. It hashes the content rather than watching
// the file: a Kubernetes ConfigMap update swaps a symlink of the directory
// and never writes the file, which a watch on the file misses.
func (w *Worker) watchTenants(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	candidate := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		hash, err := config.HashTenantsFile(w.cfg.TenantsFile)
		if err != nil {
			continue // the reload itself reports a file that stays unreadable
		}
		if hash == w.ConfigStatus().Hash {
			candidate = ""
			continue
		}
		if hash != candidate {
			candidate = hash
			continue
		}
		candidate = ""
		_, _ = w.Reload(ctx, "watch")
	}
}
