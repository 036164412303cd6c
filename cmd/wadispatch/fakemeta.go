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
	var latency fakemeta.Latency
	fs.DurationVar(&latency.Median, "latency-median", 0, "median time to answer each send, for every phone number (e.g. 300ms; 0 answers at once)")
	fs.Float64Var(&latency.Sigma, "latency-sigma", 0, "log-normal spread of the latency, the sigma of the underlying normal (e.g. 0.5; 0 is a fixed latency)")
	fs.DurationVar(&latency.Max, "latency-max", 0, "cap on the latency (e.g. 5s; 0 is no cap)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: wadispatch fakemeta [--addr host:port] [--latency-median d [--latency-sigma s] [--latency-max d]] --tenant PHONE=TOKEN ...")
		fmt.Fprintln(stderr, "\nServes POST /{version}/{phone}/messages like Meta's Cloud API, answering wamids.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := latency.Validate(); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
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
	fake.SetDefault(fakemeta.Behaviour{Latency: latency})
	fmt.Fprintf(stdout, "fake Meta Graph API on %s (%d phone numbers, latency %s)\n", fake.URL(), len(tenants), latency)
	<-ctx.Done()
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
