package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/tagcache/tagcache/cache"
	"github.com/tagcache/tagcache/transport"
)

func TestSeriesRecorderTurnsCounterGrowthIntoOneSamplePerSecond(t *testing.T) {
	store, err := cache.New(cache.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	m := NewMetrics(Local{Store: store})
	s := newSeriesRecorder(m)
	get, put := m.Command("tcp", "get"), m.Command("tcp", "put")
	get.ObserveDuration(time.Millisecond, false) // before the first sample: not counted
	t0 := time.Unix(1_000_000, 50e6)
	s.take(t0)
	for i := range 10 {
		get.ObserveDuration(700*time.Microsecond, i < 3)
	}
	put.ObserveDuration(20*time.Millisecond, false)
	s.take(t0.Add(time.Second))
	s.take(t0.Add(2 * time.Second)) // nothing happened: an empty sample

	bounds, samples := s.window(0, 2_000_000)
	if len(samples) != 2 || samples[0].T != 1_000_000 || samples[1].T != 1_000_001 || len(samples[1].Points) != 0 {
		t.Fatalf("samples %+v; want seconds 1000000 (requests) and 1000001 (none)", samples)
	}
	pts := samples[0].Points
	if len(pts) != 2 || pts[0].Cmd != "tcp get" || pts[0].N != 10 || pts[0].Err != 3 || pts[1].Cmd != "tcp put" || pts[1].N != 1 {
		t.Fatalf("points %+v; want tcp get 10 (3 failed), tcp put 1", pts)
	}
	p50 := quantileMs(pts[0].B, bounds, 0.5)
	if p50 == nil || *p50 <= 0.5 || *p50 > 1 {
		t.Errorf("p50 of ten 0.7 ms GETs: %v ms, want within their bucket (0.5, 1]", p50)
	}
	if _, s := s.window(1_000_000, 2_000_000); len(s) != 1 || s[0].T != 1_000_001 {
		t.Errorf("window after 1000000: %+v, want only 1000001", s)
	}
	// At most seriesWindow seconds are kept.
	for i := range seriesWindow + 5 {
		s.take(t0.Add(time.Duration(3+i) * time.Second))
	}
	if _, all := s.window(0, 2_000_000); len(all) != seriesWindow || all[len(all)-1].T != 1_000_000+seriesWindow+6 {
		t.Errorf("%d samples kept, newest %d; want %d ending at %d", len(all), all[len(all)-1].T, seriesWindow, 1_000_000+seriesWindow+6)
	}
}

func TestQuantileInterpolatesInsideItsBucket(t *testing.T) {
	bounds := []float64{.001, .01, .1}
	for _, c := range []struct {
		buckets []uint64
		q       float64
		want    float64 // ms; -1 for none
	}{
		{[]uint64{0, 0, 0, 0}, 0.5, -1},
		{[]uint64{10, 0, 0, 0}, 0.5, 0.5},   // half way through [0, 1 ms]
		{[]uint64{0, 10, 0, 0}, 0.99, 9.91}, // 1 + 9 × 0.99
		{[]uint64{50, 0, 50, 0}, 0.99, 98.2},
		{[]uint64{0, 0, 0, 4}, 0.5, 100}, // over the last bound: the last bound
	} {
		got := quantileMs(c.buckets, bounds, c.q)
		switch {
		case c.want < 0 && got != nil:
			t.Errorf("%v q%v = %v, want none", c.buckets, c.q, *got)
		case c.want >= 0 && (got == nil || *got < c.want-0.001 || *got > c.want+0.001):
			t.Errorf("%v q%v = %v, want %v", c.buckets, c.q, got, c.want)
		}
	}
}

func TestMergeSeriesAddsTheMembersSecondBySecond(t *testing.T) {
	bounds := []float64{.001, .01}
	a := memberSeries{Name: "a", Bounds: bounds, Samples: []seriesSample{
		{T: 11, Points: []seriesPoint{{Cmd: "tcp get", N: 4, B: []uint64{4, 0, 0}}}},
		{T: 13, Points: []seriesPoint{{Cmd: "tcp get", N: 1, Err: 1, B: []uint64{0, 1, 0}}}},
	}}
	b := memberSeries{Name: "b", Bounds: bounds, Samples: []seriesSample{
		{T: 11, Points: []seriesPoint{{Cmd: "tcp get", N: 4, B: []uint64{0, 4, 0}}, {Cmd: "http put", N: 2, B: []uint64{2, 0, 0}}}},
		{T: 99, Points: []seriesPoint{{Cmd: "tcp get", N: 7}}}, // outside the window asked for
	}}
	c := memberSeries{Name: "c", Err: errors.New("timeout")}
	rep := mergeSeries(bounds, []memberSeries{c, b, a}, 10, 13)
	if len(rep.T) != 3 || rep.T[0] != 11 || rep.T[2] != 13 {
		t.Fatalf("seconds %v, want 11..13", rep.T)
	}
	if len(rep.Commands) != 2 || rep.Commands[0].Command != "tcp get" {
		t.Fatalf("commands %+v, want tcp get (busiest) then http put", rep.Commands)
	}
	get := rep.Commands[0]
	if get.Ops[0] != 8 || get.Ops[1] != 0 || get.Ops[2] != 1 || get.Errors[2] != 1 {
		t.Errorf("tcp get ops %v errors %v, want [8 0 1], [0 0 1]", get.Ops, get.Errors)
	}
	// Second 11: four in [0, 1 ms] on a and four in (1, 10 ms] on b: the median is at 1 ms.
	if p := get.P50Ms[0]; p == nil || *p != 1 {
		t.Errorf("merged p50 %v, want 1 ms", p)
	}
	if get.P50Ms[1] != nil {
		t.Errorf("p50 of an empty second: %v, want null", *get.P50Ms[1])
	}
	if len(rep.Nodes) != 3 || rep.Nodes[0].Name != "a" || rep.Nodes[0].Ops[0] != 4 || rep.Nodes[1].Ops[0] != 6 ||
		rep.Nodes[2].Error != "timeout" || sum(rep.Nodes[2].Ops) != 0 {
		t.Errorf("nodes %+v; want a (4), b (6), c with its error", rep.Nodes)
	}
}

// A member's reply is only trusted as far as it agrees with this node's buckets: a reply
// with no bounds, other bounds, non-finite or unordered bounds, or seconds outside the
// window asked for adds its counts but never its latencies, and never breaks the reply.
func TestMergeSeriesSurvivesBadMemberReplies(t *testing.T) {
	own := []float64{.001, .01}
	point := seriesPoint{Cmd: "tcp get", N: 2, B: []uint64{1, 1, 0}}
	good := memberSeries{Name: "good", Bounds: own, Samples: []seriesSample{{T: 11, Points: []seriesPoint{point}}}}
	for _, c := range []struct {
		name    string
		own     []float64
		members []memberSeries
		ops     uint64 // of tcp get in second 11
		p50     bool   // whether second 11 has a p50
	}{
		{"no bounds anywhere", nil, []memberSeries{{Name: "a", Samples: good.Samples}}, 2, false},
		{"a bucket but no bounds", nil, []memberSeries{{Name: "a", Samples: []seriesSample{{T: 11, Points: []seriesPoint{{Cmd: "tcp get", N: 2, B: []uint64{2}}}}}}}, 2, false},
		{"member without bounds", own, []memberSeries{{Name: "a", Samples: good.Samples}}, 2, false},
		{"other bounds", own, []memberSeries{{Name: "a", Bounds: []float64{.002, .02}, Samples: good.Samples}}, 2, false},
		{"infinite bounds", []float64{.001, math.Inf(1)}, []memberSeries{{Name: "a", Bounds: []float64{.001, math.Inf(1)}, Samples: good.Samples}}, 2, false},
		{"NaN bounds", []float64{math.NaN(), .01}, []memberSeries{{Name: "a", Bounds: []float64{math.NaN(), .01}, Samples: good.Samples}}, 2, false},
		{"decreasing bounds", []float64{.01, .001}, []memberSeries{{Name: "a", Bounds: []float64{.01, .001}, Samples: good.Samples}}, 2, false},
		{"first member by name is odd", own, []memberSeries{{Name: "a", Bounds: []float64{.5, 1}}, good}, 2, true},
		{"seconds out of range", own, []memberSeries{good, {Name: "b", Bounds: own, Samples: []seriesSample{
			{T: math.MinInt64, Points: []seriesPoint{point}}, {T: math.MaxInt64, Points: []seriesPoint{point}}, {T: 10, Points: []seriesPoint{point}}, {T: 14, Points: []seriesPoint{point}}}}}, 2, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep := mergeSeries(c.own, c.members, 10, 13)
			if _, err := json.Marshal(rep); err != nil {
				t.Fatalf("reply cannot be encoded: %v", err)
			}
			if len(rep.Commands) != 1 || rep.Commands[0].Ops[0] != c.ops {
				t.Fatalf("commands %+v, want tcp get with %d ops in second 11", rep.Commands, c.ops)
			}
			if got := rep.Commands[0].P50Ms[0] != nil; got != c.p50 {
				t.Errorf("p50 present %v, want %v", got, c.p50)
			}
		})
	}
}

