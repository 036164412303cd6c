package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wadispatch/wadispatch/messages"
)

var (
	digitsRE  = regexp.MustCompile(`^[0-9]+$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
)

// DefaultMaxInFlight is max_in_flight when the tenants file does not set it.
// By Little's law a tenant sending 1,000 messages a second at 0.3 to 1 s per
// send needs 300 to 1,000 sends in flight, so the default must not be what
// caps a tenant on an upgraded messaging tier; the send window sizes itself
// below it from measured latency and rate.
const DefaultMaxInFlight = 1024

// maxTokenFileName bounds the file name of access_token_file, so that a token
// pasted there by mistake is refused without being shown.
const maxTokenFileName = 64

// policy is what the defaults block sets and a tenant may override.
type policy struct {
	RateLimit   RateLimit
	Breaker     Breaker
	MaxAttempts int
	MaxAge      time.Duration
	MaxInFlight int
}

// builtinPolicy is the defaults block a tenants file starts from.
func builtinPolicy() policy {
	return policy{
		RateLimit:   RateLimit{PerMinute: 80, Burst: 80},
		Breaker:     Breaker{FailureThreshold: 5, OpenFor: 60 * time.Second},
		MaxAttempts: 10,
		MaxAge:      24 * time.Hour,
		MaxInFlight: DefaultMaxInFlight,
	}
}

// The raw types mirror the file. Pointers tell a field left out (keep the
// default) from one set to its zero value (an error to report).
type rawFile struct {
	Defaults *rawPolicy  `yaml:"defaults"`
	Tenants  []rawTenant `yaml:"tenants"`
}

type rawPolicy struct {
	RateLimit   *rawRateLimit  `yaml:"rate_limit"`
	Breaker     *rawBreaker    `yaml:"breaker"`
	MaxAttempts *wholeNumber   `yaml:"max_attempts"`
	MaxAge      *time.Duration `yaml:"max_age"`
	MaxInFlight *wholeNumber   `yaml:"max_in_flight"`
}

type rawRateLimit struct {
	PerMinute *float64     `yaml:"per_minute"`
	Burst     *wholeNumber `yaml:"burst"`
}

type rawBreaker struct {
	FailureThreshold *wholeNumber   `yaml:"failure_threshold"`
	OpenFor          *time.Duration `yaml:"open_for"`
}

type rawTenant struct {
	ID              string `yaml:"id"`
	PhoneNumberID   string `yaml:"phone_number_id"`
	AccessTokenEnv  string `yaml:"access_token_env"`
	AccessTokenFile string `yaml:"access_token_file"`
	rawPolicy       `yaml:",inline"`
}

// apply returns p with the fields r sets, field by field.
func (r *rawPolicy) apply(p policy) policy {
	if r == nil {
		return p
	}
	if rl := r.RateLimit; rl != nil {
		setIf(&p.RateLimit.PerMinute, rl.PerMinute)
		setInt(&p.RateLimit.Burst, rl.Burst)
	}
	if br := r.Breaker; br != nil {
		setInt(&p.Breaker.FailureThreshold, br.FailureThreshold)
		setIf(&p.Breaker.OpenFor, br.OpenFor)
	}
	setInt(&p.MaxAttempts, r.MaxAttempts)
	setIf(&p.MaxAge, r.MaxAge)
	setInt(&p.MaxInFlight, r.MaxInFlight)
	return p
}

func setInt(dst *int, src *wholeNumber) {
	if src != nil {
		*dst = int(*src)
	}
}

func setIf[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}

// wholeNumber is an int that the file must write as a whole number (every
// integer key: burst, failure_threshold, max_attempts, max_in_flight): yaml.v3
// alone would truncate 2.5 to 2 (and 0.5 to a misleading 0). A whole number
// written as a float (1024.0, 1e3, as JSON producers may) is accepted.
type wholeNumber int

// UnmarshalYAML refuses a fractional number with the same error yaml.v3
// gives a word, so that explainYAMLError names the line, tenant and field.
func (w *wholeNumber) UnmarshalYAML(n *yaml.Node) error {
	var f float64
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" && n.Decode(&f) == nil && f != math.Trunc(f) {
		value := n.Value
		if len(value) > 10 { // as yaml.v3 shows a long value
			value = value[:7] + "..."
		}
		return &yaml.TypeError{Errors: []string{
			fmt.Sprintf("line %d: cannot unmarshal !!float `%s` into int", n.Line, value)}}
	}
	var i int
	if err := n.Decode(&i); err != nil {
		return err
	}
	*w = wholeNumber(i)
	return nil
}

// LoadTenants reads the tenants file at path (YAML, or JSON), applies its
// defaults block (or the built-in one) to each tenant field by field, and
// validates the result: the rules of Validate, plus that each tenant's
// access_token_env is set (read through getenv) or its access_token_file is
// readable and not empty. A relative access_token_file is resolved against
// the directory of path. Errors match ErrConfig and begin with path.
// A nil getenv skips the token checks (wadispatch check --skip-tokens).
func LoadTenants(path string, getenv func(string) string) ([]Tenant, error) {
	f, err := LoadTenantsFile(path, getenv)
	return f.Tenants, err
}

// TenantsFile is a tenants file as loaded: its tenants and the hash of the
// bytes they came from.
type TenantsFile struct {
	Tenants []Tenant
	// Hash is the SHA-256 of the file's content, in hex: replicas that
	// disagree show different hashes.
	Hash string
}

// HashTenantsFile returns the hash LoadTenantsFile would give the file's
// content now, without parsing it.
func HashTenantsFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", newError(err, "%s: cannot read file: %v", path, pathErrReason(err))
	}
	return hashBytes(data), nil
}

func hashBytes(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// LoadTenantsFile is LoadTenants with the file's hash.
func LoadTenantsFile(path string, getenv func(string) string) (TenantsFile, error) {
	tenants, data, err := loadTenants(path, getenv)
	if err != nil {
		return TenantsFile{}, err
	}
	return TenantsFile{Tenants: tenants, Hash: hashBytes(data)}, nil
}

func loadTenants(path string, getenv func(string) string) ([]Tenant, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, newError(err, "%s: cannot read file: %v; point TENANTS_FILE or --tenants-file at the tenants file",
			path, pathErrReason(err))
	}
	var raw rawFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, newError(err, "%s: file is empty; it needs a tenants list", path)
		}
		return nil, nil, newError(err, "%s: %s", path, explainYAMLError(data, err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, nil, newError(err, "%s: holds more than one YAML document (---); keep one", path)
	}

	defaults := raw.Defaults.apply(builtinPolicy())
	if err := checkPolicy(defaults); err != nil {
		return nil, nil, newError(nil, "%s: defaults: %s", path, err)
	}
	tenants := make([]Tenant, len(raw.Tenants))
	for i, rt := range raw.Tenants {
		p := rt.apply(defaults)
		file := rt.AccessTokenFile
		if file != "" && !filepath.IsAbs(file) {
			file = filepath.Join(filepath.Dir(path), file)
		}
		tenants[i] = Tenant{
			ID:              rt.ID,
			PhoneNumberID:   rt.PhoneNumberID,
			AccessTokenEnv:  rt.AccessTokenEnv,
			AccessTokenFile: file,
			RateLimit:       p.RateLimit,
			Breaker:         p.Breaker,
			MaxAttempts:     p.MaxAttempts,
			MaxAge:          p.MaxAge,
			MaxInFlight:     p.MaxInFlight,
		}
	}
	if err := validateTenants(path, tenants, getenv); err != nil {
		return nil, nil, err
	}
	return tenants, data, nil
}

// validateTenants checks tenants in file order and returns the first error.
// With a getenv, it also checks that each tenant's token is there.
func validateTenants(file string, tenants []Tenant, getenv func(string) string) error {
	if len(tenants) == 0 {
		return newError(nil, "%s: tenants: no tenant configured; add at least one under tenants:", file)
	}
	first := make(map[string]int, len(tenants))
	for i, t := range tenants {
		switch {
		case t.ID == "":
			return newError(nil, "%s: tenants[%d]: id is required", file, i)
		case !messages.ValidTenantID(t.ID):
			return newError(nil, "%s: tenants[%d]: id %q must be %s", file, i, t.ID, messages.TenantIDRule)
		}
		if j, dup := first[t.ID]; dup {
			return newError(nil, "%s: tenants[%d]: id %q is a duplicate of tenants[%d]; tenant ids must be unique", file, i, t.ID, j)
		}
		first[t.ID] = i
		if err := checkTenant(t); err != nil {
			return newError(nil, "%s: tenant %q: %s", file, t.ID, err)
		}
		if getenv != nil {
			if _, err := t.ReadToken(getenv); err != nil {
				return newError(err, "%s: tenant %q: %s", file, t.ID, err)
			}
		}
	}
	return nil
}

// checkTenant checks one tenant's own fields, all but its id.
func checkTenant(t Tenant) error {
	switch {
	case t.PhoneNumberID == "":
		return errors.New("phone_number_id is required; set it to the tenant's Meta phone number ID (digits, quoted)")
	case !digitsRE.MatchString(t.PhoneNumberID):
		return fmt.Errorf("phone_number_id must be digits only (got %q)", t.PhoneNumberID)
	case t.AccessTokenEnv != "" && t.AccessTokenFile != "":
		return errors.New("set only one of access_token_env and access_token_file (both are set)")
	case t.AccessTokenEnv == "" && t.AccessTokenFile == "":
		return errors.New("access_token_env or access_token_file is required; set exactly one")
	case t.AccessTokenEnv != "" && !envNameRE.MatchString(t.AccessTokenEnv):
		// Not shown: a value that is no variable name may be the token itself.
		return errors.New("access_token_env must be an environment variable name like ACME_WA_TOKEN (value not shown, in case it is the token itself)")
	case len(filepath.Base(t.AccessTokenFile)) > maxTokenFileName:
		return fmt.Errorf("access_token_file must be a path whose file name is at most %d characters (value not shown, in case it is the token itself)", maxTokenFileName)
	}
	return checkPolicy(policy{RateLimit: t.RateLimit, Breaker: t.Breaker, MaxAttempts: t.MaxAttempts, MaxAge: t.MaxAge,
		MaxInFlight: t.MaxInFlight})
}

func checkPolicy(p policy) error {
	switch {
	case !(p.RateLimit.PerMinute > 0) || math.IsInf(p.RateLimit.PerMinute, 0):
		return fmt.Errorf("rate_limit.per_minute must be > 0 (got %g)", p.RateLimit.PerMinute)
	case p.RateLimit.Burst < 1:
		return fmt.Errorf("rate_limit.burst must be >= 1 (got %d)", p.RateLimit.Burst)
	case p.Breaker.FailureThreshold < 1:
		return fmt.Errorf("breaker.failure_threshold must be >= 1 (got %d)", p.Breaker.FailureThreshold)
	case p.Breaker.OpenFor <= 0:
		return fmt.Errorf("breaker.open_for must be > 0 (got %s)", p.Breaker.OpenFor)
	case p.MaxAttempts < 1:
		return fmt.Errorf("max_attempts must be >= 1 (got %d)", p.MaxAttempts)
	case p.MaxAge <= 0:
		return fmt.Errorf("max_age must be > 0 (got %s)", p.MaxAge)
	case p.MaxInFlight < 1:
		return fmt.Errorf("max_in_flight must be >= 1 (got %d)", p.MaxInFlight)
	}
	return nil
}

// ReadToken returns the tenant's access token, read now from its environment
// variable (through getenv) or its file, with surrounding white space trimmed.
// Call it again to pick up a rotated token file. Its errors name the variable
// or the file, never the token. It is the one reader of token sources: the
// worker's cached token (whatsapp.NewTokenSource) reads through it too.
func (t Tenant) ReadToken(getenv func(string) string) (string, error) {
	if t.AccessTokenEnv != "" {
		tok := strings.TrimSpace(getenv(t.AccessTokenEnv))
		if tok == "" {
			return "", fmt.Errorf("access_token_env %s is not set; set it to the tenant's access token", t.AccessTokenEnv)
		}
		return tok, nil
	}
	if t.AccessTokenFile == "" {
		return "", errors.New("access_token_env or access_token_file is required; set exactly one")
	}
	data, err := os.ReadFile(t.AccessTokenFile)
	if err != nil {
		return "", fmt.Errorf("access_token_file %s cannot be read: %w", t.AccessTokenFile, pathErrReason(err))
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("access_token_file %s is empty; write the tenant's access token into it", t.AccessTokenFile)
	}
	return tok, nil
}

// pathErrReason is the reason of a file error without the path and operation
// the *fs.PathError repeats ("no such file or directory", "permission denied").
func pathErrReason(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
