package node_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tagcache/tagcache/cache"
	"github.com/tagcache/tagcache/node"
)

// These tests drive a real node over a real loopback socket with the TagCache text
// protocol, one test per promise of PROTOCOL.md's TCP table and of known defect 10.
// Every test name contains "Text" or "Defect", so `go test -run 'Text|Proto|Defect'`
// selects them all.

// replyTimeout bounds every read and write a test client does.
const replyTimeout = 5 * time.Second

// startTextNode starts a node serving only the text protocol on a free loopback port and
// returns it with the address to dial (its only listener, so Addrs()[0]). The node is shut down when the test ends.
// bothDrivers runs test with connections served by event loops and by one goroutine
// each (Config.Goroutines): the closing and idle contracts are the servers', whichever
// drives the connection.
func bothDrivers(t *testing.T, test func(t *testing.T, goroutines bool)) {
	t.Run("loops", func(t *testing.T) { test(t, false) })
	t.Run("goroutines", func(t *testing.T) { test(t, true) })
}

func startTextNode(t testing.TB, cfg node.Config) (*node.Node, string) {
	t.Helper()
	if cfg.Bind == "" {
		cfg.Bind = "127.0.0.1"
	}
	cfg.TCPPort = 0
	cfg.HTTPPort = -1
	cfg.RESPPort = -1
	n, err := node.New(cfg)
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	if err := n.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { shutdownNode(t, n) })
	return n, n.Addrs()[0].String()
}

func shutdownNode(t testing.TB, n *node.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// textClient is a minimal text-protocol client: it writes lines and reads reply lines,
// each under a deadline.
type textClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dialText(t testing.TB, addr string) *textClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, replyTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &textClient{t: t, conn: c, r: bufio.NewReaderSize(c, 64<<10)}
}

// write sends s as it is, in one write.
func (c *textClient) write(s string) {
	c.t.Helper()
	if err := c.writeErr(s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *textClient) writeErr(s string) error {
	c.conn.SetWriteDeadline(time.Now().Add(replyTimeout))
	_, err := io.WriteString(c.conn, s)
	return err
}

// send writes each line followed by "\n", all in one write (pipelined).
func (c *textClient) send(lines ...string) {
	c.t.Helper()
	c.write(strings.Join(lines, "\n") + "\n")
}

// readLine returns the next reply line without its "\n".
func (c *textClient) readLine() (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(replyTimeout))
	line, err := c.r.ReadString('\n')
	if err != nil {
		if line != "" {
			return "", fmt.Errorf("partial reply %q: %w", line, err)
		}
		return "", err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// reply reads the next reply line and fails the test if there is none.
func (c *textClient) reply() string {
	c.t.Helper()
	line, err := c.readLine()
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	return line
}

// do sends one command and returns its reply.
func (c *textClient) do(line string) string {
	c.t.Helper()
	c.send(line)
	return c.reply()
}

// expect sends one command and checks its reply.
func (c *textClient) expect(line, want string) {
	c.t.Helper()
	if got := c.do(line); got != want {
		c.t.Fatalf("%s\n got: %q\nwant: %q", showCmd(line), got, want)
	}
}

// expectReplies reads len(want) replies and checks them in order.
func (c *textClient) expectReplies(want ...string) {
	c.t.Helper()
	for i, w := range want {
		if got := c.reply(); got != w {
			c.t.Fatalf("reply %d: got %q, want %q", i, got, w)
		}
	}
}

// expectClosed checks that the server closes the connection with nothing more to say.
func (c *textClient) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(replyTimeout))
	rest, err := io.ReadAll(c.r)
	if len(rest) > 0 {
		c.t.Fatalf("expected the connection to close, got %q", rest)
	}
	if err != nil && !isConnReset(err) {
		c.t.Fatalf("expected the connection to close, got %v", err)
	}
}

func isConnReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func showCmd(line string) string {
	if len(line) > 80 {
		return fmt.Sprintf("%q… (%d bytes)", line[:80], len(line))
	}
	return fmt.Sprintf("%q", line)
}

// eventually polls cond every 10ms until it is true or within has passed.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --- reply shapes -----------------------------------------------------------------------

// replyPrefixes are the beginnings of every reply the text protocol can send.
var replyPrefixes = []string{"OK", "ADDED", "EXISTS", "VALUE\t", "NF", "DEL ok", "DEL nf",
	"INV_TAG\t", "INV_TAGS_ANY\t", "INV_TAGS_ALL\t", "INV_KEYS\t", "KEYS\t", "STATS\t",
	"FLUSH\t", "ERR "}

// errReplyRE matches every ERR reply a command can get once its line has been read.
var errReplyRE = regexp.MustCompile(`^ERR (missing_key|missing_tag|missing_tags|empty_tags|` +
	`missing_keys|empty_keys|invalid_ttl|invalid_number|value is not an integer|` +
	`integer overflow|unauthorized|unknown_command|` +
	`(key too long|value too large|tag too long) \(limit [0-9]+ bytes\)|too many tags \(limit [0-9]+ tags\))$`)

// successReplyRE is the shape of a verb's non-error reply.
var successReplyRE = map[string]*regexp.Regexp{
	"PUT":          regexp.MustCompile(`^OK$`),
	"ADD":          regexp.MustCompile(`^(ADDED|EXISTS)$`),
	"INCR":         regexp.MustCompile(`^VALUE\t-?[0-9]+$`),
	"DECR":         regexp.MustCompile(`^VALUE\t-?[0-9]+$`),
	"GET":          regexp.MustCompile(`^(VALUE\t(?s:.*)|NF)$`),
	"DEL":          regexp.MustCompile(`^DEL (ok|nf)$`),
	"INV_TAG":      regexp.MustCompile(`^INV_TAG\t[0-9]+$`),
	"INV_TAGS_ANY": regexp.MustCompile(`^INV_TAGS_ANY\t[0-9]+$`),
	"INV_TAGS_ALL": regexp.MustCompile(`^INV_TAGS_ALL\t[0-9]+$`),
	"INV_KEYS":     regexp.MustCompile(`^INV_KEYS\t[0-9]+$`),
	"KEYS_BY_TAG":  regexp.MustCompile(`^KEYS\t(?s:.*)$`),
	"KEYS":         regexp.MustCompile(`^KEYS\t(?s:.*)$`),
	"STATS":        regexp.MustCompile(`^STATS\t[0-9]+\t[0-9]+\t[0-9]+\t[0-9]+\t[01]\.[0-9]{6}$`),
	"FLUSH":        regexp.MustCompile(`^FLUSH\t[0-9]+$`),
	"AUTH":         regexp.MustCompile(`^OK$`),
}

// asciiUpper upper-cases ASCII letters only, as the server does with verbs (a Unicode
// upper-casing would turn "keyſ" into "KEYS").
func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}

// verbOf returns the upper-cased verb of a command line.
func verbOf(line string) string {
	verb, _, _ := strings.Cut(line, "\t")
	return asciiUpper(verb)
}

