package whatsapp_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/whatsapp"
)

// Every Graph API code in the table of Meta's answers in docs/contract.md
// is classified as the table says.
func TestContractTableOfMetasAnswers(t *testing.T) {
	doc, err := os.ReadFile("../docs/contract.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(doc), "## Meta's answers")
	require.True(t, ok, "docs/contract.md has a section on Meta's answers")
	section, _, _ = strings.Cut(section, "\n## ")

	row := regexp.MustCompile(`(?m)^\| ([a-z ]+) \| ([^|]*) \|`)
	code := regexp.MustCompile(`^(\d+)(?:–(\d+))?$`)
	checked := 0
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		class := strings.ReplaceAll(m[1], " ", "_")
		if class == "class" {
			continue // the header
		}
		codes, _, _ := strings.Cut(m[2], ";")
		for _, tok := range strings.Split(codes, ",") {
			c := code.FindStringSubmatch(strings.TrimSpace(tok))
			if c == nil {
				continue // "HTTP 200 with messages[0].id" and the like
			}
			lo, _ := strconv.Atoi(c[1])
			hi := lo
			if c[2] != "" {
				hi, _ = strconv.Atoi(c[2])
			}
			for n := lo; n <= hi; n++ {
				got := whatsapp.Classify(&whatsapp.APIError{HTTPStatus: 400, Code: n, HasCode: true})
				assert.Equal(t, class, got.String(), "code %d", n)
				checked++
			}
		}
	}
	assert.Greater(t, checked, 100, "the table's codes were found (200–299 alone is 100)")
}
