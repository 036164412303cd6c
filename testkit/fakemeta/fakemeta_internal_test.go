package fakemeta

// These tests drive the handler directly (no sockets) so that they can run
// in a synctest bubble, where the fake's latency timers and time.Now use the
// bubble's clock: latencies and answer times are exact.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	testPhone = "106540352242922"
	testToken = "EAAG-test-token"
)

// newTestServer returns a server without a listener, for ServeHTTP.
func newTestServer(phones ...string) *Server {
	f := newServer()
	for _, p := range append([]string{testPhone}, phones...) {
		f.AddTenant(p, testToken)
	}
	return f
}

// serve answers one send to to and returns the HTTP status and Graph code.
func serve(f *Server, phone, to string) (status, code int) {
	body := fmt.Sprintf(`{"messaging_product":"whatsapp","to":%q,"type":"text","text":{"body":"hi"}}`, to)
	r := httptest.NewRequest(http.MethodPost, "/v23.0/"+phone+"/messages", strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+testToken)
	w := httptest.NewRecorder()
	f.ServeHTTP(w, r)
	var e graphErrorBody
	_ = json.Unmarshal(w.Body.Bytes(), &e)
	return w.Code, e.Error.Code
}

// latencies returns how long each logged call took to answer.
func latencies(calls CallLog) []time.Duration {
	out := make([]time.Duration, len(calls))
	for i, c := range calls {
		out[i] = c.AnsweredAt.Sub(c.At)
	}
	return out
}

func TestLatencyInVirtualTime(t *testing.T) {
	t.Run("FixedLatencyIsWaitedAndRecorded", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newTestServer()
			f.Behave(testPhone, Behaviour{Latency: Latency{Median: 300 * time.Millisecond}})
			start := time.Now()
			status, _ := serve(f, testPhone, "1")
			assert.Equal(t, http.StatusOK, status)
			assert.Equal(t, 300*time.Millisecond, time.Since(start))
			calls := f.Calls()
			require.Len(t, calls, 1)
			assert.Equal(t, start, calls[0].At)
			assert.Equal(t, start.Add(300*time.Millisecond), calls[0].AnsweredAt)
		})
	})

	t.Run("RefusalsWaitTheLatencyToo", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newTestServer()
			f.Behave(testPhone, Behaviour{Latency: Latency{Median: time.Second}, RateLimit: &Rate{Burst: 2}, PairRate: &Rate{Burst: 1}})
			serve(f, testPhone, "1")
			serve(f, testPhone, "1") // pair rate
			serve(f, testPhone, "2")
			serve(f, testPhone, "3") // rate limit
			f.Behave(testPhone, Behaviour{Latency: Latency{Median: time.Second}, FailCode: 131000})
			serve(f, testPhone, "4")
			calls := f.Calls()
			codes := make([]int, len(calls))
			for i, c := range calls {
				codes[i] = c.ErrorCode
			}
			assert.Equal(t, []int{0, 131056, 0, 130429, 131000}, codes)
			assert.Equal(t, slices.Repeat([]time.Duration{time.Second}, 5), latencies(calls))
		})
	})

	t.Run("LogNormalIsSampledPerRequestAndReproducibleBySeed", func(t *testing.T) {
		l := Latency{Median: 300 * time.Millisecond, Sigma: 0.5, Max: 800 * time.Millisecond}
		run := func(seed uint64) []time.Duration {
			var got []time.Duration
			synctest.Test(t, func(t *testing.T) {
				f := newTestServer()
				f.SetRand(seed)
				f.Behave(testPhone, Behaviour{Latency: l})
				for i := range 40 {
					start := time.Now()
					serve(f, testPhone, fmt.Sprint(i))
					got = append(got, time.Since(start))
				}
				assert.Equal(t, got, latencies(f.Calls()), "AnsweredAt is when the latency ended")
			})
			return got
		}
		a, b, c := run(42), run(42), run(43)
		assert.Equal(t, a, b, "same seed, same latencies")
		assert.NotEqual(t, a, c)
		assert.Greater(t, len(slices.Compact(slices.Sorted(slices.Values(a)))), 30, "latencies vary: %v", a)
		assert.LessOrEqual(t, slices.Max(a), l.Max)
		assert.Positive(t, slices.Min(a))
	})

	t.Run("DefaultLatencyAppliesToEveryPhone", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newTestServer("2")
			f.SetDefault(Behaviour{Latency: Latency{Median: 700 * time.Millisecond}})
			f.AddTenant("3", testToken) // registered after SetDefault
			f.Behave("2", Behaviour{Latency: Latency{Median: time.Millisecond}})
			for _, p := range []string{testPhone, "2", "3"} {
				serve(f, p, "1")
			}
			assert.Equal(t, []time.Duration{700 * time.Millisecond, time.Millisecond, 700 * time.Millisecond}, latencies(f.Calls()))
		})
	})
}

