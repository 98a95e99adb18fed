package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagcache/tagcache/node"
)

// result is what one run of the binary produced.
type result struct {
	code           int
	stdout, stderr string
}

// tagcache runs the binary's entry point in-process.
func tagcache(args ...string) result {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

// testNode is a node serving only its HTTP API on a free loopback port.
type testNode struct {
	t     *testing.T
	flags []string // point the client at the node
}

// startNode starts a node with the default credentials and clears the client's
// environment variables, so the tests see the client's own defaults.
func startNode(t *testing.T) *testNode {
	t.Helper()
	for _, env := range []string{"TAGCACHE_USERNAME", "TAGCACHE_PASSWORD", "TAGCACHE_TOKEN"} {
		t.Setenv(env, "")
	}
	n := startInProcessNode(t, node.Config{Bind: "127.0.0.1", TCPPort: -1, HTTPPort: 0, RESPPort: -1})
	port := n.Addr("http").(*net.TCPAddr).Port
	return &testNode{t, []string{"--host", "127.0.0.1", "--port", strconv.Itoa(port)}}
}

// startInProcessNode starts a node from cfg and shuts it down when the test ends.
func startInProcessNode(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	return n
}

// run runs a client command against the node, the connection flags last.
func (n *testNode) run(args ...string) result {
	return tagcache(append(args, n.flags...)...)
}

// ok runs a client command that must succeed and returns its output.
func (n *testNode) ok(args ...string) string {
	n.t.Helper()
	r := n.run(args...)
	if r.code != 0 || r.stderr != "" {
		n.t.Fatalf("tagcache %s: exit %d, stderr %q, stdout %q", strings.Join(args, " "), r.code, r.stderr, r.stdout)
	}
	return r.stdout
}

// miss runs `get key` for a key that must be absent.
func (n *testNode) miss(key string) {
	n.t.Helper()
	r := n.run("get", "key", key)
	if r.code != 1 || r.stdout != "Key '"+key+"' not found\n" || r.stderr != "" {
		n.t.Fatalf("get key %q: want a miss (exit 1), got exit %d, stdout %q, stderr %q", key, r.code, r.stdout, r.stderr)
	}
}

func wantOutput(t *testing.T, got, want string) {
	t.Helper()
	if got != want {
		t.Fatalf("output:\n%s\nwant:\n%s", got, want)
	}
}

func TestPutThenGetRoundTripsKeysThatNeedEscaping(t *testing.T) {
	n := startNode(t)
	for _, key := range []string{
		"plain", "with space", "a/b", "dir/../up", "ünïcødé ✓", "q?x=1&y=2#frag", "100%", "+plus+", "..", ".",
	} {
		value := "value of " + key
		wantOutput(t, n.ok("put", key, value), "Stored key '"+key+"'\n")
		wantOutput(t, n.ok("get", "key", key), "Key: "+key+"\nValue: "+value+"\n")
	}
	n.miss("a")      // "a/b" must not have been stored under a prefix
	n.miss("dir/up") // nor under a cleaned path
}

func TestFlagsMayComeBeforeOrAfterArguments(t *testing.T) {
	n := startNode(t)
	n.ok(append(append([]string{"put"}, n.flags...), "--tags", "t", "k", "v", "--ttl-ms", "60000")...)
	wantOutput(t, n.ok("get", "--json", "key", "k"), `{"value":"v"}`+"\n")
	// -- ends the flags, so a value may start with a dash.
	if r := tagcache(append(append([]string{"put"}, n.flags...), "neg", "--", "-5")...); r.code != 0 {
		t.Fatalf("put neg -- -5: exit %d, stderr %q", r.code, r.stderr)
	}
	wantOutput(t, n.ok("get", "key", "neg"), "Key: neg\nValue: -5\n")
	wantOutput(t, n.ok("increment", "neg", "--by=-2"), "Key: neg\nValue: -7\n")
}

func TestPutWithTagsThenGetTagAndFlushTag(t *testing.T) {
	n := startNode(t)
	wantOutput(t, n.ok("put", "user:1", "alice", "--tags", "users, team:a", "--ttl-ms", "60000"),
		"Stored key 'user:1'\n  Tags: users, team:a\n  TTL: 60000ms\n")
	n.ok("put", "user:2", "bob", "--tags", "users,team:b")
	n.ok("put", "other", "x", "--tags", "misc")

	wantOutput(t, n.ok("get", "tag", "users,team:a,nobody"),
		"Tag 'users' has 2 keys:\n  - user:1\n  - user:2\n"+
			"Tag 'team:a' has 1 key:\n  - user:1\n"+
			"Tag 'nobody' has no keys\n")

	wantOutput(t, n.ok("flush", "tag", "team:a,team:b"), "Flushed 2 entries with tags: team:a, team:b\n")
	n.miss("user:1")
	n.miss("user:2")
	wantOutput(t, n.ok("get", "tag", "users"), "Tag 'users' has no keys\n")
	wantOutput(t, n.ok("get", "key", "other"), "Key: other\nValue: x\n")
}

func TestFlushKey(t *testing.T) {
	n := startNode(t)
	n.ok("put", "a b/c", "v")
	wantOutput(t, n.ok("flush", "key", "a b/c"), "Flushed key 'a b/c'\n")
	n.miss("a b/c")
	wantOutput(t, n.ok("flush", "key", "a b/c"), "Key 'a b/c' was not found\n")
}

func TestAddStoresOnlyTheFirstValue(t *testing.T) {
	n := startNode(t)
	wantOutput(t, n.ok("add", "k", "first", "--tags", "t"), "Added key 'k'\n  Tags: t\n")
	wantOutput(t, n.ok("add", "k", "second"), "Key 'k' already exists; not changed\n")
	wantOutput(t, n.ok("get", "key", "k"), "Key: k\nValue: first\n")

	added := decodeJSON(t, n.ok("add", "j", "v", "--json"))
	again := decodeJSON(t, n.ok("add", "j", "w", "--json"))
	if added["added"] != true || again["added"] != false {
		t.Fatalf("add --json: first %v, second %v; want added true then false", added, again)
	}
}

func TestIncrementAndDecrement(t *testing.T) {
	n := startNode(t)
	wantOutput(t, n.ok("increment", "hits"), "Key: hits\nValue: 1\n")
	wantOutput(t, n.ok("increment", "hits", "--by", "10"), "Key: hits\nValue: 11\n")
	wantOutput(t, n.ok("decrement", "hits", "--by", "4"), "Key: hits\nValue: 7\n")
	wantOutput(t, n.ok("decrement", "hits"), "Key: hits\nValue: 6\n")
	wantOutput(t, n.ok("decrement", "fresh", "--tags", "counters"), "Key: fresh\nValue: -1\n")
	wantOutput(t, n.ok("get", "tag", "counters"), "Tag 'counters' has 1 key:\n  - fresh\n")

	n.ok("put", "word", "hello")
	r := n.run("increment", "word")
	if r.code != 1 || r.stdout != "" || r.stderr != "tagcache increment: value is not an integer\n" {
		t.Fatalf("increment of a non-integer: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestEntryWithTTLExpires(t *testing.T) {
	n := startNode(t)
	n.ok("put", "short", "v", "--ttl-ms", "150")
	n.ok("increment", "counter", "--ttl-ms", "150")
	deadline := time.Now().Add(5 * time.Second)
	for _, key := range []string{"short", "counter"} {
		for n.run("get", "key", key).code == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("key %q with a 150ms TTL still served after 5s", key)
			}
			time.Sleep(20 * time.Millisecond)
		}
		n.miss(key)
	}
}

func TestFlushAll(t *testing.T) {
	n := startNode(t)
	for _, k := range []string{"a", "b", "c"} {
		n.ok("put", k, "v", "--tags", "t")
	}
	wantOutput(t, n.ok("flush", "all"), "Flushed all 3 entries from the cache\n")
	for _, k := range []string{"a", "b", "c"} {
		n.miss(k)
	}
	wantOutput(t, n.ok("flush", "all"), "Flushed all 0 entries from the cache\n")
}

func TestStatsShowsCountersAndHitRatio(t *testing.T) {
	n := startNode(t)
	n.ok("put", "k", "value", "--tags", "t1,t2")
	n.ok("get", "key", "k")
	n.ok("get", "key", "k")
	n.ok("get", "key", "k")
	n.miss("absent")
	out := n.ok("stats")
	for _, line := range []string{
		"TagCache Statistics:\n", "\nHits:          3\n", "\nMisses:        1\n", "\nPuts:          1\n",
		"\nHit Ratio:     75.00%\n", "\nTotal Items:   1\n", "\nTotal Bytes:   ", "\nTotal Tags:    2\n",
		"\nInvalidations: ", "\nEvictions:     0\n", "\nExpirations:   0\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("stats output lacks %q:\n%s", line, out)
		}
	}
	s := decodeJSON(t, n.ok("stats", "--json"))
	if s["hits"] != 3.0 || s["hit_ratio"] != 0.75 {
		t.Errorf("stats --json: %v", s)
	}
}

