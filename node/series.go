package node

import (
	"cmp"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The dashboard's time series (docs/dashboard.md). Once a second a node turns the growth
// of its request counters and latency histograms — the Prometheus metrics of metrics.go,
// read in process, so the request path does nothing more — into one sample, and keeps
// the last seriesWindow samples. GET /cluster/stats gathers the samples of every member
// (over the peer transport) and merges them: counts add up, histograms add up bucket by
// bucket, and the percentiles are read from the merged histogram. Counters and histograms
// are read one after the other, not atomically: a request finishing as a sample is taken
// may have its latency in one second and its count in the next.

const (
	// seriesWindow is how many one-second samples a node keeps: 10 minutes.
	seriesWindow = 600
	// seriesDefaultSpan is how many seconds GET /cluster/stats returns without ?since=.
	seriesDefaultSpan = 300
	// seriesSettle is how old, in seconds, the newest second GET /cluster/stats returns
	// is: by then every member has taken its sample of it (they take them at slightly
	// different moments), so a poller that asks for what came after it misses nothing.
	seriesSettle = 2
	// seriesOffset is how long after a second ends the sample of it is taken.
	seriesOffset = 50 * time.Millisecond
)

// seriesPoint is one command's requests during one second on one node.
type seriesPoint struct {
	Cmd string `msgpack:"c"` // "protocol command", as the metrics label them: "tcp get"
	N   uint64 `msgpack:"n"` // requests
	Err uint64 `msgpack:"e"` // of which failed
	// B counts latency observations per histogram bucket (not cumulative), +Inf last.
	// On the text and RESP ports latency is sampled (one per batch), so sum(B) ≤ N.
	B []uint64 `msgpack:"b"`
}

// seriesSample is every command's requests during one second on one node.
type seriesSample struct {
	T      int64         `msgpack:"t"` // the unix second the requests were made in
	Points []seriesPoint `msgpack:"p"`
}

// cumulative is one command's counter values when the last sample was taken.
type cumulative struct {
	ok, failed float64
	buckets    []uint64 // cumulative, as the histogram reports them, then the total count
}

// seriesRecorder takes and keeps a node's samples.
type seriesRecorder struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec

	mu      sync.Mutex // protects the fields below
	bounds  []float64  // the histogram's bucket upper bounds, seconds (+Inf left out)
	last    map[string]cumulative
	samples []seriesSample // oldest first, at most seriesWindow, T increasing
}

func newSeriesRecorder(m *Metrics) *seriesRecorder {
	return &seriesRecorder{requests: m.requests, latency: m.latency}
}

// run takes a sample shortly after every second ends until stop is closed.
func (s *seriesRecorder) run(stop <-chan struct{}) {
	s.take(time.Now())
	for {
		next := time.Now().Truncate(time.Second).Add(time.Second + seriesOffset)
		t := time.NewTimer(time.Until(next))
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		s.take(time.Now())
	}
}

// take reads the metrics and records what grew since the last call as the sample of the
// second before now. The first call only notes where the counters stand.
func (s *seriesRecorder) take(now time.Time) {
	cur := map[string]cumulative{}
	var bounds []float64
	collect(s.requests, func(labels map[string]string, m *dto.Metric) {
		key := labels["protocol"] + " " + labels["command"]
		c := cur[key]
		if labels["result"] == "error" {
			c.failed += m.GetCounter().GetValue()
		} else {
			c.ok += m.GetCounter().GetValue()
		}
		cur[key] = c
	})
	collect(s.latency, func(labels map[string]string, m *dto.Metric) {
		key := labels["protocol"] + " " + labels["command"]
		h := m.GetHistogram()
		c := cur[key]
		c.buckets = make([]uint64, 0, len(h.GetBucket())+1)
		b := make([]float64, 0, len(h.GetBucket()))
		for _, bk := range h.GetBucket() {
			if math.IsInf(bk.GetUpperBound(), 1) {
				continue
			}
			c.buckets = append(c.buckets, bk.GetCumulativeCount())
			b = append(b, bk.GetUpperBound())
		}
		c.buckets = append(c.buckets, h.GetSampleCount())
		cur[key] = c
		bounds = b
	})

	s.mu.Lock()
	defer s.mu.Unlock()
	last := s.last
	s.last, s.bounds = cur, bounds
	if last == nil {
		return
	}
	smp := seriesSample{T: now.Unix() - 1}
	for key, c := range cur {
		p := c.since(last[key], key)
		if p.N > 0 || p.Err > 0 || slices.ContainsFunc(p.B, func(n uint64) bool { return n > 0 }) {
			smp.Points = append(smp.Points, p)
		}
	}
	slices.SortFunc(smp.Points, func(a, b seriesPoint) int { return cmp.Compare(a.Cmd, b.Cmd) })
	if n := len(s.samples); n > 0 && s.samples[n-1].T-1 > smp.T {
		// The wall clock stepped back: the seconds it stepped back over are recorded
		// anew, so their old samples go (merging into the newest would freeze the
		// series until the clock caught up).
		i, _ := slices.BinarySearchFunc(s.samples, smp.T, func(x seriesSample, t int64) int { return cmp.Compare(x.T, t) })
		s.samples = s.samples[:i]
	}
	if n := len(s.samples); n > 0 && s.samples[n-1].T >= smp.T {
		// A late tick followed by an early one: both belong to the same second.
		smp = mergeSamples(s.samples[n-1], smp)
		s.samples = s.samples[:n-1]
	}
	if len(s.samples) >= seriesWindow {
		s.samples = slices.Delete(s.samples, 0, len(s.samples)-seriesWindow+1)
	}
	s.samples = append(s.samples, smp)
}