func TestRatesInVirtualTime(t *testing.T) {
	t.Run("RateLimitTakesTheTokenAtArrival", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newTestServer()
			f.Behave(testPhone, Behaviour{Latency: Latency{Median: 10 * time.Second}, RateLimit: &Rate{PerMinute: 60, Burst: 2}})
			statuses := make([]int, 3)
			var wg sync.WaitGroup
			for i := range statuses {
				wg.Go(func() { statuses[i], _ = serve(f, testPhone, fmt.Sprint(i)) })
			}
			synctest.Wait() // all three arrived and wait their latency
			assert.Equal(t, 3, f.InFlight())
			assert.Empty(t, f.Calls())
			assert.Equal(t, 1, f.RateLimited(testPhone), "the third was refused on arrival, with no answer yet")
			wg.Wait()
			slices.Sort(statuses)
			assert.Equal(t, []int{200, 200, 429}, statuses)
		})
	})

	t.Run("ManyInFlightAtOnceGetExactlyTheBurst", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newTestServer()
			const burst, senders = 80, 200
			f.Behave(testPhone, Behaviour{
				Latency:   Latency{Median: 300 * time.Millisecond, Sigma: 0.5, Max: 5 * time.Second},
				RateLimit: &Rate{PerMinute: 4800, Burst: burst},
			})
			var wg sync.WaitGroup
			for i := range senders {
				wg.Go(func() { serve(f, testPhone, fmt.Sprint(i)) })
			}
			wg.Wait()
			calls := f.Calls()
			ok := 0
			for _, c := range calls {
				if c.Status == http.StatusOK {
					ok++
				}
			}
			assert.Equal(t, burst, ok, "all arrived in one instant: no refill")
			assert.Equal(t, senders-burst, f.RateLimited(testPhone))
			assert.Equal(t, senders, calls.MaxInFlight(testPhone), "all were in flight at once")
			assert.Zero(t, calls.Overlaps(testPhone), "each to its own recipient")
		})
	})

	t.Run("ConcurrentSendsToOneRecipientOverlap", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newTestServer()
			f.Behave(testPhone, Behaviour{Latency: Latency{Median: time.Second}})
			var wg sync.WaitGroup
			for _, to := range []string{"a", "a", "b", "c"} {
				wg.Go(func() { serve(f, testPhone, to) })
			}
			wg.Wait()
			for range 3 { // one at a time: never together
				serve(f, testPhone, "a")
			}
			calls := f.Calls()
			require.Len(t, calls, 7)
			assert.Equal(t, 4, calls.MaxInFlight(testPhone))
			assert.Equal(t, 1, calls.Overlaps(testPhone), "the two concurrent sends to a")
		})
	})
}

func TestPairRateMemoryIsBounded(t *testing.T) {
	f := newTestServer()
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	f.SetClock(func() time.Time { return now })                              // one goroutine: no lock needed
	f.Behave(testPhone, Behaviour{PairRate: &Rate{PerMinute: 10, Burst: 1}}) // a token every 6 s
	p := f.phone(testPhone, false)
	pairs := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.pairs)
	}

	for i := range pairSweepSize {
		status, _ := serve(f, testPhone, fmt.Sprint("a", i))
		require.Equal(t, http.StatusOK, status)
	}
	require.Equal(t, pairSweepSize, pairs())
	now = now.Add(3 * time.Second)
	status, _ := serve(f, testPhone, "keep") // sweeps, but no bucket is full yet
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, pairSweepSize+1, pairs())

	now = now.Add(3 * time.Second) // the a buckets are full again; keep's is half full
	for i := range pairSweepSize {
		status, _ := serve(f, testPhone, fmt.Sprint("b", i))
		require.Equal(t, http.StatusOK, status)
	}
	assert.Equal(t, pairSweepSize+1, pairs(), "the full a buckets were forgotten")

	status, code := serve(f, testPhone, "keep")
	assert.Equal(t, http.StatusBadRequest, status, "keep's bucket was not forgotten")
	assert.Equal(t, 131056, code)
	status, _ = serve(f, testPhone, "a0")
	assert.Equal(t, http.StatusOK, status, "a forgotten recipient starts with a full bucket")
}
