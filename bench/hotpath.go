package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// hotpathBench selects the hot-path benchmarks (with all their
// sub-benchmarks: a second-level pattern would drop the benchmarks that
// have none).
const hotpathBench = `^Benchmark(DecodeJob|ReadJobState|RouterDispatch|BucketAllow|BucketReserve|BreakerAllow|ScheduleAdmit|MessageDelivered)$`

// hotpathPackages hold those benchmarks.
var hotpathPackages = []string{"./messages/", "./actors/", "./logging/"}

// hotpath runs the hot-path benchmarks with 'go test' in the module's
// directory and reports ns/op, B/op and allocs/op of each.
func (e *benchEnv) hotpath(ctx context.Context) ([]benchRow, error) {
	root, err := benchModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	benchtime := "1s"
	if e.quick {
		benchtime = "200ms"
	}
	args := append([]string{"test", "-run", "^$", "-bench", hotpathBench, "-benchmem", "-benchtime", benchtime, "-count", "1"}, hotpathPackages...)
	e.progress("hotpath: go %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = moduleEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -bench: %w\n%s", err, out)
	}
	results := parseBenchOutput(out)
	if len(results) == 0 {
		return nil, fmt.Errorf("go test -bench printed no benchmark:\n%s", out)
	}
	rows := make([]benchRow, 0, len(results))
	for _, r := range results {
		rows = append(rows, benchRow{
			Measure: "hotpath " + r.name,
			Value:   fmt.Sprintf("%s/op, %.0f B/op, %.0f allocs/op", benchNs(r.nsPerOp), r.bytesPerOp, r.allocsPerOp),
			Goal:    "-",
			Status:  statusInfo,
			Numbers: map[string]float64{"nsPerOp": r.nsPerOp, "bytesPerOp": r.bytesPerOp, "allocsPerOp": r.allocsPerOp},
		})
	}
	return rows, nil
}

// moduleRoot is the directory of the main module's go.mod, as the go tool
// sees it from the working directory.
func benchModuleRoot(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "env", "GOMOD")
	cmd.Env = moduleEnv()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hot-path benchmarks need the go tool: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == "/dev/null" || filepath.Base(mod) != "go.mod" {
		return "", errors.New("hot-path benchmarks need the source: run bench from the repository")
	}
	return filepath.Dir(mod), nil
}

// moduleEnv is this process's environment with GOWORK=off: the benchmarks
// build with the worker module's own requirements, not the workspace's
// (which adds the tools module's), as the Taskfile's commands do.
func moduleEnv() []string { return append(os.Environ(), "GOWORK=off") }

type benchResult struct {
	name                             string
	nsPerOp, bytesPerOp, allocsPerOp float64
}

var benchProcsSuffix = regexp.MustCompile(`-\d+$`)

// parseBenchOutput reads the result lines of 'go test -bench -benchmem'.
func parseBenchOutput(out []byte) []benchResult {
	var results []benchResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		r := benchResult{name: benchProcsSuffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), "")}
		found := false
		for i := 2; i < len(f); i++ {
			v, err := strconv.ParseFloat(f[i-1], 64)
			if err != nil {
				continue
			}
			switch f[i] {
			case "ns/op":
				r.nsPerOp, found = v, true
			case "B/op":
				r.bytesPerOp = v
			case "allocs/op":
				r.allocsPerOp = v
			}
		}
		if found {
			results = append(results, r)
		}
	}
	return results
}

// benchNs shows a time per op: nanoseconds with a decimal below 1 µs.
func benchNs(ns float64) string {
	if ns < 1000 {
		return strconv.FormatFloat(ns, 'f', 1, 64) + "ns"
	}
	return benchDur(time.Duration(ns))
}
