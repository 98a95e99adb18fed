package node

import (
	"bufio"
	"strconv"
	"strings"
)

// RESP2 reply writers. Replies are appended to the connection's bufio.Writer, which is
// flushed once per batch of pipelined requests; numbers are formatted straight into its
// free space, so a reply allocates nothing.

const (
	respOK        = "+OK\r\n"
	respNull      = "$-1\r\n"
	respNullArray = "*-1\r\n"
	respEmpty     = "*0\r\n"
	respZero      = ":0\r\n"
	respOne       = ":1\r\n"
)

// respHeaderRoom is enough free buffer for a type byte, an int64 and CRLF.
const respHeaderRoom = 24

// respWriter writes RESP2 replies and remembers whether the current request failed.
type respWriter struct {
	w      *bufio.Writer
	failed bool // an error reply was written since the last reset
}

func (rw *respWriter) raw(s string) { rw.w.WriteString(s) }

// header writes a type byte, n and CRLF: ":n", "$n", "*n".
func (rw *respWriter) header(kind byte, n int64) {
	if rw.w.Available() < respHeaderRoom {
		rw.w.Flush()
	}
	b := rw.w.AvailableBuffer()
	b = append(b, kind)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, '\r', '\n')
	rw.w.Write(b)
}

func (rw *respWriter) int(n int64) {
	switch n {
	case 0:
		rw.raw(respZero)
	case 1:
		rw.raw(respOne)
	default:
		rw.header(':', n)
	}
}

func (rw *respWriter) bool(ok bool) {
	if ok {
		rw.raw(respOne)
	} else {
		rw.raw(respZero)
	}
}

func (rw *respWriter) array(n int) { rw.header('*', int64(n)) }

// bulk writes b as a bulk string; a small one in one append.
func (rw *respWriter) bulk(b []byte) {
	if rw.w.Available() >= len(b)+respHeaderRoom+2 {
		out := rw.w.AvailableBuffer()
		out = append(out, '$')
		out = strconv.AppendInt(out, int64(len(b)), 10)
		out = append(out, '\r', '\n')
		out = append(out, b...)
		out = append(out, '\r', '\n')
		rw.w.Write(out)
		return
	}
	rw.header('$', int64(len(b)))
	rw.w.Write(b) // a large b goes to the connection without a copy
	rw.w.WriteString("\r\n")
}

func (rw *respWriter) bulkString(s string) {
	rw.header('$', int64(len(s)))
	rw.w.WriteString(s)
	rw.w.WriteString("\r\n")
}

func (rw *respWriter) status(s string) {
	rw.w.WriteByte('+')
	rw.w.WriteString(s)
	rw.w.WriteString("\r\n")
}

// error writes msg, which starts with its code ("ERR ...", "NOAUTH ..."), as an error
// reply; CR and LF, which would break the framing, become spaces.
func (rw *respWriter) error(msg string) {
	rw.failed = true
	if strings.ContainsAny(msg, "\r\n") {
		msg = strings.NewReplacer("\r", " ", "\n", " ").Replace(msg)
	}
	rw.w.WriteByte('-')
	rw.w.WriteString(msg)
	rw.w.WriteString("\r\n")
}
