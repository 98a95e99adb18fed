package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// dialBench opens one connection of c.protocol to target and authenticates if asked.
func dialBench(c benchConfig, target string) (benchClient, error) {
	if c.protocol == "http" {
		return newHTTPBenchClient(c, target), nil
	}
	conn, err := net.DialTimeout("tcp", target, c.timeout)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", target, err)
	}
	sc := &streamClient{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), w: bufio.NewWriterSize(conn, 64<<10), cfg: c}
	sc.resp = c.protocol == "resp"
	if c.password != "" {
		if err := sc.auth(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("auth at %s: %w", target, err)
		}
	}
	return sc, nil
}

// streamClient speaks the text protocol or RESP on one TCP connection, pipelining a
// batch of requests per round trip.
type streamClient struct {
	conn  net.Conn
	r     *bufio.Reader
	w     *bufio.Writer
	cfg   benchConfig
	resp  bool
	key   []byte // scratch
	value []byte // scratch: the expected value of the current key
}

func (s *streamClient) close() { s.conn.Close() }

func (s *streamClient) auth() error {
	if s.resp {
		s.writeArray("AUTH", s.cfg.username, s.cfg.password)
	} else {
		fmt.Fprintf(s.w, "AUTH\t%s\t%s\n", s.cfg.username, s.cfg.password)
	}
	if err := s.w.Flush(); err != nil {
		return err
	}
	s.conn.SetReadDeadline(time.Now().Add(s.cfg.timeout))
	line, err := s.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if l := string(bytes.TrimRight(line, "\r\n")); l != "OK" && l != "+OK" {
		return fmt.Errorf("server said %q", l)
	}
	return nil
}

func (s *streamClient) setKey(k int) {
	s.key = strconv.AppendInt(append(s.key[:0], "bench:"...), int64(k), 10)
	if cap(s.value) < s.cfg.valueSize {
		s.value = make([]byte, s.cfg.valueSize)
	}
	s.value = s.value[:s.cfg.valueSize]
	for i := range s.value {
		s.value[i] = 'a' + byte((i+len(s.key))%26)
	}
	copy(s.value, s.key)
}

func (s *streamClient) roundTrip(ops []op, out []outcome) error {
	for _, o := range ops {
		s.writeOp(o)
	}
	if err := s.w.Flush(); err != nil {
		return err
	}
	s.conn.SetReadDeadline(time.Now().Add(s.cfg.timeout))
	for i, o := range ops {
		var err error
		if out[i], err = s.readReply(o); err != nil {
			return err
		}
	}
	return nil
}

func (s *streamClient) writeOp(o op) {
	s.setKey(o.key)
	switch {
	case o.kind == 'g' && s.resp:
		s.writeHeader('*', 2)
		s.writeBulk([]byte("GET"))
		s.writeBulk(s.key)
	case o.kind == 'g':
		s.w.WriteString("GET\t")
		s.w.Write(s.key)
		s.w.WriteByte('\n')
	case o.kind == 'p' && s.resp:
		if s.cfg.tagsPerKey > 0 {
			s.writeHeader('*', 5)
		} else {
			s.writeHeader('*', 3)
		}
		s.writeBulk([]byte("SET"))
		s.writeBulk(s.key)
		s.writeBulk(s.value)
		if s.cfg.tagsPerKey > 0 {
			s.writeBulk([]byte("TAGS"))
			s.writeBulk([]byte(strings.Join(tagsFor(&s.cfg, o.key), ",")))
		}
	case o.kind == 'p':
		s.w.WriteString("PUT\t")
		s.w.Write(s.key)
		s.w.WriteString("\t-\t")
		if s.cfg.tagsPerKey > 0 {
			s.w.WriteString(strings.Join(tagsFor(&s.cfg, o.key), ","))
		} else {
			s.w.WriteByte('-')
		}
		s.w.WriteByte('\t')
		s.w.Write(s.value)
		s.w.WriteByte('\n')
	case s.resp:
		s.writeArray("TAG.INVALIDATE", tagName(o.tag))
	default:
		s.w.WriteString("INV_TAG\t" + tagName(o.tag) + "\n")
	}
}

// writeHeader and writeBulk write RESP without allocating, so the generator costs the
// same per request over RESP as over the text protocol.
func (s *streamClient) writeHeader(kind byte, n int) {
	s.w.WriteByte(kind)
	s.w.Write(strconv.AppendInt(s.w.AvailableBuffer(), int64(n), 10))
	s.w.WriteString("\r\n")
}

func (s *streamClient) writeBulk(b []byte) {
	s.writeHeader('$', len(b))
	s.w.Write(b)
	s.w.WriteString("\r\n")
}