// checkReply reports whether reply is a well-formed reply to a command with this verb
// (already upper-cased).
func checkReply(verb, reply string) error {
	known := false
	for _, p := range replyPrefixes {
		if strings.HasPrefix(reply, p) {
			known = true
			break
		}
	}
	if !known {
		return fmt.Errorf("reply %q to %q starts with no known reply prefix", reply, verb)
	}
	ok, isVerb := successReplyRE[verb]
	switch {
	case !isVerb:
		if reply != "ERR unknown_command" {
			return fmt.Errorf("unknown verb %q got %q, want ERR unknown_command", verb, reply)
		}
	case strings.HasPrefix(reply, "ERR "):
		if !errReplyRE.MatchString(reply) {
			return fmt.Errorf("reply %q to %s is not a known error", reply, verb)
		}
		if reply == "ERR unknown_command" {
			return fmt.Errorf("known verb %s got ERR unknown_command", verb)
		}
	case !ok.MatchString(reply):
		return fmt.Errorf("reply %q to %s does not match %s", reply, verb, ok)
	}
	return nil
}

// --- PROTOCOL.md's TCP table, row by row ---------------------------------------------------

func TestTextPutReplyIsOKAndValueKeepsItsTabs(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("PUT\tk\t-\t-\ta\tb\t\tc", "OK")
	c.expect("GET\tk", "VALUE\ta\tb\t\tc")
	c.expect("PUT\tk\t-\t-\tnew", "OK") // PUT replaces
	c.expect("GET\tk", "VALUE\tnew")
}

func TestTextPutWithOnlyAKeyStoresAnEmptyValue(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("PUT\tk", "OK")
	c.expect("GET\tk", "VALUE\t")
	c.expect("PUT\tk2\t-\t-\t", "OK")
	c.expect("GET\tk2", "VALUE\t")
}

func TestTextAddSetsOnlyWhenKeyIsAbsent(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("ADD\tk\t-\tt1\tfirst", "ADDED")
	c.expect("ADD\tk\t-\t-\tsecond", "EXISTS")
	c.expect("GET\tk", "VALUE\tfirst")
	c.expect("KEYS\tt1", "KEYS\tk") // the refused ADD left the tags alone
	// An expired entry counts as absent.
	c.expect("PUT\tgone\t0\t-\told", "OK")
	c.expect("ADD\tgone\t-\t-\tfresh", "ADDED")
	c.expect("GET\tgone", "VALUE\tfresh")
}

func TestTextIncrAndDecrDefaultToOneAndTakeAnExplicitAmount(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("INCR\tc", "VALUE\t1") // missing key created with by=1
	c.expect("INCR\tc", "VALUE\t2")
	c.expect("INCR\tc\t5", "VALUE\t7")
	c.expect("INCR\tc\t-", "VALUE\t8") // "-" means the default
	c.expect("INCR\tc\t", "VALUE\t9")  // so does an empty field
	c.expect("DECR\tc", "VALUE\t8")
	c.expect("DECR\tc\t10", "VALUE\t-2")
	c.expect("INCR\tc\t-3", "VALUE\t-5")
	c.expect("GET\tc", "VALUE\t-5")
}

func TestTextIncrOfMissingKeyCreatesItWithTheAmount(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("INCR\tnew\t5", "VALUE\t5")
	c.expect("GET\tnew", "VALUE\t5")
	c.expect("DECR\tnew2\t3", "VALUE\t-3")
	c.expect("INCR\ttagged\t2\t-\tt1,t2", "VALUE\t2")
	c.expect("KEYS\tt2", "KEYS\ttagged")
	c.expect("INCR\texp\t1\t0", "VALUE\t1") // TTL 0: created already expired
	c.expect("GET\texp", "NF")
}

func TestTextIncrOfNonIntegerValueIsAnError(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	for _, v := range []string{"abc", "1.5", " 1", "", "12abc"} {
		c.expect("PUT\tk\t-\t-\t"+v, "OK")
		c.expect("INCR\tk", "ERR value is not an integer")
		c.expect("DECR\tk\t2", "ERR value is not an integer")
		c.expect("GET\tk", "VALUE\t"+v) // left as it was
	}
}

func TestTextIncrOverflowIsAnErrorAndLeavesTheValue(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("PUT\tmax\t-\t-\t9223372036854775807", "OK")
	c.expect("INCR\tmax", "ERR integer overflow")
	c.expect("DECR\tmax\t-1", "ERR integer overflow")
	c.expect("GET\tmax", "VALUE\t9223372036854775807")
	c.expect("PUT\tmin\t-\t-\t-9223372036854775808", "OK")
	c.expect("DECR\tmin", "ERR integer overflow")
	c.expect("INCR\tmin\t-1", "ERR integer overflow")
	c.expect("GET\tmin", "VALUE\t-9223372036854775808")
	c.expect("DECR\tz\t-9223372036854775808", "ERR integer overflow") // -by does not fit
	c.expect("INCR\tz\t-9223372036854775808", "VALUE\t-9223372036854775808")
}

func TestTextIncrWithUnparseableAmountIsInvalidNumber(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("PUT\tk\t-\t-\t10", "OK")
	for _, by := range []string{"abc", "1.5", " 1", "1 ", "+-1", "0x10", "1e3", "9223372036854775808"} {
		c.expect("INCR\tk\t"+by, "ERR invalid_number")
		c.expect("DECR\tk\t"+by, "ERR invalid_number")
	}
	c.expect("GET\tk", "VALUE\t10")
	c.expect("INCR\tmissing\tx", "ERR invalid_number")
	c.expect("GET\tmissing", "NF") // nothing was created
}

