package messages

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestFormatTime(t *testing.T) {
	t.Run("IsRFC3339InUTCWithMilliseconds", func(t *testing.T) {
		at := time.Date(2026, 11, 27, 11, 30, 0, 123456789, time.FixedZone("CET", 3600))
		assert.Equal(t, "2026-11-27T10:30:00.123Z", FormatTime(at))
		parsed, err := time.Parse(time.RFC3339, FormatTime(at))
		assert.NoError(t, err)
		assert.True(t, parsed.Equal(at.Truncate(time.Millisecond)))
	})

	t.Run("AppendTimeFollowsTheLayout", func(t *testing.T) {
		for _, at := range []time.Time{
			time.Date(2026, 11, 27, 10, 30, 0, 123456789, time.UTC),
			time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.UTC),
			time.Date(2027, 1, 1, 0, 30, 0, 1000000, time.FixedZone("", 3600)),
			time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
			time.Date(9999, 12, 31, 23, 59, 59, 0, time.FixedZone("", -7200)),
			time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		} {
			want := at.UTC().Format(TimeLayout)
			assert.Equal(t, want, string(AppendTime(nil, at)))
			assert.Equal(t, "prefix "+want, string(AppendTime([]byte("prefix "), at)), "it appends")
			assert.Equal(t, want, FormatTime(at))
		}
	})
}
