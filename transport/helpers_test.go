package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

var testKey = []byte("test cluster key, 32 bytes long!")

const (
	kindEcho  uint16 = 1 // replies with the request body
	kindBlock uint16 = 2 // blocks until released or its context is done
	kindFail  uint16 = 3 // returns an error
	kindPanic uint16 = 4 // panics
)

// logBuffer collects a test peer's logs; they are printed if the test fails.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testConfig returns a config with short timeouts and a logger into the returned buffer.
func testConfig(t *testing.T, name string, key []byte) (Config, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs of %s:\n%s", name, logs.String())
		}
	})
	return Config{
		Name: name, ClusterKey: key,
		HandshakeTimeout: time.Second, RequestTimeout: time.Second,
		Logger: hclog.New(&hclog.LoggerOptions{Name: name, Output: logs, Level: hclog.Debug}),
	}, logs
}

// testServer is a Server on a loopback port with the test kinds registered.
type testServer struct {
	*Server
	addr    string
	calls   atomic.Int64  // requests that reached a handler
	entered chan struct{} // one value each time kindBlock starts
	release chan struct{} // closed to let kindBlock return
}

func startServer(t *testing.T, cfg Config, addr string) *testServer {
	t.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, entered: make(chan struct{}, 10000), release: make(chan struct{})}
	s.Handle(kindEcho, func(_ context.Context, _ string, _ uint16, body []byte) ([]byte, error) {
		ts.calls.Add(1)
		return body, nil
	})
	s.Handle(kindBlock, func(ctx context.Context, _ string, _ uint16, _ []byte) ([]byte, error) {
		ts.calls.Add(1)
		ts.entered <- struct{}{}
		select {
		case <-ts.release:
			return []byte("released"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	s.Handle(kindFail, func(context.Context, string, uint16, []byte) ([]byte, error) {
		ts.calls.Add(1)
		return nil, errors.New("no such key")
	})
	s.Handle(kindPanic, func(context.Context, string, uint16, []byte) ([]byte, error) {
		ts.calls.Add(1)
		panic("boom")
	})
	a, err := s.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = a.String()
	t.Cleanup(func() { s.Close() })
	return ts
}

// waitEntered waits until kindBlock has started n times.
func (ts *testServer) waitEntered(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-ts.entered:
		case <-time.After(5 * time.Second):
			t.Fatalf("handler not entered %d times", n)
		}
	}
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialRaw opens a connection to addr and runs the dialer's handshake with cfg, for tests
// that write frames by hand.
func dialRaw(t *testing.T, addr string, cfg Config) (net.Conn, *bufio.Reader) {
	t.Helper()
	cfg, err := cfg.complete()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	if _, _, err := handshake(conn, br, &cfg, roleDialer); err != nil {
		t.Fatal(err)
	}
	return conn, br
}

// readEnvelope reads and decodes one frame.
func readEnvelope(t *testing.T, br *bufio.Reader) envelope {
	t.Helper()
	payload, err := readFrame(br, DefaultMaxFrameBytes)
	if err != nil {
		t.Fatal(err)
	}
	env, err := decodeEnvelope(payload)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("not true after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
