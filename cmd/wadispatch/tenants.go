package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/wadispatch/wadispatch/admin"
	"github.com/wadispatch/wadispatch/messages"
)

const tenantsUsage = `Usage: wadispatch tenants [flags] [ID]

Shows a running worker's tenants, as its admin API reports them (the tenant
actors answer for themselves): breaker state, tokens available/max, jobs in
flight and deferred, sent and failed counts, actor restarts and the last
error. With ID, only that tenant.

Flags:
`

func runTenants(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wadispatch tenants", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin-addr", firstNonEmpty(getenv("ADMIN_ADDR"), "127.0.0.1:8081"),
		"the worker's admin API, host:port or URL (env ADMIN_ADDR)")
	token := fs.String("admin-token", getenv("ADMIN_TOKEN"),
		"bearer token of the admin API (env ADMIN_TOKEN; prefer the env var, flags show in ps)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	fs.Usage = func() { fmt.Fprint(stderr, tenantsUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return fmt.Errorf("%w: tenants takes at most one tenant id (got %d arguments)", errUsage, fs.NArg())
	}
	if *addr == "off" {
		return fmt.Errorf("%w: ADMIN_ADDR is off, so there is no admin API to ask; pass --admin-addr", errUsage)
	}
	client := admin.NewClient(*addr, *token, nil)
	var tenants []messages.TenantInfo
	if id := fs.Arg(0); id != "" {
		info, err := client.Get(ctx, id)
		if err != nil {
			return err
		}
		tenants = []messages.TenantInfo{info}
	} else {
		var err error
		if tenants, err = client.List(ctx); err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if fs.Arg(0) != "" {
			return enc.Encode(tenants[0])
		}
		return enc.Encode(map[string]any{"tenants": tenants})
	}
	return admin.WriteTable(stdout, tenants)
}
