package transport

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// These tests drive real Servers and Clients over loopback sockets.

type putRequest struct {
	Key  string
	Tags []string
	TTL  time.Duration
}

type putReply struct {
	Peer string
	Key  string
	N    int
}

func TestCallRoundTrip(t *testing.T) {
	cfg, _ := testConfig(t, "node-a", testKey)
	ts := startServer(t, cfg, "127.0.0.1:0")
	HandleTyped(ts.Server, 10, func(_ context.Context, peer string, req putRequest) (putReply, error) {
		return putReply{Peer: peer, Key: req.Key, N: len(req.Tags)}, nil
	})
	ccfg, _ := testConfig(t, "node-b", testKey)
	c := newClient(t, ccfg)

	got, err := CallTyped[putRequest, putReply](context.Background(), c, ts.addr, 10, putRequest{Key: "k", Tags: []string{"t1", "t2"}, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if want := (putReply{Peer: "node-b", Key: "k", N: 2}); got != want {
		t.Fatalf("reply %+v, want %+v", got, want)
	}
	reply, err := c.Call(context.Background(), ts.addr, kindEcho, []byte("hello"))
	if err != nil || string(reply) != "hello" {
		t.Fatalf("echo: %q, %v", reply, err)
	}
	// An empty body is a body too.
	if reply, err := c.Call(context.Background(), ts.addr, kindEcho, nil); err != nil || len(reply) != 0 {
		t.Fatalf("empty echo: %q, %v", reply, err)
	}
}

func TestThousandConcurrentCallsMatchedOverTwoConnections(t *testing.T) {
	cfg, _ := testConfig(t, "server", testKey)
	ts := startServer(t, cfg, "127.0.0.1:0")
	ccfg, _ := testConfig(t, "client", testKey)
	ccfg.ConnsPerPeer = 2
	c := newClient(t, ccfg)

	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			want := fmt.Sprintf("request %d %s", i, strings.Repeat("x", i%97))
			got, err := c.Call(context.Background(), ts.addr, kindEcho, []byte(want))
			if err != nil {
				errs <- err
			} else if string(got) != want {
				errs <- fmt.Errorf("call %d got reply %q", i, got)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := ts.calls.Load(); got != n {
		t.Errorf("handler ran %d times, want %d", got, n)
	}
	if got := ts.numConns(); got != 2 {
		t.Errorf("server has %d connections, want 2", got)
	}
}

func TestPeerWithoutKeyIsRefused(t *testing.T) {
	cfg, serverLogs := testConfig(t, "server", testKey)
	ts := startServer(t, cfg, "127.0.0.1:0")

	t.Run("client with another key", func(t *testing.T) {
		ccfg, _ := testConfig(t, "intruder", []byte("another key, also 32 bytes long!"))
		c := newClient(t, ccfg)
		_, err := c.Call(context.Background(), ts.addr, kindEcho, []byte("x"))
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("err = %v, want ErrUnreachable from a refused handshake", err)
		}
	})
	t.Run("client with no key", func(t *testing.T) {
		ccfg, _ := testConfig(t, "intruder", nil)
		ccfg.AllowNoKey = true
		c := newClient(t, ccfg)
		if _, err := c.Call(context.Background(), ts.addr, kindEcho, []byte("x")); !errors.Is(err, ErrUnreachable) {
			t.Fatalf("err = %v, want ErrUnreachable", err)
		}
	})
	t.Run("frames pipelined after a bad proof", func(t *testing.T) {
		conn, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		h := hello{V: Version, Name: "intruder"}
		rand.Read(h.Nonce[:])
		// Hello, a made-up proof and a request, all in one write.
		bad := proof{MAC: make([]byte, 32)}
		req := envelope{V: Version, ID: 1, Kind: kindEcho, Flags: flagRequest, Body: []byte("x")}
		msg := append(append(h.frame(), bad.frame()...), req.frame()...)
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		if _, err := readFrame(br, maxHandshakeFrame); err != nil { // the server's hello
			t.Fatal(err)
		}
		b, err := readFrame(br, maxHandshakeFrame)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := decodeProof(b); err != nil || p.Err == "" || p.MAC != nil {
			t.Fatalf("server's answer to a bad proof: %+v, %v; want a refusal and no MAC", p, err)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("after the refusal: %v, want EOF", err)
		}
	})
	if got := ts.calls.Load(); got != 0 {
		t.Fatalf("%d requests from peers without the key reached a handler", got)
	}
	if logs := serverLogs.String(); strings.Count(logs, "peer refused") < 3 || !strings.Contains(logs, "remote=127.0.0.1:") {
		t.Fatalf("server logs lack the refusals with remote addresses:\n%s", logs)
	}

	t.Run("server with another key", func(t *testing.T) {
		// An impostor server answers any proof with a made-up one and records what the
		// client sends after it.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		after := make(chan []byte, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(conn)
			h := hello{V: Version, Name: "impostor"}
			rand.Read(h.Nonce[:])
			conn.Write(h.frame())
			readFrame(br, maxHandshakeFrame) // hello
			readFrame(br, maxHandshakeFrame) // proof
			conn.Write((&proof{MAC: make([]byte, 32)}).frame())
			rest, _ := io.ReadAll(br)
			after <- rest
		}()
		ccfg, clientLogs := testConfig(t, "client", testKey)
		ccfg.ConnsPerPeer = 1
		c := newClient(t, ccfg)
		_, err = c.Call(context.Background(), ln.Addr().String(), kindEcho, []byte("secret"))
		if !errors.Is(err, ErrUnreachable) || !errors.Is(err, errBadProof) {
			t.Fatalf("err = %v, want ErrUnreachable wrapping a bad proof", err)
		}
		if rest := <-after; len(rest) != 0 {
			t.Fatalf("client sent %d bytes to a server that failed its proof", len(rest))
		}
		if !strings.Contains(clientLogs.String(), "dial failed") {
			t.Fatalf("client did not log the refusal:\n%s", clientLogs.String())
		}
	})
}

func TestNoKeyNeedsAllowNoKey(t *testing.T) {
	cfg, _ := testConfig(t, "a", nil)
	if _, err := NewServer(cfg); err == nil {
		t.Fatal("NewServer accepted an empty cluster key without AllowNoKey")
	}
	if _, err := NewClient(cfg); err == nil {
		t.Fatal("NewClient accepted an empty cluster key without AllowNoKey")
	}
	cfg.AllowNoKey = true
	ts := startServer(t, cfg, "127.0.0.1:0")
	ccfg, _ := testConfig(t, "b", nil)
	ccfg.AllowNoKey = true
	c := newClient(t, ccfg)
	if reply, err := c.Call(context.Background(), ts.addr, kindEcho, []byte("x")); err != nil || string(reply) != "x" {
		t.Fatalf("insecure mode: %q, %v", reply, err)
	}
	// A keyed client does not talk to a keyless server either.
	kcfg, _ := testConfig(t, "c", testKey)
	kc := newClient(t, kcfg)
	if _, err := kc.Call(context.Background(), ts.addr, kindEcho, []byte("x")); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("keyed client to keyless server: %v, want ErrUnreachable", err)
	}
}

