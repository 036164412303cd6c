package whatsapp

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
)

// ErrNoToken means a token source is unset or empty.
var ErrNoToken = errors.New("no access token")

// TokenSource gives a tenant's current access token and re-reads its source
// on demand (after Meta answers code 190, so a rotated token is picked up
// without a restart).
type TokenSource interface {
	Token() (string, error)
	// Refresh re-reads the source; changed reports whether the token differs from before.
	Refresh() (changed bool, err error)
}

// NewEnvToken reads the token from environment variable name through getenv
// and caches it; Refresh reads the variable again.
func NewEnvToken(name string, getenv func(string) string) TokenSource {
	return &cachedToken{read: func() (string, error) {
		tok := strings.TrimSpace(getenv(name))
		if tok == "" {
			return "", fmt.Errorf("access_token_env %s: %w: the variable is unset or empty", name, ErrNoToken)
		}
		return tok, nil
	}}
}

// NewFileToken reads the token from the file at path, without surrounding
// whitespace, and caches it; Refresh reads the file again.
func NewFileToken(path string) TokenSource {
	return &cachedToken{read: func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			var pathErr *fs.PathError
			if errors.As(err, &pathErr) {
				// The path is named once, by us; the cause keeps errors.Is(err, fs.ErrNotExist).
				return "", fmt.Errorf("access_token_file %s: %s: %w", path, pathErr.Op, pathErr.Err)
			}
			return "", fmt.Errorf("access_token_file %s: %w", path, err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("access_token_file %s: %w: the file is empty", path, ErrNoToken)
		}
		return tok, nil
	}}
}

// cachedToken is shared by tenants' actors and the config check, so it
// locks; it is not actor state.
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