// A rate-limit counter incremented more often than its TTL must still expire (known
// defect 9): INCR keeps the TTL it found.
func TestTextIncrKeepsTheTTLItFound(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("PUT\tctr\t300\t-\t0", "OK")
	start := time.Now()
	n := 0
	for {
		n++
		got := c.do("INCR\tctr")
		if got == "VALUE\t1" && n > 1 {
			break // the old counter expired and INCR started a new one
		}
		if want := fmt.Sprintf("VALUE\t%d", n); got != want {
			t.Fatalf("INCR %d: got %q, want %q", n, got, want)
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("counter with a 300ms TTL still alive after %d INCRs in %s", n, time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Promise 5 is about never serving after the TTL; expiring slightly early is allowed.
	// The store counts whole wall-clock milliseconds and a VM's wall clock steps against
	// the monotonic clock this test measures with (12 ms once under -race in a busy run),
	// so the bound only catches an INCR that shortened the TTL, not a few milliseconds.
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("counter expired after %s, before its 300ms TTL", el)
	}
	// A new TTL given to INCR replaces the old one.
	c.expect("PUT\tctr2\t-\t-\t5", "OK")
	c.expect("INCR\tctr2\t1\t0", "VALUE\t6")
	c.expect("GET\tctr2", "NF")
}

func TestTextGetRepliesValueOrNF(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("GET\tk", "NF")
	c.expect("PUT\tk\t-\t-\tv", "OK")
	c.expect("GET\tk", "VALUE\tv")
	c.expect("GET\tk\tjunk\tmore", "VALUE\tv") // extra fields are ignored
	c.expect("GET\tK", "NF")                   // keys are case-sensitive
	c.expect("GET\t", "NF")                    // an empty key is never stored
}

func TestTextDelReplyUsesSpaceNotTab(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("PUT\tk\t-\t-\tv", "OK")
	c.expect("DEL\tk", "DEL ok")
	c.expect("DEL\tk", "DEL nf")
	c.expect("GET\tk", "NF")
	c.expect("DEL\t", "DEL nf")
}

func TestTextInvTagRemovesEveryEntryCarryingTheTag(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.send("PUT\ta\t-\tt1,t2\tva", "PUT\tb\t-\tt1\tvb", "PUT\tc\t-\tt2\tvc")
	c.expectReplies("OK", "OK", "OK")
	c.expect("INV_TAG\tt1", "INV_TAG\t2")
	c.expect("GET\ta", "NF")
	c.expect("GET\tb", "NF")
	c.expect("GET\tc", "VALUE\tvc")
	c.expect("INV_TAG\tt1", "INV_TAG\t0")
	c.expect("KEYS\tt2", "KEYS\tc") // a, removed, is no longer listed under its other tag
	c.expect("INV_TAG\tt2", "INV_TAG\t1")
	c.expect("INV_TAG\t", "INV_TAG\t0")
}

func TestTextInvTagsAnyCountsEachEntryOnce(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.send("PUT\ta\t-\tt1\t1", "PUT\tb\t-\tt2\t2", "PUT\tc\t-\tt1,t2\t3", "PUT\td\t-\tt3\t4")
	c.expectReplies("OK", "OK", "OK", "OK")
	c.expect("INV_TAGS_ANY\t t1 , t2 ,,", "INV_TAGS_ANY\t3") // items trimmed, empties dropped
	c.expect("GET\ta", "NF")
	c.expect("GET\tc", "NF")
	c.expect("GET\td", "VALUE\t4")
	c.expect("INV_TAGS_ANY\tt1,nope", "INV_TAGS_ANY\t0")
}

func TestTextInvTagsAllRemovesOnlyEntriesCarryingEveryTag(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.send("PUT\ta\t-\tt1\t1", "PUT\tb\t-\tt1,t2\t2", "PUT\tc\t-\tt3,t2,t1\t3", "PUT\td\t-\tt2\t4")
	c.expectReplies("OK", "OK", "OK", "OK")
	c.expect("INV_TAGS_ALL\tt1, t2", "INV_TAGS_ALL\t2")
	c.expect("GET\ta", "VALUE\t1")
	c.expect("GET\tb", "NF")
	c.expect("GET\tc", "NF")
	c.expect("GET\td", "VALUE\t4")
	c.expect("KEYS\tt1", "KEYS\ta")
	c.expect("INV_TAGS_ALL\tt1,nope", "INV_TAGS_ALL\t0")
}

func TestTextInvKeysCountsTheKeysItRemoved(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.send("PUT\ta\t-\tt\t1", "PUT\tb\t-\t-\t2", "PUT\tc\t-\t-\t3")
	c.expectReplies("OK", "OK", "OK")
	c.expect("INV_KEYS\ta, b ,zz,,", "INV_KEYS\t2")
	c.expect("GET\ta", "NF")
	c.expect("GET\tc", "VALUE\t3")
	c.expect("KEYS\tt", "KEYS\t")
	c.expect("INV_KEYS\ta,b", "INV_KEYS\t0")
}

func TestTextKeysByTagListsLiveKeysCommaSeparated(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("KEYS_BY_TAG\tt", "KEYS\t")
	c.expect("KEYS\tt", "KEYS\t")
	c.send("PUT\tb\t-\tt\t1", "PUT\ta\t-\tx,t\t2", "PUT\tc\t-\tt\t3", "PUT\tdead\t0\tt\t4", "PUT\tother\t-\tx\t5")
	c.expectReplies("OK", "OK", "OK", "OK", "OK")
	c.expect("KEYS_BY_TAG\tt", "KEYS\ta,b,c") // the expired key is left out
	c.expect("KEYS\tt", "KEYS\ta,b,c")        // KEYS is an alias with the same reply
	c.expect("keys_by_tag\tx", "KEYS\ta,other")
	c.expect("KEYS\tT", "KEYS\t") // tags are case-sensitive
}

func TestTextStatsReportsCountersAndHitRatioWithSixDecimals(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("STATS", "STATS\t0\t0\t0\t0\t0.000000")
	c.send("PUT\ta\t-\tt\t1", "PUT\tb\t-\t-\t2")
	c.expectReplies("OK", "OK")
	for range 5 {
		c.expect("GET\ta", "VALUE\t1")
	}
	c.expect("GET\tzz", "NF")
	c.expect("STATS", "STATS\t5\t1\t2\t0\t0.833333")
	c.expect("INV_TAG\tt", "INV_TAG\t1")
	c.expect("stats\tignored", "STATS\t5\t1\t2\t1\t0.833333")
}

func TestTextFlushRemovesEverythingAndCountsIt(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.send("PUT\ta\t-\tt\t1", "PUT\tb\t-\t-\t2", "PUT\tc\t-\t-\t3")
	c.expectReplies("OK", "OK", "OK")
	c.expect("FLUSH", "FLUSH\t3")
	c.expect("GET\ta", "NF")
	c.expect("KEYS\tt", "KEYS\t")
	c.expect("FLUSH", "FLUSH\t0")
}

func TestTextUnknownVerbIsAnErrorAndConnectionStaysOpen(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	for _, line := range []string{"PING", "GETT\tk", "PUT k v", " GET\tk", "SET\tk\tv", "\x00", "\t",
		"é", strings.Repeat("X", 100), "KEYſ\tt"} {
		c.expect(line, "ERR unknown_command")
	}
	c.expect("PUT\tk\t-\t-\tv", "OK")
	c.expect("GET\tk", "VALUE\tv")
}

func TestTextVerbsAreCaseInsensitive(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("put\tk\t-\tt\tv", "OK")
	c.expect("Get\tk", "VALUE\tv")
	c.expect("aDd\tk\t-\t-\tw", "EXISTS")
	c.expect("incr\tn", "VALUE\t1")
	c.expect("dEcR\tn", "VALUE\t0")
	c.expect("keys\tt", "KEYS\tk")
	c.expect("inv_tags_any\tt", "INV_TAGS_ANY\t1")
	c.expect("Inv_Tags_All\tt", "INV_TAGS_ALL\t0")
	c.expect("inv_keys\tn", "INV_KEYS\t1")
	c.expect("inv_tag\tt", "INV_TAG\t0")
	c.expect("dEl\tk", "DEL nf")
	c.expect("flush", "FLUSH\t0")
}

func TestTextAcceptsCRLFLineEndings(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.write("PUT\tk\t-\tt\tv\r\nGET\tk\r\nKEYS\tt\r\nDEL\tk\r\n")
	c.expectReplies("OK", "VALUE\tv", "KEYS\tk", "DEL ok")
}

func TestTextEmptyLineGetsNoReply(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.write("\n\r\n\n")
	c.write("\nGET\tk\n\r\n")
	c.expect("PUT\tk\t-\t-\tv", "NF") // the first reply is GET's: the empty lines got none
	c.expectReplies("OK")
	c.expect("GET\tk", "VALUE\tv")
}

func TestTextDashOrEmptyTTLAndTagsMeanNone(t *testing.T) {
	t.Parallel()
	n, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.send("PUT\ta\t-\t-\t1", "PUT\tb\t\t\t2", "ADD\tc\t-\t-\t3", "INCR\td\t1\t-\t-", "INCR\te\t1\t\t",
		"PUT\tf\t-\t,,x,,y,\t4", "PUT\tg")
	c.expectReplies("OK", "OK", "ADDED", "VALUE\t1", "VALUE\t1", "OK", "OK")
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		e, ok := n.Store().GetEntry(k)
		if !ok {
			t.Fatalf("%s: not stored", k)
		}
		if e.ExpireAt != 0 {
			t.Errorf("%s: got a TTL (expires at %d), want none", k, e.ExpireAt)
		}
		if want := 0; k != "f" && len(e.Tags) != want {
			t.Errorf("%s: got tags %q, want none", k, e.Tags)
		}
	}
	c.expect("KEYS\t-", "KEYS\t")
	c.expect("KEYS\tx", "KEYS\tf") // empty items in a tag list are dropped
	c.expect("KEYS\ty", "KEYS\tf")
}

func TestTextErrorReasons(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	for _, tc := range []struct{ line, want string }{
		{"PUT", "ERR missing_key"},
		{"PUT\t", "ERR missing_key"},
		{"PUT\t\t-\t-\tv", "ERR missing_key"},
		{"ADD", "ERR missing_key"},
		{"ADD\t\t-\t-\tv", "ERR missing_key"},
		{"INCR", "ERR missing_key"},
		{"INCR\t", "ERR missing_key"},
		{"DECR", "ERR missing_key"},
		{"GET", "ERR missing_key"},
		{"DEL", "ERR missing_key"},
		{"INV_TAG", "ERR missing_tag"},
		{"KEYS_BY_TAG", "ERR missing_tag"},
		{"KEYS", "ERR missing_tag"},
		{"INV_TAGS_ANY", "ERR missing_tags"},
		{"INV_TAGS_ANY\t", "ERR missing_tags"},
		{"INV_TAGS_ANY\t, ,", "ERR empty_tags"},
		{"INV_TAGS_ALL", "ERR missing_tags"},
		{"INV_TAGS_ALL\t", "ERR missing_tags"},
		{"INV_TAGS_ALL\t,", "ERR empty_tags"},
		{"INV_KEYS", "ERR missing_keys"},
		{"INV_KEYS\t", "ERR missing_keys"},
		{"INV_KEYS\t ,, ", "ERR empty_keys"},
		{"PUT\tk\tabc\t-\tv", "ERR invalid_ttl"},
		{"PUT\tk\t-5\t-\tv", "ERR invalid_ttl"},
		{"PUT\tk\t1.5\t-\tv", "ERR invalid_ttl"},
		{"PUT\tk\t 5\t-\tv", "ERR invalid_ttl"},
		{"PUT\tk\t1e3\t-\tv", "ERR invalid_ttl"},
		{"PUT\tk\t99999999999999999999\t-\tv", "ERR invalid_ttl"},
		{"ADD\tk\tabc\t-\tv", "ERR invalid_ttl"},
		{"INCR\tk\t1\tabc", "ERR invalid_ttl"},
		{"DECR\tk\t1\t-5", "ERR invalid_ttl"},
		{"INCR\tk\tabc", "ERR invalid_number"},
	} {
		c.expect(tc.line, tc.want)
	}
	c.expect("GET\tk", "NF") // no rejected write stored anything
}

func TestTextTTLZeroStoresAnAlreadyExpiredEntry(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.expect("PUT\tk\t-\t-\told", "OK")
	c.expect("PUT\tk\t0\tt\tnew", "OK")
	c.expect("GET\tk", "NF") // the old value is gone too
	c.expect("KEYS\tt", "KEYS\t")
}

func TestTextShortTTLExpiresOnTime(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	const ttl = 300 * time.Millisecond
	start := time.Now()
	c.expect("PUT\tk\t300\tt\tv", "OK")
	if got := c.do("GET\tk"); got != "VALUE\tv" && time.Since(start) < ttl {
		t.Fatalf("GET right after PUT: got %q", got)
	}
	eventually(t, 3*time.Second, "entry with a 300ms TTL expires", func() bool {
		return c.do("GET\tk") == "NF"
	})
	// The store counts whole milliseconds on the wall clock, so the entry may go up to
	// 1ms early, and more when the wall clock steps (12 ms seen on this VM under -race);
	// the test measures on the monotonic clock.
	if el := time.Since(start); el < ttl-25*time.Millisecond {
		t.Fatalf("entry with a %s TTL gone after %s", ttl, el)
	}
	c.expect("KEYS\tt", "KEYS\t")
}

// --- pipelining -------------------------------------------------------------------------

func TestTextPipelinedThousandCommandsAreAnsweredInOrder(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	var cmds, want []string
	for i := range 333 {
		cmds = append(cmds, fmt.Sprintf("PUT\tk%d\t-\tt%d\tv%d", i, i%7, i), fmt.Sprintf("GET\tk%d", i), "INCR\tctr")
		want = append(want, "OK", fmt.Sprintf("VALUE\tv%d", i), fmt.Sprintf("VALUE\t%d", i+1))
	}
	cmds = append(cmds, "STATS")
	want = append(want, "STATS\t333\t0\t666\t0\t1.000000")
	if len(cmds) != 1000 {
		t.Fatalf("built %d commands", len(cmds))
	}
	errc := make(chan error, 1)
	go func() { errc <- c.writeErr(strings.Join(cmds, "\n") + "\n") }() // one write
	for i, w := range want {
		got, err := c.readLine()
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if got != w {
			t.Fatalf("reply %d to %q: got %q, want %q", i, cmds[i], got, w)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// --- limits -------------------------------------------------------------------------------

func TestTextKeyOverLimitIsRejected(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	long := strings.Repeat("k", 1025)
	c.expect("PUT\t"+long+"\t-\t-\tv", "ERR key too long (limit 1024 bytes)")
	c.expect("ADD\t"+long+"\t-\t-\tv", "ERR key too long (limit 1024 bytes)")
	c.expect("INCR\t"+long, "ERR key too long (limit 1024 bytes)")
	c.expect("GET\t"+long, "NF")
	c.expect("PUT\t"+long[:1024]+"\t-\t-\tv", "OK")
	c.expect("GET\t"+long[:1024], "VALUE\tv")
}

func TestTextValueAndTagsOverLimitAreRejected(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{Cache: cache.Config{MaxValueBytes: 100}})
	c := dialText(t, addr)
	c.expect("PUT\tk\t-\t-\t"+strings.Repeat("v", 101), "ERR value too large (limit 100 bytes)")
	c.expect("ADD\tk\t-\t-\t"+strings.Repeat("v", 101), "ERR value too large (limit 100 bytes)")
	c.expect("PUT\tk\t-\t-\t"+strings.Repeat("v", 100), "OK")

	tags := make([]string, 101)
	for i := range tags {
		tags[i] = fmt.Sprintf("t%d", i)
	}
	c.expect("PUT\tk\t-\t"+strings.Join(tags, ",")+"\tv", "ERR too many tags (limit 100 tags)")
	c.expect("INCR\tn\t1\t-\t"+strings.Join(tags, ","), "ERR too many tags (limit 100 tags)")
	c.expect("PUT\tk\t-\t"+strings.Join(tags[:100], ",")+"\tv", "OK")
	c.expect("KEYS\tt99", "KEYS\tk")
	c.expect("PUT\tk2\t-\t"+strings.Repeat("t", 257)+"\tv", "ERR tag too long (limit 256 bytes)")
	c.expect("GET\tk2", "NF")
}

func TestTextLineOverMaxLineBytesIsRejectedAndConnectionSurvives(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{MaxLineBytes: 4096})
	c := dialText(t, addr)
	prefix := "PUT\tk\t-\t-\t" // 10 bytes
	// A line of exactly 4096 bytes is allowed, one more is not.
	c.expect(prefix+strings.Repeat("v", 4086), "OK")
	c.expect(prefix+strings.Repeat("w", 4087), "ERR line too long (limit 4096 bytes)")
	c.expect("GET\tk", "VALUE\t"+strings.Repeat("v", 4086))
	// Longer than the server's 16 KiB read buffer too, in pieces.
	c.write(prefix + strings.Repeat("x", 20000))
	c.write(strings.Repeat("x", 50000))
	c.write("\nGET\tk\n")
	c.expectReplies("ERR line too long (limit 4096 bytes)", "VALUE\t"+strings.Repeat("v", 4086))
	// Several long lines in one pipeline, each with its own reply.
	c.write(strings.Repeat("a", 5000) + "\n" + strings.Repeat("b", 17000) + "\nPUT\tk\t-\t-\tok\n")
	c.expectReplies("ERR line too long (limit 4096 bytes)", "ERR line too long (limit 4096 bytes)", "OK")
	c.expect("GET\tk", "VALUE\tok")
}

func TestTextLineLimitIgnoresTheCRLFTerminator(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{MaxLineBytes: 4096})
	c := dialText(t, addr)
	line := "PUT\tk\t-\t-\t" + strings.Repeat("v", 4086) // 4096 bytes
	c.write(line + "\r\n")
	c.expectReplies("OK")
	c.write(line + "v\r\n")
	c.expectReplies("ERR line too long (limit 4096 bytes)")
	c.expect("GET\tk", "VALUE\t"+strings.Repeat("v", 4086))
	// The same across the read buffer's boundary: a line of 20000 bytes plus CR LF.
	_, addr2 := startTextNode(t, node.Config{MaxLineBytes: 20000})
	c2 := dialText(t, addr2)
	long := "PUT\tk\t-\t-\t" + strings.Repeat("v", 20000-10)
	c2.write(long + "\r\n")
	c2.expectReplies("OK")
	c2.write(long + "v\r\n" + long + "vv\n" + "GET\tnone\n")
	c2.expectReplies("ERR line too long (limit 20000 bytes)", "ERR line too long (limit 20000 bytes)", "NF")
	// And when the CR is the last byte of a full read buffer (16 KiB) and the LF comes in
	// the next fill.
	_, addr3 := startTextNode(t, node.Config{MaxLineBytes: 16<<10 - 1})
	c3 := dialText(t, addr3)
	edge := "PUT\tk\t-\t-\t" + strings.Repeat("v", 16<<10-1-10) // 16383 bytes
	c3.write(edge + "\r\n")
	c3.expectReplies("OK")
	c3.write(edge + "v\r\n")
	c3.expectReplies("ERR line too long (limit 16383 bytes)")
	c3.expect("GET\tk", "VALUE\t"+strings.Repeat("v", 16<<10-1-10))
}

func TestTextLineLongerThanReadBufferButUnderLimitWorks(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{}) // the default limit fits a 1 MiB value
	c := dialText(t, addr)
	for _, size := range []int{16<<10 - 11, 16 << 10, 16<<10 + 1, 40000, 200000} {
		value := strings.Repeat(string(rune('a'+size%26)), size-1) + "Z"
		c.expect("PUT\tbig\t-\tt\t"+value, "OK")
		if got := c.do("GET\tbig"); got != "VALUE\t"+value {
			t.Fatalf("value of %d bytes: got %d bytes back", size, len(got)-len("VALUE\t"))
		}
	}
	// Long lines pipelined with short ones keep their order.
	v := strings.Repeat("q", 30000)
	c.write("GET\tnone\nPUT\tbig\t-\t-\t" + v + "\nGET\tbig\nDEL\tbig\n")
	c.expectReplies("NF", "OK", "VALUE\t"+v, "DEL ok")
}