func TestUnsupportedVersionGetsErrorReply(t *testing.T) {
	cfg, _ := testConfig(t, "server", testKey)
	ts := startServer(t, cfg, "127.0.0.1:0")
	ccfg, _ := testConfig(t, "client", testKey)
	conn, br := dialRaw(t, ts.addr, ccfg)

	for _, v := range []uint8{Version + 1, 0} {
		req := envelope{V: v, ID: 42, Kind: kindEcho, Flags: flagRequest, Body: []byte("x")}
		if _, err := conn.Write(req.frame()); err != nil {
			t.Fatal(err)
		}
		resp := readEnvelope(t, br)
		var msg string
		if err := Decode(resp.Body, &msg); err != nil {
			t.Fatal(err)
		}
		if resp.ID != 42 || resp.Flags != flagResponse|flagError ||
			!strings.Contains(msg, fmt.Sprintf("version: %d", v)) || !strings.Contains(msg, fmt.Sprintf("%d..%d", MinVersion, Version)) {
			t.Fatalf("reply to version %d: %+v %q; want an error naming the versions", v, resp, msg)
		}
	}
	// The connection still works at the right version.
	req := envelope{V: Version, ID: 43, Kind: kindEcho, Flags: flagRequest, Body: []byte("still here")}
	if _, err := conn.Write(req.frame()); err != nil {
		t.Fatal(err)
	}
	if resp := readEnvelope(t, br); resp.ID != 43 || resp.Flags != flagResponse || string(resp.Body) != "still here" {
		t.Fatalf("reply after the version errors: %+v", resp)
	}
	if got := ts.calls.Load(); got != 1 {
		t.Fatalf("handler ran %d times, want 1", got)
	}
}

