package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/wadispatch/wadispatch/messages"
)

// yaml.v3 reports decoding problems as "line N: ..." strings naming Go types.
// explainYAMLError turns the first into one line in the file's own terms: the
// line, the tenant (or defaults), the key, and what was expected.

var (
	yamlLineRE     = regexp.MustCompile(`^line (\d+): (.*)$`)
	yamlSyntaxRE   = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	yamlUnknownRE  = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)
	yamlMismatchRE = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")
)

// sections names, by the raw Go type yaml.v3 reports, where a key was
// unknown and which keys are known there.
var sections = map[string]struct{ name, keys string }{
	"config.rawFile":      {"the top level", "defaults, tenants"},
	"config.rawPolicy":    {"defaults", "rate_limit, breaker, max_attempts, max_age, max_in_flight"},
	"config.rawTenant":    {"a tenant", "id, phone_number_id, access_token_env, access_token_file, rate_limit, breaker, max_attempts, max_age, max_in_flight"},
	"config.rawRateLimit": {"rate_limit", "per_minute, burst"},
	"config.rawBreaker":   {"breaker", "failure_threshold, open_for"},
}

// expected says in words what a Go type of the raw structs wants.
var expected = map[string]string{
	"int":                "a whole number",
	"*int":               "a whole number",
	"float64":            "a number",
	"*float64":           "a number",
	"string":             "a string",
	"time.Duration":      "a Go duration like 90s, 5m or 24h",
	"*time.Duration":     "a Go duration like 90s, 5m or 24h",
	"[]config.rawTenant": "a list of tenants",
}

var yamlKinds = map[string]string{"seq": "a list", "map": "a mapping", "null": "nothing"}

func explainYAMLError(data []byte, err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		msg := err.Error()
		if m := yamlSyntaxRE.FindStringSubmatch(msg); m != nil {
			return fmt.Sprintf("line %s: invalid YAML: %s", m[1], m[2])
		}
		return "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")
	}
	msg := explainTypeError(newLineIndex(data), te.Errors[0])
	if n := len(te.Errors) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more)", n)
	}
	return msg
}

func explainTypeError(idx lineIndex, e string) string {
	m := yamlLineRE.FindStringSubmatch(e)
	if m == nil {
		return strings.ReplaceAll(e, "config.raw", "")
	}
	line, _ := strconv.Atoi(m[1])
	what := m[2]
	if u := yamlUnknownRE.FindStringSubmatch(what); u != nil {
		key, typ := u[1], u[2]
		where := idx.context(idx.key(line, key))
		sec, ok := sections[typ]
		if !ok {
			return fmt.Sprintf("line %d: %sunknown field %q", line, where, key)
		}
		return fmt.Sprintf("line %d: %sunknown field %q in %s; valid fields: %s", line, where, key, sec.name, sec.keys)
	}
	if t := yamlMismatchRE.FindStringSubmatch(what); t != nil {
		kind, value, typ := t[1], t[2], t[3]
		want, ok := expected[typ]
		if !ok {
			want = "a mapping (key: value)"
		}
		got := fmt.Sprintf("%q", value)
		if k, ok := yamlKinds[kind]; ok && value == "" {
			got = k
		}
		p := idx.value(line, kind, value)
		field := ""
		if f := fieldPath(p); f != "" {
			field = f + ": "
		}
		return fmt.Sprintf("line %d: %s%sexpected %s, got %s", line, idx.context(p), field, want, got)
	}
	return fmt.Sprintf("line %d: %s", line, strings.ReplaceAll(what, "config.raw", ""))
}

// lineIndex maps the lines of a YAML file to the paths of its keys and
// values, like ["tenants", "[1]", "rate_limit", "burst"].
type lineIndex struct {
	entries []lineEntry
	ids     map[int]string // tenant index -> its id, when it has one
}

type lineEntry struct {
	line  int
	path  []string
	isKey bool
	kind  yaml.Kind
	value string
}

func newLineIndex(data []byte) lineIndex {
	idx := lineIndex{ids: map[int]string{}}
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return idx
	}
	idx.walk(&root, nil)
	return idx
}

func (idx *lineIndex) walk(n *yaml.Node, path []string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			idx.walk(c, path)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := append(append([]string(nil), path...), k.Value)
			idx.entries = append(idx.entries,
				lineEntry{line: k.Line, path: p, isKey: true},
				lineEntry{line: v.Line, path: p, kind: v.Kind, value: v.Value})
			if len(path) == 2 && path[0] == "tenants" && k.Value == "id" && messages.ValidTenantID(v.Value) {
				if i, err := strconv.Atoi(strings.Trim(path[1], "[]")); err == nil {
					idx.ids[i] = v.Value
				}
			}
			idx.walk(v, p)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := append(append([]string(nil), path...), fmt.Sprintf("[%d]", i))
			idx.entries = append(idx.entries, lineEntry{line: c.Line, path: p, kind: c.Kind, value: c.Value})
			idx.walk(c, p)
		}
	}
}

// key returns the path of the key named name on line.
func (idx lineIndex) key(line int, name string) []string {
	for _, e := range idx.entries {
		if e.isKey && e.line == line && e.path[len(e.path)-1] == name {
			return e.path
		}
	}
	return nil
}

// value returns the path of the value on line that yaml.v3 reports as a
// kind ("str", "int", "seq", "map", ...) shown as shown (cut to 7 characters
// and "..." when long). A list or mapping is the innermost one starting on
// the line; a scalar the first that matches. Else it is the line's last value.
func (idx lineIndex) value(line int, kind, shown string) []string {
	prefix, cut := strings.CutSuffix(shown, "...")
	var found, last []string
	for _, e := range idx.entries {
		if e.isKey || e.line != line {
			continue
		}
		last = e.path
		switch {
		case kind == "seq" && e.kind == yaml.SequenceNode, kind == "map" && e.kind == yaml.MappingNode:
			found = e.path
		case found == nil && e.kind == yaml.ScalarNode && shown != "" &&
			(e.value == shown || cut && strings.HasPrefix(e.value, prefix)):
			found = e.path
		}
	}
	if found == nil {
		return last
	}
	return found
}

// context names the tenant or the defaults a path is in, like `tenant "acme": `.
func (idx lineIndex) context(path []string) string {
	if len(path) >= 2 && path[0] == "tenants" && strings.HasPrefix(path[1], "[") {
		i, err := strconv.Atoi(strings.Trim(path[1], "[]"))
		if err != nil {
			return ""
		}
		if id, ok := idx.ids[i]; ok {
			return fmt.Sprintf("tenant %q: ", id)
		}
		return fmt.Sprintf("tenants[%d]: ", i)
	}
	if len(path) >= 1 && path[0] == "defaults" {
		return "defaults: "
	}
	return ""
}

// fieldPath is the dotted field a path names inside its tenant or defaults,
// like "rate_limit.burst".
func fieldPath(path []string) string {
	switch {
	case len(path) >= 2 && path[0] == "tenants" && strings.HasPrefix(path[1], "["):
		path = path[2:]
	case len(path) >= 1 && path[0] == "defaults":
		path = path[1:]
	}
	return strings.Join(path, ".")
}
