package observability

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

var promql = parser.NewParser(parser.Options{})

// labelSet is a set of label names; a nil labelSet is "not known".
type labelSet map[string]bool

func setOf(names ...string) labelSet {
	s := labelSet{}
	for _, n := range names {
		s[n] = true
	}
	return s
}

func (s labelSet) names() []string { return slices.Sorted(maps.Keys(s)) }

// literalAlternation matches a regular expression that is only literal
// words separated by |, such as failed|dead_lettered.
var literalAlternation = regexp.MustCompile(`^[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*$`)

// checkExpr parses expr (template variables already substituted) and
// returns every problem found: a parse error, a series that is not one of
// the worker's metrics, a label matcher or grouping label the series do not
// have, or a matcher value the label never takes. It also returns the
// metrics used (without prefix) and the labels the result has (nil when
// that cannot be told).
func checkExpr(expr string) (problems []string, used []string, out labelSet) {
	node, err := promql.ParseExpr(expr)
	if err != nil {
		return []string{fmt.Sprintf("does not parse: %v", err)}, nil, nil
	}
	usedSet := map[string]bool{}
	parser.Inspect(node, func(n parser.Node, path []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			problems = append(problems, checkSelector(n, usedSet)...)
		case *parser.AggregateExpr:
			if n.Without {
				break
			}
			have := labelsBelow(n.Expr)
			for _, g := range n.Grouping {
				if !have[g] {
					problems = append(problems, fmt.Sprintf("%s by (%s): no series below has label %q (they have %v)", n.Op, strings.Join(n.Grouping, ", "), g, have.names()))
				}
			}
		}
		return nil
	})
	return problems, slices.Sorted(maps.Keys(usedSet)), outputLabels(node)
}

// checkSelector checks one vector selector's metric and matchers.
func checkSelector(vs *parser.VectorSelector, used map[string]bool) []string {
	name := vs.Name
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			name = m.Value
		}
	}
	if name == "" {
		return []string{fmt.Sprintf("selector %s names no metric", vs)}
	}
	metric, seriesLabels, ok := lookupSeries(name)
	if !ok {
		return []string{fmt.Sprintf("%s is not a metric the worker exports", name)}
	}
	used[metric] = true
	var problems []string
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName {
			continue
		}
		if slices.Contains(targetLabels, m.Name) {
			continue
		}
		allowed, ok := seriesLabels[m.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s has no label %q (it has %v, plus %v)", name, m.Name, sortedKeys(seriesLabels), targetLabels))
			continue
		}
		if allowed == nil {
			continue
		}
		var values []string
		switch {
		case m.Type == labels.MatchEqual || m.Type == labels.MatchNotEqual:
			values = []string{m.Value}
		case literalAlternation.MatchString(m.Value):
			values = strings.Split(m.Value, "|")
		}
		for _, v := range values {
			if !slices.Contains(allowed, v) {
				problems = append(problems, fmt.Sprintf("%s{%s}: %q is not a value of %s (%v)", name, m, v, m.Name, allowed))
			}
		}
	}
	return problems
}

// seriesLabelsOf is the labels a selector's series have: the metric's
// labels and the target labels.
func seriesLabelsOf(vs *parser.VectorSelector) labelSet {
	name := vs.Name
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			name = m.Value
		}
	}
	_, ls, ok := lookupSeries(name)
	if !ok {
		return nil
	}
	s := setOf(targetLabels...)
	for l := range ls {
		s[l] = true
	}
	return s
}

// labelsBelow is every label any series under n has.
func labelsBelow(n parser.Node) labelSet {
	s := labelSet{}
	parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			for l := range seriesLabelsOf(vs) {
				s[l] = true
			}
		}
		return nil
	})
	return s
}

// outputLabels is the set of labels the result of e has, as far as it can
// be told simply; nil when it cannot.
func outputLabels(e parser.Expr) labelSet {
	switch e := e.(type) {
	case *parser.ParenExpr:
		return outputLabels(e.Expr)
	case *parser.StepInvariantExpr:
		return outputLabels(e.Expr)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return labelSet{}
	case *parser.VectorSelector:
		return seriesLabelsOf(e)
	case *parser.MatrixSelector:
		return outputLabels(e.VectorSelector)
	case *parser.SubqueryExpr:
		return outputLabels(e.Expr)
	case *parser.UnaryExpr:
		return outputLabels(e.Expr)
	case *parser.AggregateExpr:
		if e.Without {
			return nil
		}
		switch e.Op {
		case parser.TOPK, parser.BOTTOMK, parser.LIMITK, parser.LIMIT_RATIO:
			return outputLabels(e.Expr)
		case parser.COUNT_VALUES:
			return nil
		}
		return setOf(e.Grouping...)
	case *parser.Call:
		switch e.Func.Name {
		case "histogram_quantile":
			in := outputLabels(e.Args[1])
			if in == nil {
				return nil
			}
			in = maps.Clone(in)
			delete(in, "le")
			return in
		case "absent", "absent_over_time":
			// Only the labels of equality matchers; none in these files.
			return labelSet{}
		case "vector", "time", "scalar":
			return labelSet{}
		case "label_replace", "label_join", "sort_by_label", "sort_by_label_desc":
			return nil
		}
		for _, a := range e.Args {
			if a.Type() == parser.ValueTypeVector || a.Type() == parser.ValueTypeMatrix {
				return outputLabels(a)
			}
		}
		return labelSet{}
	case *parser.BinaryExpr:
		l, r := outputLabels(e.LHS), outputLabels(e.RHS)
		if e.Op == parser.LOR {
			if l == nil || r == nil {
				return nil
			}
			u := maps.Clone(l)
			maps.Copy(u, r)
			return u
		}
		lScalar := e.LHS.Type() == parser.ValueTypeScalar
		rScalar := e.RHS.Type() == parser.ValueTypeScalar
		switch {
		case lScalar && rScalar:
			return labelSet{}
		case lScalar:
			return r
		case rScalar:
			return l
		}
		if l == nil {
			return nil
		}
		m := e.VectorMatching
		if m == nil || m.Card != parser.CardOneToOne || e.Op.IsSetOperator() {
			return l
		}
		out := maps.Clone(l)
		if m.On {
			out = setOf()
			for _, n := range m.MatchingLabels {
				if l[n] {
					out[n] = true
				}
			}
			return out
		}
		for _, n := range m.MatchingLabels {
			delete(out, n)
		}
		return out
	}
	return nil
}