func (s *streamClient) writeArray(args ...string) {
	s.w.WriteByte('*')
	s.w.WriteString(strconv.Itoa(len(args)))
	s.w.WriteString("\r\n")
	for _, a := range args {
		s.w.WriteByte('$')
		s.w.WriteString(strconv.Itoa(len(a)))
		s.w.WriteString("\r\n")
		s.w.WriteString(a)
		s.w.WriteString("\r\n")
	}
}

// readReply reads the reply to o and classifies it; a protocol-level surprise is an
// error (the connection is then abandoned).
func (s *streamClient) readReply(o op) (outcome, error) {
	line, err := s.r.ReadSlice('\n')
	if err != nil {
		return badReply, fmt.Errorf("read reply: %w", err)
	}
	line = bytes.TrimRight(line, "\r\n")
	if o.kind == 'g' {
		s.setKey(o.key)
	}
	if s.resp {
		switch {
		case o.kind == 'g' && bytes.Equal(line, []byte("$-1")):
			return missReply, nil
		case o.kind == 'g' && len(line) > 0 && line[0] == '$':
			n, err := strconv.Atoi(string(line[1:]))
			if err != nil || n < 0 {
				return badReply, fmt.Errorf("bad bulk header %q", line)
			}
			if n+2 > s.r.Size() { // larger than the read buffer: copy it out
				body := make([]byte, n+2)
				if _, err := io.ReadFull(s.r, body); err != nil {
					return badReply, err
				}
				if bytes.Equal(body[:n], s.value) {
					return hitReply, nil
				}
				return badReply, nil
			}
			body, err := s.r.Peek(n + 2)
			if err != nil {
				return badReply, err
			}
			hit := bytes.Equal(body[:n], s.value)
			s.r.Discard(n + 2)
			if hit {
				return hitReply, nil
			}
			return badReply, nil
		case o.kind == 'p' && string(line) == "+OK":
			return okReply, nil
		case o.kind == 'i' && len(line) > 1 && line[0] == ':':
			return okReply, nil
		}
		return badReply, nil
	}
	switch {
	case o.kind == 'g' && string(line) == "NF":
		return missReply, nil
	case o.kind == 'g' && bytes.HasPrefix(line, []byte("VALUE\t")):
		if bytes.Equal(line[6:], s.value) {
			return hitReply, nil
		}
		return badReply, nil
	case o.kind == 'p' && string(line) == "OK":
		return okReply, nil
	case o.kind == 'i' && bytes.HasPrefix(line, []byte("INV_TAG\t")):
		return okReply, nil
	}
	return badReply, nil
}

// httpBenchClient drives the JSON HTTP API over one keep-alive connection.
type httpBenchClient struct {
	base   string
	client *http.Client
	cfg    benchConfig
}

func newHTTPBenchClient(c benchConfig, target string) *httpBenchClient {
	tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
	return &httpBenchClient{base: "http://" + target, client: &http.Client{Transport: tr, Timeout: c.timeout}, cfg: c}
}

func (h *httpBenchClient) close() { h.client.CloseIdleConnections() }

func (h *httpBenchClient) roundTrip(ops []op, out []outcome) error {
	for i, o := range ops {
		key := keyName(o.key)
		var req *http.Request
		var err error
		switch o.kind {
		case 'g':
			req, err = http.NewRequest("GET", h.base+"/get/"+url.PathEscape(key), nil)
		case 'p':
			body, _ := json.Marshal(map[string]any{"key": key, "value": string(valueFor(key, h.cfg.valueSize)), "tags": tagsOrEmpty(tagsFor(&h.cfg, o.key))})
			req, err = http.NewRequest("POST", h.base+"/put", bytes.NewReader(body))
		default:
			body, _ := json.Marshal(map[string]string{"tag": tagName(o.tag)})
			req, err = http.NewRequest("POST", h.base+"/invalidate-tag", bytes.NewReader(body))
		}
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth(h.cfg.username, h.cfg.password)
		resp, err := h.client.Do(req)
		if err != nil {
			return err
		}
		var reply struct {
			Value *string `json:"value"`
			Error string  `json:"error"`
			OK    bool    `json:"ok"`
			Count *int    `json:"count"`
		}
		err = json.NewDecoder(resp.Body).Decode(&reply)
		resp.Body.Close()
		switch {
		case err != nil || resp.StatusCode != http.StatusOK:
			out[i] = badReply
		case o.kind == 'g' && reply.Error == "not_found":
			out[i] = missReply
		case o.kind == 'g' && reply.Value != nil && *reply.Value == string(valueFor(key, h.cfg.valueSize)):
			out[i] = hitReply
		case o.kind == 'p' && reply.OK, o.kind == 'i' && reply.Count != nil:
			out[i] = okReply
		default:
			out[i] = badReply
		}
	}
	return nil
}

func tagsOrEmpty(t []string) []string {
	if t == nil {
		return []string{}
	}
	return t
}
