package main

// The client subcommands (put, add, increment, decrement, get, flush, stats, health) talk
// to a running node's HTTP JSON API (PROTOCOL.md), like the original TagCache CLI. Each is
// a clientCommand: the common connection flags, its own flags, and an action.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tagcache/tagcache/node"
)

func init() {
	for _, cc := range clientCommands {
		commands[cc.name] = command{cc.summary, cc.main}
	}
}

// clientCommands are the client subcommands, in the order their help describes them.
var clientCommands = []clientCommand{
	{
		name:     "put",
		summary:  "store a value under a key",
		synopsis: []string{"<key> <value>"},
		setup:    writeCommand("/put"),
	},
	{
		name:     "add",
		summary:  "store a value only if the key is absent",
		synopsis: []string{"<key> <value>"},
		setup:    writeCommand("/add"),
	},
	{
		name:     "increment",
		summary:  "add to an integer value, creating it if absent",
		synopsis: []string{"<key>"},
		setup:    counterCommand("/incr"),
	},
	{
		name:     "decrement",
		summary:  "subtract from an integer value, creating it if absent",
		synopsis: []string{"<key>"},
		setup:    counterCommand("/decr"),
	},
	{
		name:     "get",
		summary:  "read a key's value, or the keys carrying tags",
		synopsis: []string{"key <key>", "tag <tag1,tag2,...>"},
		setup: func(*flag.FlagSet) action {
			return func(c *client, args []string) error {
				kind, rest, err := subcommand(args, "key", "tag")
				if err != nil {
					return err
				}
				if kind == "key" {
					key, err := keyArg(rest)
					if err != nil {
						return err
					}
					return c.getKey(key)
				}
				tags, err := tagsArg(rest)
				if err != nil {
					return err
				}
				return c.getTags(tags)
			}
		},
	},
	{
		name:     "flush",
		summary:  "invalidate a key, every entry carrying any of some tags, or everything",
		synopsis: []string{"key <key>", "tag <tag1,tag2,...>", "all"},
		setup: func(*flag.FlagSet) action {
			return func(c *client, args []string) error {
				kind, rest, err := subcommand(args, "key", "tag", "all")
				if err != nil {
					return err
				}
				switch kind {
				case "key":
					key, err := keyArg(rest)
					if err != nil {
						return err
					}
					return c.flushKey(key)
				case "tag":
					tags, err := tagsArg(rest)
					if err != nil {
						return err
					}
					return c.flushTags(tags)
				default:
					if err := wantArgs(rest); err != nil {
						return err
					}
					return c.flushAll()
				}
			}
		},
	},
	{
		name:    "stats",
		summary: "print the node's statistics",
		setup: func(*flag.FlagSet) action {
			return func(c *client, args []string) error {
				if err := wantArgs(args); err != nil {
					return err
				}
				return c.stats()
			}
		},
	},
	{
		name:    "health",
		summary: "check that a node answers",
		setup: func(*flag.FlagSet) action {
			return func(c *client, args []string) error {
				if err := wantArgs(args); err != nil {
					return err
				}
				return c.health()
			}
		},
	},
}

// clientCommand is one client subcommand.
type clientCommand struct {
	name     string
	summary  string
	synopsis []string // argument forms shown by --help, after "tagcache <name>"
	// setup registers the command's own flags (the common ones are already there) and
	// returns its action.
	setup func(fs *flag.FlagSet) action
}

// action runs a client command with its positional arguments. It returns a usageError
// for bad arguments and errMiss when the reply is a miss it has already reported.
type action func(c *client, args []string) error

// usageError is a mistake on the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// errMiss reports a miss that the action has already printed (exit status 1, nothing on
// stderr).
var errMiss = errors.New("not found")

func (cc clientCommand) main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(cc.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported below, help goes to stdout
	fs.Usage = func() {}
	common := addCommonFlags(fs)
	act := cc.setup(fs)
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "tagcache %s: %v\n", cc.name, err)
		return code
	}
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		cc.usage(fs, stdout)
		return 0
	}
	if err != nil {
		return fail(2, fmt.Errorf("%w (see 'tagcache %s --help')", err, cc.name))
	}
	c, err := common.client(fs, os.Getenv, stdout)
	if err != nil {
		return fail(2, err)
	}
	var ue usageError
	switch err := act(c, pos); {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		return fail(2, fmt.Errorf("%w (see 'tagcache %s --help')", err, cc.name))
	case errors.Is(err, errMiss):
		return 1
	default:
		return fail(1, err)
	}
}

