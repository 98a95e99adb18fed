package node

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/tagcache/tagcache/cache"
)

// The TagCache text protocol (docs/protocol.md, ../shared/PROTOCOL.md): one command per
// line, TAB-separated fields, one reply line per command. A connection is served by one
// goroutine that parses every command already buffered, appends the replies to one output
// buffer and writes it once when no input is left (pipelining with batched writes).

const textReadBuffer = 16 << 10

// preAuthMaxLine bounds a line sent before a successful AUTH when AUTH is required.
const preAuthMaxLine = 4096

// textServer serves the text protocol for a node.
type textServer struct {
	cmds    []*CommandMetrics // by verb index (textVerbs); textUnknown for unknown verbs
	started time.Time         // the origin of clock

	connServer // accept loop, connection limit and set, shutdown
}

// The verbs, as indexes of textVerbs and textServer.cmds.
const (
	verbPut = iota
	verbAdd
	verbIncr
	verbDecr
	verbGet
	verbDel
	verbInvTag
	verbInvTagsAny
	verbInvTagsAll
	verbInvKeys
	verbKeysByTag // also KEYS
	verbStats
	verbFlush
	verbAuth
	textUnknown // an unknown verb, for the metrics
)

var textVerbs = [textUnknown]string{"PUT", "ADD", "INCR", "DECR", "GET", "DEL", "INV_TAG", "INV_TAGS_ANY",
	"INV_TAGS_ALL", "INV_KEYS", "KEYS_BY_TAG", "STATS", "FLUSH", "AUTH"}

// lookupTextVerb returns the index of verb, which is upper case, or textUnknown.
func lookupTextVerb(verb []byte) int {
	switch string(verb) {
	case "PUT":
		return verbPut
	case "ADD":
		return verbAdd
	case "INCR":
		return verbIncr
	case "DECR":
		return verbDecr
	case "GET":
		return verbGet
	case "DEL":
		return verbDel
	case "INV_TAG":
		return verbInvTag
	case "INV_TAGS_ANY":
		return verbInvTagsAny
	case "INV_TAGS_ALL":
		return verbInvTagsAll
	case "INV_KEYS":
		return verbInvKeys
	case "KEYS_BY_TAG", "KEYS":
		return verbKeysByTag
	case "STATS":
		return verbStats
	case "FLUSH":
		return verbFlush
	case "AUTH":
		return verbAuth
	}
	return textUnknown
}

func newTextServer(n *Node) *textServer {
	s := &textServer{
		connServer: newConnServer(n, "text protocol", fmt.Appendf(nil, "ERR max connections (limit %d)\n", n.cfg.MaxConnections)),
		cmds:       make([]*CommandMetrics, textUnknown+1),
		started:    time.Now(),
	}
	for i, v := range textVerbs {
		s.cmds[i] = n.metrics.Command("tcp", strings.ToLower(v))
	}
	s.cmds[textUnknown] = n.metrics.Command("tcp", "unknown")
	s.newHandler = s.newConn
	return s
}

// clock returns the monotonic time since the server started; one cheap clock read.
func (s *textServer) clock() time.Duration { return time.Since(s.started) }

// serveConn serves one connection from its own goroutine (connServer.serveGoroutine).
func (s *textServer) serveConn(c net.Conn) { s.serveGoroutine(c, s.newConn(c)) }

// textProtoConn is one text-protocol connection's state, for either driver (a goroutine or
// an event loop).
type textProtoConn struct {
	ss *session
	rd *textReader
}

// newConn starts a connection whose replies go to w.
func (s *textServer) newConn(w io.Writer) connHandler {
	ss := &session{srv: s, w: bufio.NewWriterSize(w, textReadBuffer), auth: sessionAuth{ok: !s.n.tcpAuth}, counts: newTally(s.cmds)}
	ss.mark = s.clock()
	return &textProtoConn{ss: ss, rd: newTextReader()}
}

func (h *textProtoConn) fill(src io.Reader) error { return h.rd.fill(src) }
func (h *textProtoConn) arrived(now time.Time) {
	h.ss.mark, h.ss.timing = now.Sub(h.ss.srv.started), true
}
func (h *textProtoConn) flush() error { return h.ss.w.Flush() }
func (h *textProtoConn) done()        { h.ss.counts.flush() }