// FuzzMergeSeries merges arbitrary member replies, as decoded from the peer transport:
// the merge never panics and its reply can always be encoded.
func FuzzMergeSeries(f *testing.F) {
	own := []float64{.001, .01}
	pts := []seriesPoint{{Cmd: "tcp get", N: 3, Err: 1, B: []uint64{1, 1, 1}}}
	for _, reps := range [][]seriesPeerReply{
		{{Bounds: own, Samples: []seriesSample{{T: 11, Points: pts}}}},
		{{Samples: []seriesSample{{T: 11, Points: pts}}}},
		{{Bounds: []float64{math.Inf(1)}, Samples: []seriesSample{{T: 12, Points: pts}}}, {Bounds: []float64{math.NaN(), 1}}},
		{{Bounds: []float64{.01, .001}, Samples: []seriesSample{{T: math.MaxInt64, Points: pts}, {T: math.MinInt64, Points: pts}}}},
		{{Bounds: own, Samples: []seriesSample{{T: 11, Points: []seriesPoint{{Cmd: "x", N: math.MaxUint64, B: []uint64{math.MaxUint64, math.MaxUint64, 1}}}}}}},
	} {
		b, err := transport.Encode(reps)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(int64(10), uint16(3), b)
	}
	f.Fuzz(func(t *testing.T, since int64, span uint16, body []byte) {
		var reps []seriesPeerReply
		if transport.Decode(body, &reps) != nil || since < 0 || since > math.MaxInt64/2 {
			return
		}
		members := make([]memberSeries, len(reps))
		for i, r := range reps {
			members[i] = memberSeries{Name: fmt.Sprint("m", i), Bounds: r.Bounds, Samples: r.Samples}
		}
		rep := mergeSeries(own, members, since, since+int64(span%(2*seriesWindow)))
		if _, err := json.Marshal(rep); err != nil {
			t.Fatalf("reply cannot be encoded: %v", err)
		}
	})
}

