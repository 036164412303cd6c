package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wadispatch/wadispatch/messages"
	"github.com/wadispatch/wadispatch/testkit/fakemeta"
)

func TestBenchJobBody(t *testing.T) {
	t.Run("IsAValidJobWhoseStampReadsBack", func(t *testing.T) {
		at := time.Unix(1_800_000_000, 123456789)
		body := benchJobBody("t0007", 42, at)
		job, err := messages.DecodeJob(body)
		require.NoError(t, err)
		assert.Equal(t, "t0007", job.TenantID)
		assert.Equal(t, "t0007-42", job.InternalID)
		n, published, ok := benchStamp(job.Payload)
		require.True(t, ok)
		assert.Equal(t, 42, n)
		assert.True(t, at.Equal(published))
	})
	t.Run("OtherPayloadsHaveNoStamp", func(t *testing.T) {
		_, _, ok := benchStamp([]byte(`{"text":{"body":"hello"}}`))
		assert.False(t, ok)
	})
}

func TestBenchMaxDisplacement(t *testing.T) {
	cases := []struct {
		name  string
		order []int
		want  int
	}{
		{"InOrderIsZero", []int{0, 1, 2, 3}, 0},
		{"OneJobOvertakenByThree", []int{1, 2, 3, 0}, 3},
		{"RepeatedSendCountsOnce", []int{0, 0, 1, 2}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { assert.Equal(t, c.want, benchMaxDisplacement(c.order)) })
	}
}

func TestParseBenchOutput(t *testing.T) {
	out := []byte(`goos: linux
BenchmarkDecodeJob/Text-2         	   18010	     14023 ns/op	  18.47 MB/s	    1224 B/op	      28 allocs/op
BenchmarkBreakerAllow-2   	81016729	        14.21 ns/op	       0 B/op	       0 allocs/op
PASS
ok  	github.com/wadispatch/wadispatch/messages	0.757s
`)
	got := parseBenchOutput(out)
	require.Len(t, got, 2)
	assert.Equal(t, benchResult{name: "DecodeJob/Text", nsPerOp: 14023, bytesPerOp: 1224, allocsPerOp: 28}, got[0])
	assert.Equal(t, benchResult{name: "BreakerAllow", nsPerOp: 14.21}, got[1])
}

func TestParseThroughputCases(t *testing.T) {
	t.Run("ReadsTenantsByPrefetch", func(t *testing.T) {
		got, err := parseThroughputCases("1x10, 1000x100")
		require.NoError(t, err)
		assert.Equal(t, []throughputCase{{1, 10}, {1000, 100}}, got)
	})
	t.Run("RefusesMoreTenantsThanTheBenchHas", func(t *testing.T) {
		_, err := parseThroughputCases("1001x10")
		assert.ErrorIs(t, err, ErrUsage)
	})
}

func TestBenchEventCounter(t *testing.T) {
	var c benchEventCounter
	_, _ = c.Write([]byte(`{"level":"INFO","event":"message_deferred","x":1}` + "\n"))
	_, _ = c.Write([]byte(`{"event":"message_rescheduled"}` + "\n" + `{"event":"message_deferred"}` + "\n"))
	assert.Equal(t, 2, c.count("message_deferred"))
	assert.Equal(t, 1, c.count("message_rescheduled"))
	assert.Zero(t, c.count("message_delivered"))
}

func TestBenchScale(t *testing.T) {
	t.Run("EveryTenantHandlesItsJobAndNoGoroutineStays", func(t *testing.T) {
		var out bytes.Buffer
		require.NoError(t, runScale(context.Background(), []string{"--tenants", "300"}, &out, &bytes.Buffer{}))
		var r scaleReport
		require.NoError(t, json.Unmarshal(out.Bytes(), &r))
		assert.Equal(t, 300, r.Tenants)
		assert.Positive(t, r.HeapBytesPerTenant, "tenants cost some memory")
		assert.Less(t, r.GoroutinesPerTenant, 0.1, "an idle tenant has no goroutine")
		assert.Positive(t, r.LoadSeconds, "the tenants came from a tenants file")
		assert.Positive(t, r.SpawnSeconds)
		assert.Positive(t, r.ListSeconds, "every tenant was listed")
	})
}

func TestBenchHelp(t *testing.T) {
	t.Run("ExplainsEveryRow", func(t *testing.T) {
		var stderr bytes.Buffer
		err := Main(context.Background(), []string{"--help"}, func(string) string { return "" }, &bytes.Buffer{}, &stderr)
		require.Error(t, err)
		for _, row := range []string{"throughput T tenants", "window 1 tenant at R/s", "conversational tenants", "fairness (a)",
			"scale N tenants", "deferral burst", "hotpath", "shards N worker(s)", "shards intake hop",
			"shards handover after a kill", "shards join"} {
			assert.Contains(t, stderr.String(), row)
		}
		for _, flag := range []string{"-quick", "-only", "-json"} {
			assert.True(t, strings.Contains(stderr.String(), flag), "help names %s", flag)
		}
	})
	t.Run("RefusesAnUnknownSection", func(t *testing.T) {
		err := Main(context.Background(), []string{"--only", "speed"}, func(string) string { return "" }, &bytes.Buffer{}, &bytes.Buffer{})
		assert.ErrorIs(t, err, ErrUsage)
	})
}