func TestTextMaxConnectionsRefusesTheExtraConnection(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{MaxConnections: 2})
	c1 := dialText(t, addr)
	c2 := dialText(t, addr)
	c1.expect("GET\tk", "NF") // both are being served
	c2.expect("GET\tk", "NF")
	c3 := dialText(t, addr)
	if got := c3.reply(); got != "ERR max connections (limit 2)" {
		t.Fatalf("third connection: got %q", got)
	}
	c3.expectClosed()
	c1.expect("PUT\tk\t-\t-\tv", "OK") // the refusal did not disturb the others
	c1.conn.Close()
	// Once c1 is gone its slot is free again.
	eventually(t, 3*time.Second, "a new connection is served after one closed", func() bool {
		c := dialText(t, addr)
		got, err := c.readLineAfter("GET\tk")
		c.conn.Close()
		return err == nil && got == "VALUE\tv"
	})
	c2.expect("GET\tk", "VALUE\tv")
}

// readLineAfter sends line and returns the reply or the error (for use inside polls).
func (c *textClient) readLineAfter(line string) (string, error) {
	if err := c.writeErr(line + "\n"); err != nil {
		return "", err
	}
	return c.readLine()
}

func TestTextIdleTimeoutClosesAnIdleConnection(t *testing.T) {
	bothDrivers(t, testTextIdleTimeoutClosesAnIdleConnection)
}

