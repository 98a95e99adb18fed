package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Reply values read by respTestConn: a simple string, an error, an int64, a bulk string
// (string), a null bulk string (nil), an array ([]any) or a null array.
type (
	respStatus   string
	respErrReply string
	respNilArray struct{}
)

// startRESPNode starts a node serving only RESP on a free loopback port; mut adjusts
// the configuration. The node is shut down when the test ends.
func startRESPNode(t testing.TB, mut func(*Config)) *Node {
	t.Helper()
	cfg := Config{Bind: "127.0.0.1", TCPPort: -1, HTTPPort: -1, RESPPort: 0}
	if mut != nil {
		mut(&cfg)
	}
	n, err := New(cfg)
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
	return n
}

type respTestConn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialRESP(t testing.TB, n *Node) *respTestConn {
	t.Helper()
	c, r := dialListener(t, n, "resp")
	return &respTestConn{t: t, c: c, r: r}
}

func respRequest(args ...string) []byte {
	b := fmt.Appendf(nil, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b
}

func (c *respTestConn) sendRaw(s string) {
	c.t.Helper()
	c.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *respTestConn) send(args ...string) { c.t.Helper(); c.sendRaw(string(respRequest(args...))) }

// read reads one reply.
func (c *respTestConn) read() any {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	v, err := readRESPReply(c.r)
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	return v
}

func (c *respTestConn) do(args ...string) any {
	c.t.Helper()
	c.send(args...)
	return c.read()
}

// expect sends a request and checks its reply.
func (c *respTestConn) expect(want any, args ...string) {
	c.t.Helper()
	if got := c.do(args...); !reflect.DeepEqual(got, want) {
		c.t.Fatalf("%q: got %#v, want %#v", args, got, want)
	}
}

// expectErr sends a request and checks that the reply is an error starting with prefix.
func (c *respTestConn) expectErr(prefix string, args ...string) {
	c.t.Helper()
	got := c.do(args...)
	if e, ok := got.(respErrReply); !ok || !strings.HasPrefix(string(e), prefix) {
		c.t.Fatalf("%q: got %#v, want an error starting with %q", args, got, prefix)
	}
}

// expectClosed checks that the server closes the connection without another reply.
func (c *respTestConn) expectClosed() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := c.r.ReadByte(); err == nil {
		rest, _ := c.r.Peek(c.r.Buffered())
		c.t.Fatalf("connection still open: read %q", string(b)+string(rest))
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		c.t.Fatalf("want the connection closed, got %v", err)
	}
}