func (cc clientCommand) usage(fs *flag.FlagSet, w io.Writer) {
	synopsis := cc.synopsis
	if len(synopsis) == 0 {
		synopsis = []string{""}
	}
	fmt.Fprint(w, "Usage:\n")
	for _, s := range synopsis {
		fmt.Fprintf(w, "  %s\n", strings.Join(strings.Fields("tagcache "+cc.name+" "+s+" [flags]"), " "))
	}
	fmt.Fprintf(w, "\n%s%s.\n", strings.ToUpper(cc.summary[:1]), cc.summary[1:])
	fmt.Fprint(w, "\nFlags may come before or after the arguments; put -- before an argument that\nstarts with a dash. Exit status: 0 done, 1 miss or error from the node, 2 usage.\n\nFlags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// parseInterspersed parses args with fs, allowing flags after positional arguments; "--"
// ends the flags. It returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var flags, pos []string
scan:
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			break scan
		case len(a) > 1 && a[0] == '-':
			flags = append(flags, a)
			name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
			if !strings.Contains(name, "=") && takesValue(fs, name) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		default:
			pos = append(pos, a)
		}
	}
	if err := fs.Parse(flags); err != nil {
		return nil, err
	}
	return append(pos, fs.Args()...), nil
}

// takesValue reports whether the flag name is defined and needs a value (is not boolean).
func takesValue(fs *flag.FlagSet, name string) bool {
	fl := fs.Lookup(name)
	if fl == nil {
		return false
	}
	b, ok := fl.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

// commonFlags are the connection and output flags of every client command.
type commonFlags struct {
	host     string
	port     int
	username string
	password string
	token    string
	timeout  time.Duration
	json     bool
}

func addCommonFlags(fs *flag.FlagSet) *commonFlags {
	f := &commonFlags{}
	fs.StringVar(&f.host, "host", node.DefaultBind, "host name or IP address of the node")
	fs.IntVar(&f.port, "port", node.DefaultHTTPPort, "the node's HTTP API port")
	fs.StringVar(&f.username, "username", "", "username for HTTP Basic auth (default: $TAGCACHE_USERNAME, else \""+node.DefaultUsername+"\")")
	fs.StringVar(&f.password, "password", "", "password for HTTP Basic auth (default: $TAGCACHE_PASSWORD, else \""+node.DefaultPassword+"\", which only a loopback node accepts)")
	fs.StringVar(&f.token, "token", "", "bearer token from POST /auth/login, sent instead of the username and password (default: $TAGCACHE_TOKEN)")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "give up on a request after this long")
	fs.BoolVar(&f.json, "json", false, "print the node's JSON reply verbatim on one line (one line per request), for scripts")
	return f
}

