package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

// runFakeMeta serves the fake Graph API until ctx ends, for trying the
// worker by hand: point META_BASE_URL at it.
func runFakeMeta(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wadispatch fakemeta", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	var tenants multiFlag
	fs.Var(&tenants, "tenant", "PHONE_NUMBER_ID=TOKEN accepted by the fake (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: wadispatch fakemeta [--addr host:port] --tenant PHONE=TOKEN ...")
		fmt.Fprintln(stderr, "\nServes POST /{version}/{phone}/messages like Meta's Cloud API, answering wamids.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	fake, err := fakemeta.New(*addr)
	if err != nil {
		return err
	}
	defer fake.Close()
	for _, t := range tenants {
		phone, token, ok := strings.Cut(t, "=")
		if !ok || phone == "" || token == "" {
			return fmt.Errorf("%w: --tenant wants PHONE_NUMBER_ID=TOKEN", errUsage)
		}
		fake.AddTenant(phone, token)
	}
	fmt.Fprintf(stdout, "fake Meta Graph API on %s (%d phone numbers)\n", fake.URL(), len(tenants))
	<-ctx.Done()
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
