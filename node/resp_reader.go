package node

import (
	"bytes"
	"errors"
	"io"
)

// respReader frames RESP2 requests out of one connection's input. It owns the read
// buffer; the arguments it returns are slices of that buffer, valid until the next fill.
// A multibulk request that arrives in pieces is parsed incrementally: the offsets of the
// arguments already received are kept, so a large request is never re-parsed from its
// start.
type respReader struct {
	buf  []byte // buf[r:w] is read and not yet consumed
	r, w int

	maxBulk    int // longest bulk string accepted (authenticated)
	maxRequest int // most bytes one request may span

	// The multibulk request being received, with offsets relative to r.
	want  int   // arguments announced by its '*' header; 0: none in progress
	off   int   // where parsing resumes
	bulk  int   // length of the bulk string being received; -1: its '$' header is next
	spans []int // start, end offsets of the arguments received so far
	need  int   // bytes from r the request needs before parsing can go on (0: unknown)

	args [][]byte // reused for every request
}

// Request framing limits. A protocol error is answered and the connection closed, as
// Redis does, since the stream cannot be resynchronised.
const (
	respReadBuffer     = 16 << 10 // initial read buffer; grows for large requests
	respMinRead        = 4 << 10  // free space kept for each read
	respMaxInline      = 64 << 10 // longest inline command or header line (Redis's PROTO_INLINE_MAX_SIZE)
	respMaxArgs        = 1 << 20  // most arguments in one request
	respMinRequestMax  = 64 << 20 // one request may always span this many bytes
	respUnauthMaxArgs  = 10       // before AUTH, as Redis: small requests only
	respUnauthMaxBulk  = 16 << 10 // before AUTH, as Redis
	respKeepArgsAtIdle = 1024     // argument slices larger than this are dropped when idle
)

// errRESPIncomplete says the buffer holds no complete request yet.
var errRESPIncomplete = errors.New("incomplete request")

// respProtoError is a framing error; its text follows "ERR Protocol error: ".
type respProtoError string

func (e respProtoError) Error() string { return string(e) }

func newRESPReader(maxBulk, maxRequest int) *respReader {
	return &respReader{buf: make([]byte, respReadBuffer), maxBulk: maxBulk, maxRequest: maxRequest, bulk: -1}
}

// next returns the next complete request, errRESPIncomplete if there is none yet, or a
// respProtoError. authed lowers the limits for a connection that has not authenticated.
func (rd *respReader) next(authed bool) ([][]byte, error) {
	for {
		p := rd.buf[rd.r:rd.w]
		if rd.want == 0 {
			if len(p) == 0 {
				rd.need = 0
				return nil, errRESPIncomplete
			}
			if p[0] != '*' {
				args, n, err := rd.inline(p)
				if err != nil {
					return nil, err
				}
				rd.r += n
				if len(args) == 0 {
					continue // an empty line: no reply, as Redis
				}
				return args, nil
			}
			nl := bytes.IndexByte(p, '\n')
			if nl < 0 {
				if len(p) > respMaxInline {
					return nil, respProtoError("too big mbulk count string")
				}
				rd.need = 0
				return nil, errRESPIncomplete
			}
			count, ok := parseRESPInt(trimCR(p[1:nl]))
			if !ok || count > respMaxArgs {
				return nil, respProtoError("invalid multibulk length")
			}
			if !authed && count > respUnauthMaxArgs {
				return nil, respProtoError("unauthenticated multibulk length")
			}
			if count <= 0 {
				rd.r += nl + 1 // "*0" or "*-1": nothing to run, no reply
				continue
			}
			rd.want, rd.off, rd.bulk, rd.spans = int(count), nl+1, -1, rd.spans[:0]
		}
		for len(rd.spans) < 2*rd.want {
			q := p[rd.off:]
			if rd.bulk < 0 {
				if len(q) == 0 {
					rd.need = 0
					return nil, errRESPIncomplete
				}
				if q[0] != '$' {
					return nil, respProtoError("expected '$', got '" + string(q[:1]) + "'")
				}
				nl := bytes.IndexByte(q, '\n')
				if nl < 0 {
					if len(q) > respMaxInline {
						return nil, respProtoError("too big bulk count string")
					}
					rd.need = 0
					return nil, errRESPIncomplete
				}
				n, ok := parseRESPInt(trimCR(q[1:nl]))
				if !ok || n < 0 || n > int64(rd.maxBulk) {
					return nil, respProtoError("invalid bulk length")
				}
				if !authed && n > respUnauthMaxBulk {
					return nil, respProtoError("unauthenticated bulk length")
				}
				if rd.off+nl+1+int(n)+2 > rd.maxRequest {
					return nil, respProtoError("request too large")
				}
				rd.bulk = int(n)
				rd.off += nl + 1
				q = q[nl+1:]
			}
			if len(q) < rd.bulk+2 {
				rd.need = rd.off + rd.bulk + 2
				return nil, errRESPIncomplete
			}
			// Like Redis, the two bytes after the data are skipped, not checked.
			rd.spans = append(rd.spans, rd.off, rd.off+rd.bulk)
			rd.off += rd.bulk + 2
			rd.bulk = -1
		}
		args := rd.args[:0]
		for i := 0; i < len(rd.spans); i += 2 {
			s, e := rd.spans[i], rd.spans[i+1]
			args = append(args, p[s:e:e])
		}
		rd.args = args
		rd.r += rd.off
		rd.want, rd.off, rd.need = 0, 0, 0
		return args, nil
	}
}