// run runs every complete line buffered (see connHandler). Before AUTH a connection may
// send only short lines: a client without credentials must not make the node hold a
// megabyte per connection.
func (h *textProtoConn) run(refusing bool, stop func() bool) bool {
	ss, n := h.ss, h.ss.srv.n
	defer ss.counts.flush()
	for stop == nil || !stop() {
		limit := n.cfg.MaxLineBytes
		if !ss.auth.valid(n.auth) {
			limit = min(limit, preAuthMaxLine)
		}
		line, tooLong := h.rd.next(limit)
		if tooLong {
			fmt.Fprintf(ss.w, "ERR line too long (limit %d bytes)\n", limit)
			continue
		}
		if line == nil {
			return true
		}
		if refusing {
			if len(bytes.TrimRight(line, "\r\n")) > 0 {
				ss.w.WriteString(textRefusal)
			}
			continue
		}
		if !ss.exec(line) {
			return false
		}
	}
	return true
}

// lineLen is the length of the line long+line without its "\n" or "\r\n" terminator, so
// the limit on a line does not depend on the client's line ending.
func lineLen(long, line []byte) int {
	n := len(long) + len(line) - 1
	if len(line) >= 2 && line[len(line)-2] == '\r' || len(line) == 1 && len(long) > 0 && long[len(long)-1] == '\r' {
		n--
	}
	return n
}

// session is one connection's state.
type session struct {
	srv      *textServer
	w        *bufio.Writer
	auth     sessionAuth
	failures int           // failed AUTH attempts
	counts   tally         // commands run since the batch began, by verb
	mark     time.Duration // srv.clock() when the current batch arrived
	timing   bool          // the next command is the batch's first: time it
}

// observe counts the command that just ended as verb i; the first of a batch is also
// timed, as in the RESP server (respSession.observe).
func (ss *session) observe(i int, failed bool) {
	ss.counts.add(i, failed)
	if ss.timing {
		ss.timing = false
		now := ss.srv.clock()
		ss.srv.cmds[i].ObserveLatency(now - ss.mark)
		ss.mark = now
	}
}

// maxAuthFailures closes a connection that keeps guessing credentials.
const maxAuthFailures = 5

// splitFields splits a line (without its line ending) at TABs into at most 5 fields, so
// the last field keeps any further TABs.
func splitFields(line []byte, out *[5][]byte) int {
	n := 0
	for n < 4 {
		i := bytes.IndexByte(line, '\t')
		if i < 0 {
			break
		}
		out[n] = line[:i]
		line = line[i+1:]
		n++
	}
	out[n] = line
	return n + 1
}

// upperVerb writes verb upper-cased into buf (ASCII), or returns nil if it is too long to
// be a verb.
func upperVerb(verb []byte, buf *[16]byte) []byte {
	if len(verb) > len(buf) {
		return nil
	}
	for i, c := range verb {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		buf[i] = c
	}
	return buf[:len(verb)]
}

// exec runs one line and writes its reply. It returns false to close the connection.
func (ss *session) exec(line []byte) bool {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if len(line) == 0 {
		return true // an empty line gets no reply
	}
	var f [5][]byte
	nf := splitFields(line, &f)
	var vb [16]byte
	i := lookupTextVerb(upperVerb(f[0], &vb))
	if i == textUnknown {
		ss.observe(i, true)
		ss.w.WriteString("ERR unknown_command\n")
		return true
	}
	if i == verbAuth {
		ok := nf >= 3 && ss.auth.login(ss.srv.n.auth, string(f[1]), string(f[2]))
		ss.observe(i, !ok)
		if ok {
			ss.failures = 0
			ss.w.WriteString("OK\n")
			return true
		}
		ss.failures++
		ss.w.WriteString("ERR unauthorized\n")
		return ss.failures < maxAuthFailures
	}
	if !ss.auth.valid(ss.srv.n.auth) {
		ss.observe(i, true)
		ss.w.WriteString("ERR unauthorized\n")
		return true
	}
	err := ss.run(i, f[1:nf])
	if err != nil {
		ss.writeErr(err)
	}
	ss.observe(i, err != nil)
	return true
}