func testTextIdleTimeoutClosesAnIdleConnection(t *testing.T, goroutines bool) {
	t.Parallel()
	// The busy connection talks every 100 ms against a 1 s timeout: a loaded machine
	// may stall the test for a while without making it idle.
	_, addr := startTextNode(t, node.Config{IdleTimeout: time.Second, Goroutines: goroutines})
	busy := dialText(t, addr)
	idle := dialText(t, addr)
	idle.expect("GET\tk", "NF")
	start := time.Now()
	// A connection that keeps talking outlives the timeout.
	for time.Since(start) < 2500*time.Millisecond {
		busy.expect("GET\tk", "NF")
		time.Sleep(100 * time.Millisecond)
	}
	idle.expectClosed()
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Fatalf("idle connection closed after %s, before the 1s idle timeout", el)
	}
	busy.expect("PUT\tk\t-\t-\tv", "OK")
	// A command arriving in pieces slower than the timeout still counts as idle time.
	busy.write("GET")
	busy.expectClosed()
}

// A client that stops reading its replies is cut off after the idle timeout too: every
// write has a deadline, so it cannot hold its connection's goroutine forever.
func TestTextClientThatNeverReadsIsClosedAfterIdleTimeout(t *testing.T) {
	bothDrivers(t, testTextClientThatNeverReadsIsClosedAfterIdleTimeout)
}

