package broker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestBackpressure(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	const dwell = 30 * time.Second
	type read struct {
		after   time.Duration // since t0
		depth   int
		want    int
		changed bool
	}
	tests := []struct {
		name  string
		reads []read
	}{
		{"StaysNormalBelowHigh", []read{{30 * time.Second, 1000, 10, false}, {60 * time.Second, 50, 10, false}}},
		{"ReducesAboveHigh", []read{{30 * time.Second, 1001, 5, true}}},
		{"KeepsReducedInsideTheBand", []read{
			{30 * time.Second, 1500, 5, true}, {60 * time.Second, 500, 5, false}, {90 * time.Second, 100, 5, false},
		}},
		{"RestoresBelowLow", []read{{30 * time.Second, 1500, 5, true}, {60 * time.Second, 99, 10, true}}},
		{"NeverSwitchesTwiceWithinTheDwell", []read{
			{30 * time.Second, 1500, 5, true},
			{45 * time.Second, 0, 5, false}, // 15 s after the switch: held
			{60 * time.Second, 0, 10, true}, // a full dwell later: switches
			{61 * time.Second, 5000, 10, false},
		}},
		{"KeepsNormalInsideTheBandAfterRestore", []read{
			{30 * time.Second, 1500, 5, true}, {60 * time.Second, 10, 10, true}, {90 * time.Second, 900, 10, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewBackpressure(1000, 100, 10, 5, dwell)
			assert.Equal(t, 10, p.Prefetch())
			for i, r := range tt.reads {
				got, changed := p.Decide(t0.Add(r.after), r.depth)
				assert.Equal(t, r.want, got, "read %d (depth %d)", i, r.depth)
				assert.Equal(t, r.changed, changed, "read %d (depth %d)", i, r.depth)
				assert.Equal(t, r.want, p.Prefetch())
			}
		})
	}
}