func TestUnknownKindIsRemoteErrorAndConnectionSurvives(t *testing.T) {
	cfg, _ := testConfig(t, "server", testKey)
	ts := startServer(t, cfg, "127.0.0.1:0")
	ccfg, _ := testConfig(t, "client", testKey)
	ccfg.ConnsPerPeer = 1
	c := newClient(t, ccfg)
	if _, err := c.Call(context.Background(), ts.addr, kindEcho, nil); err != nil {
		t.Fatal(err)
	}

	_, err := c.Call(context.Background(), ts.addr, 999, []byte("x"))
	var re *RemoteError
	if !errors.As(err, &re) || re.Peer != "server" || !strings.Contains(re.Msg, "unknown kind 999") {
		t.Fatalf("err = %v, want a RemoteError naming the kind", err)
	}
	if !strings.Contains(err.Error(), "call "+ts.addr+" kind 999") {
		t.Fatalf("err = %q lacks the address and kind", err)
	}
	_, err = c.Call(context.Background(), ts.addr, kindFail, nil)
	if !errors.As(err, &re) || re.Msg != "no such key" {
		t.Fatalf("handler error came back as %v", err)
	}
	_, err = c.Call(context.Background(), ts.addr, kindPanic, nil)
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "panicked") {
		t.Fatalf("handler panic came back as %v", err)
	}
	if reply, err := c.Call(context.Background(), ts.addr, kindEcho, []byte("ok")); err != nil || string(reply) != "ok" {
		t.Fatalf("after the errors: %q, %v", reply, err)
	}
	if got := ts.numConns(); got != 1 {
		t.Fatalf("server has %d connections, want the original 1", got)
	}
}

func TestCallTimesOutWhenHandlerBlocks(t *testing.T) {
	cfg, _ := testConfig(t, "server", testKey)
	ts := startServer(t, cfg, "127.0.0.1:0")
	handlerDone := make(chan error, 1)
	ts.Handle(kindBlock, func(ctx context.Context, _ string, _ uint16, _ []byte) ([]byte, error) {
		<-ctx.Done() // the caller's deadline travels with the request
		handlerDone <- ctx.Err()
		return nil, ctx.Err()
	})
	ccfg, _ := testConfig(t, "client", testKey)
	ccfg.RequestTimeout = 100 * time.Millisecond
	c := newClient(t, ccfg)
	if _, err := c.Call(context.Background(), ts.addr, kindEcho, nil); err != nil { // connect first
		t.Fatal(err)
	}

	start := time.Now()
	_, err := c.Call(context.Background(), ts.addr, kindBlock, nil)
	elapsed := time.Since(start)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if elapsed < 90*time.Millisecond || elapsed > time.Second {
		t.Fatalf("timed out after %v, want about 100ms", elapsed)
	}
	select {
	case err := <-handlerDone:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("handler context ended with %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("handler context never ended")
	}

	// The connection is still fine.
	if _, err := c.Call(context.Background(), ts.addr, kindEcho, nil); err != nil {
		t.Fatal(err)
	}

	// A context deadline shorter than RequestTimeout wins (bounds far apart: a loaded
	// machine may stall the test for a while).
	ccfg.RequestTimeout = 20 * time.Second
	c2 := newClient(t, ccfg)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := c2.Call(ctx, ts.addr, kindBlock, nil); !errors.Is(err, ErrTimeout) || time.Since(start) > 5*time.Second {
		t.Fatalf("ctx deadline: %v after %v", err, time.Since(start))
	}
}

func TestFullQueueFailsWithErrBusy(t *testing.T) {
	cfg, _ := testConfig(t, "server", testKey)
	ts := startServer(t, cfg, "127.0.0.1:0")
	ccfg, _ := testConfig(t, "client", testKey)
	ccfg.MaxPending = 4
	ccfg.RequestTimeout = 5 * time.Second
	c := newClient(t, ccfg)

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			_, err := c.Call(context.Background(), ts.addr, kindBlock, nil)
			errs <- err
		})
	}
	ts.waitEntered(t, 4)
	start := time.Now()
	_, err := c.Call(context.Background(), ts.addr, kindEcho, nil)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("err = %v, want ErrBusy", err)
	}
	if d := time.Since(start); d > time.Second { // else it would wait for RequestTimeout, 5 s
		t.Fatalf("ErrBusy took %v, want at once", d)
	}
	close(ts.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("queued call: %v", err)
		}
	}
	if _, err := c.Call(context.Background(), ts.addr, kindEcho, nil); err != nil {
		t.Fatalf("after the queue drained: %v", err)
	}
}

