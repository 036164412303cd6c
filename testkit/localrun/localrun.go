// Package localrun sets up a worker run on this machine against the fake
// Graph API (testkit/fakemeta): a temporary directory, a tenants file whose
// tokens the fake accepts with a getenv that serves those tokens, and a
// plain AMQP channel beside the worker. The demo, the benchmark suite and
// the end-to-end tests all run the worker this way.
//
// Like fakemeta it links neither testing nor a test library, so the demo in
// the production binary can use it. It starts no worker itself.
package localrun

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

// StartMeta starts a fake Graph API on a free loopback port and makes a
// temporary directory (named prefix*) for a local run's tenants file;
// cleanup stops the one and removes the other.
func StartMeta(prefix string) (fake *fakemeta.Server, dir string, cleanup func(), err error) {
	fake, err = fakemeta.New("127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		_ = fake.Close()
		return nil, "", nil, err
	}
	return fake, dir, func() { _ = fake.Close(); _ = os.RemoveAll(dir) }, nil
}

// DialChannel opens a connection to url and a channel on it, for talking to
// the broker beside the worker. Closing the connection closes the channel.
func DialChannel(url string) (*amqp.Connection, *amqp.Channel, error) {
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return nil, nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, ch, nil
}

// Tenant is a tenant whose Meta is a fakemeta.Server.
type Tenant struct {
	ID    string
	Phone string
	Token string
	// TokenFile, when set, gives the tenant an access_token_file (whose
	// content the caller manages) instead of a variable holding Token.
	TokenFile string
	// Extra is YAML appended to the tenant's entry (e.g. a rate_limit).
	Extra string
}

// WriteTenants registers every tenant's token with fake and writes a
// tenants file into dir; defaults is the body of its defaults block ("" for
// none), one key per line. It returns the file's path and a getenv that
// serves the tokens' variables and falls back to base (which may be nil).
func WriteTenants(dir, defaults string, tenants []Tenant, fake *fakemeta.Server,
	base func(string) string) (string, func(string) string, error) {
	env := map[string]string{}
	var file strings.Builder
	if defaults = strings.TrimSpace(defaults); defaults != "" {
		file.WriteString("defaults:\n")
		for _, line := range strings.Split(defaults, "\n") {
			fmt.Fprintf(&file, "  %s\n", strings.TrimSpace(line))
		}
	}
	file.WriteString("tenants:\n")
	for _, t := range tenants {
		fake.AddTenant(t.Phone, t.Token)
		fmt.Fprintf(&file, "  - id: %s\n    phone_number_id: %q\n", t.ID, t.Phone)
		if t.TokenFile != "" {
			fmt.Fprintf(&file, "    access_token_file: %s\n", t.TokenFile)
		} else {
			name := "WA_TOKEN_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(t.ID))
			env[name] = t.Token
			fmt.Fprintf(&file, "    access_token_env: %s\n", name)
		}
		if t.Extra != "" {
			fmt.Fprintf(&file, "    %s\n", t.Extra)
		}
	}
	path := filepath.Join(dir, "tenants.yaml")
	if err := os.WriteFile(path, []byte(file.String()), 0o600); err != nil {
		return "", nil, err
	}
	getenv := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		if base != nil {
			return base(k)
		}
		return ""
	}
	return path, getenv, nil
}