// protoError is a reply reason for input the protocol rejects before reaching the store.
type protoError string

func (e protoError) Error() string { return string(e) }

const (
	errMissingKey   = protoError("missing_key")
	errMissingTag   = protoError("missing_tag")
	errMissingTags  = protoError("missing_tags")
	errEmptyTags    = protoError("empty_tags")
	errMissingKeys  = protoError("missing_keys")
	errEmptyKeys    = protoError("empty_keys")
	errInvalidTTL   = protoError("invalid_ttl")
	errInvalidNumer = protoError("invalid_number")
	// Replies the text protocol cannot frame (data stored over HTTP or RESP).
	errValueNewline  = protoError("value contains a newline; read it over HTTP or RESP")
	errKeyUnlistable = protoError("a key of this tag contains a newline; list it over HTTP or RESP")
)

func (ss *session) writeErr(err error) {
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		msg = strings.NewReplacer("\r", " ", "\n", " ").Replace(msg)
	}
	ss.w.WriteString("ERR ")
	ss.w.WriteString(msg)
	ss.w.WriteByte('\n')
}

// run executes verb (an index of textVerbs) with its fields (after the verb) and writes
// the reply on success.
func (ss *session) run(verb int, args [][]byte) error {
	b := ss.srv.n.backend
	ctx := context.Background()
	w := ss.w
	arg := func(i int) ([]byte, bool) {
		if i < len(args) {
			return args[i], true
		}
		return nil, false
	}
	switch verb {
	case verbPut, verbAdd:
		key, ok := arg(0)
		if !ok || len(key) == 0 {
			return errMissingKey
		}
		ttlField, _ := arg(1)
		ttl, err := parseTTL(ttlField)
		if err != nil {
			return err
		}
		tagField, _ := arg(2)
		value, _ := arg(3)
		tags := parseTagList(tagField, false)
		if verb == verbPut {
			if err := b.Put(ctx, string(key), value, ttl, tags); err != nil {
				return err
			}
			w.WriteString("OK\n")
			return nil
		}
		added, err := b.Add(ctx, string(key), value, ttl, tags)
		if err != nil {
			return err
		}
		if added {
			w.WriteString("ADDED\n")
		} else {
			w.WriteString("EXISTS\n")
		}
		return nil

	case verbIncr, verbDecr:
		key, ok := arg(0)
		if !ok || len(key) == 0 {
			return errMissingKey
		}
		by := int64(1)
		if f, _ := arg(1); len(f) > 0 && !isNone(f) {
			n, err := strconv.ParseInt(string(f), 10, 64)
			if err != nil {
				return errInvalidNumer
			}
			by = n
		}
		ttlField, _ := arg(2)
		ttl, err := parseTTL(ttlField)
		if err != nil {
			return err
		}
		tagField, _ := arg(3)
		tags := parseTagList(tagField, false)
		var n int64
		if verb == verbIncr {
			n, err = b.Incr(ctx, string(key), by, ttl, tags)
		} else {
			n, err = b.Decr(ctx, string(key), by, ttl, tags)
		}
		if err != nil {
			return err
		}
		w.WriteString("VALUE\t")
		w.Write(strconv.AppendInt(w.AvailableBuffer(), n, 10))
		w.WriteByte('\n')
		return nil

	case verbGet:
		key, ok := arg(0)
		if !ok {
			return errMissingKey
		}
		v, found, err := b.Get(ctx, string(key))
		if err != nil {
			return err
		}
		if !found {
			w.WriteString("NF\n")
			return nil
		}
		if bytes.IndexByte(v, '\n') >= 0 {
			// Stored over HTTP or RESP: a text-protocol reply is one line.
			return errValueNewline
		}
		w.WriteString("VALUE\t")
		w.Write(v)
		w.WriteByte('\n')
		return nil

	case verbDel:
		key, ok := arg(0)
		if !ok {
			return errMissingKey
		}
		deleted := false
		if len(key) > 0 {
			var err error
			if deleted, err = b.Del(ctx, string(key)); err != nil {
				return err
			}
		}
		if deleted {
			w.WriteString("DEL ok\n")
		} else {
			w.WriteString("DEL nf\n")
		}
		return nil

	case verbInvTag:
		tag, ok := arg(0)
		if !ok {
			return errMissingTag
		}
		n, err := b.InvalidateTag(ctx, string(tag))
		if err != nil {
			return err
		}
		writeCount(w, "INV_TAG\t", n)
		return nil

	case verbInvTagsAny, verbInvTagsAll, verbInvKeys:
		field, _ := arg(0)
		if len(field) == 0 {
			if verb == verbInvKeys {
				return errMissingKeys
			}
			return errMissingTags
		}
		list := parseTagList(field, true)
		if len(list) == 0 {
			if verb == verbInvKeys {
				return errEmptyKeys
			}
			return errEmptyTags
		}
		var n int
		var err error
		switch verb {
		case verbInvTagsAny:
			n, err = b.InvalidateTagsAny(ctx, list)
		case verbInvTagsAll:
			n, err = b.InvalidateTagsAll(ctx, list)
		default:
			n, err = b.InvalidateKeys(ctx, list)
		}
		if err != nil {
			return err
		}
		w.WriteString(textVerbs[verb])
		writeCount(w, "\t", n)
		return nil

	case verbKeysByTag:
		tag, ok := arg(0)
		if !ok {
			return errMissingTag
		}
		keys, err := b.KeysByTag(ctx, string(tag), 0)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if strings.IndexByte(k, '\n') >= 0 { // commas are listed as they are, like the original
				return errKeyUnlistable
			}
		}
		w.WriteString("KEYS\t")
		for i, k := range keys {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(k)
		}
		w.WriteByte('\n')
		return nil

	case verbStats:
		st, err := b.Stats(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "STATS\t%d\t%d\t%d\t%d\t%.6f\n", st.Hits, st.Misses, st.Puts, st.Invalidations, st.HitRatio())
		return nil

	case verbFlush:
		n, err := b.Flush(ctx)
		if err != nil {
			return err
		}
		writeCount(w, "FLUSH\t", n)
		return nil
	}
	return protoError("unknown_command")
}

