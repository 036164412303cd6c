package whatsapp

import (
	"errors"
	"sync"
)

// ErrNoToken means a token source read an empty token.
var ErrNoToken = errors.New("no access token")

// TokenSource gives a tenant's current access token and re-reads its source
// on demand (after Meta answers code 190, so a rotated token is picked up
// without a restart).
type TokenSource interface {
	Token() (string, error)
	// Refresh re-reads the source; changed reports whether the token differs from before.
	Refresh() (changed bool, err error)
}

// NewTokenSource returns a TokenSource that reads the token with read, the
// first time it is needed and again on each Refresh, and caches it. What a
// token source is (an environment variable, a file) and what its errors say
// belongs to the tenants file, so read is typically
//
//	func() (string, error) { return tenant.ReadToken(getenv) }
//
// (see config.Tenant.ReadToken). A read that returns an empty token without
// an error fails with ErrNoToken. read must never put the token in its error.
func NewTokenSource(read func() (string, error)) TokenSource {
	return &cachedToken{read: func() (string, error) {
		tok, err := read()
		switch {
		case err != nil:
			return "", err
		case tok == "":
			return "", ErrNoToken
		}
		return tok, nil
	}}
}

// cachedToken is shared by a tenant's actors and the worker's start-up
// check, so it locks; it is not actor state.
type cachedToken struct {
	read func() (string, error)

	mu    sync.Mutex
	token string // "" until the first successful read
}

func (c *cachedToken) Token() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" {
		return c.token, nil
	}
	tok, err := c.read()
	if err != nil {
		return "", err
	}
	c.token = tok
	return tok, nil
}

// Refresh keeps the cached token when the read fails: a file caught in the
// middle of a rotation must not stop a tenant whose old token still works.
func (c *cachedToken) Refresh() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tok, err := c.read()
	if err != nil {
		return false, err
	}
	changed := tok != c.token
	c.token = tok
	return changed, nil
}
