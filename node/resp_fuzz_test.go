package node

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// respFuzzConn is a connection whose input is a fixed byte string, delivered at most
// chunk bytes per read (so requests arrive in pieces), and whose output is recorded.
type respFuzzConn struct {
	in    []byte
	chunk int
	out   bytes.Buffer
}

func (c *respFuzzConn) Read(p []byte) (int, error) {
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.chunk)], c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *respFuzzConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *respFuzzConn) Close() error                     { return nil }
func (c *respFuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *respFuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *respFuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *respFuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *respFuzzConn) SetWriteDeadline(time.Time) error { return nil }

// newRESPFuzzServer returns a RESP server of a node with small limits and no listener.
func newRESPFuzzServer(f *testing.F, tcpAuth string) *respServer {
	cfg := Config{Bind: "127.0.0.1", TCPPort: -1, HTTPPort: -1, RESPPort: -1, TCPAuth: tcpAuth}
	cfg.Cache.MaxValueBytes = 4096
	cfg.Cache.MaxKeyBytes = 256
	cfg.Cache.MaxTags = 8
	cfg.Cache.MaxTagBytes = 32
	cfg.Cache.Partitions = 8
	n, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	return newRESPServer(n)
}

// FuzzRESP feeds arbitrary bytes to a connection: the server must not panic, and what it
// writes back must be a sequence of well-formed RESP2 replies.
func FuzzRESP(f *testing.F) {
	for _, seed := range []string{
		"*1\r\n$4\r\nPING\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
		"*7\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nEX\r\n$2\r\n10\r\n$4\r\nTAGS\r\n$3\r\na,b\r\n*2\r\n$14\r\nTAG.INVALIDATE\r\n$1\r\na\r\n",
		"set k 'a b' nx get\r\nget k\r\nincr n\r\nttl k\r\n",
		"*2\r\n$4\r\nAUTH\r\n$8\r\npassword\r\n*1\r\n$4\r\nINFO\r\n",
		"HELLO 2 AUTH admin password SETNAME x\r\nCLIENT GETNAME\r\nCOMMAND INFO get\r\n",
		"*2\r\n$3\r\nGET\r\n$99999\r\n",
		"*-1\r\n*0\r\n\r\n\"unbalanced\r\n",
		"MSET a 1 b 2\nMGET a b c\nEXPIRE a 0\nPERSIST b\nTAG.OF b\nFLUSHALL\nQUIT\nPING\n",
	} {
		f.Add([]byte(seed), uint8(255), false)
		f.Add([]byte(seed), uint8(2), true)
	}
	open := newRESPFuzzServer(f, "off")
	authed := newRESPFuzzServer(f, "on")
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8, auth bool) {
		s := open
		if auth {
			s = authed
		}
		c := &respFuzzConn{in: in, chunk: int(chunk) + 1}
		s.serveConn(c)
		r := bufio.NewReader(bytes.NewReader(c.out.Bytes()))
		for {
			if _, err := r.Peek(1); err == io.EOF {
				return
			}
			if _, err := readRESPReply(r); err != nil {
				t.Fatalf("malformed reply: %v\noutput: %q", err, c.out.Bytes())
			}
		}
	})
}