func TestHealth(t *testing.T) {
	n := startNode(t)
	out := n.ok("health")
	if !strings.HasPrefix(out, "Health Check: OK\nServer Time: ") {
		t.Fatalf("health output %q", out)
	}
	h := decodeJSON(t, n.ok("health", "--json"))
	if h["status"] != "ok" {
		t.Fatalf("health --json: %v", h)
	}
	// /health needs no credentials.
	n.ok("health", "--password", "wrong")
}

func TestJSONOutputIsTheReplyOnOneLinePerRequest(t *testing.T) {
	n := startNode(t)
	for _, args := range [][]string{
		{"put", "k", "v", "--tags", "t,u"},
		{"add", "k", "v"},
		{"increment", "n"},
		{"decrement", "n"},
		{"get", "key", "k"},
		{"get", "tag", "t,u"},
		{"stats"},
		{"health"},
		{"flush", "tag", "t"},
		{"flush", "key", "n"},
		{"flush", "all"},
	} {
		out := n.ok(append(args, "--json")...)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		want := 1
		if args[0] == "get" && args[1] == "tag" {
			want = 2 // one request per tag
		}
		if len(lines) != want || !strings.HasSuffix(out, "\n") {
			t.Errorf("%v --json: want %d newline-terminated lines, got %q", args, want, out)
		}
		for _, line := range lines {
			if !json.Valid([]byte(line)) {
				t.Errorf("%v --json: line %q is not JSON", args, line)
			}
		}
	}
	// A miss prints the reply and still exits 1.
	r := n.run("get", "key", "absent", "--json")
	if r.code != 1 || r.stdout != `{"error":"not_found"}`+"\n" {
		t.Errorf("get key absent --json: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestWrongCredentialsSuggestUsernameAndPassword(t *testing.T) {
	n := startNode(t)
	for _, args := range [][]string{
		{"stats", "--password", "wrong"},
		{"get", "key", "k", "--username", "nobody"},
		{"put", "k", "v", "--username", "", "--password", ""}, // no credentials at all
	} {
		r := n.run(args...)
		if r.code != 1 || r.stdout != "" || !strings.HasPrefix(r.stderr, "tagcache "+args[0]+": unauthorized (HTTP 401)") ||
			!strings.Contains(r.stderr, "--username and --password") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	r := n.run("stats", "--token", "not-a-token")
	if r.code != 1 || !strings.Contains(r.stderr, "rejected the bearer token") {
		t.Errorf("stats with a bad token: exit %d, stderr %q", r.code, r.stderr)
	}

	// The environment supplies credentials not given as flags; flags win over it.
	t.Setenv("TAGCACHE_PASSWORD", "wrong")
	if r := n.run("stats"); r.code != 1 || !strings.Contains(r.stderr, "unauthorized") {
		t.Errorf("stats with TAGCACHE_PASSWORD=wrong: exit %d, stderr %q", r.code, r.stderr)
	}
	n.ok("stats", "--password", node.DefaultPassword)
}

func TestBearerTokenFromEnvironment(t *testing.T) {
	n := startNode(t)
	// Log in through the node's API.
	c := &client{base: "http://127.0.0.1:" + n.flags[3], http: &http.Client{Timeout: 5 * time.Second}, stdout: io.Discard}
	var login struct {
		Token string `json:"token"`
	}
	if err := c.call("POST", "/auth/login", nil, map[string]string{"username": node.DefaultUsername, "password": node.DefaultPassword}, &login); err != nil || login.Token == "" {
		t.Fatalf("login: %v, token %q", err, login.Token)
	}
	t.Setenv("TAGCACHE_TOKEN", login.Token)
	n.ok("put", "k", "v", "--password", "wrong") // the token is sent instead of the password
}

func TestUnreachableNodeIsAnErrorNotAUsageError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	r := tagcache("stats", "--port", port, "--timeout", "2s")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "tagcache stats: GET http://127.0.0.1:"+port+"/stats: ") ||
		!strings.Contains(r.stderr, "is the node running?") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"put"},
		{"put", "k"},
		{"put", "k", "v", "extra"},
		{"put", "", "v"},
		{"put", "k", "v", "--ttl-ms", "-1"},
		{"put", "k", "v", "--ttl-ms", "soon"},
		{"put", "k", "v", "--tags"},
		{"add", "k"},
		{"increment"},
		{"increment", "k", "--by", "x"},
		{"decrement", "a", "b"},
		{"get"},
		{"get", "key"},
		{"get", "keys", "k"},
		{"get", "tag", " , "},
		{"flush"},
		{"flush", "all", "now"},
		{"flush", "tag"},
		{"flush", "everything"},
		{"stats", "extra"},
		{"stats", "--port", "0"},
		{"stats", "--port", "65536"},
		{"stats", "--timeout", "0s"},
		{"stats", "--no-such-flag"},
		{"health", "--host", ""},
	} {
		r := tagcache(args...)
		if r.code != 2 || r.stdout != "" || !strings.HasPrefix(r.stderr, "tagcache "+args[0]+": ") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%q: want exit 2 and one line on stderr, got exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
}