func writeCount(w *bufio.Writer, prefix string, n int) {
	w.WriteString(prefix)
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(n), 10))
	w.WriteByte('\n')
}

func isNone(f []byte) bool { return len(f) == 1 && f[0] == '-' }

// maxTTLMillis keeps a TTL inside time.Duration's range (about 292 years).
const maxTTLMillis = int64(^uint64(0)>>1) / int64(time.Millisecond)

// parseTTL reads a TTL field in milliseconds: "-" or empty is none, 0 stores an entry that
// has already expired (as the original server does), anything else must be a
// non-negative integer.
func parseTTL(f []byte) (time.Duration, error) {
	if len(f) == 0 || isNone(f) {
		return 0, nil
	}
	ms, err := strconv.ParseInt(string(f), 10, 64)
	if err != nil || ms < 0 || ms > maxTTLMillis {
		return 0, errInvalidTTL
	}
	if ms == 0 {
		return cache.ExpireNow, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// parseTagList splits a comma-separated list, dropping empty items ("-" alone is none).
// trim is for INV_* lists, read as the original does: spaces around items are stripped
// and "-" is a key or tag like any other (PUT k\t-\ta,-\tv gives k the tag "-").
func parseTagList(f []byte, trim bool) []string {
	if len(f) == 0 || !trim && isNone(f) {
		return nil
	}
	out := make([]string, 0, bytes.Count(f, []byte{','})+1)
	for len(f) > 0 {
		item := f
		if i := bytes.IndexByte(f, ','); i >= 0 {
			item, f = f[:i], f[i+1:]
		} else {
			f = nil
		}
		if trim {
			item = bytes.TrimSpace(item)
		}
		if len(item) > 0 {
			out = append(out, string(item))
		}
	}
	return out
}
