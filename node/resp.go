package node

// The Redis protocol (RESP2) listener, so Redis client libraries, redis-cli and
// redis-benchmark can use a node. Requests are arrays of bulk strings or inline commands
// (space-separated words, with Redis's quoting). Replies, limits and error texts follow
// Redis 7 where a command exists in Redis; there is one database (SELECT 0) and no
// RESP3 (HELLO 3 is refused, so clients fall back to RESP2).
//
// Commands: PING, ECHO, QUIT, AUTH, HELLO, SELECT, CLIENT (SETNAME, GETNAME, ID,
// SETINFO), COMMAND (COUNT, INFO, LIST, DOCS), CONFIG GET, INFO, DBSIZE, GET, SET,
// SETNX, SETEX, PSETEX, MGET, MSET, DEL, UNLINK, EXISTS, INCR, INCRBY, DECR, DECRBY,
// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, TTL, PTTL, PERSIST, FLUSHALL, FLUSHDB.
// MSET is not atomic: it writes key by key (its arguments are checked against the key and
// value limits first). INCR/DECR keep the TTL and tags the entry had.
//
// Tag commands (TagCache's own):
//
//	SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL] [TAGS t1,t2,...]
//	    TAGS takes one argument, a comma-separated tag list (empty items are dropped).
//	    Without TAGS the new entry has no tags.
//	TAG.INVALIDATE tag [tag ...]     removes every entry carrying any of the tags;
//	                                 replies the number removed (integer).
//	TAG.INVALIDATEALL tag [tag ...]  removes every entry carrying all of the tags;
//	                                 replies the number removed (integer).
//	TAG.KEYS tag                     the live keys carrying tag, sorted (array).
//	TAG.OF key                       the key's tags, sorted (array); a null array when
//	                                 the key does not exist.
//
// Authentication follows the text protocol's policy (Config.TCPAuth): when it is on,
// every command but AUTH, HELLO ... AUTH and QUIT gets -NOAUTH until the client sends
// AUTH password (for the configured username) or AUTH username password; five failed
// attempts close the connection.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/tagcache/tagcache/cache"
)

// ServeRESP serves the Redis protocol on ln in the background until Shutdown.
func (n *Node) ServeRESP(ln net.Listener) {
	n.track("resp", ln)
	n.log.Info("resp listening", "addr", ln.Addr().String(), "auth", n.tcpAuth)
	n.resp.startLoops()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.resp.acceptLoop(ln, n.resp.serveConn) // Node.Shutdown drains the connections
	}()
}

// respSession is one connection's state.
type respSession struct {
	srv      *respServer
	rw       respWriter
	id       int64         // CLIENT ID
	auth     sessionAuth   // AUTH succeeded (under the current credentials), or not required
	failures int           // failed AUTH attempts
	name     string        // CLIENT SETNAME
	quit     bool          // close the connection after this request's reply
	vals     [][]byte      // MGET's scratch
	counts   tally         // requests run since the batch began, by command
	mark     time.Duration // srv.clock() when the current batch arrived
	timing   bool          // the next request is the batch's first: time it
}

// respCommand is one entry of the command table.
type respCommand struct {
	name  string // lower case, as in error replies, COMMAND and metrics
	arity int    // as Redis: n arguments exactly (the name included), -n at least n
	flags string // COMMAND's flags, space-separated
	// Key positions for COMMAND (first, last, step; 0 when there are none).
	firstKey, lastKey, keyStep int
	noAuth                     bool // allowed before AUTH
	run                        func(ss *respSession, args [][]byte)
}

var (
	respCommands      []respCommand
	respCommandsByLen [24][]int // name length -> indexes in respCommands
)

// respUnknown is the command index unknown commands are counted under.
var respUnknown int

