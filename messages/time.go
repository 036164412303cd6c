package messages

import "time"

// TimeLayout is how wadispatch writes an instant: RFC 3339 in UTC with
// milliseconds, like "2026-11-27T10:30:00.123Z". It is the layout of a
// result's "at" and of a log line's "timestamp" alike.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// FormatTime renders t as TimeLayout, in UTC.
func FormatTime(t time.Time) string {
	var buf [len(TimeLayout)]byte
	return string(AppendTime(buf[:0], t))
}

// AppendTime appends t as TimeLayout (in UTC), without the layout parsing
// of time.Format: the log handler writes one on every line, where Format
// would be a third of the line's cost.
func AppendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, TimeLayout)
	}
	hour, minute, sec := t.Clock()
	b = appendDigits(b, year, 4)
	b = append(b, '-')
	b = appendDigits(b, int(month), 2)
	b = append(b, '-')
	b = appendDigits(b, day, 2)
	b = append(b, 'T')
	b = appendDigits(b, hour, 2)
	b = append(b, ':')
	b = appendDigits(b, minute, 2)
	b = append(b, ':')
	b = appendDigits(b, sec, 2)
	b = append(b, '.')
	b = appendDigits(b, t.Nanosecond()/int(time.Millisecond), 3)
	return append(b, 'Z')
}

// appendDigits appends n (0 <= n < 10^width) zero-padded to width digits.
func appendDigits(b []byte, n, width int) []byte {
	start := len(b)
	b = append(b, "0000"[:width]...)
	for i := len(b) - 1; i >= start; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return b
}
