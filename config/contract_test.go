package config_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/config"
)

// The configuration table of docs/contract.md lists every setting with the
// flag and default that `wadispatch run --help` prints, in the same order.
func TestContractListsEverySetting(t *testing.T) {
	doc, err := os.ReadFile("../docs/contract.md")
	require.NoError(t, err)

	var usage bytes.Buffer
	_, err = config.Load(func(string) string { return "" }, []string{"--help"}, &usage)
	require.True(t, errors.Is(err, flag.ErrHelp), "%v", err)
	flags := regexp.MustCompile(`(?m)^  --(\S+) \S+\n.*\n        env (\S+), (no default|default "(.*)")$`).
		FindAllStringSubmatch(usage.String(), -1)
	require.Len(t, flags, 19, "the usage text lists every setting:\n%s", usage.String())

	last := -1
	for _, f := range flags {
		flagName, env, def := f[1], f[2], f[4]
		if f[3] == "no default" {
			def = "(none)"
		} else {
			def = "`" + def + "`"
		}
		row := "| `" + env + "` | `--" + flagName + "` | " + def + " |"
		at := strings.Index(string(doc), row)
		if assert.GreaterOrEqual(t, at, 0, "docs/contract.md has no row %s", row) {
			assert.Greater(t, at, last, "%s is out of order in docs/contract.md", env)
			last = at
		}
	}
}
