package clustertests

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tagcache/tagcache/node"
)

// startWorkloadNode starts one in-process node on loopback ports and returns it as an
// endpoint; the node shuts down when t ends.
func startWorkloadNode(t *testing.T) Endpoint {
	t.Helper()
	n, err := node.New(node.Config{Bind: "127.0.0.1", TCPPort: 0, HTTPPort: 0, RESPPort: 0})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return Endpoint{Name: "n0", Text: n.Addr("tcp").String(), HTTP: n.Addr("http").String(), RESP: n.Addr("resp").String()}
}

// A single correct node must pass the checker: the workload and the checker agree on
// what the protocols mean.
func TestWorkloadAgainstOneNodeIsConsistent(t *testing.T) {
	ep := startWorkloadNode(t)
	h := RunWorkload(context.Background(), WorkloadConfig{
		Endpoints: func() []Endpoint { return []Endpoint{ep} },
		Clients:   6,
		Keys:      20,
		Tags:      5,
		Duration:  2 * time.Second,
		Username:  node.DefaultUsername,
		Password:  node.DefaultPassword,
		Seed:      1,
	})
	start := time.Now()
	r := Check(h)
	t.Logf("%s; hit ratio %.2f; checked in %s", r, h.HitRatio(), time.Since(start).Round(time.Millisecond))

	if r.Ops == 0 || r.Ops != h.Len() {
		t.Fatalf("%d operations recorded, report counts %d", h.Len(), r.Ops)
	}
	var protos [numProtocols]int
	var kinds [numOpKinds]int
	hits := 0
	for _, op := range h.Ops() {
		protos[op.Proto]++
		kinds[op.Kind]++
		if op.Node != ep.Name {
			t.Fatalf("operation on node %q: %s", op.Node, op.describe(h.Start()))
		}
		if op.Kind == OpGet && op.Found {
			hits++
		}
	}
	for p, n := range protos {
		if n == 0 {
			t.Errorf("no operation over %s", Protocol(p))
		}
	}
	for k, n := range kinds {
		if n == 0 {
			t.Errorf("no %s", OpKind(k))
		}
	}
	if hits == 0 {
		t.Errorf("no GET found a value: the checker had nothing to judge")
	}
	if r.Errors != 0 || r.Unknown != 0 {
		var failed []string
		for _, op := range h.Ops() {
			if op.Status != StatusOK && len(failed) < 10 {
				failed = append(failed, op.describe(h.Start()))
			}
		}
		t.Errorf("%d errors, %d unknown outcomes against a healthy node:\n%s", r.Errors, r.Unknown, strings.Join(failed, "\n"))
	}
	if r.Violations() != 0 || r.CheckTimeouts != 0 {
		t.Errorf("a single correct node fails the checker: %s\n%s", r, strings.Join(r.Evidence, "\n"))
	}

	// Negative controls on the real history: one read changed to return a value it must
	// not see is caught, with the read in the evidence.
	t.Run("forged resurrection", func(t *testing.T) {
		all := h.Ops()
		forged, g := forgeRead(h, func(g *Op, w, x *Op) bool {
			// An untagged value overwritten by a PUT, and no DEL of the key in between
			// (that would make it a stale read).
			if w.Kind != OpPut || x.Kind != OpPut || len(w.Tags) != 0 {
				return false
			}
			return !slices.ContainsFunc(all, func(d Op) bool {
				return d.Kind == OpDel && d.Key == g.Key && d.acknowledged() && d.Invoke.After(w.Complete) && d.Complete.Before(g.Invoke)
			})
		})
		r := Check(forged)
		if r.Resurrections == 0 || r.LinearizabilityViolations == 0 || !strings.Contains(strings.Join(r.Evidence, "\n"), g.describe(h.Start())) {
			t.Errorf("%s; forged read %s\n%s", r, g.describe(h.Start()), strings.Join(r.Evidence, "\n"))
		}
	})
	t.Run("forged stale read", func(t *testing.T) {
		forged, g := forgeRead(h, func(g *Op, w, x *Op) bool {
			return x.Kind == OpInvTag && w.Kind == OpPut && slices.Contains(w.Tags, x.Tag)
		})
		r := Check(forged)
		if r.StaleReads == 0 || r.LinearizabilityViolations == 0 || !strings.Contains(strings.Join(r.Evidence, "\n"), g.describe(h.Start())) {
			t.Errorf("%s; forged read %s\n%s", r, g.describe(h.Start()), strings.Join(r.Evidence, "\n"))
		}
	})
}

// forgeRead returns a copy of h in which one GET hit g returns instead the value of an
// acknowledged write w of its key for which an acknowledged x (a write of the key or an
// INV_TAG) was invoked after w completed and completed before g began, with fits(g, w, x).
func forgeRead(h *History, fits func(g, w, x *Op) bool) (*History, Op) {
	ops := h.Ops()
	for i := range ops {
		g := &ops[i]
		if g.Kind != OpGet || !g.Found {
			continue
		}
		for j := range i {
			x := &ops[j]
			if !x.acknowledged() || !x.Complete.Before(g.Invoke) || (x.Kind != OpInvTag && x.Key != g.Key) {
				continue
			}
			for k := range j {
				w := &ops[k]
				if w.Key == g.Key && w.acknowledged() && w.Value != "" && w.Complete.Before(x.Invoke) && fits(g, w, x) {
					g.Result = w.Value
					forged := newHistory(h.Start())
					forged.add(ops...)
					return forged, *g
				}
			}
		}
	}
	panic("no read to forge")
}

// Clients skip an endpoint they cannot reach (round robin, nothing recorded for an
// operation never sent) and stop at MaxOps.
func TestWorkloadSkipsUnreachableEndpointsAndStopsAtMaxOps(t *testing.T) {
	live := startWorkloadNode(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // nothing listens there any more: connections are refused
	dead := Endpoint{Name: "dead", Text: closed, HTTP: closed, RESP: closed}

	const maxOps = 300
	h := RunWorkload(context.Background(), WorkloadConfig{
		Endpoints: func() []Endpoint { return []Endpoint{dead, live} },
		Clients:   3,
		Duration:  10 * time.Second,
		MaxOps:    maxOps,
		Username:  node.DefaultUsername,
		Password:  node.DefaultPassword,
		Seed:      2,
		OpTimeout: time.Second,
	})
	if h.Len() != maxOps {
		t.Errorf("%d operations, want MaxOps = %d", h.Len(), maxOps)
	}
	for _, op := range h.Ops() {
		if op.Node != live.Name || op.Status != StatusOK {
			t.Fatalf("recorded %s", op.describe(h.Start()))
		}
	}
	if r := Check(h); r.Violations() != 0 {
		t.Errorf("%s\n%s", r, strings.Join(r.Evidence, "\n"))
	}
}
