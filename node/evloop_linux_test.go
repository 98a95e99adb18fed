//go:build linux

package node

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// A standalone node serves text and RESP from event loops unless told otherwise; a
// cluster node does too (requests that may wait for a peer are offloaded).
func TestEventLoopsAreUsedUnlessGoroutinesAreAsked(t *testing.T) {
	for _, goroutines := range []bool{false, true} {
		n := startRESPNode(t, func(c *Config) { c.TCPPort = 0; c.Goroutines = goroutines })
		c := dialRESP(t, n)
		c.expect(respStatus("PONG"), "PING")
		tc, r := dialListener(t, n, "tcp")
		io.WriteString(tc, "GET\tk\n")
		tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if line, err := r.ReadString('\n'); err != nil || line != "NF\n" {
			t.Fatalf("text GET: %q, %v", line, err)
		}
		for _, s := range []*connServer{&n.resp.connServer, &n.text.connServer} {
			s.mu.Lock()
			loops := len(s.loops)
			s.mu.Unlock()
			if got := loops > 0; got == goroutines {
				t.Errorf("%s with Goroutines=%v: %d event loops", s.name, goroutines, loops)
			}
		}
	}
}

// A client that pipelines more replies than the socket takes and does not read them
// neither stalls the loop's other connections nor makes the node read (and buffer the
// replies of) everything it sends; once it reads, every reply arrives, in order.
func TestEventLoopClientNotReadingDoesNotStallOthers(t *testing.T) {
	n := startRESPNode(t, nil)
	value := strings.Repeat("v", 32<<10)
	a := dialRESP(t, n)
	a.expect(respStatus("OK"), "SET", "big", value)
	const gets = 1000 // 32 MiB of replies, far more than the socket buffers hold
	go a.c.Write(bytes.Repeat(respRequest("GET", "big"), gets))
	time.Sleep(200 * time.Millisecond)
	b := dialRESP(t, n)
	for range 100 {
		start := time.Now()
		b.expect(respStatus("PONG"), "PING")
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("PING took %s while another client was not reading", el)
		}
	}
	a.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := range gets {
		v, err := readRESPReply(a.r)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if s, ok := v.(string); !ok || s != value {
			t.Fatalf("reply %d: %T of %d bytes, want the value", i, v, len(s))
		}
	}
}

// lineHandler is a connHandler for loop tests: it answers each line with "ok <line>",
// and a line "block" waits for release first, as a request waiting for a peer would.
type lineHandler struct {
	w       io.Writer
	buf     []byte
	release chan struct{}
	ran     atomic.Int32
}

func (h *lineHandler) fill(src io.Reader) error {
	var b [4096]byte
	n, err := src.Read(b[:])
	h.buf = append(h.buf, b[:n]...)
	if n > 0 {
		return nil
	}
	return err
}
func (h *lineHandler) arrived(time.Time) {}
func (h *lineHandler) run(_ bool, stop func() bool) bool {
	for !stop() {
		i := bytes.IndexByte(h.buf, '\n')
		if i < 0 {
			break
		}
		line := string(h.buf[:i])
		h.buf = h.buf[i+1:]
		if line == "block" {
			<-h.release
		}
		h.ran.Add(1)
		io.WriteString(h.w, "ok "+line+"\n")
	}
	return true
}
func (h *lineHandler) flush() error { return nil }
func (h *lineHandler) done()        {}

// loopPair adds one end of a socket pair to l, served by h; it returns the other end.
func loopPair(t *testing.T, l *evLoop, h *lineHandler) net.Conn {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.srv.active.Add(1)
	l.srv.count.Add(1)
	l.add(fds[0], func(w io.Writer) connHandler { h.w = w; return h })
	c, err := net.FileConn(osFile(fds[1]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// While the node has peers, a loop runs requests on goroutines: one that waits (for a
// peer, here for the test) does not stall the loop's other connections; when the node is
// alone again they run on the loop.
func TestEventLoopOffloadsRequestsWhileThereArePeers(t *testing.T) {
	n := startRESPNode(t, nil)
	var alone atomic.Bool
	l, err := newEvLoop(&n.resp.connServer)
	if err != nil {
		t.Fatal(err)
	}
	l.local = alone.Load
	go l.run()
	t.Cleanup(func() { l.resetAll(); l.startClosing() })

	slow := &lineHandler{release: make(chan struct{})}
	fast := &lineHandler{}
	var released atomic.Bool
	release := func() {
		if released.CompareAndSwap(false, true) {
			close(slow.release)
		}
	}
	t.Cleanup(release) // registered after the loop's: runs first, so a failing test does not hang
	cs := loopPair(t, l, slow)
	cf := loopPair(t, l, fast)
	rs, rf := bufio.NewReader(cs), bufio.NewReader(cf)
	io.WriteString(cs, "block\n")
	deadline := time.Now().Add(5 * time.Second)
	for slow.ran.Load() == 0 && time.Now().Before(deadline) {
		io.WriteString(cf, "x\n")
		cf.SetReadDeadline(time.Now().Add(2 * time.Second))
		if line, err := rf.ReadString('\n'); err != nil || line != "ok x\n" {
			t.Fatalf("while another connection's request waits: %q, %v", line, err)
		}
		if fast.ran.Load() >= 20 {
			break
		}
	}
	if fast.ran.Load() < 20 {
		t.Fatalf("%d requests answered while another connection's request waited", fast.ran.Load())
	}
	release()
	cs.SetReadDeadline(time.Now().Add(2 * time.Second))
	if line, err := rs.ReadString('\n'); err != nil || line != "ok block\n" {
		t.Fatalf("the waiting request: %q, %v", line, err)
	}
	alone.Store(true)
	io.WriteString(cf, "y\n")
	cf.SetReadDeadline(time.Now().Add(2 * time.Second))
	if line, err := rf.ReadString('\n'); err != nil || line != "ok y\n" {
		t.Fatalf("alone again: %q, %v", line, err)
	}
}

func osFile(fd int) *os.File { return os.NewFile(uintptr(fd), "socketpair") }

// A loop that has ended has closed its eventfd; waking it again (a second Shutdown, the
// shutdown timeout) must not write to whatever descriptor took that number since.
func TestEventLoopThatEndedIsNotWokenThroughAReusedDescriptor(t *testing.T) {
	n := startRESPNode(t, nil) // its cleanup shuts it down a third time, harmlessly
	n.resp.mu.Lock()
	loops := n.resp.loops
	n.resp.mu.Unlock()
	if len(loops) == 0 {
		t.Fatal("no event loop")
	}
	l := loops[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		l.mu.Lock()
		exited := l.exited
		l.mu.Unlock()
		if exited {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the loop did not end after Shutdown")
		}
		time.Sleep(time.Millisecond)
	}
	// Take descriptors until one has the eventfd's old number.
	var reused int = -1
	for range 64 {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Close(fds[0]); syscall.Close(fds[1]) })
		if fds[0] == l.wake {
			reused = fds[1]
		} else if fds[1] == l.wake {
			reused = fds[0]
		}
		if reused >= 0 {
			break
		}
	}
	if reused < 0 {
		t.Fatalf("none of 128 new descriptors took the eventfd's old number %d (Linux gives the lowest free one)", l.wake)
	}
	l.startClosing()
	l.resetAll()
	n.Shutdown(ctx)
	var b [16]byte
	if k, err := syscall.Read(reused, b[:]); err != syscall.EAGAIN {
		t.Fatalf("an ended loop wrote %q (%v) to the descriptor that reused its eventfd's number", b[:max(k, 0)], err)
	}
}