// When the wall clock steps back, the seconds it steps back over are forgotten and the
// new seconds are recorded as they come, not merged into the newest old one.
func TestSeriesRecorderFollowsTheClockWhenItStepsBack(t *testing.T) {
	store, err := cache.New(cache.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	m := NewMetrics(Local{Store: store})
	s := newSeriesRecorder(m)
	get := m.Command("tcp", "get")
	t0 := time.Unix(1_000_000, 50e6)
	for i := range 6 {
		s.take(t0.Add(time.Duration(i) * time.Second)) // seconds 1000000 … 1000004
	}
	back := t0.Add(-10 * time.Second) // the clock steps back ten seconds
	for i := range 3 {
		get.ObserveDuration(time.Millisecond, false)
		s.take(back.Add(time.Duration(i) * time.Second)) // seconds 999989 … 999991
	}
	_, all := s.window(0, 2_000_000)
	var secs []int64
	for _, smp := range all {
		secs = append(secs, smp.T)
	}
	if want := []int64{999_989, 999_990, 999_991}; !slices.Equal(secs, want) {
		t.Fatalf("seconds %v, want %v", secs, want)
	}
	for _, smp := range all {
		if len(smp.Points) != 1 || smp.Points[0].N != 1 {
			t.Errorf("second %d: %+v, want one GET", smp.T, smp.Points)
		}
	}
}