// inline parses an inline command (a line of space-separated words, as telnet and
// redis-cli's piped input send) at the start of p. It returns the words, unquoted in
// place, and the bytes consumed.
func (rd *respReader) inline(p []byte) ([][]byte, int, error) {
	nl := bytes.IndexByte(p, '\n')
	if nl < 0 {
		if len(p) > respMaxInline {
			return nil, 0, respProtoError("too big inline request")
		}
		rd.need = 0
		return nil, 0, errRESPIncomplete
	}
	if nl > respMaxInline {
		return nil, 0, respProtoError("too big inline request")
	}
	args, ok := splitInline(trimCR(p[:nl]), rd.args[:0])
	if !ok {
		return nil, 0, respProtoError("unbalanced quotes in request")
	}
	rd.args = args
	return args, nl + 1, nil
}

// idle reports whether no byte of a request is buffered.
func (rd *respReader) idle() bool { return rd.r == rd.w && rd.want == 0 }

// fill reads once from src into the buffer, first making room for what the request in
// progress needs (growing the buffer up to maxRequest) and at least respMinRead bytes.
func (rd *respReader) fill(src io.Reader) error {
	if rd.idle() {
		rd.r, rd.w = 0, 0
		if len(rd.buf) > 4*respReadBuffer {
			rd.buf = make([]byte, respReadBuffer) // do not keep a large buffer for an idle connection
		}
		if cap(rd.spans) > 2*respKeepArgsAtIdle {
			rd.spans, rd.args = nil, nil
		}
	}
	need := max(rd.need, rd.w-rd.r+respMinRead)
	if rd.r+need > len(rd.buf) {
		if need > len(rd.buf) {
			nb := make([]byte, max(need, min(2*len(rd.buf), rd.maxRequest+respMinRead)))
			copy(nb, rd.buf[rd.r:rd.w])
			rd.buf = nb
		} else {
			copy(rd.buf, rd.buf[rd.r:rd.w])
		}
		rd.w -= rd.r
		rd.r = 0
	}
	n, err := readOnce(src, rd.buf[rd.w:])
	rd.w += n
	return err
}

func trimCR(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}

// parseRESPInt parses a decimal int64 the way Redis's string2ll does: an optional '-',
// no '+', no spaces, no leading zeros, no "-0".
func parseRESPInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	if b[0] == '0' {
		return 0, len(b) == 1 && !neg
	}
	var v uint64
	for _, c := range b {
		d := uint64(c - '0')
		if d > 9 || v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	if neg {
		if v > 1<<63 {
			return 0, false
		}
		return -int64(v), true
	}
	if v > 1<<63-1 {
		return 0, false
	}
	return int64(v), true
}

func isInlineSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'
}

// splitInline splits line into words as Redis's sdssplitargs does: words are separated
// by spaces; "double quotes" take \n \r \t \b \a \xHH and \<char> escapes, 'single
// quotes' take \'; a closing quote must end the word. Words are unquoted in place (a word
// never grows), so they are slices of line. It reports false for unbalanced quotes.
func splitInline(line []byte, args [][]byte) ([][]byte, bool) {
	i, n := 0, len(line)
	for {
		for i < n && isInlineSpace(line[i]) {
			i++
		}
		if i == n {
			return args, true
		}
		start, wp := i, i
		inDouble, inSingle := false, false
	word:
		for {
			switch {
			case inDouble:
				if i == n {
					return nil, false
				}
				c := line[i]
				switch {
				case c == '\\' && i+3 < n && line[i+1] == 'x' && isHex(line[i+2]) && isHex(line[i+3]):
					line[wp] = unhex(line[i+2])<<4 | unhex(line[i+3])
					i += 4
				case c == '\\' && i+1 < n:
					switch e := line[i+1]; e {
					case 'n':
						line[wp] = '\n'
					case 'r':
						line[wp] = '\r'
					case 't':
						line[wp] = '\t'
					case 'b':
						line[wp] = '\b'
					case 'a':
						line[wp] = '\a'
					default:
						line[wp] = e
					}
					i += 2
				case c == '"':
					if i+1 < n && !isInlineSpace(line[i+1]) {
						return nil, false
					}
					i++
					break word
				default:
					line[wp] = c
					i++
				}
				wp++
			case inSingle:
				if i == n {
					return nil, false
				}
				c := line[i]
				switch {
				case c == '\\' && i+1 < n && line[i+1] == '\'':
					line[wp] = '\''
					i += 2
				case c == '\'':
					if i+1 < n && !isInlineSpace(line[i+1]) {
						return nil, false
					}
					i++
					break word
				default:
					line[wp] = c
					i++
				}
				wp++
			default:
				if i == n || isInlineSpace(line[i]) {
					break word
				}
				switch c := line[i]; c {
				case '"':
					inDouble = true
				case '\'':
					inSingle = true
				default:
					line[wp] = c
					wp++
				}
				i++
			}
		}
		args = append(args, line[start:wp:wp])
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}