// readRESPReply reads one RESP2 reply, rejecting anything malformed.
func readRESPReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("malformed line %q", line)
	}
	body := line[1 : len(line)-2]
	if strings.ContainsAny(body, "\r\n") {
		return nil, fmt.Errorf("CR or LF inside line %q", line)
	}
	switch line[0] {
	case '+':
		return respStatus(body), nil
	case '-':
		return respErrReply(body), nil
	case ':':
		n, err := strconv.ParseInt(body, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad integer %q", line)
		}
		return n, nil
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 {
			return nil, fmt.Errorf("bad bulk length %q", line)
		}
		if n == -1 {
			return nil, nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		if string(b[n:]) != "\r\n" {
			return nil, fmt.Errorf("bulk string not followed by CRLF")
		}
		return string(b[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 {
			return nil, fmt.Errorf("bad array length %q", line)
		}
		if n == -1 {
			return respNilArray{}, nil
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readRESPReply(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown reply type %q", line)
}

func list(items ...any) []any {
	if items == nil {
		return []any{}
	}
	return items
}

func TestRESPPingEchoQuit(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.expect(respStatus("PONG"), "PING")
	c.expect(respStatus("PONG"), "ping")
	c.expect("hello", "PING", "hello")
	c.expectErr("ERR wrong number of arguments for 'ping' command", "PING", "a", "b")
	c.expect("a b\r\nc", "ECHO", "a b\r\nc")
	c.expect("", "ECHO", "")
	c.expectErr("ERR wrong number of arguments for 'echo' command", "ECHO")
	c.expect(respStatus("OK"), "QUIT")
	c.expectClosed()
}

func TestRESPUnknownCommandAndArity(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.expect(respErrReply("ERR unknown command 'FOO', with args beginning with: 'a' 'b' "), "FOO", "a", "b")
	c.expect(respErrReply("ERR unknown command 'foo', with args beginning with: "), "foo")
	c.expect(respErrReply("ERR unknown command 'x y', with args beginning with: 'a b' "), "x\ry", "a\nb")
	long := strings.Repeat("z", 300)
	got := c.do("nope", long, long)
	if e, ok := got.(respErrReply); !ok || len(e) > 300 {
		t.Fatalf("unknown command with long args: %#v", got)
	}
	c.expectErr("ERR wrong number of arguments for 'get' command", "GET")
	c.expectErr("ERR wrong number of arguments for 'get' command", "get", "a", "b")
	c.expectErr("ERR wrong number of arguments for 'set' command", "SET", "a")
	c.expectErr("ERR wrong number of arguments for 'mset' command", "MSET", "a", "1", "b")
	c.expect(respStatus("PONG"), "PING") // the connection survives every error above
}

func TestRESPGetSet(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.expect(nil, "GET", "k")
	c.expect(respStatus("OK"), "SET", "k", "v")
	c.expect("v", "GET", "k")
	c.expect(respStatus("OK"), "set", "k", "")
	c.expect("", "GET", "k")
	bin := "a\x00b\r\nc\xff"
	c.expect(respStatus("OK"), "SET", "bin", bin)
	c.expect(bin, "GET", "bin")

	// NX and XX
	c.expect(nil, "SET", "k", "x", "NX")
	c.expect("", "GET", "k")
	c.expect(respStatus("OK"), "SET", "new", "1", "nx")
	c.expect(respStatus("OK"), "SET", "new", "2", "XX")
	c.expect("2", "GET", "new")
	c.expect(nil, "SET", "absent", "1", "XX")
	c.expect(nil, "GET", "absent")
	c.expectErr("ERR syntax error", "SET", "k", "v", "NX", "XX")

	// GET returns the old value whether or not the write happens
	c.expect("2", "SET", "new", "3", "GET")
	c.expect("3", "GET", "new")
	c.expect(nil, "SET", "fresh", "1", "GET")
	c.expect("1", "GET", "fresh")
	c.expect("1", "SET", "fresh", "2", "NX", "GET")
	c.expect("1", "GET", "fresh")

	// expire options
	c.expect(respStatus("OK"), "SET", "e", "v", "EX", "100")
	if ttl := c.do("TTL", "e").(int64); ttl < 99 || ttl > 100 {
		t.Fatalf("TTL after EX 100 = %d", ttl)
	}
	c.expect(respStatus("OK"), "SET", "e", "v", "PX", "100000")
	if pttl := c.do("PTTL", "e").(int64); pttl < 99000 || pttl > 100000 {
		t.Fatalf("PTTL after PX 100000 = %d", pttl)
	}
	at := time.Now().Add(200 * time.Second)
	c.expect(respStatus("OK"), "SET", "e", "v", "EXAT", strconv.FormatInt(at.Unix(), 10))
	if ttl := c.do("TTL", "e").(int64); ttl < 198 || ttl > 200 {
		t.Fatalf("TTL after EXAT now+200s = %d", ttl)
	}
	c.expect(respStatus("OK"), "SET", "e", "v", "PXAT", strconv.FormatInt(at.UnixMilli(), 10))
	if ttl := c.do("TTL", "e").(int64); ttl < 198 || ttl > 200 {
		t.Fatalf("TTL after PXAT now+200s = %d", ttl)
	}
	c.expect(respStatus("OK"), "SET", "e", "w", "KEEPTTL")
	if ttl := c.do("TTL", "e").(int64); ttl < 198 || ttl > 200 {
		t.Fatalf("TTL after KEEPTTL = %d", ttl)
	}
	c.expect("w", "GET", "e")
	c.expect(respStatus("OK"), "SET", "e", "x")
	c.expect(int64(-1), "TTL", "e") // a plain SET drops the TTL
	c.expect(respStatus("OK"), "SET", "past", "v", "EXAT", "1")
	c.expect(nil, "GET", "past")
	c.expect(respStatus("OK"), "SET", "past", "v", "PXAT", strconv.FormatInt(time.Now().UnixMilli()-1000, 10))
	c.expect(nil, "GET", "past")

	c.expectErr("ERR invalid expire time in 'set' command", "SET", "k", "v", "EX", "0")
	c.expectErr("ERR invalid expire time in 'set' command", "SET", "k", "v", "PX", "-5")
	c.expectErr("ERR invalid expire time in 'set' command", "SET", "k", "v", "EXAT", "0")
	c.expectErr("ERR invalid expire time in 'set' command", "SET", "k", "v", "EX", "9223372036854775807")
	c.expectErr("ERR value is not an integer or out of range", "SET", "k", "v", "EX", "abc")
	c.expectErr("ERR value is not an integer or out of range", "SET", "k", "v", "EX", "1.5")
	c.expectErr("ERR syntax error", "SET", "k", "v", "EX")
	c.expectErr("ERR syntax error", "SET", "k", "v", "EX", "10", "PX", "100")
	c.expectErr("ERR syntax error", "SET", "k", "v", "EX", "10", "KEEPTTL")
	c.expectErr("ERR syntax error", "SET", "k", "v", "EX", "abc", "NX", "XX") // syntax first, as Redis
	c.expectErr("ERR syntax error", "SET", "k", "v", "BOGUS")
	c.expectErr("ERR syntax error", "SET", "k", "v", "TAGS")
	c.expectErr("ERR syntax error", "SET", "k", "v", "TAGS", "a", "TAGS", "b")
	c.expect("", "GET", "k") // none of the failed SETs wrote
}

func TestRESPSetVariants(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.expect(int64(1), "SETNX", "a", "1")
	c.expect(int64(0), "SETNX", "a", "2")
	c.expect("1", "GET", "a")

	c.expect(respStatus("OK"), "SETEX", "s", "100", "v")
	c.expect("v", "GET", "s")
	if ttl := c.do("TTL", "s").(int64); ttl < 99 || ttl > 100 {
		t.Fatalf("TTL after SETEX 100 = %d", ttl)
	}
	c.expectErr("ERR invalid expire time in 'setex' command", "SETEX", "s", "0", "v")
	c.expectErr("ERR value is not an integer or out of range", "SETEX", "s", "x", "v")
	c.expect(respStatus("OK"), "PSETEX", "p", "100000", "v")
	if pttl := c.do("PTTL", "p").(int64); pttl < 99000 || pttl > 100000 {
		t.Fatalf("PTTL after PSETEX 100000 = %d", pttl)
	}
	c.expectErr("ERR invalid expire time in 'psetex' command", "PSETEX", "p", "-1", "v")

	c.expect(respStatus("OK"), "MSET", "m1", "x", "m2", "y")
	c.expect(list("x", "y", nil, "1"), "MGET", "m1", "m2", "missing", "a")
	c.expect(list(nil), "MGET", "nothing")
	c.expectErr("ERR key too long (limit 1024 bytes)", "MSET", "ok", "1", strings.Repeat("k", 1025), "2")
	c.expect(nil, "GET", "ok") // checked before anything is written
}

func TestRESPDelExists(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.expect(respStatus("OK"), "MSET", "a", "1", "b", "2", "c", "3")
	c.expect(int64(3), "EXISTS", "a", "b", "a", "missing")
	c.expect(int64(0), "EXISTS", "missing")
	c.expect(int64(2), "DEL", "a", "b", "missing")
	c.expect(int64(0), "DEL", "a")
	c.expect(int64(1), "UNLINK", "c")
	c.expect(int64(0), "EXISTS", "a", "b", "c")
	c.expect(int64(0), "DBSIZE")
}

func TestRESPIncrDecr(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.expect(int64(1), "INCR", "n")
	c.expect(int64(11), "INCRBY", "n", "10")
	c.expect(int64(10), "DECR", "n")
	c.expect(int64(-5), "DECRBY", "n", "15")
	c.expect(int64(-5), "INCRBY", "n", "0")
	c.expect("-5", "GET", "n")
	c.expect(int64(-3), "DECRBY", "fresh", "3")

	c.expect(respStatus("OK"), "SET", "s", "abc")
	c.expectErr("ERR value is not an integer or out of range", "INCR", "s")
	c.expectErr("ERR value is not an integer or out of range", "INCRBY", "n", "x")
	c.expectErr("ERR value is not an integer or out of range", "INCRBY", "n", "99999999999999999999")
	c.expect(respStatus("OK"), "SET", "big", "9223372036854775806")
	c.expect(int64(9223372036854775807), "INCR", "big")
	c.expectErr("ERR increment or decrement would overflow", "INCR", "big")
	c.expect(respStatus("OK"), "SET", "small", "-9223372036854775807")
	c.expectErr("ERR increment or decrement would overflow", "DECRBY", "small", "2")
	c.expectErr("ERR increment or decrement would overflow", "DECRBY", "zero", "-9223372036854775808")

	// INCR keeps the TTL and the tags it found
	c.expect(respStatus("OK"), "SET", "t", "1", "EX", "100", "TAGS", "x")
	c.expect(int64(2), "INCR", "t")
	if ttl := c.do("TTL", "t").(int64); ttl < 99 {
		t.Fatalf("TTL after INCR = %d", ttl)
	}
	c.expect(list("x"), "TAG.OF", "t")
}

func TestRESPExpireTTLPersist(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.expect(int64(-2), "TTL", "k")
	c.expect(int64(-2), "PTTL", "k")
	c.expect(int64(0), "EXPIRE", "k", "10")
	c.expect(int64(0), "PERSIST", "k")

	c.expect(respStatus("OK"), "SET", "k", "v")
	c.expect(int64(-1), "TTL", "k")
	c.expect(int64(-1), "PTTL", "k")
	c.expect(int64(0), "PERSIST", "k")
	c.expect(int64(1), "EXPIRE", "k", "100")
	if ttl := c.do("TTL", "k").(int64); ttl < 99 || ttl > 100 {
		t.Fatalf("TTL after EXPIRE 100 = %d", ttl)
	}
	c.expect(int64(1), "PEXPIRE", "k", "50000")
	if pttl := c.do("PTTL", "k").(int64); pttl < 49000 || pttl > 50000 {
		t.Fatalf("PTTL after PEXPIRE 50000 = %d", pttl)
	}
	c.expect(int64(1), "EXPIREAT", "k", strconv.FormatInt(time.Now().Unix()+300, 10))
	if ttl := c.do("TTL", "k").(int64); ttl < 298 || ttl > 300 {
		t.Fatalf("TTL after EXPIREAT now+300 = %d", ttl)
	}
	c.expect(int64(1), "PEXPIREAT", "k", strconv.FormatInt(time.Now().UnixMilli()+400000, 10))
	if ttl := c.do("TTL", "k").(int64); ttl < 398 || ttl > 400 {
		t.Fatalf("TTL after PEXPIREAT now+400s = %d", ttl)
	}
	c.expect(int64(1), "PERSIST", "k")
	c.expect(int64(-1), "TTL", "k")
	c.expect("v", "GET", "k")

	c.expectErr("ERR value is not an integer or out of range", "EXPIRE", "k", "soon")
	c.expectErr("ERR invalid expire time in 'expire' command", "EXPIRE", "k", "9223372036854775807")
	c.expectErr("ERR Unsupported option NX", "EXPIRE", "k", "10", "NX")

	// A time not in the future deletes.
	c.expect(int64(1), "EXPIRE", "k", "0")
	c.expect(nil, "GET", "k")
	c.expect(int64(0), "EXPIRE", "k", "0")
	c.expect(respStatus("OK"), "SET", "k", "v")
	c.expect(int64(1), "PEXPIRE", "k", "-10")
	c.expect(int64(-2), "TTL", "k")
	c.expect(respStatus("OK"), "SET", "k", "v")
	c.expect(int64(1), "EXPIREAT", "k", "1")
	c.expect(int64(0), "EXISTS", "k")
}

func TestRESPTTLExpiry(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.expect(respStatus("OK"), "SET", "a", "1", "PX", "80")
	c.expect(respStatus("OK"), "SET", "b", "2")
	c.expect(int64(1), "PEXPIRE", "b", "80")
	c.expect(respStatus("OK"), "SETEX", "c", "100", "3")
	c.expect("1", "GET", "a")
	time.Sleep(150 * time.Millisecond)
	c.expect(nil, "GET", "a")
	c.expect(nil, "GET", "b")
	c.expect(int64(-2), "PTTL", "a")
	c.expect(int64(0), "EXISTS", "a", "b")
	c.expect("3", "GET", "c")
}

func TestRESPFlush(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.expect(int64(0), "DBSIZE")
	c.expect(respStatus("OK"), "MSET", "a", "1", "b", "2")
	c.expect(int64(2), "DBSIZE")
	c.expect(respStatus("OK"), "FLUSHALL")
	c.expect(int64(0), "DBSIZE")
	c.expect(respStatus("OK"), "SET", "a", "1")
	c.expect(respStatus("OK"), "FLUSHDB", "ASYNC")
	c.expect(nil, "GET", "a")
	c.expect(respStatus("OK"), "FLUSHALL", "sync")
	c.expectErr("ERR syntax error", "FLUSHALL", "later")
	c.expectErr("ERR syntax error", "FLUSHDB", "ASYNC", "SYNC")
}

func TestRESPTags(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.expect(respStatus("OK"), "SET", "u1", "a", "TAGS", "user:1,page")
	c.expect(respStatus("OK"), "SET", "u2", "b", "EX", "100", "tags", "user:2,page,")
	c.expect(respStatus("OK"), "SET", "u12", "c", "TAGS", "user:1,user:2")
	c.expect(respStatus("OK"), "SET", "plain", "d")

	c.expect(list("page", "user:1"), "TAG.OF", "u1")
	c.expect(list("page", "user:2"), "TAG.OF", "u2")
	c.expect(list(), "TAG.OF", "plain")
	c.expect(respNilArray{}, "TAG.OF", "missing")
	c.expect(list("u1", "u2"), "TAG.KEYS", "page")
	c.expect(list("u1", "u12"), "TAG.KEYS", "user:1")
	c.expect(list(), "TAG.KEYS", "nobody")

	c.expect(int64(1), "TAG.INVALIDATEALL", "user:1", "user:2")
	c.expect(nil, "GET", "u12")
	c.expect(int64(0), "TAG.INVALIDATEALL", "user:1", "user:2")
	c.expect(int64(1), "TAG.INVALIDATE", "user:1")
	c.expect(nil, "GET", "u1")
	c.expect(list("u2"), "TAG.KEYS", "page")
	c.expect(int64(0), "TAG.INVALIDATE", "user:1")

	c.expect(respStatus("OK"), "SET", "x", "1", "TAGS", "t1")
	c.expect(respStatus("OK"), "SET", "y", "1", "TAGS", "t2")
	c.expect(int64(3), "TAG.INVALIDATE", "t1", "t2", "page", "none")
	n.Store().WaitReclaim() // DBSIZE counts entries until the background removal ends
	c.expect(int64(1), "DBSIZE")
	c.expect("d", "GET", "plain")

	// A plain SET replaces the tags; TAGS with an empty list sets none.
	c.expect(respStatus("OK"), "SET", "r", "1", "TAGS", "old")
	c.expect(respStatus("OK"), "SET", "r", "2")
	c.expect(list(), "TAG.OF", "r")
	c.expect(list(), "TAG.KEYS", "old")
	c.expect(respStatus("OK"), "SET", "r", "3", "TAGS", "")
	c.expect(list(), "TAG.OF", "r")

	c.expectErr("ERR tag too long (limit 256 bytes)", "SET", "z", "1", "TAGS", strings.Repeat("t", 257))
	c.expectErr("ERR wrong number of arguments for 'tag.invalidate' command", "TAG.INVALIDATE")
	c.expectErr("ERR wrong number of arguments for 'tag.keys' command", "TAG.KEYS", "a", "b")
}

func TestRESPConnectionCommands(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.expect(respStatus("OK"), "SELECT", "0")
	c.expectErr("ERR DB index is out of range", "SELECT", "1")
	c.expectErr("ERR value is not an integer or out of range", "SELECT", "x")

	for _, req := range [][]string{{"HELLO"}, {"HELLO", "2"}, {"hello", "2", "SETNAME", "me"}} {
		hello, ok := c.do(req...).([]any)
		if !ok || len(hello) != 14 || hello[0] != "server" || hello[4] != "proto" || hello[5] != int64(2) || hello[6] != "id" {
			t.Fatalf("%q = %#v", req, hello)
		}
	}
	c.expect("me", "CLIENT", "GETNAME")
	c.expectErr("NOPROTO", "HELLO", "3")
	c.expectErr("NOPROTO", "HELLO", "1")
	c.expectErr("ERR Protocol version is not an integer or out of range", "HELLO", "two")
	c.expectErr("ERR Syntax error in HELLO option 'bogus'", "HELLO", "2", "bogus")

	c.expect(respStatus("OK"), "CLIENT", "SETNAME", "worker-1")
	c.expect("worker-1", "CLIENT", "GETNAME")
	c.expectErr("ERR Client names cannot contain spaces", "CLIENT", "SETNAME", "a b")
	c.expect(respStatus("OK"), "CLIENT", "SETINFO", "LIB-NAME", "go-redis")
	c.expect(respStatus("OK"), "client", "setinfo", "lib-ver", "9.0")
	c.expectErr("ERR Unrecognized option 'color'", "CLIENT", "SETINFO", "color", "red")
	c.expectErr("ERR wrong number of arguments for 'client|setname' command", "CLIENT", "SETNAME")
	c.expectErr("ERR unknown subcommand 'BOGUS'. Try CLIENT HELP.", "CLIENT", "BOGUS")
	id1 := c.do("CLIENT", "ID").(int64)
	c2 := dialRESP(t, n)
	c2.expect(nil, "CLIENT", "GETNAME")
	if id2 := c2.do("CLIENT", "ID").(int64); id2 == id1 {
		t.Fatalf("two connections share CLIENT ID %d", id1)
	}

	count := c.do("COMMAND", "COUNT").(int64)
	all := c.do("COMMAND").([]any)
	if int64(len(all)) != count || count < 30 {
		t.Fatalf("COMMAND lists %d commands, COMMAND COUNT says %d", len(all), count)
	}
	info := c.do("COMMAND", "INFO", "get", "nope").([]any)
	get := info[0].([]any)
	if len(info) != 2 || info[1] != nil || len(get) != 10 || get[0] != "get" || get[1] != int64(2) || get[3] != int64(1) {
		t.Fatalf("COMMAND INFO get nope = %#v", info)
	}
	c.expect(list(), "COMMAND", "DOCS")
	c.expectErr("ERR unknown subcommand 'x'. Try COMMAND HELP.", "COMMAND", "x")

	c.expect(list("save", ""), "CONFIG", "GET", "save")
	c.expect(list("appendonly", "no"), "CONFIG", "GET", "appendonly")
	c.expect(list("appendonly", "no"), "CONFIG", "GET", "APPENDONLY")
	c.expect(list(), "CONFIG", "GET", "unknown-thing")
	c.expect(list("appendonly", "no", "save", ""), "CONFIG", "GET", "save", "appendonly")
	if all := c.do("CONFIG", "GET", "*").([]any); len(all) < 4 {
		t.Fatalf("CONFIG GET * = %#v", all)
	}
	c.expectErr("ERR wrong number of arguments for 'config|get' command", "CONFIG", "GET")
	c.expectErr("ERR Unknown option", "CONFIG", "SET", "save", "")
}

func TestRESPInfo(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	info := c.do("INFO").(string)
	for _, want := range []string{"# Server\r\n", "redis_version:", "# Clients\r\n", "connected_clients:1\r\n",
		"# Memory\r\n", "used_memory:", "# Stats\r\n", "total_commands_processed:", "keyspace_hits:",
		"# Cluster\r\ncluster_enabled:0\r\n", "# Keyspace\r\n",
		"tcp_port:" + strconv.Itoa(n.Addr("resp").(*net.TCPAddr).Port) + "\r\n"} {
		if !strings.Contains(info, want) {
			t.Errorf("INFO lacks %q:\n%s", want, info)
		}
	}
	if strings.Contains(info, "db0:") {
		t.Errorf("INFO lists an empty db0:\n%s", info)
	}
	c.expect(respStatus("OK"), "MSET", "a", "1", "b", "2")
	c.expect("1", "GET", "a")
	ks := c.do("INFO", "keyspace").(string)
	if ks != "# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n" {
		t.Fatalf("INFO keyspace = %q", ks)
	}
	st := c.do("info", "STATS", "cluster").(string)
	if !strings.HasPrefix(st, "# Stats\r\n") || !strings.Contains(st, "keyspace_hits:1\r\n") ||
		!strings.HasSuffix(st, "\r\n# Cluster\r\ncluster_enabled:0\r\n") || strings.Contains(st, "# Server") {
		t.Fatalf("INFO stats cluster = %q", st)
	}
	c.expect("", "INFO", "nosuchsection")
	if all := c.do("INFO", "everything").(string); !strings.HasPrefix(all, "# Server\r\n") || !strings.Contains(all, "# Keyspace") {
		t.Fatalf("INFO everything = %q", all)
	}
}

func TestRESPLimitErrors(t *testing.T) {
	n := startRESPNode(t, func(c *Config) { c.Cache.MaxValueBytes = 1000 })
	c := dialRESP(t, n)
	c.expectErr("ERR value too large (limit 1000 bytes)", "SET", "k", strings.Repeat("v", 1001))
	c.expectErr("ERR key too long (limit 1024 bytes)", "SET", strings.Repeat("k", 1025), "v")
	c.expectErr("ERR empty keys are not supported", "SET", "", "v")
	c.expectErr("ERR value too large (limit 1000 bytes)", "MSET", "a", "1", "b", strings.Repeat("v", 1001))
	c.expect(nil, "GET", "a")
	c.expect(respStatus("OK"), "SET", "k", strings.Repeat("v", 1000))
	c.expect(nil, "GET", "")
}

func TestRESPOversizeBulkRejected(t *testing.T) {
	n := startRESPNode(t, func(c *Config) { c.Cache.MaxValueBytes = 1000 })
	maxBulk := newRESPServer(n).maxBulk
	c := dialRESP(t, n)
	c.sendRaw(fmt.Sprintf("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n", maxBulk+1))
	c.expect(respErrReply("ERR Protocol error: invalid bulk length"), "PING") // the PING is never run
	c.expectClosed()

	for _, tc := range []struct{ in, want string }{
		{"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"},
		{"*2\r\n$3\r\nGET\r\n$abc\r\n", "ERR Protocol error: invalid bulk length"},
		{"*2\r\n$3\r\nGET\r\n:1\r\n", "ERR Protocol error: expected '$', got ':'"},
		{"*x\r\n", "ERR Protocol error: invalid multibulk length"},
		{"*2000000\r\n", "ERR Protocol error: invalid multibulk length"},
		{"*1\r\n$" + strings.Repeat("1", 70000), "ERR Protocol error: too big bulk count string"},
		{"*" + strings.Repeat("1", 70000), "ERR Protocol error: too big mbulk count string"},
		{"GET " + strings.Repeat("k", 70000), "ERR Protocol error: too big inline request"},
		{"SET k \"unterminated\r\n", "ERR Protocol error: unbalanced quotes in request"},
	} {
		c := dialRESP(t, n)
		c.sendRaw("PING\r\n" + tc.in)
		if got := c.read(); got != respStatus("PONG") { // requests before the bad one are answered
			t.Fatalf("%.40q: got %#v before the error", tc.in, got)
		}
		if got := c.read(); got != respErrReply(tc.want) {
			t.Errorf("%.40q: got %#v, want %q", tc.in, got, tc.want)
		}
		c.expectClosed()
	}
}

func TestRESPLargeValues(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB, the default value limit
	c.send("SET", "big", big)
	c.send("SET", "small", "s")
	c.send("GET", "big")
	c.send("GET", "small")
	c.send("PING")
	if c.read() != respStatus("OK") || c.read() != respStatus("OK") || c.read() != big || c.read() != "s" || c.read() != respStatus("PONG") {
		t.Fatal("pipelined large values were not answered in order")
	}
	c.expectErr("ERR value too large", "SET", "big", big+"x")
}

func TestRESPRequestInPieces(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	req := string(respRequest("SET", "key", "a value\r\nwith CRLF")) + string(respRequest("GET", "key")) + "PING\r\n"
	for i := 0; i < len(req); i++ {
		c.sendRaw(req[i : i+1])
		if i%7 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if c.read() != respStatus("OK") || c.read() != "a value\r\nwith CRLF" || c.read() != respStatus("PONG") {
		t.Fatal("a request sent byte by byte was not answered")
	}
}

func TestRESPInline(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.sendRaw("PING\r\n")
	c.expect(respStatus("PONG"), "PING") // also checks the inline reply came first
	if got := c.read(); got != respStatus("PONG") {
		t.Fatalf("got %#v", got)
	}
	c.sendRaw("\r\n\n   \r\nset k 'a b'\r\n")
	if got := c.read(); got != respStatus("OK") {
		t.Fatalf("inline SET with quotes: %#v", got)
	}
	c.expect("a b", "GET", "k")
	c.sendRaw("set  k2   \"x\\x41y\\n\\\"q\\\"\"\nget k2\n") // bare LF line ends work too
	if a, b := c.read(), c.read(); a != respStatus("OK") || b != "xAy\n\"q\"" {
		t.Fatalf("inline escapes: %#v %#v", a, b)
	}
	c.sendRaw("set k3 'it\\'s'\r\nGET k3\r\necho \"\"\r\n")
	if a, b, d := c.read(), c.read(), c.read(); a != respStatus("OK") || b != "it's" || d != "" {
		t.Fatalf("inline quoting: %#v %#v %#v", a, b, d)
	}
	c.sendRaw("GET \"a\"b\r\n")
	if got := c.read(); got != respErrReply("ERR Protocol error: unbalanced quotes in request") {
		t.Fatalf("closing quote followed by a character: %#v", got)
	}
	c.expectClosed()
}

func TestRESPSplitInline(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		ok   bool
	}{
		{"", nil, true},
		{"  a  b\tc ", []string{"a", "b", "c"}, true},
		{`"a b" 'c d'`, []string{"a b", "c d"}, true},
		{`x"y z"w`, nil, false},
		{`x"y z" w`, []string{"xy z", "w"}, true},
		{`"\x41\x4a\xZZ\n\t\\"`, []string{"AJxZZ\n\t\\"}, true},
		{`"unterminated`, nil, false},
		{`'unterminated`, nil, false},
		{`'a\'b\n'`, []string{`a'b\n`}, true},
		{`"" ''`, []string{"", ""}, true},
	} {
		got, ok := splitInline([]byte(tc.in), nil)
		var gs []string
		for _, g := range got {
			gs = append(gs, string(g))
		}
		if ok != tc.ok || (ok && !reflect.DeepEqual(gs, tc.want)) {
			t.Errorf("splitInline(%q) = %q, %v; want %q, %v", tc.in, gs, ok, tc.want, tc.ok)
		}
	}
}

func TestRESPParseInt(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1": 1, "-1": -1, "9223372036854775807": 1<<63 - 1, "-9223372036854775808": -1 << 63} {
		if got, ok := parseRESPInt([]byte(in)); !ok || got != want {
			t.Errorf("parseRESPInt(%q) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "-", "+1", " 1", "1 ", "01", "-0", "1.0", "9223372036854775808", "-9223372036854775809", "99999999999999999999", "abc"} {
		if got, ok := parseRESPInt([]byte(in)); ok {
			t.Errorf("parseRESPInt(%q) = %d, want an error", in, got)
		}
	}
}

func TestRESPPipelining1000(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	var batch []byte
	for i := range 1000 {
		batch = append(batch, respRequest("SET", "k"+strconv.Itoa(i), strconv.Itoa(i))...)
	}
	for i := range 1000 {
		batch = append(batch, respRequest("GET", "k"+strconv.Itoa(i))...)
	}
	go c.c.Write(batch) // the replies must be read while the batch is written
	for i := range 1000 {
		if got := c.read(); got != respStatus("OK") {
			t.Fatalf("SET %d: %#v", i, got)
		}
	}
	for i := range 1000 {
		if got := c.read(); got != strconv.Itoa(i) {
			t.Fatalf("GET %d: %#v", i, got)
		}
	}
}

func TestRESPConcurrentClients(t *testing.T) {
	n := startRESPNode(t, nil)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialRESP(t, n)
			key := "ctr" + strconv.Itoa(w%2)
			for range 200 {
				if _, ok := c.do("INCR", key).(int64); !ok {
					t.Error("INCR failed")
					return
				}
			}
		}()
	}
	wg.Wait()
	c := dialRESP(t, n)
	c.expect("800", "GET", "ctr0")
	c.expect("800", "GET", "ctr1")
}

func TestRESPAuthRequired(t *testing.T) {
	n := startRESPNode(t, func(c *Config) { c.TCPAuth = "on" })
	c := dialRESP(t, n)
	c.expect(respErrReply(errRESPNoAuth), "PING")
	c.expect(respErrReply(errRESPNoAuth), "GET", "k")
	c.expect(respErrReply(errRESPNoAuth), "SET", "k", "v")
	c.expectErr("ERR unknown command 'nope'", "nope") // as Redis: checked before auth
	c.expectErr("NOAUTH HELLO must be called with the client already authenticated", "HELLO", "2")
	c.expect(respErrReply(errRESPWrongPass), "AUTH", "wrong")
	c.expect(respErrReply(errRESPWrongPass), "AUTH", DefaultUsername, "wrong")
	c.expect(respErrReply(errRESPWrongPass), "AUTH", "root", DefaultPassword)
	c.expectErr("ERR syntax error", "AUTH", "a", "b", "c")
	c.expect(respStatus("OK"), "AUTH", DefaultPassword) // one argument: the configured username
	c.expect(respStatus("PONG"), "PING")
	c.expect(respStatus("OK"), "SET", "k", "v")

	c2 := dialRESP(t, n)
	c2.expect(respStatus("OK"), "AUTH", DefaultUsername, DefaultPassword)
	c2.expect("v", "GET", "k")

	c3 := dialRESP(t, n)
	if hello, ok := c3.do("HELLO", "2", "AUTH", DefaultUsername, DefaultPassword).([]any); !ok || len(hello) != 14 {
		t.Fatalf("HELLO 2 AUTH: %#v", hello)
	}
	c3.expect("v", "GET", "k")
	c4 := dialRESP(t, n)
	c4.expect(respErrReply(errRESPWrongPass), "HELLO", "2", "AUTH", DefaultUsername, "nope")
	c4.expect(respErrReply(errRESPNoAuth), "GET", "k")

	// Repeated failures close the connection.
	c5 := dialRESP(t, n)
	for range maxAuthFailures {
		c5.expect(respErrReply(errRESPWrongPass), "AUTH", "guess")
	}
	c5.expectClosed()

	// Before AUTH only small requests are read.
	c6 := dialRESP(t, n)
	c6.send("SET", "k", strings.Repeat("v", 20000))
	c6.expectErrReply("ERR Protocol error: unauthenticated bulk length")
	c7 := dialRESP(t, n)
	c7.send("MGET", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11")
	c7.expectErrReply("ERR Protocol error: unauthenticated multibulk length")
	c8 := dialRESP(t, n)
	c8.sendRaw(string(respRequest("AUTH", DefaultPassword)) + string(respRequest("SET", "k", strings.Repeat("v", 20000))))
	if c8.read() != respStatus("OK") || c8.read() != respStatus("OK") {
		t.Fatal("a large request pipelined after AUTH was refused")
	}
}

// expectErr without a request reads the next reply and checks it is an error.
func (c *respTestConn) expectErrReply(prefix string) {
	c.t.Helper()
	if e, ok := c.read().(respErrReply); !ok || !strings.HasPrefix(string(e), prefix) {
		c.t.Fatalf("got %#v, want an error starting with %q", e, prefix)
	}
}

func TestRESPAuthOffByDefaultOnLoopback(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.expect(respStatus("PONG"), "PING")
	c.expect(respStatus("OK"), "AUTH", DefaultUsername, DefaultPassword)
	c.expect(respErrReply(errRESPWrongPass), "AUTH", "wrong")
}

func TestRESPMaxConnections(t *testing.T) {
	n := startRESPNode(t, func(c *Config) { c.MaxConnections = 2 })
	a, b := dialRESP(t, n), dialRESP(t, n)
	a.expect(respStatus("PONG"), "PING")
	b.expect(respStatus("PONG"), "PING")
	c := dialRESP(t, n)
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := readRESPReply(c.r); err != nil || got != respErrReply("ERR max number of clients reached") {
		t.Fatalf("third connection: %#v, %v", got, err)
	}
	a.c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d := dialRESP(t, n)
		d.send("PING")
		d.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, _ := readRESPReply(d.r); got == respStatus("PONG") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection's slot was not freed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRESPIdleTimeout(t *testing.T) {
	n := startRESPNode(t, func(c *Config) { c.IdleTimeout = 150 * time.Millisecond })
	c := dialRESP(t, n)
	c.expect(respStatus("PONG"), "PING")
	start := time.Now()
	c.expectClosed()
	if d := time.Since(start); d < 100*time.Millisecond || d > 3*time.Second {
		t.Fatalf("idle connection closed after %s, want about 150ms", d)
	}
}

func TestRESPGracefulShutdown(t *testing.T) {
	n, err := New(Config{Bind: "127.0.0.1", TCPPort: -1, HTTPPort: -1, RESPPort: 0})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	idle := dialRESP(t, n)
	idle.expect(respStatus("PONG"), "PING")
	busy := dialRESP(t, n)
	var batch []byte
	const total = 20000
	for i := range total {
		batch = append(batch, respRequest("SET", "k"+strconv.Itoa(i), "v")...)
	}
	go busy.c.Write(batch)
	if got := busy.read(); got != respStatus("OK") { // the server is running the batch
		t.Fatalf("first reply: %#v", got)
	}
	replies, refused := 1, 0
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- n.Shutdown(ctx)
	}()
	busy.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		v, err := readRESPReply(busy.r)
		if err != nil {
			break
		}
		switch {
		case v == respErrReply(respRefusal):
			refused++ // read while closing: not run (docs/protocol.md, "closing")
		case v == respStatus("OK") && refused == 0:
			replies++
		default:
			t.Fatalf("reply %d (after %d refusals) during shutdown: %#v", replies+refused, refused, v)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	t.Logf("%d of %d pipelined requests were run and answered, %d refused, before shutdown closed the connection", replies, total, refused)
	idle.expectClosed()
	// Every request the server ran was answered: there are as many entries as replies.
	if items := n.Store().Stats().Items; items != int64(replies) {
		t.Fatalf("%d SETs were stored but %d replies received", items, replies)
	}
	if _, err := net.DialTimeout("tcp", n.Addr("resp").String(), time.Second); err == nil {
		t.Fatal("the listener accepts connections after shutdown")
	}
}

func TestRESPMetrics(t *testing.T) {
	n := startRESPNode(t, nil)
	c := dialRESP(t, n)
	c.expect(respStatus("OK"), "SET", "k", "v")
	c.expect("v", "GET", "k")
	c.expectErr("ERR wrong number", "GET")
	c.expectErr("ERR unknown command", "BOGUS")
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(n.Metrics().Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`tagcache_requests_total{command="set",protocol="resp",result="ok"} 1`,
		`tagcache_requests_total{command="get",protocol="resp",result="ok"} 1`,
		`tagcache_requests_total{command="get",protocol="resp",result="error"} 1`,
		`tagcache_requests_total{command="unknown",protocol="resp",result="error"} 1`,
		`tagcache_request_duration_seconds_count{command="get",protocol="resp"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestRESPRedisTools drives the node with redis-cli and redis-benchmark when they are
// installed.
func TestRESPRedisTools(t *testing.T) {
	cli, err1 := exec.LookPath("redis-cli")
	bench, err2 := exec.LookPath("redis-benchmark")
	if err1 != nil || err2 != nil {
		t.Skip("redis-cli or redis-benchmark not installed")
	}
	n := startRESPNode(t, nil)
	port := strconv.Itoa(n.Addr("resp").(*net.TCPAddr).Port)
	run := func(name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, name, append([]string{"-p", port}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %q: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	if out := run(cli, "set", "a", "b"); out != "OK\n" {
		t.Fatalf("redis-cli set: %q", out)
	}
	if out := run(cli, "get", "a"); out != "b\n" {
		t.Fatalf("redis-cli get: %q", out)
	}
	if out := run(cli, "info"); !strings.Contains(out, "redis_version:") || strings.Contains(out, "ERR") {
		t.Fatalf("redis-cli info: %q", out)
	}
	if out := run(cli, "set", "t", "v", "TAGS", "x,y"); out != "OK\n" {
		t.Fatalf("redis-cli set with tags: %q", out)
	}
	if out := run(cli, "tag.invalidate", "y"); out != "(integer) 1\n" && out != "1\n" {
		t.Fatalf("redis-cli tag.invalidate: %q", out)
	}
	out := run(bench, "-t", "set,get", "-n", "2000", "-c", "10", "-q")
	out = strings.ReplaceAll(out, "\r", "\n")
	if strings.Contains(strings.ToLower(out), "err") || strings.Contains(out, "WARNING") ||
		!strings.Contains(out, "SET: ") || !strings.Contains(out, "GET: ") {
		t.Fatalf("redis-benchmark:\n%s", out)
	}
	out = run(bench, "-t", "set,get,incr,mset", "-n", "2000", "-c", "10", "-P", "16", "-q")
	if strings.Contains(strings.ToLower(out), "err") || strings.Contains(out, "WARNING") {
		t.Fatalf("redis-benchmark -P 16:\n%s", out)
	}
}

// respBenchConn delivers the same batch of requests on every read, rounds times, and
// discards the replies.
type respBenchConn struct {
	respFuzzConn
	batch  []byte
	rounds int
}

func (c *respBenchConn) Read(p []byte) (int, error) {
	if c.rounds == 0 {
		return 0, io.EOF
	}
	c.rounds--
	return copy(p, c.batch), nil
}

func (c *respBenchConn) Write(p []byte) (int, error) { return len(p), nil }

// benchmarkRESP measures the server's CPU per request, without the network: batches of
// 16 pipelined requests, as redis-benchmark -P 16 sends them.
func benchmarkRESP(b *testing.B, args ...string) {
	n, err := New(Config{Bind: "127.0.0.1", TCPPort: -1, HTTPPort: -1, RESPPort: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	n.Store().Put("key:000001", []byte("xxx"), 0, nil)
	s := newRESPServer(n)
	var batch []byte
	for range 16 {
		batch = append(batch, respRequest(args...)...)
	}
	b.ReportAllocs()
	b.ResetTimer()
	s.serveConn(&respBenchConn{batch: batch, rounds: b.N/16 + 1})
}

func BenchmarkRESPGet(b *testing.B)  { benchmarkRESP(b, "GET", "key:000001") }
func BenchmarkRESPSet(b *testing.B)  { benchmarkRESP(b, "SET", "key:000001", "xxx") }
func BenchmarkRESPPing(b *testing.B) { benchmarkRESP(b, "PING") }