// since is the growth from prev to c, as one point.
func (c cumulative) since(prev cumulative, key string) seriesPoint {
	grow := func(now, before float64) uint64 { return uint64(max(now-before, 0)) }
	p := seriesPoint{Cmd: key, N: grow(c.ok+c.failed, prev.ok+prev.failed), Err: grow(c.failed, prev.failed)}
	if len(c.buckets) > 0 {
		now, before := perBucket(c.buckets), perBucket(prev.buckets)
		p.B = make([]uint64, len(now))
		for i, v := range now {
			if len(before) == len(now) && before[i] <= v {
				v -= before[i]
			}
			p.B[i] = v
		}
	}
	return p
}

// perBucket turns cumulative bucket counts into counts per bucket.
func perBucket(cum []uint64) []uint64 {
	out := make([]uint64, len(cum))
	var below uint64
	for i, c := range cum {
		if c >= below {
			out[i] = c - below
		}
		below = c
	}
	return out
}

// mergeSamples adds b's points to a's, as a new sample of a's second.
func mergeSamples(a, b seriesSample) seriesSample {
	byCmd := map[string]seriesPoint{}
	for _, p := range slices.Concat(a.Points, b.Points) {
		byCmd[p.Cmd] = addPoints(byCmd[p.Cmd], p)
	}
	out := seriesSample{T: a.T}
	for _, p := range byCmd {
		out.Points = append(out.Points, p)
	}
	slices.SortFunc(out.Points, func(x, y seriesPoint) int { return cmp.Compare(x.Cmd, y.Cmd) })
	return out
}

// addPoints returns a+b (with a new bucket slice) when their buckets agree in length.
func addPoints(a, b seriesPoint) seriesPoint {
	out := seriesPoint{Cmd: b.Cmd, N: a.N + b.N, Err: a.Err + b.Err}
	switch {
	case a.B == nil:
		out.B = slices.Clone(b.B)
	case len(a.B) == len(b.B):
		out.B = make([]uint64, len(a.B))
		for i := range a.B {
			out.B[i] = a.B[i] + b.B[i]
		}
	default:
		out.B = slices.Clone(a.B)
	}
	return out
}

// collect calls fn with every child of a metric vector and its labels.
func collect(c prometheus.Collector, fn func(labels map[string]string, m *dto.Metric)) {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	for metric := range ch {
		var m dto.Metric
		if err := metric.Write(&m); err != nil {
			continue
		}
		labels := make(map[string]string, len(m.GetLabel()))
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		fn(labels, &m)
	}
}

// window returns the bucket bounds and the samples of the seconds after since up to
// upTo.
func (s *seriesRecorder) window(since, upTo int64) ([]float64, []seriesSample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearchFunc(s.samples, since+1, func(x seriesSample, t int64) int { return cmp.Compare(x.T, t) })
	j, _ := slices.BinarySearchFunc(s.samples, upTo+1, func(x seriesSample, t int64) int { return cmp.Compare(x.T, t) })
	if i >= j {
		return s.bounds, nil
	}
	return s.bounds, slices.Clone(s.samples[i:j]) // points are never changed once recorded
}

// memberSeries is one member's samples, or why it has none.
type memberSeries struct {
	Name    string
	Bounds  []float64
	Samples []seriesSample
	Err     error
}

// seriesReply is the body of GET /cluster/stats: one value per second of T in every
// series. Ops are requests in that second (so, requests per second); P50Ms and P99Ms are
// null for a second with no latency observation.
type seriesReply struct {
	IntervalMs int             `json:"interval_ms"`
	WindowS    int             `json:"window_s"`
	T          []int64         `json:"t"`
	Commands   []commandSeries `json:"commands"`
	Nodes      []nodeSeries    `json:"nodes"`
}

type commandSeries struct {
	Command string     `json:"command"`
	Ops     []uint64   `json:"ops"`
	Errors  []uint64   `json:"errors"`
	P50Ms   []*float64 `json:"p50_ms"`
	P99Ms   []*float64 `json:"p99_ms"`
}