func testTextClientThatNeverReadsIsClosedAfterIdleTimeout(t *testing.T, goroutines bool) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{IdleTimeout: 300 * time.Millisecond, Goroutines: goroutines})
	c := dialText(t, addr)
	c.expect("PUT\tbig\t-\t-\t"+strings.Repeat("v", 64<<10), "OK")
	c.write(strings.Repeat("GET\tbig\n", 1024)) // 64 MiB of replies, never read for now
	time.Sleep(time.Second)
	// Had the server kept the connection, draining would end in our read timeout.
	c.conn.SetReadDeadline(time.Now().Add(replyTimeout))
	n, err := io.Copy(io.Discard, c.r)
	if err != nil && !isConnReset(err) {
		t.Fatalf("after the idle timeout the server should have closed the connection; draining: %v", err)
	}
	if n >= 1024*(64<<10) {
		t.Fatalf("all %d reply bytes arrived: the stalled write was not cut off", n)
	}
}

// --- AUTH ---------------------------------------------------------------------------------

func TestTextAuthIsRequiredWhenTCPAuthIsOn(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{TCPAuth: "on", Username: "u", Password: "p"})
	c := dialText(t, addr)
	for _, line := range []string{"GET\tk", "PUT\tk\t-\t-\tv", "STATS", "FLUSH", "INV_TAG\tt", "KEYS\tt"} {
		c.expect(line, "ERR unauthorized")
	}
	c.expect("AUTH\tu\tx", "ERR unauthorized")
	c.expect("AUTH\tu", "ERR unauthorized")
	c.expect("AUTH", "ERR unauthorized")
	c.expect("AUTH\tU\tp", "ERR unauthorized") // credentials are case-sensitive
	c.expect("GET\tk", "ERR unauthorized")
	c.expect("AUTH\tu\tp", "OK")
	c.expect("PUT\tk\t-\t-\tv", "OK")
	c.expect("GET\tk", "VALUE\tv")
	c.expect("auth\tu\tp", "OK") // again, harmlessly

	// Authentication is per connection.
	c2 := dialText(t, addr)
	c2.expect("GET\tk", "ERR unauthorized")
	c2.send("AUTH\tu\tp", "GET\tk") // pipelined right behind AUTH
	c2.expectReplies("OK", "VALUE\tv")
}

func TestTextFiveWrongAuthAttemptsCloseTheConnection(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{TCPAuth: "on", Username: "u", Password: "p"})
	c := dialText(t, addr)
	c.send("AUTH\tu\tw1", "AUTH\tu\tw2", "AUTH\tu\tw3", "AUTH\tu\tw4", "AUTH\tu\tw5", "AUTH\tu\tp")
	c.expectReplies("ERR unauthorized", "ERR unauthorized", "ERR unauthorized", "ERR unauthorized", "ERR unauthorized")
	c.expectClosed() // the sixth, correct AUTH is never read

	// Four failures then success resets the count; commands before AUTH are not attempts.
	c2 := dialText(t, addr)
	for range 4 {
		c2.expect("AUTH\tu\tbad", "ERR unauthorized")
	}
	for range 10 {
		c2.expect("GET\tk", "ERR unauthorized")
	}
	c2.expect("AUTH\tu\tp", "OK")
	c2.expect("GET\tk", "NF")
	// A failed AUTH after a successful one keeps the connection authenticated (as Redis
	// does), but the fifth failure in a row still closes it.
	for range 4 {
		c2.expect("AUTH\tu\tbad", "ERR unauthorized")
		c2.expect("GET\tk", "NF")
	}
	c2.send("AUTH\tu\tbad")
	c2.expectReplies("ERR unauthorized")
	c2.expectClosed()
}

func TestTextAuthAutoOnLoopbackNeedsNoAuth(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{TCPAuth: "auto", Username: "u", Password: "p"})
	c := dialText(t, addr)
	c.expect("PUT\tk\t-\t-\tv", "OK")
	c.expect("GET\tk", "VALUE\tv")
	c.expect("AUTH\tu\tp", "OK")
	c.expect("AUTH\tu\tbad", "ERR unauthorized")
}

// --- known defect 10 ----------------------------------------------------------------------

func TestDefect10UnparseableTTLsAndAmountsAreErrorsNotIgnored(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	// The original stored these with no TTL and replied OK.
	for _, ttl := range []string{"abc", "-5", "1.5", " 5", "5 ", "5ms", "0x10", "18446744073709551616"} {
		c.expect("PUT\tk\t"+ttl+"\t-\tv", "ERR invalid_ttl")
		c.expect("ADD\tk\t"+ttl+"\t-\tv", "ERR invalid_ttl")
		c.expect("INCR\tn\t1\t"+ttl, "ERR invalid_ttl")
		c.expect("GET\tk", "NF")
		c.expect("GET\tn", "NF")
	}
	c.expect("PUT\tn\t-\t-\t7", "OK")
	for _, by := range []string{"abc", "1.5", "--1", "1_000", "99999999999999999999"} {
		c.expect("INCR\tn\t"+by, "ERR invalid_number")
		c.expect("DECR\tn\t"+by, "ERR invalid_number")
	}
	c.expect("GET\tn", "VALUE\t7")
}

func TestDefect10UnboundedLineCannotExhaustMemory(t *testing.T) {
	// Not parallel: it measures allocations, so nothing else may run meanwhile.
	_, addr := startTextNode(t, node.Config{MaxLineBytes: 4096})
	c := dialText(t, addr)
	c.expect("PUT\tk\t-\t-\tv", "OK")
	const total = 64 << 20
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for sent := 0; sent < total; sent += len(chunk) {
		c.conn.SetWriteDeadline(time.Now().Add(replyTimeout))
		if _, err := c.conn.Write(chunk); err != nil {
			t.Fatalf("write after %d MiB: %v", sent>>20, err)
		}
	}
	c.write("\nGET\tk\n")
	c.expectReplies("ERR line too long (limit 4096 bytes)", "VALUE\tv")
	runtime.ReadMemStats(&after)
	// Buffering the line would allocate at least its 64 MiB; the client side allocates
	// nothing per chunk.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Fatalf("a rejected %d MiB line made the process allocate %d MiB", total>>20, grew>>20)
	}
}

// flakyListener fails its first Accept calls with errs, then delegates.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	errs  []error
	calls atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.calls.Add(1)
	l.mu.Lock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// temporaryError is the kind of error an Accept returns for a transient condition.
type temporaryError struct{}

func (temporaryError) Error() string   { return "synthetic temporary accept error" }
func (temporaryError) Timeout() bool   { return false }
func (temporaryError) Temporary() bool { return true }

