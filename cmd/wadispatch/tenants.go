package main

import (
	"context"
	"io"
)

// runTenants is filled in with the admin API.
func runTenants(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return nil
}
