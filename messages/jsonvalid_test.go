package messages

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// validSeeds are the edges of the JSON grammar, each with what json.Valid
// says of it (checked too).
var validSeeds = []string{
	``, ` `, `0`, `-0`, `01`, `-`, `1.`, `1.5`, `.5`, `1e5`, `1E+5`, `1e-5`, `1e`, `1e+`, `-1.5e+3`, `1x`,
	`true`, `tru`, `truex`, `false`, `null`, `nul`, `"`, `""`, `"a"`, `"\"`, `"\\"`, `"\/"`, `"\u00e9"`, `"\u00e"`,
	`"\u00g0"`, `"\x"`, "\"\x01\"", "\"\xff\"", "\"\t\"", `{}`, `{ }`, `{"a":1}`, `{"a":1,}`, `{"a"}`, `{"a":}`,
	`{a:1}`, `{"a":1 "b":2}`, `{"a":1,"a":2}`, `[]`, `[ ]`, `[1,]`, `[,1]`, `[1 2]`, `[1,[2,{"a":[]}]]`, `[`, `]`,
	`{"a":[1,2,{"b":null}],"c":"d"}`, " \n\t\r{} \n", `{}{}`, `{} x`, "\u00a0{}", `[[[[]]]]`, `[[[[]]]`,
	strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth),
	strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1),
	strings.Repeat(`{"a":`, maxJSONDepth) + "1" + strings.Repeat("}", maxJSONDepth),
	strings.Repeat(`{"a":`, maxJSONDepth+1) + "1" + strings.Repeat("}", maxJSONDepth+1),
	benchJob,
}

func TestValidJSONIsJSONValid(t *testing.T) {
	for _, s := range validSeeds {
		require.Equal(t, json.Valid([]byte(s)), validJSON([]byte(s)), "%.60q", s)
	}
	// Random texts from JSON's own pieces, most of them invalid in some
	// small way, and mutations of valid jobs.
	rng := rand.New(rand.NewPCG(5, 6))
	pieces := []string{"{", "}", "[", "]", ",", ":", `"`, `"a"`, `"\u12ab"`, `\`, `\u`, "0", "1", "-", ".", "e",
		"+", "true", "null", "f", " ", "\n", "\x00", "\xe9", "x", `"k":`, `"v",`}
	for range 200000 {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		s := b.String()
		require.Equal(t, json.Valid([]byte(s)), validJSON([]byte(s)), "%q", s)
	}
	job := []byte(benchJob)
	for range 100000 {
		m := append([]byte(nil), job...)
		for range 1 + rng.IntN(2) {
			m[rng.IntN(len(m))] = pieces[rng.IntN(len(pieces))][0]
		}
		require.Equal(t, json.Valid(m), validJSON(m), "%q", m)
	}
}

// FuzzValidJSON checks validJSON against json.Valid on any input.
func FuzzValidJSON(f *testing.F) {
	for _, s := range validSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := validJSON(data), json.Valid(data); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid says %v", data, got, want)
		}
	})
}