func TestClientReconnectsAfterServerRestart(t *testing.T) {
	cfg, _ := testConfig(t, "server", testKey)
	ts := startServer(t, cfg, "127.0.0.1:0")
	addr := ts.addr
	ccfg, _ := testConfig(t, "client", testKey)
	ccfg.ReconnectMin = 50 * time.Millisecond
	ccfg.ReconnectMax = 200 * time.Millisecond
	c := newClient(t, ccfg)
	if _, err := c.Call(context.Background(), addr, kindEcho, nil); err != nil {
		t.Fatal(err)
	}

	ts.Close()
	// The lost connection, then the failed dial: both ErrUnreachable.
	eventually(t, 2*time.Second, "a dial to the stopped server fails", func() bool {
		_, err := c.Call(context.Background(), addr, kindEcho, nil)
		if err != nil && !errors.Is(err, ErrUnreachable) {
			t.Fatalf("err = %v, want ErrUnreachable", err)
		}
		return err != nil && strings.Contains(err.Error(), "connection refused")
	})
	// In backoff, a Call fails at once with the dial's error.
	start := time.Now()
	_, err := c.Call(context.Background(), addr, kindEcho, nil)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "next dial in") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("in backoff: %v", err)
	}
	// "next dial in" above says it did not dial; the bound is loose because a loaded
	// machine may stall the test.
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a Call in backoff took %v, want at once", d)
	}

	time.Sleep(300 * time.Millisecond) // a few failed dials, so backoff has grown
	restarted := startServer(t, cfg, addr)
	start = time.Now()
	eventually(t, 3*time.Second, "the client reconnects to the restarted server", func() bool {
		reply, err := c.Call(context.Background(), addr, kindEcho, []byte("back"))
		return err == nil && string(reply) == "back"
	})
	if d := time.Since(start); d > time.Second {
		t.Fatalf("reconnecting took %v with ReconnectMax 200ms", d)
	}
	if restarted.calls.Load() == 0 {
		t.Fatal("the restarted server saw no call")
	}
}

func TestCloseFailsPendingCallsAndLeaksNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	cfg, _ := testConfig(t, "server", testKey)
	ts := startServer(t, cfg, "127.0.0.1:0")
	ccfg, _ := testConfig(t, "client", testKey)
	ccfg.RequestTimeout = 10 * time.Second
	c, err := NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}

	const n = 20
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := c.Call(context.Background(), ts.addr, kindBlock, nil)
			errs <- err
		}()
	}
	ts.waitEntered(t, n)
	start := time.Now()
	c.Close()
	for range n {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Fatalf("pending call: %v, want ErrClosed", err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("failing pending calls took %v", d)
	}
	if _, err := c.Call(context.Background(), ts.addr, kindEcho, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after Close: %v, want ErrClosed", err)
	}
	ts.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Serve(ln); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Close: %v", err)
	}
	eventually(t, 2*time.Second, "goroutines return to their count before the test", func() bool {
		return runtime.NumGoroutine() <= before
	})
}

