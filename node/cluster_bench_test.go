package node

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// Cluster figures, measured side by side in one run (docs/performance.md):
//
//	go test -run '^$' -bench 'Cluster' -benchtime 3s ./node
//
// Timings belong here, never in pass/fail tests: these machines are shared.

// benchText is a text-protocol connection for benchmarks (no testing.T).
type benchText struct {
	c net.Conn
	r *bufio.Reader
}

func dialBenchText(b *testing.B, n *Node) *benchText {
	c, err := net.Dial("tcp", n.Addr("tcp").String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return &benchText{c: c, r: bufio.NewReaderSize(c, 64<<10)}
}

func (t *benchText) do(line string) (string, error) {
	if _, err := io.WriteString(t.c, line+"\n"); err != nil {
		return "", err
	}
	s, err := t.r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

// BenchmarkClusterForwarding compares GET+PUT throughput through a node for keys that
// node holds, keys held by other members (one forwarding hop), and a standalone node.
func BenchmarkClusterForwarding(b *testing.B) {
	c := startCluster(b, 3)
	entry := c.nodes[0]
	owned, remote := keysBy(c, entry, 1000)
	solo := startRESPNode(b, func(c *Config) { c.TCPPort, c.RESPPort = 0, -1 })
	for _, tc := range []struct {
		name string
		n    *Node
		keys []string
	}{{"standalone", solo, owned}, {"owner", entry, owned}, {"forwarded", entry, remote}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetParallelism(8) // 16 connections on 2 cores: a closed loop of many clients
			b.RunParallel(func(pb *testing.PB) {
				conn := dialBenchText(b, tc.n)
				i := 0
				for pb.Next() {
					key := tc.keys[i%len(tc.keys)]
					i++
					line := "GET\t" + key
					want := "VALUE\tv"
					if i%5 == 0 {
						line, want = "PUT\t"+key+"\t-\t-\tv", "OK"
					}
					got, err := conn.do(line)
					if err != nil || (got != want && got != "NF") {
						b.Errorf("%q: %q %v", line, got, err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkClusterInvalidateTag measures INV_TAG through one node of three, for a tag
// carried by 10 and by 100k keys spread over the cluster; it reports p50 and p99.
func BenchmarkClusterInvalidateTag(b *testing.B) {
	c := startCluster(b, 3)
	conn := dialBenchText(b, c.nodes[0])
	for _, size := range []int{10, 100_000} {
		b.Run(fmt.Sprintf("keys=%d", size), func(b *testing.B) {
			var lat []time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				tag := fmt.Sprintf("t%d-%d", size, i)
				fill(b, c, tag, size)
				for _, n := range c.nodes { // the previous round's background removal
					n.store.WaitReclaim()
				}
				b.StartTimer()
				start := time.Now()
				got, err := conn.do("INV_TAG\t" + tag)
				lat = append(lat, time.Since(start))
				if err != nil || got != fmt.Sprintf("INV_TAG\t%d", size) {
					b.Fatalf("INV_TAG %s: %q %v", tag, got, err)
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// fill puts size keys carrying tag straight into their holders' stores.
func fill(b *testing.B, c *testCluster, tag string, size int) {
	rg := c.nodes[0].router.ring.Load()
	byName := map[string]*Node{}
	for _, n := range c.nodes {
		byName[n.router.self] = n
	}
	for k := range size {
		key := fmt.Sprintf("%s:%d", tag, k)
		if err := byName[rg.OwnerOf(key)].store.Put(key, []byte("v"), 0, []string{tag}); err != nil {
			b.Fatal(err)
		}
	}
}

// keysBy returns n keys n0 holds and n keys other members hold.
func keysBy(c *testCluster, n0 *Node, n int) (owned, remote []string) {
	for i := 0; len(owned) < n || len(remote) < n; i++ {
		key := fmt.Sprintf("key%d", i)
		if c.ownerOf(key) == n0 {
			if len(owned) < n {
				owned = append(owned, key)
			}
		} else if len(remote) < n {
			remote = append(remote, key)
		}
	}
	for _, k := range append(slices.Clone(owned), remote...) {
		if err := c.nodes[0].router.Put(context.Background(), k, []byte("v"), 0, nil); err != nil {
			panic(err)
		}
	}
	return owned, remote
}
