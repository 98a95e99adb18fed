package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tagcache/tagcache/node"
	"github.com/tagcache/tagcache/ring"
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

// benchRing is a cluster's ring as a ring-aware run routes by: partition → owner →
// the owner's address for --protocol.
type benchRing struct {
	from       string // the HTTP address the ring was read from
	version    uint64
	partitions int
	owner      []int // partition -> index in members
	members    []benchMember
	// keyOwner[k] is the member owning key k, for every key of --keys up to
	// maxKeyIndex (nil above: ownerOfKey hashes).
	keyOwner []uint16
}

// benchMember is one ring member a ring-aware run sends to.
type benchMember struct {
	name, addr string
	partitions int
}

// maxKeyIndex bounds the key → owner table of a ring-aware run (2 bytes a key).
const maxKeyIndex = 1 << 22

func (r *benchRing) addrs() []string {
	out := make([]string, len(r.members))
	for i, m := range r.members {
		out[i] = m.addr
	}
	return out
}

// ownerOfKey returns the index of the member that owns key k (keyName(k)).
func (r *benchRing) ownerOfKey(k int) int {
	if k < len(r.keyOwner) {
		return int(r.keyOwner[k])
	}
	return r.owner[ring.PartitionOf(keyName(k), r.partitions)]
}

// index builds the key → owner table for a key space of keys keys and checks that every
// member owns some key of it (else drawing keys for that member would never end).
func (r *benchRing) index(keys int) error {
	if keys > maxKeyIndex {
		return nil // each member owns a share of the partitions, so of the keys
	}
	r.keyOwner = make([]uint16, keys)
	owned := make([]int, len(r.members))
	for k := range r.keyOwner {
		m := r.owner[ring.PartitionOf(keyName(k), r.partitions)]
		r.keyOwner[k] = uint16(m)
		owned[m]++
	}
	for m, n := range owned {
		if n == 0 {
			return fmt.Errorf("member %s owns none of the %d keys of --keys; use more keys", r.members[m].name, keys)
		}
	}
	return nil
}

// discoverRing reads the ring and the members from the first target that answers (a
// node's HTTP API) and maps every partition to its owner's address for c.protocol.
func discoverRing(c benchConfig) (*benchRing, error) {
	hc := &http.Client{Timeout: c.timeout}
	defer hc.CloseIdleConnections()
	var errs []string
	for _, target := range c.targets {
		r, err := readRing(c, hc, target)
		if err == nil {
			return r, nil
		}
		var ue *url.Error
		if !errors.As(err, &ue) {
			return nil, err // the node answered, and not with a usable ring
		}
		errs = append(errs, err.Error()) // unreachable: try the next target
	}
	return nil, fmt.Errorf("no --targets node answered: %s", strings.Join(errs, "; "))
}

// readRing reads target's ring and members; ringReadAttempts times if the ring changes
// between the two reads.
func readRing(c benchConfig, hc *http.Client, target string) (*benchRing, error) {
	const ringReadAttempts = 5
	for range ringReadAttempts {
		var before, after node.RingInfo
		var members struct {
			Members []node.MemberInfo `json:"members"`
		}
		if err := getJSON(c, hc, target, "/cluster/ring", &before); err != nil {
			return nil, err
		}
		if err := getJSON(c, hc, target, "/cluster/members", &members); err != nil {
			return nil, err
		}
		if err := getJSON(c, hc, target, "/cluster/ring", &after); err != nil {
			return nil, err
		}
		if before.Version != after.Version {
			continue // a member came or went meanwhile
		}
		return newBenchRing(c.protocol, target, after, members.Members)
	}
	return nil, fmt.Errorf("the ring of %s changed on each of %d reads; is the cluster settling?", target, ringReadAttempts)
}

// newBenchRing checks ri and maps its owners to their addresses for protocol.
func newBenchRing(protocol, from string, ri node.RingInfo, members []node.MemberInfo) (*benchRing, error) {
	switch {
	case ri.Partitions < 1 || len(ri.Owners) != ri.Partitions:
		return nil, fmt.Errorf("%s: malformed ring: %d partitions, %d owners", from, ri.Partitions, len(ri.Owners))
	case len(ri.Members) == 0:
		return nil, fmt.Errorf("%s: the ring is empty (no members yet; is the node ready?)", from)
	}
	byName := map[string]node.MemberInfo{}
	for _, m := range members {
		byName[m.Name] = m
	}
	// The members sent to are the owners of partitions, in name order.
	var owners []string
	for p, name := range ri.Owners {
		if name == "" {
			return nil, fmt.Errorf("%s: partition %d has no owner in the ring", from, p)
		}
		owners = append(owners, name)
	}
	slices.Sort(owners)
	owners = slices.Compact(owners)
	if len(owners) > 1<<16 {
		return nil, fmt.Errorf("%s: more than %d members own partitions", from, 1<<16)
	}
	r := &benchRing{from: from, version: ri.Version, partitions: ri.Partitions, owner: make([]int, ri.Partitions)}
	index := map[string]int{}
	for i, name := range owners {
		mi, known := byName[name]
		addr := map[string]string{"text": mi.TCP, "resp": mi.RESP, "http": mi.HTTP}[protocol]
		switch {
		case !known:
			return nil, fmt.Errorf("%s: ring owner %s is not in /cluster/members", from, name)
		case mi.State != "alive" && mi.State != "suspect":
			return nil, fmt.Errorf("%s: ring owner %s is %s", from, name, mi.State)
		case addr == "":
			return nil, fmt.Errorf("%s: member %s has no %s address (does it serve --protocol %s?)", from, name, protocol, protocol)
		}
		index[name] = i
		r.members = append(r.members, benchMember{name: name, addr: addr})
	}
	for p, name := range ri.Owners {
		r.owner[p] = index[name]
		r.members[index[name]].partitions++
	}
	return r, nil
}

// getJSON GETs path from target's HTTP API with the bench's credentials into v.
func getJSON(c benchConfig, hc *http.Client, target, path string, v any) error {
	req, err := http.NewRequest("GET", "http://"+target+path, nil)
	if err != nil {
		return fmt.Errorf("GET %s from %s: %w", path, target, err)
	}
	req.SetBasicAuth(c.username, c.password)
	resp, err := hc.Do(req)
	if err != nil {
		return err // a *url.Error naming the address
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	switch {
	case err != nil:
		return fmt.Errorf("GET %s from %s: %w", path, target, err)
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("GET %s from %s: 404 not found: the node does not tell its ring (an older TagCache, or not its HTTP API?)", path, target)
	case resp.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("GET %s from %s: credentials rejected (--username, --password)", path, target)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("GET %s from %s: %s: %.200s", path, target, resp.Status, bytes.TrimSpace(body))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s from %s: not the JSON expected: %w", path, target, err)
	}
	return nil
}