func init() {
	respCommands = []respCommand{
		{name: "ping", arity: -1, flags: "fast", run: cmdPing},
		{name: "echo", arity: 2, flags: "fast", run: cmdEcho},
		{name: "quit", arity: -1, flags: "fast noauth", noAuth: true, run: cmdQuit},
		{name: "auth", arity: -2, flags: "fast noauth no-auth", noAuth: true, run: cmdAuth},
		{name: "hello", arity: -1, flags: "fast noauth no-auth", noAuth: true, run: cmdHello},
		{name: "select", arity: 2, flags: "fast", run: cmdSelect},
		{name: "client", arity: -2, flags: "", run: cmdClient},
		{name: "command", arity: -1, flags: "", run: cmdCommand},
		{name: "config", arity: -2, flags: "admin", run: cmdConfig},
		{name: "info", arity: -1, flags: "", run: cmdInfo},
		{name: "dbsize", arity: 1, flags: "readonly fast", run: cmdDBSize},
		{name: "get", arity: 2, flags: "readonly fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdGet},
		{name: "set", arity: -3, flags: "write denyoom", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdSet},
		{name: "setnx", arity: 3, flags: "write denyoom fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdSetNX},
		{name: "setex", arity: 4, flags: "write denyoom", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdSetEX},
		{name: "psetex", arity: 4, flags: "write denyoom", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdSetEX},
		{name: "mget", arity: -2, flags: "readonly fast", firstKey: 1, lastKey: -1, keyStep: 1, run: cmdMGet},
		{name: "mset", arity: -3, flags: "write denyoom", firstKey: 1, lastKey: -1, keyStep: 2, run: cmdMSet},
		{name: "del", arity: -2, flags: "write", firstKey: 1, lastKey: -1, keyStep: 1, run: cmdDel},
		{name: "unlink", arity: -2, flags: "write fast", firstKey: 1, lastKey: -1, keyStep: 1, run: cmdDel},
		{name: "exists", arity: -2, flags: "readonly fast", firstKey: 1, lastKey: -1, keyStep: 1, run: cmdExists},
		{name: "incr", arity: 2, flags: "write denyoom fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdIncr},
		{name: "incrby", arity: 3, flags: "write denyoom fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdIncr},
		{name: "decr", arity: 2, flags: "write denyoom fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdIncr},
		{name: "decrby", arity: 3, flags: "write denyoom fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdIncr},
		{name: "expire", arity: -3, flags: "write fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdExpire},
		{name: "pexpire", arity: -3, flags: "write fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdExpire},
		{name: "expireat", arity: -3, flags: "write fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdExpire},
		{name: "pexpireat", arity: -3, flags: "write fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdExpire},
		{name: "ttl", arity: 2, flags: "readonly fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdTTL},
		{name: "pttl", arity: 2, flags: "readonly fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdTTL},
		{name: "persist", arity: 2, flags: "write fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdPersist},
		{name: "flushall", arity: -1, flags: "write", run: cmdFlush},
		{name: "flushdb", arity: -1, flags: "write", run: cmdFlush},
		{name: "tag.invalidate", arity: -2, flags: "write", run: cmdTagInvalidate},
		{name: "tag.invalidateall", arity: -2, flags: "write", run: cmdTagInvalidate},
		{name: "tag.keys", arity: 2, flags: "readonly", run: cmdTagKeys},
		{name: "tag.of", arity: 2, flags: "readonly fast", firstKey: 1, lastKey: 1, keyStep: 1, run: cmdTagOf},
	}
	respUnknown = len(respCommands)
	for i, c := range respCommands {
		respCommandsByLen[len(c.name)] = append(respCommandsByLen[len(c.name)], i)
	}
}

// lowerName writes b lower-cased (ASCII) into buf, or returns nil if it does not fit.
func lowerName(b []byte, buf []byte) []byte {
	if len(b) > len(buf) {
		return nil
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return buf[:len(b)]
}

// lookupRESPCommand finds a command by name, case-insensitively, without allocating.
func lookupRESPCommand(name []byte) (int, bool) {
	if len(name) >= len(respCommandsByLen) {
		return 0, false
	}
	for _, i := range respCommandsByLen[len(name)] {
		if equalFoldLower(name, respCommands[i].name) {
			return i, true
		}
	}
	return 0, false
}

// equalFoldLower reports whether b equals the lower-case ASCII string lower, ignoring
// the case of b's letters.
func equalFoldLower(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

func arityOK(arity, n int) bool {
	if arity >= 0 {
		return n == arity
	}
	return n >= -arity
}

// Error replies with Redis's texts.
const (
	errRESPNoAuth        = "NOAUTH Authentication required."
	errRESPWrongPass     = "WRONGPASS invalid username-password pair or user is disabled."
	errRESPSyntax        = "ERR syntax error"
	errRESPNotInteger    = "ERR value is not an integer or out of range"
	errRESPOverflow      = "ERR increment or decrement would overflow"
	errRESPEmptyKey      = "ERR empty keys are not supported"
	errRESPNoProto       = "NOPROTO sorry, this protocol version is not supported"
	errRESPHelloNoAuth   = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"
	errRESPDBOutOfRange  = "ERR DB index is out of range"
	errRESPBadClientName = "ERR Client names cannot contain spaces, newlines or special characters."
)

// exec runs one request and writes its reply. It returns false to close the connection.
func (ss *respSession) exec(args [][]byte) bool {
	ss.rw.failed = false
	i, ok := lookupRESPCommand(args[0])
	if !ok {
		i = respUnknown
		ss.unknownCommand(args)
	} else {
		cmd := &respCommands[i]
		switch {
		case !arityOK(cmd.arity, len(args)):
			ss.wrongArgs(cmd.name)
		case !cmd.noAuth && !ss.auth.valid(ss.srv.n.auth):
			ss.rw.error(errRESPNoAuth)
		default:
			cmd.run(ss, args)
		}
	}
	ss.observe(i)
	return !ss.quit
}

// observe counts the request that just ended as command i. Only the first request of
// a batch is timed, from the batch's arrival to its end: two clock reads per batch, not
// per request, since on some virtual machines a clock read costs a fifth of a GET. The
// latency histogram is therefore a sample (every request of an unpipelined client, one
// per round trip of a pipelining one).
func (ss *respSession) observe(i int) {
	ss.counts.add(i, ss.rw.failed)
	if ss.timing {
		ss.timing = false
		now := ss.srv.clock()
		ss.srv.cmds[i].ObserveLatency(now - ss.mark)
		ss.mark = now
	}
}

func (ss *respSession) wrongArgs(name string) {
	ss.rw.error("ERR wrong number of arguments for '" + name + "' command")
}

// unknownCommand writes Redis's reply to an unknown command: its name and the start of
// its arguments, each cut to 128 bytes in all.
func (ss *respSession) unknownCommand(args [][]byte) {
	var b strings.Builder
	b.WriteString("ERR unknown command '")
	b.Write(args[0][:min(len(args[0]), 128)])
	b.WriteString("', with args beginning with: ")
	n := 0
	for _, a := range args[1:] {
		if n >= 128 {
			break
		}
		a = a[:min(len(a), 128-n)]
		b.WriteByte('\'')
		b.Write(a)
		b.WriteString("' ")
		n += len(a) + 3
	}
	ss.rw.error(b.String())
}

func (ss *respSession) unknownSubcommand(sub []byte, cmd string) {
	ss.rw.error("ERR unknown subcommand '" + string(sub[:min(len(sub), 128)]) + "'. Try " + cmd + " HELP.")
}

// backendError writes the reply for an error from the Backend.
func (ss *respSession) backendError(err error) {
	switch {
	case errors.Is(err, cache.ErrNotInteger):
		ss.rw.error(errRESPNotInteger)
	case errors.Is(err, cache.ErrOverflow):
		ss.rw.error(errRESPOverflow)
	case errors.Is(err, cache.ErrEmptyKey):
		ss.rw.error(errRESPEmptyKey)
	default: // limit errors (cache.ErrLimit) name the limit; transport errors their peer
		ss.rw.error("ERR " + err.Error())
	}
}

var respCtx = context.Background()

func (ss *respSession) backend() Backend { return ss.srv.n.backend }

func (ss *respSession) nowMs() int64 { return ss.srv.now().UnixMilli() }

// --- connection commands

func cmdPing(ss *respSession, args [][]byte) {
	switch len(args) {
	case 1:
		ss.rw.raw("+PONG\r\n")
	case 2:
		ss.rw.bulk(args[1])
	default:
		ss.wrongArgs("ping")
	}
}

func cmdEcho(ss *respSession, args [][]byte) { ss.rw.bulk(args[1]) }

func cmdQuit(ss *respSession, _ [][]byte) {
	ss.rw.raw(respOK)
	ss.quit = true
}

// configuredUsername is the username AUTH with one argument authenticates as.
func (ss *respSession) configuredUsername() string {
	a := ss.srv.n.auth
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.username
}

// authenticate checks credentials, replying WRONGPASS on failure; too many failures
// close the connection.
func (ss *respSession) authenticate(user, pass []byte) bool {
	if ss.auth.login(ss.srv.n.auth, string(user), string(pass)) {
		ss.failures = 0
		return true
	}
	ss.failures++
	ss.rw.error(errRESPWrongPass)
	if ss.failures >= maxAuthFailures {
		ss.quit = true
	}
	return false
}

func cmdAuth(ss *respSession, args [][]byte) {
	var user, pass []byte
	switch len(args) {
	case 2:
		user, pass = []byte(ss.configuredUsername()), args[1]
	case 3:
		user, pass = args[1], args[2]
	default:
		ss.rw.error(errRESPSyntax)
		return
	}
	if ss.authenticate(user, pass) {
		ss.rw.raw(respOK)
	}
}

// cmdHello answers HELLO [protover [AUTH user pass] [SETNAME name]]. Only RESP2 is
// spoken; the reply is Redis's server map as a flat array.
func cmdHello(ss *respSession, args [][]byte) {
	if len(args) >= 2 {
		v, ok := parseRESPInt(args[1])
		if !ok {
			ss.rw.error("ERR Protocol version is not an integer or out of range")
			return
		}
		if v != 2 {
			ss.rw.error(errRESPNoProto)
			return
		}
	}
	var user, pass, name []byte
	hasAuth, hasName := false, false
	for i := 2; i < len(args); i++ {
		var buf [8]byte
		more := len(args) - i - 1
		switch string(lowerName(args[i], buf[:])) {
		case "auth":
			if more >= 2 {
				user, pass, hasAuth = args[i+1], args[i+2], true
				i += 2
				continue
			}
		case "setname":
			if more >= 1 {
				name, hasName = args[i+1], true
				i++
				continue
			}
		}
		ss.rw.error("ERR Syntax error in HELLO option '" + string(args[i][:min(len(args[i]), 128)]) + "'")
		return
	}
	if hasAuth && !ss.authenticate(user, pass) {
		return
	}
	if !ss.auth.valid(ss.srv.n.auth) {
		ss.rw.error(errRESPHelloNoAuth)
		return
	}
	if hasName {
		if !validClientName(name) {
			ss.rw.error(errRESPBadClientName)
			return
		}
		ss.name = string(name)
	}
	rw := &ss.rw
	rw.array(14)
	rw.bulkString("server")
	rw.bulkString("tagcache")
	rw.bulkString("version")
	rw.bulkString(respRedisVersion)
	rw.bulkString("proto")
	rw.int(2)
	rw.bulkString("id")
	rw.int(ss.id)
	rw.bulkString("mode")
	rw.bulkString("standalone")
	rw.bulkString("role")
	rw.bulkString("master")
	rw.bulkString("modules")
	rw.raw(respEmpty)
}

// respRedisVersion is the Redis version whose commands and replies the listener follows;
// clients read it from HELLO and INFO to pick features.
const respRedisVersion = "7.0.0"

func cmdSelect(ss *respSession, args [][]byte) {
	db, ok := parseRESPInt(args[1])
	switch {
	case !ok:
		ss.rw.error(errRESPNotInteger)
	case db != 0:
		ss.rw.error(errRESPDBOutOfRange)
	default:
		ss.rw.raw(respOK)
	}
}

// validClientName is Redis's rule: printable ASCII, no spaces.
func validClientName(name []byte) bool {
	for _, c := range name {
		if c < '!' || c > '~' {
			return false
		}
	}
	return true
}

func cmdClient(ss *respSession, args [][]byte) {
	var buf [16]byte
	sub := string(lowerName(args[1], buf[:]))
	arity := 0
	switch sub {
	case "setname":
		arity = 3
	case "getname", "id":
		arity = 2
	case "setinfo":
		arity = 4
	default:
		ss.unknownSubcommand(args[1], "CLIENT")
		return
	}
	if len(args) != arity {
		ss.wrongArgs("client|" + sub)
		return
	}
	switch sub {
	case "setname":
		if !validClientName(args[2]) {
			ss.rw.error(errRESPBadClientName)
			return
		}
		ss.name = string(args[2])
		ss.rw.raw(respOK)
	case "getname":
		if ss.name == "" {
			ss.rw.raw(respNull)
			return
		}
		ss.rw.bulkString(ss.name)
	case "id":
		ss.rw.int(ss.id)
	case "setinfo":
		var ab [16]byte
		switch string(lowerName(args[2], ab[:])) {
		case "lib-name", "lib-ver":
			ss.rw.raw(respOK)
		default:
			ss.rw.error("ERR Unrecognized option '" + string(args[2][:min(len(args[2]), 128)]) + "'")
		}
	}
}

// cmdCommand answers COMMAND, COMMAND COUNT, COMMAND INFO name..., COMMAND LIST and
// COMMAND DOCS (an empty reply: no documentation is served).
func cmdCommand(ss *respSession, args [][]byte) {
	rw := &ss.rw
	if len(args) == 1 {
		rw.array(len(respCommands))
		for i := range respCommands {
			writeCommandInfo(rw, &respCommands[i])
		}
		return
	}
	var buf [8]byte
	switch sub := string(lowerName(args[1], buf[:])); sub {
	case "count":
		if len(args) != 2 {
			ss.wrongArgs("command|count")
			return
		}
		rw.int(int64(len(respCommands)))
	case "list":
		rw.array(len(respCommands))
		for _, c := range respCommands {
			rw.bulkString(c.name)
		}
	case "docs":
		rw.raw(respEmpty)
	case "info":
		rw.array(len(args) - 2)
		for _, name := range args[2:] {
			if i, ok := lookupRESPCommand(name); ok {
				writeCommandInfo(rw, &respCommands[i])
			} else {
				rw.raw(respNull)
			}
		}
	default:
		ss.unknownSubcommand(args[1], "COMMAND")
	}
}

// writeCommandInfo writes one command's entry in Redis 7's COMMAND format.
func writeCommandInfo(rw *respWriter, c *respCommand) {
	rw.array(10)
	rw.bulkString(c.name)
	rw.int(int64(c.arity))
	flags := strings.Fields(c.flags)
	rw.array(len(flags))
	for _, f := range flags {
		rw.status(f)
	}
	rw.int(int64(c.firstKey))
	rw.int(int64(c.lastKey))
	rw.int(int64(c.keyStep))
	for range 4 { // ACL categories, tips, key specifications, subcommands
		rw.raw(respEmpty)
	}
}

// configValues are the parameters CONFIG GET reports, enough for the start-up queries of
// redis-benchmark and client libraries.
func (s *respServer) configValues() [][2]string {
	cc := s.n.store.Config()
	return [][2]string{
		{"appendonly", "no"},
		{"databases", "1"},
		{"maxclients", strconv.Itoa(s.n.cfg.MaxConnections)},
		{"maxmemory", strconv.FormatInt(cc.MaxMemory, 10)},
		{"proto-max-bulk-len", strconv.Itoa(s.maxBulk)},
		{"save", ""},
		{"timeout", strconv.Itoa(int(s.n.cfg.IdleTimeout / time.Second))},
	}
}

func cmdConfig(ss *respSession, args [][]byte) {
	var buf [16]byte
	switch sub := string(lowerName(args[1], buf[:])); sub {
	case "get":
		if len(args) < 3 {
			ss.wrongArgs("config|get")
			return
		}
		var out []string
		for _, kv := range ss.srv.configValues() {
			for _, p := range args[2:] {
				if ok, _ := path.Match(strings.ToLower(string(p)), kv[0]); ok {
					out = append(out, kv[0], kv[1])
					break
				}
			}
		}
		ss.rw.array(len(out))
		for _, s := range out {
			ss.rw.bulkString(s)
		}
	case "set":
		if len(args) < 4 || len(args)%2 != 0 {
			ss.wrongArgs("config|set")
			return
		}
		ss.rw.error("ERR Unknown option or number of arguments for CONFIG SET - '" + string(args[2][:min(len(args[2]), 128)]) + "'")
	case "resetstat":
		ss.rw.raw(respOK)
	default:
		ss.unknownSubcommand(args[1], "CONFIG")
	}
}

func cmdInfo(ss *respSession, args [][]byte) {
	st, err := ss.backend().Stats(respCtx)
	if err != nil {
		ss.backendError(err)
		return
	}
	ss.rw.bulkString(ss.srv.info(st, args[1:]))
}

// respInfoSections are the INFO sections, in Redis's order.
var respInfoSections = []string{"server", "clients", "memory", "persistence", "stats", "replication", "cluster", "keyspace"}

// info renders INFO in Redis's format: "# Section" headers, "field:value" lines, CRLF
// line ends, a blank line between sections. No section names (or default, all,
// everything) means every section; an unknown one is left out.
func (s *respServer) info(st cache.Stats, sections [][]byte) string {
	want := make(map[string]bool)
	for _, sec := range sections {
		name := strings.ToLower(string(sec))
		if name == "default" || name == "all" || name == "everything" {
			want = nil
			break
		}
		want[name] = true
	}
	if len(sections) == 0 {
		want = nil
	}
	cc := s.n.store.Config()
	var b strings.Builder
	field := func(name string, v any) { fmt.Fprintf(&b, "%s:%v\r\n", name, v) }
	for _, sec := range respInfoSections {
		if want != nil && !want[sec] {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + strings.ToUpper(sec[:1]) + sec[1:] + "\r\n")
		switch sec {
		case "server":
			uptime := int64(time.Since(s.started) / time.Second)
			port := 0
			if a, ok := s.n.Addr("resp").(*net.TCPAddr); ok {
				port = a.Port
			}
			field("redis_version", respRedisVersion)
			field("redis_mode", "standalone")
			field("server_name", "tagcache")
			field("os", runtime.GOOS+" "+runtime.GOARCH)
			field("arch_bits", strconv.IntSize)
			field("go_version", runtime.Version())
			field("process_id", os.Getpid())
			field("tcp_port", port)
			field("uptime_in_seconds", uptime)
			field("uptime_in_days", uptime/86400)
		case "clients":
			field("connected_clients", s.count.Load())
			field("maxclients", s.n.cfg.MaxConnections)
		case "memory":
			policy := "noeviction"
			if cc.MaxMemory > 0 {
				policy = "allkeys-lru"
			}
			field("used_memory", st.Bytes)
			field("used_memory_human", humanBytes(st.Bytes))
			field("maxmemory", cc.MaxMemory)
			field("maxmemory_human", humanBytes(cc.MaxMemory))
			field("maxmemory_policy", policy)
		case "persistence":
			field("loading", 0)
			field("rdb_changes_since_last_save", 0)
			field("aof_enabled", 0)
		case "stats":
			field("total_connections_received", s.accepted.Load())
			field("total_commands_processed", s.commands.Load())
			field("rejected_connections", s.rejected.Load())
			field("expired_keys", st.Expirations)
			field("evicted_keys", st.Evictions)
			field("keyspace_hits", st.Hits)
			field("keyspace_misses", st.Misses)
			field("tagcache_puts", st.Puts)
			field("tagcache_invalidations", st.Invalidations)
			field("tagcache_tags", st.Tags)
		case "replication":
			field("role", "master")
			field("connected_slaves", 0)
		case "cluster":
			field("cluster_enabled", 0)
		case "keyspace":
			if st.Items > 0 { // as Redis, an empty database is not listed
				fmt.Fprintf(&b, "db0:keys=%d,expires=0,avg_ttl=0\r\n", st.Items)
			}
		}
	}
	return b.String()
}

// humanBytes formats n as Redis's *_human fields do: 1023B, 1.50K, 2.00M, 3.00G.
func humanBytes(n int64) string {
	const k = 1024
	switch {
	case n < k:
		return strconv.FormatInt(n, 10) + "B"
	case n < k*k:
		return fmt.Sprintf("%.2fK", float64(n)/k)
	case n < k*k*k:
		return fmt.Sprintf("%.2fM", float64(n)/(k*k))
	default:
		return fmt.Sprintf("%.2fG", float64(n)/(k*k*k))
	}
}

// --- key commands

func cmdDBSize(ss *respSession, _ [][]byte) {
	st, err := ss.backend().Stats(respCtx)
	if err != nil {
		ss.backendError(err)
		return
	}
	ss.rw.int(st.Items)
}

func cmdGet(ss *respSession, args [][]byte) {
	v, ok, err := ss.backend().Get(respCtx, string(args[1]))
	switch {
	case err != nil:
		ss.backendError(err)
	case !ok:
		ss.rw.raw(respNull)
	default:
		ss.rw.bulk(v)
	}
}

// respTTL converts an expire argument n in unit milliseconds — relative, or a unix time
// when abs — into a store TTL: a time not in the future is cache.ExpireNow. It reports
// false when the time is out of range.
func respTTL(n, unit int64, abs bool, nowMs int64) (time.Duration, bool) {
	if n > math.MaxInt64/unit || n < math.MinInt64/unit {
		return 0, false
	}
	ms := n * unit
	if abs {
		if ms <= nowMs {
			return cache.ExpireNow, true
		}
		ms -= nowMs
	}
	if ms <= 0 {
		return cache.ExpireNow, true
	}
	if ms > maxTTLMillis {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

func (ss *respSession) invalidExpire(cmd string) {
	ss.rw.error("ERR invalid expire time in '" + cmd + "' command")
}

// splitTagList splits a comma-separated tag list, dropping empty items.
func splitTagList(b []byte) []string {
	out := make([]string, 0, bytes.Count(b, []byte{','})+1)
	for len(b) > 0 {
		item := b
		if i := bytes.IndexByte(b, ','); i >= 0 {
			item, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(item) > 0 {
			out = append(out, string(item))
		}
	}
	return out
}

// cmdSet answers SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]
// [TAGS list]. As Redis, the options are checked for syntax before the expire time.
func cmdSet(ss *respSession, args [][]byte) {
	var (
		opts       cache.SetOptions
		get, tags  bool
		expireKind string // "ex", "px", "exat", "pxat", "keepttl" or ""
		expireArg  []byte
	)
	for i := 3; i < len(args); i++ {
		var buf [8]byte
		more := i+1 < len(args)
		switch o := string(lowerName(args[i], buf[:])); o {
		case "nx", "xx":
			mode := cache.SetIfAbsent
			if o == "xx" {
				mode = cache.SetIfPresent
			}
			if opts.Mode != cache.SetAlways && opts.Mode != mode {
				ss.rw.error(errRESPSyntax)
				return
			}
			opts.Mode = mode
		case "get":
			get = true
		case "keepttl":
			if expireKind != "" && expireKind != o {
				ss.rw.error(errRESPSyntax)
				return
			}
			expireKind = o
		case "ex", "px", "exat", "pxat":
			if (expireKind != "" && expireKind != o) || !more {
				ss.rw.error(errRESPSyntax)
				return
			}
			expireKind, expireArg = o, args[i+1]
			i++
		case "tags":
			if tags || !more {
				ss.rw.error(errRESPSyntax)
				return
			}
			tags, opts.Tags = true, splitTagList(args[i+1])
			i++
		default:
			ss.rw.error(errRESPSyntax)
			return
		}
	}
	switch expireKind {
	case "keepttl":
		opts.KeepTTL = true
	case "ex", "px", "exat", "pxat":
		n, ok := parseRESPInt(expireArg)
		if !ok {
			ss.rw.error(errRESPNotInteger)
			return
		}
		unit := int64(1)
		if expireKind == "ex" || expireKind == "exat" {
			unit = 1000
		}
		abs := expireKind == "exat" || expireKind == "pxat"
		ttl, ok := respTTL(n, unit, abs, ss.nowMs())
		if n <= 0 || !ok {
			ss.invalidExpire("set")
			return
		}
		opts.TTL = ttl
	}
	key, value := string(args[1]), args[2]
	if !get && opts.Mode == cache.SetAlways && !opts.KeepTTL {
		if err := ss.backend().Put(respCtx, key, value, opts.TTL, opts.Tags); err != nil {
			ss.backendError(err)
			return
		}
		ss.rw.raw(respOK)
		return
	}
	res, err := ss.backend().Set(respCtx, key, value, opts)
	switch {
	case err != nil:
		ss.backendError(err)
	case get && res.HadOld:
		ss.rw.bulk(res.Old)
	case get, !res.Stored:
		ss.rw.raw(respNull)
	default:
		ss.rw.raw(respOK)
	}
}

func cmdSetNX(ss *respSession, args [][]byte) {
	added, err := ss.backend().Add(respCtx, string(args[1]), args[2], 0, nil)
	if err != nil {
		ss.backendError(err)
		return
	}
	ss.rw.bool(added)
}

// cmdSetEX answers SETEX key seconds value and PSETEX key milliseconds value.
func cmdSetEX(ss *respSession, args [][]byte) {
	name, unit := "setex", int64(1000)
	if len(args[0]) == len("psetex") {
		name, unit = "psetex", 1
	}
	n, ok := parseRESPInt(args[2])
	if !ok {
		ss.rw.error(errRESPNotInteger)
		return
	}
	ttl, ok := respTTL(n, unit, false, 0)
	if n <= 0 || !ok {
		ss.invalidExpire(name)
		return
	}
	if err := ss.backend().Put(respCtx, string(args[1]), args[3], ttl, nil); err != nil {
		ss.backendError(err)
		return
	}
	ss.rw.raw(respOK)
}

func cmdMGet(ss *respSession, args [][]byte) {
	vals := ss.vals[:0]
	for _, k := range args[1:] {
		v, ok, err := ss.backend().Get(respCtx, string(k))
		if err != nil {
			ss.backendError(err)
			clear(vals)
			return
		}
		if !ok {
			v = nil
		} else if v == nil {
			v = []byte{}
		}
		vals = append(vals, v)
	}
	ss.rw.array(len(vals))
	for _, v := range vals {
		if v == nil {
			ss.rw.raw(respNull)
		} else {
			ss.rw.bulk(v)
		}
	}
	clear(vals) // do not keep values alive
	if cap(vals) <= respKeepArgsAtIdle {
		ss.vals = vals
	}
}

// cmdMSet answers MSET key value [key value ...], writing key by key after checking
// every key and value against the store's limits, so a limit error writes nothing.
func cmdMSet(ss *respSession, args [][]byte) {
	if len(args)%2 == 0 {
		ss.wrongArgs("mset")
		return
	}
	cc := ss.srv.n.store.Config()
	for i := 1; i < len(args); i += 2 {
		switch k, v := args[i], args[i+1]; {
		case len(k) == 0:
			ss.backendError(cache.ErrEmptyKey)
			return
		case len(k) > cc.MaxKeyBytes:
			ss.backendError(&cache.LimitError{What: "key too long", Limit: int64(cc.MaxKeyBytes), Unit: "bytes"})
			return
		case len(v) > cc.MaxValueBytes:
			ss.backendError(&cache.LimitError{What: "value too large", Limit: int64(cc.MaxValueBytes), Unit: "bytes"})
			return
		}
	}
	for i := 1; i < len(args); i += 2 {
		if err := ss.backend().Put(respCtx, string(args[i]), args[i+1], 0, nil); err != nil {
			ss.backendError(err)
			return
		}
	}
	ss.rw.raw(respOK)
}

// cmdDel answers DEL and UNLINK key [key ...] with the number of keys removed.
func cmdDel(ss *respSession, args [][]byte) {
	countKeys(ss, args[1:], func(k string) (bool, error) { return ss.backend().Del(respCtx, k) })
}

// cmdExists answers EXISTS key [key ...]: how many of the keys exist (a key named twice
// counts twice).
func cmdExists(ss *respSession, args [][]byte) {
	countKeys(ss, args[1:], func(k string) (bool, error) {
		_, ok, err := ss.backend().Get(respCtx, k)
		return ok, err
	})
}

// countKeys replies how many keys fn is true for, or the first backend error.
func countKeys(ss *respSession, keys [][]byte, fn func(string) (bool, error)) {
	n := int64(0)
	for _, k := range keys {
		ok, err := fn(string(k))
		if err != nil {
			ss.backendError(err)
			return
		}
		if ok {
			n++
		}
	}
	ss.rw.int(n)
}

// cmdIncr answers INCR, INCRBY, DECR and DECRBY.
func cmdIncr(ss *respSession, args [][]byte) {
	by := int64(1)
	if len(args) == 3 {
		n, ok := parseRESPInt(args[2])
		if !ok {
			ss.rw.error(errRESPNotInteger)
			return
		}
		by = n
	}
	var (
		v   int64
		err error
	)
	if c := args[0][0]; c == 'd' || c == 'D' {
		v, err = ss.backend().Decr(respCtx, string(args[1]), by, 0, nil)
	} else {
		v, err = ss.backend().Incr(respCtx, string(args[1]), by, 0, nil)
	}
	if err != nil {
		ss.backendError(err)
		return
	}
	ss.rw.int(v)
}

// cmdExpire answers EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT: 1 if the key existed and
// got the new TTL, 0 if not. A time not in the future deletes the key.
func cmdExpire(ss *respSession, args [][]byte) {
	var buf [16]byte
	name := string(lowerName(args[0], buf[:]))
	if len(args) > 3 {
		ss.rw.error("ERR Unsupported option " + string(args[3][:min(len(args[3]), 128)]))
		return
	}
	n, ok := parseRESPInt(args[2])
	if !ok {
		ss.rw.error(errRESPNotInteger)
		return
	}
	unit := int64(1000)
	if name[0] == 'p' {
		unit = 1
	}
	ttl, ok := respTTL(n, unit, strings.HasSuffix(name, "at"), ss.nowMs())
	if !ok {
		ss.invalidExpire(name)
		return
	}
	existed, err := ss.backend().SetTTL(respCtx, string(args[1]), ttl)
	if err != nil {
		ss.backendError(err)
		return
	}
	ss.rw.bool(existed)
}

// cmdTTL answers TTL (seconds, rounded) and PTTL: -2 for a missing key, -1 for a key
// without TTL.
func cmdTTL(ss *respSession, args [][]byte) {
	e, ok, err := ss.backend().GetEntry(respCtx, string(args[1]))
	switch {
	case err != nil:
		ss.backendError(err)
	case !ok:
		ss.rw.int(-2)
	default:
		ms := e.TTLMillis(ss.nowMs())
		if ms >= 0 && len(args[0]) == len("ttl") {
			ms = (ms + 500) / 1000
		}
		ss.rw.int(ms)
	}
}

func cmdPersist(ss *respSession, args [][]byte) {
	key := string(args[1])
	e, ok, err := ss.backend().GetEntry(respCtx, key)
	if err != nil {
		ss.backendError(err)
		return
	}
	if !ok || e.ExpireAt == 0 {
		ss.rw.int(0)
		return
	}
	ok, err = ss.backend().SetTTL(respCtx, key, 0)
	if err != nil {
		ss.backendError(err)
		return
	}
	ss.rw.bool(ok)
}

// cmdFlush answers FLUSHALL and FLUSHDB [ASYNC|SYNC]; the mode makes no difference.
func cmdFlush(ss *respSession, args [][]byte) {
	if len(args) > 2 {
		ss.rw.error(errRESPSyntax)
		return
	}
	if len(args) == 2 {
		var buf [8]byte
		if m := string(lowerName(args[1], buf[:])); m != "async" && m != "sync" {
			ss.rw.error(errRESPSyntax)
			return
		}
	}
	if _, err := ss.backend().Flush(respCtx); err != nil {
		ss.backendError(err)
		return
	}
	ss.rw.raw(respOK)
}

// --- tag commands

// cmdTagInvalidate answers TAG.INVALIDATE (entries carrying any of the tags) and
// TAG.INVALIDATEALL (entries carrying all of them) with the number removed.
func cmdTagInvalidate(ss *respSession, args [][]byte) {
	all := len(args[0]) == len("tag.invalidateall")
	var (
		n   int
		err error
	)
	switch {
	case len(args) == 2 && !all:
		n, err = ss.backend().InvalidateTag(respCtx, string(args[1]))
	default:
		tags := make([]string, len(args)-1)
		for i, t := range args[1:] {
			tags[i] = string(t)
		}
		if all {
			n, err = ss.backend().InvalidateTagsAll(respCtx, tags)
		} else {
			n, err = ss.backend().InvalidateTagsAny(respCtx, tags)
		}
	}
	if err != nil {
		ss.backendError(err)
		return
	}
	ss.rw.int(int64(n))
}

func cmdTagKeys(ss *respSession, args [][]byte) {
	keys, err := ss.backend().KeysByTag(respCtx, string(args[1]), 0)
	if err != nil {
		ss.backendError(err)
		return
	}
	ss.rw.array(len(keys))
	for _, k := range keys {
		ss.rw.bulkString(k)
	}
}

func cmdTagOf(ss *respSession, args [][]byte) {
	e, ok, err := ss.backend().GetEntry(respCtx, string(args[1]))
	switch {
	case err != nil:
		ss.backendError(err)
	case !ok:
		ss.rw.raw(respNullArray)
	default:
		ss.rw.array(len(e.Tags))
		for _, t := range e.Tags {
			ss.rw.bulkString(t)
		}
	}
}
