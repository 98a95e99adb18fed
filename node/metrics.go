package node

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tagcache/tagcache/cache"
)

// Metrics is a node's Prometheus registry: the store's statistics, read at scrape time,
// request counts and latency histograms per protocol and command, and the cluster's
// metrics (metrics_cluster.go).
type Metrics struct {
	Registry *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// latencyBuckets are the upper bounds, in seconds, of the request latency histogram's
// buckets (+Inf left out): from 10 µs to 1 s.
var latencyBuckets = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}

// NewMetrics registers the request metrics, the Go runtime and process collectors, and a
// collector reading backend's statistics.
func NewMetrics(backend Backend) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagcache_requests_total",
			Help: "Client requests by protocol, command and result (ok or error).",
		}, []string{"protocol", "command", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tagcache_request_duration_seconds",
			Help:    "Time to execute a client request, by protocol and command.",
			Buckets: latencyBuckets,
		}, []string{"protocol", "command"}),
	}
	m.Registry.MustRegister(m.requests, m.latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		storeCollector{backend})
	m.Registry.MustRegister(clusterCollectors(backend)...)
	return m
}

// CommandMetrics are one (protocol, command) pair's metrics, resolved once so the request
// path does no label lookups.
type CommandMetrics struct {
	ok, failed prometheus.Counter
	latency    prometheus.Observer
}

// Command returns the metrics of one protocol's command.
func (m *Metrics) Command(protocol, command string) *CommandMetrics {
	return &CommandMetrics{
		ok:      m.requests.WithLabelValues(protocol, command, "ok"),
		failed:  m.requests.WithLabelValues(protocol, command, "error"),
		latency: m.latency.WithLabelValues(protocol, command),
	}
}

// Observe records one request that started at start.
func (c *CommandMetrics) Observe(start time.Time, failed bool) {
	c.ObserveDuration(time.Since(start), failed)
}

// ObserveDuration records one request that took d.
func (c *CommandMetrics) ObserveDuration(d time.Duration, failed bool) {
	c.latency.Observe(d.Seconds())
	if failed {
		c.failed.Inc()
	} else {
		c.ok.Inc()
	}
}

// ObserveLatency records the latency of one request without counting it; see tally.
func (c *CommandMetrics) ObserveLatency(d time.Duration) { c.latency.Observe(d.Seconds()) }

// tally counts one connection's requests per command between flushes, so a request
// touches no cache line shared with other connections: a batch of pipelined requests
// costs one atomic add per command and result it used, not one per request. Its owner
// flushes it once per batch, before writing the batch's replies, so a client that has
// its reply also sees its request in the metrics.
type tally struct {
	cmds   []*CommandMetrics // by command index
	counts []tallyCount      // by command index
	used   []int             // command indexes with a count since the last flush
}

type tallyCount struct{ ok, failed uint64 }

func newTally(cmds []*CommandMetrics) tally {
	return tally{cmds: cmds, counts: make([]tallyCount, len(cmds)), used: make([]int, 0, 4)}
}

// add counts one request of command i.
func (t *tally) add(i int, failed bool) {
	c := &t.counts[i]
	if c.ok == 0 && c.failed == 0 {
		t.used = append(t.used, i)
	}
	if failed {
		c.failed++
	} else {
		c.ok++
	}
}

// flush adds the counts to the shared counters and clears them.
func (t *tally) flush() {
	for _, i := range t.used {
		c := &t.counts[i]
		if c.ok > 0 {
			t.cmds[i].ok.Add(float64(c.ok))
		}
		if c.failed > 0 {
			t.cmds[i].failed.Add(float64(c.failed))
		}
		*c = tallyCount{}
	}
	t.used = t.used[:0]
}

type storeCollector struct{ backend Backend }

var (
	descHits          = prometheus.NewDesc("tagcache_hits_total", "GETs that found a live entry.", nil, nil)
	descMisses        = prometheus.NewDesc("tagcache_misses_total", "GETs that found no live entry.", nil, nil)
	descPuts          = prometheus.NewDesc("tagcache_puts_total", "Entries written.", nil, nil)
	descInvalidations = prometheus.NewDesc("tagcache_invalidations_total", "Live entries removed by invalidations and FLUSH.", nil, nil)
	descEvictions     = prometheus.NewDesc("tagcache_evictions_total", "Entries evicted to stay under the memory limit.", nil, nil)
	descExpirations   = prometheus.NewDesc("tagcache_expirations_total", "Expired entries removed.", nil, nil)
	descItems         = prometheus.NewDesc("tagcache_items", "Entries held.", nil, nil)
	descBytes         = prometheus.NewDesc("tagcache_bytes", "Estimated bytes held by entries and the tag index.", nil, nil)
	descTags          = prometheus.NewDesc("tagcache_tags", "Distinct tags held.", nil, nil)
)

func (storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHits, descMisses, descPuts, descInvalidations, descEvictions, descExpirations, descItems, descBytes, descTags} {
		ch <- d
	}
}

// localStatser is a Backend whose Stats are the cluster's (Router): the collector reads
// the node's own figures instead, so that summing the series of every node gives the
// cluster's totals and a scrape asks no peer.
type localStatser interface{ localStats() cache.Stats }

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	var st cache.Stats
	if l, ok := c.backend.(localStatser); ok {
		st = l.localStats()
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if st, err = c.backend.Stats(ctx); err != nil {
			return
		}
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter(descHits, st.Hits)
	counter(descMisses, st.Misses)
	counter(descPuts, st.Puts)
	counter(descInvalidations, st.Invalidations)
	counter(descEvictions, st.Evictions)
	counter(descExpirations, st.Expirations)
	gauge(descItems, st.Items)
	gauge(descBytes, st.Bytes)
	gauge(descTags, st.Tags)
}
