package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/wadispatch/wadispatch/config"
)

// runCheck is `wadispatch check`: it validates a tenants file exactly as a
// start or a reload does and prints one line. A bad file is the same one-line
// error (exit code 2), so a CI job can check a file before it is deployed.
func runCheck(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	fs := flag.NewFlagSet("wadispatch check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("tenants-file", firstNonEmpty(getenv("TENANTS_FILE"), "tenants.yaml"), "tenants file to check (env TENANTS_FILE)")
	skipTokens := fs.Bool("skip-tokens", false, "do not check that each tenant's token variable or file is there (for CI, where the secrets are absent)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: wadispatch check [--tenants-file FILE] [--skip-tokens]")
		fmt.Fprintln(stderr, "\nValidates a tenants file as `wadispatch run` would at start or on a reload, and prints")
		fmt.Fprintln(stderr, "one line: the tenants and the file's hash, or the error (exit code 2).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: wadispatch check takes no arguments (got %q)", errUsage, fs.Arg(0))
	}
	env := getenv
	if *skipTokens {
		env = nil // LoadTenants' way of leaving tokens unchecked
	}
	f, err := config.LoadTenantsFile(*file, env)
	if err != nil {
		return err
	}
	tokens := "tokens checked"
	if *skipTokens {
		tokens = "tokens not checked"
	}
	fmt.Fprintf(stdout, "%s: ok, %d tenants, %s (sha256 %s)\n", *file, len(f.Tenants), tokens, f.Hash)
	return nil
}