func TestOversizedFrameClosesConnection(t *testing.T) {
	cfg, serverLogs := testConfig(t, "server", testKey)
	cfg.MaxFrameBytes = 1024
	ts := startServer(t, cfg, "127.0.0.1:0")

	t.Run("length prefix over the limit", func(t *testing.T) {
		ccfg, _ := testConfig(t, "client", testKey)
		conn, br := dialRaw(t, ts.addr, ccfg)
		var h [4]byte
		binary.BigEndian.PutUint32(h[:], 0xFFFFFFFF) // 4 GiB
		if _, err := conn.Write(h[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("after an oversized frame: %v, want EOF", err)
		}
	})
	t.Run("client sends a body the server does not accept", func(t *testing.T) {
		ccfg, _ := testConfig(t, "client", testKey) // default limit: 8 MiB
		ccfg.ConnsPerPeer = 1
		c := newClient(t, ccfg)
		_, err := c.Call(context.Background(), ts.addr, kindEcho, make([]byte, 4096))
		if !errors.Is(err, ErrUnreachable) {
			t.Fatalf("err = %v, want ErrUnreachable (connection closed)", err)
		}
		if reply, err := c.Call(context.Background(), ts.addr, kindEcho, []byte("small")); err != nil || string(reply) != "small" {
			t.Fatalf("after reconnecting: %q, %v", reply, err)
		}
	})
	t.Run("client refuses to send over its own limit", func(t *testing.T) {
		ccfg, _ := testConfig(t, "client", testKey)
		ccfg.MaxFrameBytes = 1024
		c := newClient(t, ccfg)
		if _, err := c.Call(context.Background(), ts.addr, kindEcho, make([]byte, 2048)); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("err = %v, want ErrFrameTooLarge", err)
		}
		if _, err := c.Call(context.Background(), ts.addr, kindEcho, []byte("small")); err != nil {
			t.Fatal(err)
		}
	})
	if logs := serverLogs.String(); strings.Count(logs, "oversized frame") != 2 || !strings.Contains(logs, "remote=127.0.0.1:") {
		t.Fatalf("server did not log the two oversized frames with the remote address:\n%s", logs)
	}
}

func BenchmarkCallParallel(b *testing.B) {
	cfg := Config{Name: "server", ClusterKey: testKey, Logger: hclog.NewNullLogger()}
	s, err := NewServer(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.Handle(kindEcho, func(_ context.Context, _ string, _ uint16, body []byte) ([]byte, error) { return body, nil })
	a, err := s.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cfg.Name = "client"
	c, err := NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	body := make([]byte, 100)
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Call(context.Background(), a.String(), kindEcho, body); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestSilentPeerIsDroppedAtHandshakeDeadline(t *testing.T) {
	cfg, serverLogs := testConfig(t, "server", testKey)
	cfg.HandshakeTimeout = 100 * time.Millisecond
	ts := startServer(t, cfg, "127.0.0.1:0")
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	io.Copy(io.Discard, conn) // the server's hello, then EOF when it gives up
	if d := time.Since(start); d < 90*time.Millisecond || d > 2*time.Second {
		t.Fatalf("server dropped a silent peer after %v, want about 100ms", d)
	}
	eventually(t, time.Second, "the refusal is logged", func() bool {
		return strings.Contains(serverLogs.String(), "peer refused")
	})
}

// A peer that comes back on the same address is refused calls while the backoff of its
// absence lasts; Redial ends the backoff, and the next call dials at once.
func TestRedialEndsTheBackoffOfAPeerThatCameBack(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens: the dial is refused
	ccfg, _ := testConfig(t, "client", testKey)
	ccfg.ReconnectMin, ccfg.ReconnectMax = 10*time.Second, 10*time.Second
	ccfg.ConnsPerPeer = 1 // one dial, over when the first Call returns
	c := newClient(t, ccfg)
	if _, err := c.Call(context.Background(), addr, kindEcho, []byte("x")); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	cfg, _ := testConfig(t, "server", testKey)
	startServer(t, cfg, addr) // back on the same address
	if _, err := c.Call(context.Background(), addr, kindEcho, []byte("x")); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("within the backoff: err = %v, want ErrUnreachable", err)
	}
	c.Redial(addr)
	if got, err := c.Call(context.Background(), addr, kindEcho, []byte("x")); err != nil || string(got) != "x" {
		t.Fatalf("after Redial: %q, %v", got, err)
	}
}

// Redial drops the connections to a peer (after a healed partition they may sit in TCP's
// retransmission backoff): a call waiting on one fails at once, and the next call is
// answered on a new connection.
func TestRedialDropsTheConnectionsToThePeer(t *testing.T) {
	cfg, _ := testConfig(t, "server", testKey)
	ts := startServer(t, cfg, "127.0.0.1:0")
	ccfg, _ := testConfig(t, "client", testKey)
	ccfg.RequestTimeout = 5 * time.Second
	c := newClient(t, ccfg)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), ts.addr, kindBlock, nil)
		errc <- err
	}()
	ts.waitEntered(t, 1)
	start := time.Now()
	c.Redial(ts.addr)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrUnreachable) {
			t.Fatalf("the waiting call: err = %v, want ErrUnreachable", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the call waiting on the dropped connection did not fail")
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("the waiting call failed after %s, want at once", el)
	}
	if got, err := c.Call(context.Background(), ts.addr, kindEcho, []byte("y")); err != nil || string(got) != "y" {
		t.Fatalf("after Redial: %q, %v", got, err)
	}
}