var _ net.Error = temporaryError{}

func TestDefect10AcceptErrorDoesNotStopTheListener(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		errs []error
	}{
		{"one temporary error", []error{temporaryError{}}},
		{"several errors", []error{
			temporaryError{},
			&net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE},
			errors.New("synthetic permanent-looking accept error"),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := node.New(node.Config{TCPPort: -1, HTTPPort: -1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { shutdownNode(t, n) })
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln := &flakyListener{Listener: inner, errs: tc.errs}
			n.ServeTCP(ln)
			c := dialText(t, inner.Addr().String())
			c.expect("PUT\tk\t-\t-\tv", "OK")
			c.expect("GET\tk", "VALUE\tv")
			if calls := ln.calls.Load(); calls < int32(len(tc.errs))+1 {
				t.Fatalf("Accept called %d times, want at least %d", calls, len(tc.errs)+1)
			}
			dialText(t, inner.Addr().String()).expect("GET\tk", "VALUE\tv") // and it keeps accepting
		})
	}
}

// --- graceful shutdown ----------------------------------------------------------------------

// gatedListener hands out gatedConns on accepted.
type gatedListener struct {
	net.Listener
	want     int64 // bytes a conn must have read before its writes are held
	accepted chan *gatedConn
}

func (l *gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	g := &gatedConn{Conn: c, want: l.want, allRead: make(chan struct{}), held: make(chan struct{}), gate: make(chan struct{})}
	l.accepted <- g
	return g, nil
}

// gatedConn holds the server's first write after it has read want bytes until gate is
// closed, so a test can begin a shutdown while the server is in the middle of answering.
type gatedConn struct {
	net.Conn
	want     int64
	read     atomic.Int64
	readOnce sync.Once
	allRead  chan struct{} // closed once want bytes were read
	holdOnce sync.Once
	held     chan struct{} // closed when a write is being held
	gate     chan struct{} // closed by the test to let writes through
}

func (c *gatedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.read.Add(int64(n)) >= c.want {
		c.readOnce.Do(func() { close(c.allRead) })
	}
	return n, err
}

func (c *gatedConn) Write(p []byte) (int, error) {
	select {
	case <-c.allRead:
		c.holdOnce.Do(func() {
			close(c.held)
			<-c.gate
		})
	default:
	}
	return c.Conn.Write(p)
}

func waitFor(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(replyTimeout):
		t.Fatalf("timed out waiting until %s", what)
	}
}

func TestTextShutdownAnswersPipelinedCommandsThenCloses(t *testing.T) {
	bothDrivers(t, testTextShutdownAnswersPipelinedCommandsThenCloses)
}

func testTextShutdownAnswersPipelinedCommandsThenCloses(t *testing.T, goroutines bool) {
	n, err := node.New(node.Config{TCPPort: -1, HTTPPort: -1, Goroutines: goroutines})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdownNode(t, n) })
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := inner.Addr().String()
	value := strings.Repeat("v", 1000)
	const gets = 1000
	pipeline := strings.Repeat("GET\tbig\n", gets) // 8000 bytes: one read of the server
	setup := "PUT\tbig\t-\t-\t" + value + "\n"
	ln := &gatedListener{Listener: inner, want: int64(len(setup) + len(pipeline)), accepted: make(chan *gatedConn, 1)}
	n.ServeTCP(ln)

	c := dialText(t, addr)
	gc := <-ln.accepted
	c.expect(strings.TrimSuffix(setup, "\n"), "OK")
	// 1000 replies of 1 KB overflow the server's 16 KiB output buffer many times, so
	// it is held in its first write with most of the GETs read but not yet run.
	c.write(pipeline)
	waitFor(t, gc.held, "the server is answering the pipeline")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Shutdown(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a connection still had commands to answer", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(gc.gate)
	for i := range gets {
		got, err := c.readLine()
		if err != nil {
			t.Fatalf("reply %d of %d: %v", i, gets, err)
		}
		if got != "VALUE\t"+value {
			t.Fatalf("reply %d: got %q", i, showCmd(got))
		}
	}
	c.expectClosed()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(replyTimeout):
		t.Fatal("Shutdown did not return after the last connection closed")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("a new connection after Shutdown was accepted")
	}
}

func TestTextShutdownClosesIdleConnectionsPromptly(t *testing.T) {
	bothDrivers(t, testTextShutdownClosesIdleConnectionsPromptly)
}

func testTextShutdownClosesIdleConnectionsPromptly(t *testing.T, goroutines bool) {
	n, addr := startTextNode(t, node.Config{Goroutines: goroutines}) // the default idle timeout is 10 minutes
	var clients []*textClient
	for range 5 {
		c := dialText(t, addr)
		c.expect("GET\tk", "NF")
		clients = append(clients, c)
	}
	half := dialText(t, addr)
	half.write("PUT\tk\t-\t-\tunterminated") // an unfinished line is not a command
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Shutdown with only idle connections took %s", el)
	}
	for _, c := range clients {
		c.expectClosed()
	}
	half.expectClosed()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("a new connection after Shutdown was accepted")
	}
}

func TestTextShutdownReturnsWhenContextEndsDespiteAStuckClient(t *testing.T) {
	bothDrivers(t, testTextShutdownReturnsWhenContextEndsDespiteAStuckClient)
}

func testTextShutdownReturnsWhenContextEndsDespiteAStuckClient(t *testing.T, goroutines bool) {
	n, addr := startTextNode(t, node.Config{Goroutines: goroutines})
	c := dialText(t, addr)
	value := strings.Repeat("v", 64<<10)
	c.expect("PUT\tbig\t-\t-\t"+value, "OK")
	// 64 MiB of replies that the client never reads: the server blocks writing them.
	c.write(strings.Repeat("GET\tbig\n", 1024))
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := n.Shutdown(ctx)
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Shutdown took %s with a 300ms context", el)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stuck connection: got %v, want an error wrapping context.DeadlineExceeded", err)
	}
	// The connection was closed: draining it ends.
	c.conn.SetReadDeadline(time.Now().Add(replyTimeout))
	if _, err := io.Copy(io.Discard, c.r); err != nil && !isConnReset(err) {
		t.Fatalf("draining the force-closed connection: %v", err)
	}
}

// A connection that has just answered a command and is about to wait for the next one
// must not re-arm its idle deadline after Shutdown cut the wait short: its client, gone
// quiet, would then hold Shutdown until its context ends.
func TestTextShutdownIsNotHeldByConnectionsThatJustAnswered(t *testing.T) {
	bothDrivers(t, testTextShutdownIsNotHeldByConnectionsThatJustAnswered)
}

