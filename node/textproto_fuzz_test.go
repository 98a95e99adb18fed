package node_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tagcache/tagcache/cache"
	"github.com/tagcache/tagcache/node"
)

// The fuzz target feeds arbitrary bytes as the whole input of one text-protocol
// connection and checks the replies against what the input's lines call for. The
// connection is in memory (memConn) but goes through the node's real accept loop and
// connection handler, including the long-line path around the 16 KiB read buffer.
//
// So that lines longer than that buffer stay reachable by mutating small inputs (and
// the corpus stays small), the input is run-length expanded first: the four bytes
// 0xFE 0xFE b k stand for byte b repeated k*256 times. Any other byte, 0xFE included,
// is sent as it is.

const (
	fuzzMaxLine = 20000 // above the 16 KiB read buffer, so a line can span buffer fills
	fuzzUser    = "u"
	fuzzPass    = "p"
)

func FuzzTextProtocol(f *testing.F) {
	// Small limits make every limit error reachable with small inputs.
	n, err := node.New(node.Config{
		TCPPort: -1, HTTPPort: -1, Username: fuzzUser, Password: fuzzPass,
		MaxLineBytes: fuzzMaxLine,
		Cache: cache.Config{MaxKeyBytes: 32, MaxValueBytes: 18000, MaxTags: 4, MaxTagBytes: 16,
			MaxMemory: 32 << 20, Partitions: 8},
	})
	if err != nil {
		f.Fatal(err)
	}
	ln := newMemListener()
	n.ServeTCP(ln)
	f.Cleanup(func() { shutdownNode(f, n) })

	// Seeds come from testdata/fuzz/FuzzTextProtocol.
	f.Fuzz(func(t *testing.T, input []byte) {
		input = expandRuns(input)
		// The read size varies with the input so that lines split across reads too.
		conn := newMemConn(input, 1+len(input)%4099)
		ln.conns <- conn
		select {
		case <-conn.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("the server did not finish a %d-byte input within 10s", len(input))
		}
		out := conn.out.Bytes()
		if len(out) > 0 && out[len(out)-1] != '\n' {
			t.Fatalf("output ends with an unterminated reply: %q", tail(out))
		}
		replies := bytes.Split(out, []byte{'\n'})
		replies = replies[:len(replies)-1] // after the last "\n"
		want := expectedReplies(input)
		if len(replies) != len(want) {
			t.Fatalf("got %d replies, want %d (one per non-empty line)\ninput: %q\noutput: %q",
				len(replies), len(want), tail(input), tail(out))
		}
		for i, r := range replies {
			if want[i] == lineTooLong {
				if got, w := string(r), fmt.Sprintf("ERR line too long (limit %d bytes)", fuzzMaxLine); got != w {
					t.Fatalf("reply %d: got %q, want %q", i, got, w)
				}
				continue
			}
			if err := checkReply(want[i], string(r)); err != nil {
				t.Fatalf("reply %d: %v", i, err)
			}
		}
	})
}

// expandRuns replaces each 0xFE 0xFE b k in input by k*256 copies of b, up to 1 MiB in all.
func expandRuns(input []byte) []byte {
	const maxExpanded = 1 << 20
	if !bytes.Contains(input, []byte{0xFE, 0xFE}) {
		return input
	}
	out := make([]byte, 0, len(input))
	for len(input) > 0 {
		if len(input) >= 4 && input[0] == 0xFE && input[1] == 0xFE {
			n := min(int(input[3])*256, maxExpanded-len(out))
			out = append(out, bytes.Repeat(input[2:3], max(n, 0))...)
			input = input[4:]
			continue
		}
		out = append(out, input[0])
		input = input[1:]
	}
	return out
}

// lineTooLong marks, in expectedReplies, a line over the limit.
const lineTooLong = "\x00line too long"

// expectedReplies returns, for each reply input must get, the upper-cased verb of the
// command it answers (or lineTooLong). It follows PROTOCOL.md: one reply per line ended
// by "\n" that is not empty once its "\n" or "\r\n" is removed; a final unterminated line
// is not a command; the fifth failed AUTH in a row closes the connection.
func expectedReplies(input []byte) []string {
	var verbs []string
	failures := 0
	for {
		i := bytes.IndexByte(input, '\n')
		if i < 0 {
			return verbs
		}
		line := bytes.TrimSuffix(input[:i], []byte{'\r'})
		input = input[i+1:]
		if len(line) > fuzzMaxLine {
			verbs = append(verbs, lineTooLong)
			continue
		}
		if len(line) == 0 {
			continue
		}
		fields := bytes.SplitN(line, []byte{'\t'}, 5)
		verb := asciiUpper(string(fields[0]))
		verbs = append(verbs, verb)
		if verb != "AUTH" {
			continue
		}
		if len(fields) >= 3 && string(fields[1]) == fuzzUser && string(fields[2]) == fuzzPass {
			failures = 0
			continue
		}
		if failures++; failures == 5 {
			return verbs
		}
	}
}

func tail(b []byte) []byte {
	if len(b) > 400 {
		return b[len(b)-400:]
	}
	return b
}

// memListener accepts the memConns sent on conns.
type memListener struct {
	conns  chan *memConn
	closed chan struct{}
	once   sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan *memConn), closed: make(chan struct{})}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr{} }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

// memConn is a connection whose client sends a fixed input, in reads of at most chunk
// bytes, then half-closes; what the server writes is collected in out. done is closed
// when the server closes the connection.
type memConn struct {
	in    []byte
	chunk int
	out   bytes.Buffer // written only by the server's connection goroutine
	done  chan struct{}
	once  sync.Once
}

func newMemConn(input []byte, chunk int) *memConn {
	return &memConn{in: input, chunk: chunk, done: make(chan struct{})}
}

func (c *memConn) Read(p []byte) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.chunk)], c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *memConn) Write(p []byte) (int, error) {
	select {
	case <-c.done:
		return 0, errors.New("write on closed memConn")
	default:
	}
	return c.out.Write(p)
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

func (c *memConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