type nodeSeries struct {
	Name  string   `json:"name"`
	Ops   []uint64 `json:"ops"`
	Error string   `json:"error,omitempty"`
}

// mergeSeries merges the members' samples of the seconds since+1 … upTo into one reply.
// Histograms are added only from members whose bucket bounds are own's, this node's
// (they all run the same code but for a rolling upgrade); a member's reply is not
// trusted further than that: other bounds, or none, or buckets of another length add the
// counts but not the latencies, and seconds outside the window are left out.
func mergeSeries(own []float64, members []memberSeries, since, upTo int64) seriesReply {
	rep := seriesReply{IntervalMs: 1000, WindowS: seriesWindow, T: []int64{}, Commands: []commandSeries{}, Nodes: []nodeSeries{}}
	n := int(max(upTo-since, 0))
	for i := range n {
		rep.T = append(rep.T, since+1+int64(i))
	}
	var bounds []float64 // nil: no percentiles
	if validBounds(own) {
		bounds = own
	}
	type acc struct {
		ops, errs []uint64
		buckets   [][]uint64
	}
	cmds := map[string]*acc{}
	for _, m := range members {
		ns := nodeSeries{Name: m.Name, Ops: make([]uint64, n)}
		if m.Err != nil {
			ns.Error = m.Err.Error()
		}
		sameBuckets := bounds != nil && slices.Equal(m.Bounds, bounds)
		for _, smp := range m.Samples {
			if smp.T <= since || smp.T > since+int64(n) {
				continue
			}
			i := int(smp.T - since - 1)
			for _, p := range smp.Points {
				a := cmds[p.Cmd]
				if a == nil {
					a = &acc{ops: make([]uint64, n), errs: make([]uint64, n), buckets: make([][]uint64, n)}
					cmds[p.Cmd] = a
				}
				a.ops[i] += p.N
				a.errs[i] += p.Err
				ns.Ops[i] += p.N
				if sameBuckets && len(p.B) == len(bounds)+1 {
					a.buckets[i] = addPoints(seriesPoint{B: a.buckets[i]}, seriesPoint{B: p.B}).B
				}
			}
		}
		rep.Nodes = append(rep.Nodes, ns)
	}
	for cmd, a := range cmds {
		cs := commandSeries{Command: cmd, Ops: a.ops, Errors: a.errs, P50Ms: make([]*float64, n), P99Ms: make([]*float64, n)}
		for i, b := range a.buckets {
			cs.P50Ms[i] = quantileMs(b, bounds, 0.50)
			cs.P99Ms[i] = quantileMs(b, bounds, 0.99)
		}
		rep.Commands = append(rep.Commands, cs)
	}
	total := func(c commandSeries) (s uint64) {
		for _, v := range c.Ops {
			s += v
		}
		return s
	}
	slices.SortFunc(rep.Commands, func(a, b commandSeries) int {
		return cmp.Or(cmp.Compare(total(b), total(a)), cmp.Compare(a.Command, b.Command))
	})
	slices.SortFunc(rep.Nodes, func(a, b nodeSeries) int { return cmp.Compare(a.Name, b.Name) })
	return rep
}

// validBounds reports whether bounds can be histogram bucket bounds: at least one, finite,
// strictly increasing.
func validBounds(bounds []float64) bool {
	for i, b := range bounds {
		if math.IsNaN(b) || math.IsInf(b, 0) || (i > 0 && b <= bounds[i-1]) {
			return false
		}
	}
	return len(bounds) > 0
}

// quantileMs estimates the q-quantile, in milliseconds, of the observations counted in
// buckets (per bucket, +Inf last) by linear interpolation inside the bucket it falls in,
// as Prometheus's histogram_quantile does; in the +Inf bucket it answers the largest
// bound. nil when there is no observation, or no bound to place it by.
func quantileMs(buckets []uint64, bounds []float64, q float64) *float64 {
	var total uint64
	for _, c := range buckets {
		total += c
	}
	if total == 0 || len(bounds) == 0 || len(buckets) != len(bounds)+1 {
		return nil
	}
	rank := q * float64(total)
	var below float64
	for i, c := range buckets {
		if c == 0 || below+float64(c) < rank {
			below += float64(c)
			continue
		}
		var v float64
		if i == len(bounds) {
			v = bounds[len(bounds)-1]
		} else {
			lower := 0.0
			if i > 0 {
				lower = bounds[i-1]
			}
			v = lower + (bounds[i]-lower)*(rank-below)/float64(c)
		}
		ms := math.Round(v*1e6) / 1e3 // ms with µs precision
		return &ms
	}
	ms := bounds[len(bounds)-1] * 1e3
	return &ms
}