func testTextShutdownIsNotHeldByConnectionsThatJustAnswered(t *testing.T, goroutines bool) {
	for range 10 {
		n, addr := startTextNode(t, node.Config{Goroutines: goroutines}) // the default idle timeout is 10 minutes
		var wg sync.WaitGroup
		quiet := make(chan struct{})
		for range 32 {
			c := dialText(t, addr)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-quiet:
						return // and leave the connection open, idle
					default:
					}
					if _, err := c.readLineAfter("GET\tk"); err != nil {
						return
					}
				}
			}()
		}
		time.Sleep(20 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		close(quiet) // the clients go quiet just as Shutdown begins
		err := n.Shutdown(ctx)
		cancel()
		wg.Wait()
		if err != nil {
			t.Fatalf("Shutdown with clients that just went quiet: %v", err)
		}
	}
}

// --- concurrency --------------------------------------------------------------------------

func TestTextConcurrentPipelinedClientsGetWellFormedReplies(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{Cache: cache.Config{Partitions: 4, TagShards: 2}})
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5", "ctr"}
	tags := []string{"t0", "t1", "t2", "t0,t1", "t1,t2,t3", "-"}
	pick := func(r *rand.Rand, s []string) string { return s[r.IntN(len(s))] }
	gen := func(r *rand.Rand) string {
		k := pick(r, keys)
		switch r.IntN(16) {
		case 0, 1, 2:
			return fmt.Sprintf("PUT\t%s\t%s\t%s\tv%d", k, pick(r, []string{"-", "50", "0", "1000"}), pick(r, tags), r.IntN(100))
		case 3:
			return fmt.Sprintf("ADD\t%s\t-\t%s\ta", k, pick(r, tags))
		case 4, 5:
			return fmt.Sprintf("INCR\t%s\t%d\t-\t%s", k, r.IntN(5)-2, pick(r, tags))
		case 6:
			return "DECR\t" + k
		case 7, 8, 9:
			return "GET\t" + k
		case 10:
			return "DEL\t" + k
		case 11:
			return "INV_TAG\t" + pick(r, tags)
		case 12:
			return pick(r, []string{"INV_TAGS_ANY\tt0,t2", "INV_TAGS_ALL\tt1,t2", "INV_KEYS\tk0,k3"})
		case 13:
			return pick(r, []string{"KEYS_BY_TAG\tt1", "KEYS\tt0"})
		case 14:
			return "STATS"
		default:
			if r.IntN(20) == 0 {
				return "FLUSH"
			}
			return pick(r, []string{"NOPE", "GET", "INV_KEYS\t,", "PUT\tk\tbad\t-\tv"})
		}
	}
	deadline := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	var total atomic.Int64
	for w := range 8 {
		c := dialText(t, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for time.Now().Before(deadline) {
				cmds := make([]string, 1+r.IntN(100))
				for i := range cmds {
					cmds[i] = gen(r)
				}
				if err := c.writeErr(strings.Join(cmds, "\n") + "\n"); err != nil {
					t.Errorf("client %d: write: %v", w, err)
					return
				}
				for _, cmd := range cmds {
					got, err := c.readLine()
					if err != nil {
						t.Errorf("client %d: reply to %q: %v", w, cmd, err)
						return
					}
					if err := checkReply(verbOf(cmd), got); err != nil {
						t.Errorf("client %d: %v", w, err)
						return
					}
					total.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if total.Load() < 1000 {
		t.Errorf("only %d commands answered in 1s by 8 clients", total.Load())
	}
}

// "-" means "no tags" only as a write's whole tag field; as an INV_* list it is a key or
// tag like any other, as in the original and as DEL and INV_TAG already treat it.
func TestTextInvListsTakeDashLiterally(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{})
	c := dialText(t, addr)
	c.send("PUT\t-\t-\t-\tdash", "PUT\tk\t-\ta,-\tv", "PUT\tk2\t-\t-,b\tv2")
	c.expectReplies("OK", "OK", "OK")
	c.expect("KEYS\t-", "KEYS\tk,k2")
	c.expect("INV_TAGS_ALL\t-", "INV_TAGS_ALL\t2")
	c.expect("PUT\tk\t-\ta,-\tv", "OK")
	c.expect("INV_TAGS_ANY\t-", "INV_TAGS_ANY\t1")
	c.expect("INV_KEYS\t-", "INV_KEYS\t1")
	c.expect("GET\t-", "NF")
}

// Before AUTH a client may send only short lines, so clients without credentials cannot
// make the node hold a megabyte per connection.
func TestTextLinesBeforeAuthAreLimitedToFourKiB(t *testing.T) {
	t.Parallel()
	_, addr := startTextNode(t, node.Config{TCPAuth: "on", Username: "u", Password: "p"})
	c := dialText(t, addr)
	c.expect("PUT\tk\t-\t-\t"+strings.Repeat("v", 8<<10), "ERR line too long (limit 4096 bytes)")
	c.expect("AUTH\tu\tp", "OK")
	c.expect("PUT\tk\t-\t-\t"+strings.Repeat("v", 8<<10), "OK")
}

// A client pipelining INCRs without pause while the node shuts down gets a reply for
// every INCR that ran, then, for what it sent meanwhile, refusals saying the command did
// not run, and then the end of the stream; and no INCR ran without its reply reaching the
// client (the counter equals the replies). docs/protocol.md, "closing".
func TestTextShutdownAnswersEveryCommandItRanOrRefused(t *testing.T) {
	bothDrivers(t, testTextShutdownAnswersEveryCommandItRanOrRefused)
}

func testTextShutdownAnswersEveryCommandItRanOrRefused(t *testing.T, goroutines bool) {
	for round := range 5 {
		n, addr := startTextNode(t, node.Config{Goroutines: goroutines})
		c := dialText(t, addr)
		stop := make(chan struct{})
		writer := make(chan struct{})
		go func() {
			defer close(writer)
			batch := strings.Repeat("INCR\tc\n", 64)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c.writeErr(batch) != nil {
					return
				}
			}
		}()
		var replies, refused int64
		for replies < 2000 { // the node is busy running them
			if got := c.reply(); got != "VALUE\t"+strconv.FormatInt(replies+1, 10) {
				t.Fatalf("round %d: reply %d: %q", round, replies+1, got)
			}
			replies++
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		done := make(chan error, 1)
		go func() { done <- n.Shutdown(ctx) }()
		for {
			got, err := c.readLine()
			if errors.Is(err, io.EOF) || isConnReset(err) {
				break // a reset can come once the client keeps writing past the close
			}
			if err != nil {
				t.Fatalf("round %d: after %d replies: %v", round, replies, err)
			}
			switch {
			case strings.HasPrefix(got, "ERR ") && strings.Contains(got, "command not run"):
				refused++
			case refused == 0 && got == "VALUE\t"+strconv.FormatInt(replies+1, 10):
				replies++
			default:
				t.Fatalf("round %d: after %d replies and %d refusals: %q", round, replies, refused, got)
			}
		}
		close(stop)
		<-writer
		if err := <-done; err != nil {
			t.Fatalf("round %d: Shutdown: %v", round, err)
		}
		cancel()
		if v, ok := n.Store().Get("c"); !ok || string(v) != strconv.FormatInt(replies, 10) {
			t.Fatalf("round %d: counter %q (found %v) after %d replies: a command ran without a reply", round, v, ok, replies)
		}
		if refused == 0 {
			t.Fatalf("round %d: no command sent during the shutdown was refused", round)
		}
	}
}
