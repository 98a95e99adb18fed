package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tagcache/tagcache/node"
)

// startBenchNode starts a node with every client protocol on free loopback ports.
func startBenchNode(t *testing.T) *node.Node {
	t.Helper()
	t.Setenv("TAGCACHE_PASSWORD", "")
	return startInProcessNode(t, node.Config{Bind: "127.0.0.1", TCPPort: 0, HTTPPort: 0, RESPPort: 0})
}

func TestBenchRunsEveryProtocolWithoutErrorsAndCountsEveryRequest(t *testing.T) {
	n := startBenchNode(t)
	for _, tc := range []struct{ protocol, kind, pipeline string }{
		{"text", "tcp", "1"}, {"text", "tcp", "8"}, {"resp", "resp", "1"}, {"resp", "resp", "8"}, {"http", "http", "1"},
	} {
		t.Run(tc.protocol+"/P"+tc.pipeline, func(t *testing.T) {
			r := tagcache("bench", "--protocol", tc.protocol, "--targets", n.Addr(tc.kind).String(),
				"--connections", "4", "--requests", "2000", "--pipeline", tc.pipeline, "--keys", "50",
				"--mix", "get=60,put=30,inv=10", "--tags-per-key", "2", "--tag-pool", "20", "--json")
			if r.code != 0 {
				t.Fatalf("exit %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
			}
			var res benchResult
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
				t.Fatalf("--json output %q: %v", r.stdout, err)
			}
			if res.Requests != 2000 || res.Gets+res.Puts+res.Invalidates != 2000 {
				t.Fatalf("requests %d = gets %d + puts %d + invalidations %d, want 2000", res.Requests, res.Gets, res.Puts, res.Invalidates)
			}
			if res.Errors != 0 || res.Hits == 0 || res.Hits+res.Misses != res.Gets {
				t.Fatalf("errors %d, hits %d, misses %d, gets %d", res.Errors, res.Hits, res.Misses, res.Gets)
			}
			if res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P99 || res.PerSecond <= 0 {
				t.Fatalf("latency or throughput not measured: %+v", res)
			}
		})
	}
}

// A reply that is not the value the generator wrote is an error, never a hit.
func TestBenchCountsAWrongValueAsAnError(t *testing.T) {
	n := startBenchNode(t)
	for i := range 20 {
		n.Store().Put(keyName(i), []byte("not what bench writes"), 0, nil)
	}
	r := tagcache("bench", "--protocol", "text", "--targets", n.Addr("tcp").String(), "--connections", "1",
		"--requests", "50", "--keys", "20", "--mix", "get=100,put=0,inv=0", "--json")
	if r.code != 1 {
		t.Fatalf("exit %d with wrong values, want 1; stdout %q", r.code, r.stdout)
	}
	var res benchResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.Hits != 0 || !strings.Contains(res.FirstError, "unexpected reply") {
		t.Fatalf("wrong values counted as: errors %d hits %d first %q", res.Errors, res.Hits, res.FirstError)
	}
}

func TestBenchRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--mix", "get=50,put=40"}, {"--mix", "get=100,foo=0"}, {"--protocol", "memcache"},
		{"--pipeline", "2", "--protocol", "http"}, {"--dist", "zipf", "--zipf-s", "1"},
		{"--tags-per-key", "5", "--tag-pool", "2"}, {"--connections", "0"},
	} {
		if r := tagcache(append([]string{"bench"}, args...)...); r.code != 2 || r.stderr == "" {
			t.Errorf("bench %v: exit %d, stderr %q; want a usage error", args, r.code, r.stderr)
		}
	}
}

func TestHistogramPercentilesAreWithinThreePercent(t *testing.T) {
	var h histogram
	for i := 1; i <= 100000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := time.Duration(q*100000) * time.Microsecond
		got := h.percentile(q)
		if got < want || float64(got) > float64(want)*1.04 {
			t.Errorf("p%v = %v, want %v (+3%%)", q*100, got, want)
		}
	}
	if h.percentile(1) != 100*time.Millisecond {
		t.Errorf("p100 = %v, want the max", h.percentile(1))
	}
	var other histogram
	other.record(time.Second)
	h.merge(&other)
	if h.max != time.Second || h.n != 100001 {
		t.Errorf("merge: max %v n %d", h.max, h.n)
	}
}

func TestHistogramBucketsCoverEveryDuration(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 31, 32, 33, 1000, time.Millisecond, time.Hour, 1<<62 + 12345} {
		b := bucketOf(d)
		if up := upperOf(b); up < d || (b > 0 && upperOf(b-1) >= max(d, 1)) {
			t.Errorf("%v: bucket %d has upper bound %v (previous %v)", d, b, up, upperOf(b-1))
		}
	}
}