// client checks the common flags, fills the credentials not given on the command line
// from the environment or the defaults, and returns a client for the node.
func (f *commonFlags) client(fs *flag.FlagSet, getenv func(string) string, stdout io.Writer) (*client, error) {
	if f.port < 1 || f.port > 65535 {
		return nil, usageErrorf("--port must be 1..65535, got %d", f.port)
	}
	if f.timeout <= 0 {
		return nil, usageErrorf("--timeout must be positive, got %s", f.timeout)
	}
	if f.host == "" {
		return nil, usageErrorf("--host must not be empty")
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	pick := func(name, value, env, def string) string {
		if set[name] {
			return value
		}
		if v := getenv(env); v != "" {
			return v
		}
		return def
	}
	user := pick("username", f.username, "TAGCACHE_USERNAME", node.DefaultUsername)
	pass := pick("password", f.password, "TAGCACHE_PASSWORD", node.DefaultPassword)
	token := pick("token", f.token, "TAGCACHE_TOKEN", "")
	c := &client{
		base:   "http://" + net.JoinHostPort(strings.Trim(f.host, "[]"), strconv.Itoa(f.port)),
		http:   &http.Client{Timeout: f.timeout},
		json:   f.json,
		stdout: stdout,
	}
	switch {
	case token != "":
		c.authorization, c.bearer = "Bearer "+token, true
	case user != "" || pass != "":
		c.authorization = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	return c, nil
}

// client sends requests to one node's HTTP API and prints the replies.
type client struct {
	base          string // "http://host:port"
	authorization string // Authorization header value, or ""
	bearer        bool   // authorization is a bearer token
	http          *http.Client
	json          bool // print replies verbatim instead of the human output
	stdout        io.Writer
}

// maxReplyBytes bounds the reply the client reads to one request.
const maxReplyBytes = 256 << 20

// call sends one request (body, if not nil, as JSON) and decodes the JSON reply into out
// (if not nil). A reply other than 200, or with "ok":false, is an error; with --json, a
// 200 reply is printed verbatim on one line.
func (c *client) call(method, path string, query url.Values, body, out any) error {
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, target, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.authorization != "" {
		req.Header.Set("Authorization", c.authorization)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		switch {
		case errors.As(err, &ue) && ue.Timeout():
			return fmt.Errorf("%s %s: no reply within %s (see --timeout)", method, target, c.http.Timeout)
		case errors.As(err, &ue):
			err = ue.Err
		}
		return fmt.Errorf("%s %s: %w (is the node running? check --host and --port)", method, target, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes+1))
	switch {
	case err != nil:
		return fmt.Errorf("%s %s: read reply: %w", method, target, err)
	case len(raw) > maxReplyBytes:
		return fmt.Errorf("%s %s: reply larger than %d bytes", method, target, maxReplyBytes)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		if c.bearer {
			return errors.New("unauthorized (HTTP 401): the node rejected the bearer token; get a new one from POST /auth/login, or use --username and --password")
		}
		return errors.New("unauthorized (HTTP 401): the node rejected the credentials; pass --username and --password (or set TAGCACHE_USERNAME and TAGCACHE_PASSWORD), or --token")
	}
	if !json.Valid(raw) {
		return fmt.Errorf("%s %s: HTTP %s, and the reply is not JSON: %q", method, target, resp.Status, snippet(raw))
	}
	var status struct {
		OK    *bool  `json:"ok"`
		Error string `json:"error"`
	}
	_ = json.Unmarshal(raw, &status) // fields of another type just stay empty
	if resp.StatusCode != http.StatusOK {
		msg := status.Error
		if msg == "" {
			msg = snippet(raw)
		}
		return fmt.Errorf("%s %s: HTTP %s: %s", method, target, resp.Status, msg)
	}
	if c.json {
		var line bytes.Buffer
		if err := json.Compact(&line, raw); err != nil {
			return fmt.Errorf("%s %s: %w", method, target, err)
		}
		line.WriteByte('\n')
		if _, err := c.stdout.Write(line.Bytes()); err != nil {
			return err
		}
	}
	if status.OK != nil && !*status.OK {
		if status.Error == "" {
			return errors.New("the node refused the request without saying why")
		}
		return errors.New(status.Error)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: unexpected reply %q: %w", method, target, snippet(raw), err)
		}
	}
	return nil
}

// snippet shortens a reply body for an error message.
func snippet(b []byte) string {
	const limit = 200
	s := strings.TrimSpace(string(b))
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}

// printf writes the human output; with --json it writes nothing.
func (c *client) printf(format string, args ...any) {
	if !c.json {
		fmt.Fprintf(c.stdout, format, args...)
	}
}

// entryFlags are the flags of the commands that write an entry.
type entryFlags struct {
	tags  string
	ttlMS int64
}

func addEntryFlags(fs *flag.FlagSet, ttlUsage string) *entryFlags {
	e := &entryFlags{}
	fs.StringVar(&e.tags, "tags", "", "comma-separated tags to attach to the entry")
	fs.Int64Var(&e.ttlMS, "ttl-ms", 0, ttlUsage)
	return e
}

// request returns the JSON body of a write of key: ttl_ms only when given, tags always
// for put and add (the original server requires them), only when given otherwise.
func (e *entryFlags) request(key string, alwaysTags bool) (map[string]any, error) {
	if e.ttlMS < 0 {
		return nil, usageErrorf("--ttl-ms must not be negative, got %d", e.ttlMS)
	}
	body := map[string]any{"key": key}
	if tags := splitList(e.tags); len(tags) > 0 || alwaysTags {
		body["tags"] = tags
	}
	if e.ttlMS > 0 {
		body["ttl_ms"] = e.ttlMS
	}
	return body, nil
}

// describe prints the tags and TTL given on the command line, under a write's summary.
func (e *entryFlags) describe(c *client) {
	if tags := splitList(e.tags); len(tags) > 0 {
		c.printf("  Tags: %s\n", strings.Join(tags, ", "))
	}
	if e.ttlMS > 0 {
		c.printf("  TTL: %dms\n", e.ttlMS)
	}
}

// writeCommand is put (path /put) and add (path /add).
func writeCommand(path string) func(*flag.FlagSet) action {
	return func(fs *flag.FlagSet) action {
		e := addEntryFlags(fs, "expire the entry after this many milliseconds (0: never)")
		return func(c *client, args []string) error {
			if err := wantArgs(args, "key", "value"); err != nil {
				return err
			}
			key, value := args[0], args[1]
			if key == "" {
				return usageErrorf("the key must not be empty")
			}
			body, err := e.request(key, true)
			if err != nil {
				return err
			}
			body["value"] = value
			var reply struct {
				Added *bool `json:"added"`
			}
			if err := c.call(http.MethodPost, path, nil, body, &reply); err != nil {
				return err
			}
			switch {
			case path == "/put":
				c.printf("Stored key '%s'\n", key)
			case reply.Added == nil:
				return errors.New("the node's reply does not say whether the key was added")
			case *reply.Added:
				c.printf("Added key '%s'\n", key)
			default:
				c.printf("Key '%s' already exists; not changed\n", key)
				return nil
			}
			e.describe(c)
			return nil
		}
	}
}

// counterCommand is increment (path /incr) and decrement (path /decr).
func counterCommand(path string) func(*flag.FlagSet) action {
	return func(fs *flag.FlagSet) action {
		by := fs.Int64("by", 1, "amount to add or subtract")
		e := addEntryFlags(fs, "set the entry's TTL to this many milliseconds (0: keep its TTL; none for a new key)")
		return func(c *client, args []string) error {
			key, err := keyArg(args)
			if err != nil {
				return err
			}
			body, err := e.request(key, false)
			if err != nil {
				return err
			}
			body["by"] = *by
			var reply struct {
				Value *int64 `json:"value"`
			}
			if err := c.call(http.MethodPost, path, nil, body, &reply); err != nil {
				return err
			}
			if reply.Value == nil {
				return errors.New("the node's reply has no value")
			}
			c.printf("Key: %s\nValue: %d\n", key, *reply.Value)
			return nil
		}
	}
}

func (c *client) getKey(key string) error {
	var reply struct {
		Value *string `json:"value"`
		Error string  `json:"error"`
	}
	if err := c.call(http.MethodGet, "/get/"+pathSegment(key), nil, nil, &reply); err != nil {
		return err
	}
	switch {
	case reply.Error == "not_found":
		c.printf("Key '%s' not found\n", key)
		return errMiss
	case reply.Error != "":
		return errors.New(reply.Error)
	case reply.Value == nil:
		return errors.New("the node's reply has no value")
	}
	c.printf("Key: %s\nValue: %s\n", key, *reply.Value)
	return nil
}

func (c *client) getTags(tags []string) error {
	for _, tag := range tags {
		var reply struct {
			Keys []string `json:"keys"`
		}
		if err := c.call(http.MethodGet, "/keys-by-tag", url.Values{"tag": {tag}}, nil, &reply); err != nil {
			return err
		}
		if len(reply.Keys) == 0 {
			c.printf("Tag '%s' has no keys\n", tag)
			continue
		}
		slices.Sort(reply.Keys)
		c.printf("Tag '%s' has %s:\n", tag, plural(int64(len(reply.Keys)), "key", "keys"))
		for _, k := range reply.Keys {
			c.printf("  - %s\n", k)
		}
	}
	return nil
}

func (c *client) flushKey(key string) error {
	var reply struct {
		Success bool `json:"success"`
	}
	if err := c.call(http.MethodPost, "/invalidate-key", nil, map[string]string{"key": key}, &reply); err != nil {
		return err
	}
	if reply.Success {
		c.printf("Flushed key '%s'\n", key)
	} else {
		c.printf("Key '%s' was not found\n", key)
	}
	return nil
}

// countReply is the reply of the invalidations that count what they removed.
type countReply struct {
	Success bool  `json:"success"`
	Count   int64 `json:"count"`
}

func (c *client) flushTags(tags []string) error {
	var reply countReply
	body := map[string]any{"tags": tags, "mode": "any"}
	if err := c.call(http.MethodPost, "/invalidate/tags", nil, body, &reply); err != nil {
		return err
	}
	c.printf("Flushed %s with tags: %s\n", plural(reply.Count, "entry", "entries"), strings.Join(tags, ", "))
	return nil
}

func (c *client) flushAll() error {
	var reply countReply
	if err := c.call(http.MethodPost, "/flush", nil, nil, &reply); err != nil {
		return err
	}
	c.printf("Flushed all %s from the cache\n", plural(reply.Count, "entry", "entries"))
	return nil
}

func (c *client) stats() error {
	var s node.StatsReply
	if err := c.call(http.MethodGet, "/stats", nil, nil, &s); err != nil {
		return err
	}
	c.printf("TagCache Statistics:\n====================\n")
	for _, row := range []struct {
		name  string
		value any
	}{
		{"Hits", s.Hits}, {"Misses", s.Misses}, {"Puts", s.Puts},
		{"Invalidations", s.Invalidations},
		{"Hit Ratio", fmt.Sprintf("%.2f%%", 100*s.HitRatio)},
		{"Total Items", s.Items}, {"Total Bytes", s.Bytes}, {"Total Tags", s.Tags},
		{"Evictions", s.Evictions}, {"Expirations", s.Expirations},
	} {
		c.printf("%-15s%v\n", row.name+":", row.value)
	}
	return nil
}

func (c *client) health() error {
	var h struct {
		Status string `json:"status"`
		Time   string `json:"time"`
	}
	if err := c.call(http.MethodGet, "/health", nil, nil, &h); err != nil {
		return err
	}
	if h.Status != "ok" {
		return fmt.Errorf("the node reports status %q", h.Status)
	}
	c.printf("Health Check: OK\nServer Time: %s\n", h.Time)
	return nil
}

// wantArgs checks that args are exactly the arguments named.
func wantArgs(args []string, names ...string) error {
	switch {
	case len(args) < len(names):
		return usageErrorf("missing <%s>", names[len(args)])
	case len(args) > len(names):
		return usageErrorf("unexpected argument %q", args[len(names)])
	}
	return nil
}

// keyArg returns the one argument, a key.
func keyArg(args []string) (string, error) {
	if err := wantArgs(args, "key"); err != nil {
		return "", err
	}
	if args[0] == "" {
		return "", usageErrorf("the key must not be empty")
	}
	return args[0], nil
}

// tagsArg returns the one argument, a comma-separated list of tags.
func tagsArg(args []string) ([]string, error) {
	if err := wantArgs(args, "tags"); err != nil {
		return nil, err
	}
	tags := splitList(args[0])
	if len(tags) == 0 {
		return nil, usageErrorf("no tags in %q", args[0])
	}
	return tags, nil
}

// subcommand splits off the first argument, which must be one of kinds.
func subcommand(args []string, kinds ...string) (string, []string, error) {
	want := strings.Join(kinds, ", ")
	if len(args) == 0 {
		return "", nil, usageErrorf("missing what to act on: one of %s", want)
	}
	if !slices.Contains(kinds, args[0]) {
		return "", nil, usageErrorf("unknown %q: want one of %s", args[0], want)
	}
	return args[0], args[1:], nil
}

// splitList splits a comma-separated list, trimming items and dropping empty ones. The
// result is never nil, so it encodes as a JSON array.
func splitList(s string) []string {
	out := []string{}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// pathSegment escapes a key as one URL path segment. "." and ".." are escaped too, so
// that no HTTP library cleans them out of the path.
func pathSegment(key string) string {
	if key == "." || key == ".." {
		return strings.Repeat("%2E", len(key))
	}
	return url.PathEscape(key)
}

// plural returns "1 <one>" or "<n> <many>".
func plural(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.FormatInt(n, 10) + " " + many
}