func TestHelpListsEveryFlagWithItsDefault(t *testing.T) {
	for _, cc := range clientCommands {
		for _, help := range []string{"--help", "-h"} {
			r := tagcache(cc.name, help)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("%s %s: exit %d, stderr %q", cc.name, help, r.code, r.stderr)
			}
			fs := flag.NewFlagSet(cc.name, flag.ContinueOnError)
			addCommonFlags(fs)
			cc.setup(fs)
			var names []string
			fs.VisitAll(func(fl *flag.Flag) { names = append(names, fl.Name) })
			for _, name := range []string{"host", "port", "username", "password", "token", "timeout", "json"} {
				if !slices.Contains(names, name) {
					t.Errorf("%s has no --%s flag", cc.name, name)
				}
			}
			for _, name := range names {
				if !strings.Contains(r.stdout, "\n  -"+name+" ") && !strings.Contains(r.stdout, "\n  -"+name+"\n") {
					t.Errorf("%s --help does not list -%s:\n%s", cc.name, name, r.stdout)
				}
			}
			for _, def := range []string{`(default "127.0.0.1")`, "(default 8080)", "(default 5s)",
				`$TAGCACHE_USERNAME, else "admin"`, `$TAGCACHE_PASSWORD, else "password"`, "$TAGCACHE_TOKEN"} {
				if !strings.Contains(r.stdout, def) {
					t.Errorf("%s --help does not mention %s", cc.name, def)
				}
			}
			if !strings.HasPrefix(r.stdout, "Usage:\n  tagcache "+cc.name) {
				t.Errorf("%s --help starts %q", cc.name, r.stdout[:min(len(r.stdout), 40)])
			}
		}
	}
	if r := tagcache("increment", "--help"); !strings.Contains(r.stdout, "(default 1)") {
		t.Errorf("increment --help does not show the default of --by:\n%s", r.stdout)
	}
}

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		pos        []string
		tags       string
		json       bool
		ttl, port  int
		wantErrSub string
	}{
		{args: []string{"k", "v"}, pos: []string{"k", "v"}},
		{args: []string{"--tags", "a,b", "k", "--json", "v", "-port=9"}, pos: []string{"k", "v"}, tags: "a,b", json: true, port: 9},
		{args: []string{"k", "--", "--tags", "-v"}, pos: []string{"k", "--tags", "-v"}},
		{args: []string{"--tags", "--", "k"}, pos: []string{"k"}, tags: "--"},
		{args: []string{"--json", "k", "-"}, pos: []string{"k", "-"}, json: true},
		{args: []string{"k", "--ttl"}, wantErrSub: "not defined"},
		{args: []string{"k", "--ttl-ms"}, wantErrSub: "needs an argument"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(&bytes.Buffer{})
		tags := fs.String("tags", "", "")
		js := fs.Bool("json", false, "")
		ttl := fs.Int("ttl-ms", 0, "")
		port := fs.Int("port", 0, "")
		pos, err := parseInterspersed(fs, tc.args)
		if tc.wantErrSub != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErrSub) {
				t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.wantErrSub)
			}
			continue
		}
		if err != nil || !slices.Equal(pos, tc.pos) || *tags != tc.tags || *js != tc.json || *ttl != tc.ttl || *port != tc.port {
			t.Errorf("%q: pos %q tags %q json %v ttl %d port %d err %v", tc.args, pos, *tags, *js, *ttl, *port, err)
		}
	}
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not JSON: %q: %v", s, err)
	}
	return m
}