func TestOnCallSeesEveryCallWithItsKindAndError(t *testing.T) {
	cfg, _ := testConfig(t, "node-a", testKey)
	ts := startServer(t, cfg, "127.0.0.1:0")
	type call struct {
		addr   string
		kind   uint16
		took   time.Duration
		failed bool
	}
	var mu sync.Mutex
	var calls []call
	ccfg, _ := testConfig(t, "node-b", testKey)
	ccfg.OnCall = func(addr string, kind uint16, took time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, call{addr, kind, took, err != nil})
	}
	c := newClient(t, ccfg)
	if _, err := c.Call(context.Background(), ts.addr, kindEcho, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(context.Background(), ts.addr, kindFail, nil); err == nil {
		t.Fatal("kindFail succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 {
		t.Fatalf("OnCall saw %d calls, want 2: %+v", len(calls), calls)
	}
	for i, want := range []call{{ts.addr, kindEcho, 0, false}, {ts.addr, kindFail, 0, true}} {
		got := calls[i]
		if got.addr != want.addr || got.kind != want.kind || got.failed != want.failed || got.took <= 0 {
			t.Errorf("call %d: OnCall saw %+v, want %+v with a positive duration", i, got, want)
		}
	}
}

// ErrNotSent tells a call that never reached the peer (safe to send elsewhere) from one
// that may have run there.
func TestErrNotSentMarksOnlyCallsThatNeverLeft(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	ccfg, _ := testConfig(t, "client", testKey)
	c := newClient(t, ccfg)
	for range 2 { // the refused dial, then the backoff after it
		if _, err := c.Call(context.Background(), refused, kindEcho, []byte("x")); !errors.Is(err, ErrNotSent) || !errors.Is(err, ErrUnreachable) {
			t.Fatalf("refused peer: err = %v, want ErrNotSent and ErrUnreachable", err)
		}
	}
	cfg, _ := testConfig(t, "server", testKey)
	ts := startServer(t, cfg, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = c.Call(ctx, ts.addr, kindBlock, nil) // reaches the handler, then times out
	if !errors.Is(err, ErrTimeout) || errors.Is(err, ErrNotSent) {
		t.Fatalf("a call that reached the peer: err = %v, want ErrTimeout without ErrNotSent", err)
	}
	if _, err := c.Call(context.Background(), ts.addr, kindFail, nil); errors.Is(err, ErrNotSent) {
		t.Fatalf("a refusal by the handler: err = %v, must not be ErrNotSent", err)
	}
}