func TestWindowRecipient(t *testing.T) {
	t.Run("EveryTenthJobGoesToARepeatRecipientInTurn", func(t *testing.T) {
		n := windowRepeatRecipients(80)
		assert.Equal(t, 16, n, "80/s x 1.05 x 2 s / 10: one job to each every 2 s")
		to, repeat := windowRecipient(0, 80)
		assert.True(t, repeat)
		again, _ := windowRecipient(10*n, 80)
		assert.Equal(t, to, again, "the turn comes round after n repeat jobs")
		next, _ := windowRecipient(10, 80)
		assert.NotEqual(t, to, next)
	})
	t.Run("OtherJobsEachHaveTheirOwn", func(t *testing.T) {
		a, repeat := windowRecipient(1, 80)
		b, _ := windowRecipient(2, 80)
		assert.False(t, repeat)
		assert.NotEqual(t, a, b)
		body := benchJobBodyTo("t0000", 1, a, time.Now())
		job, err := messages.DecodeJob(body)
		require.NoError(t, err, "the recipient is a valid job's")
		assert.Equal(t, a, job.To)
	})
}

func TestWindowDeferrals(t *testing.T) {
	d := &windowDeferrals{tenant: "t0000"}
	_, _ = d.Write([]byte(`{"event":"message_deferred","tenantId":"t0000","reason":"busy","delayMs":50}` + "\n" +
		`{"event":"message_deferred","tenantId":"t0000","reason":"rate_limited","delayMs":1200}` + "\n"))
	_, _ = d.Write([]byte(`{"event":"message_deferred","tenantId":"t0000","reason":"rate_limited","delayMs":300}` + "\n"))
	_, _ = d.Write([]byte(`{"event":"message_deferred","tenantId":"t0001","reason":"busy","delayMs":9000}` + "\n"))
	_, _ = d.Write([]byte(`{"event":"message_delivered","tenantId":"t0000"}` + "\n"))
	assert.Equal(t, "rate_limited 2, busy 1; longest 1.2s (rate_limited)", d.String())
	assert.Equal(t, "none", (&windowDeferrals{}).String())
}

func TestWindowBeforeThrottle(t *testing.T) {
	from := time.Unix(1_800_000_000, 0)
	end := from.Add(10 * time.Second)
	var calls fakemeta.CallLog
	for i := range 40 { // 10 sends a second for 4 s
		at := from.Add(time.Duration(i) * 100 * time.Millisecond)
		calls = append(calls, fakemeta.Call{PhoneNumberID: "p", At: at, AnsweredAt: at.Add(time.Millisecond), Status: 200})
	}
	throttled := from.Add(4 * time.Second)
	calls = append(calls, fakemeta.Call{PhoneNumberID: "p", At: throttled.Add(-time.Second), AnsweredAt: throttled, Status: 429, ErrorCode: 130429},
		fakemeta.Call{PhoneNumberID: "q", At: from, AnsweredAt: from.Add(2 * time.Second), Status: 429, ErrorCode: 130429})
	first, rate := windowBeforeThrottle(calls, "p", from, end)
	assert.True(t, throttled.Equal(first))
	assert.InDelta(t, 10, rate, 0.01)
	first, _ = windowBeforeThrottle(calls, "r", from, end)
	assert.True(t, first.IsZero(), "no throttle, no figure")
}

func TestShardsSettled(t *testing.T) {
	const shards = 8
	share := func(r, n int) shardsView {
		return shardsView{rank: r, members: n, owned: shardsShare(r, n, shards), intake: r == 0}
	}
	t.Run("EachRankOwnsItsShareAndOneMovesTheIntake", func(t *testing.T) {
		assert.Equal(t, []int{1, 4, 7}, shardsShare(1, 3, shards))
		assert.True(t, shardsSettled(3, shards, []shardsView{share(2, 3), share(0, 3), share(1, 3)}))
		child := share(1, 2)
		child.members = -1 // a child's count is not known
		assert.True(t, shardsSettled(2, shards, []shardsView{share(0, 2), child}))
	})
	t.Run("NotWhileAWorkerStillOwnsAllShards", func(t *testing.T) {
		first := share(0, 1)
		first.members = 2 // it has seen the new member but not given shards away yet
		joined := shardsView{rank: 1, members: 2}
		assert.False(t, shardsSettled(2, shards, []shardsView{first, joined}),
			"the first worker owns every shard, the new one none: covered, but not shared")
	})
	t.Run("NotWithTwoWorkersOfOneRankOrNoIntake", func(t *testing.T) {
		assert.False(t, shardsSettled(2, shards, []shardsView{share(0, 2), share(0, 2)}))
		noIntake := share(0, 2)
		noIntake.intake = false
		assert.False(t, shardsSettled(2, shards, []shardsView{noIntake, share(1, 2)}))
		stale := share(1, 2)
		stale.members = 3
		assert.False(t, shardsSettled(2, shards, []shardsView{share(0, 2), stale}))
	})
}
