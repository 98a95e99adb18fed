package node

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"

	"github.com/tagcache/tagcache/transport"
)

// MemberMeta is what a node tells the others about itself in memberlist node metadata,
// encoded with msgpack. Encoded, it must fit memberlist.MetaMaxSize (512 bytes).
type MemberMeta struct {
	Version int    `msgpack:"v"`    // peer protocol version
	Peer    string `msgpack:"peer"` // host:port of the peer transport
	TCP     string `msgpack:"tcp"`  // host:port of the TagCache text protocol
	HTTP    string `msgpack:"http"` // host:port of the JSON HTTP API
	RESP    string `msgpack:"resp"` // host:port of the Redis protocol
}

// MemberEventKind says what happened to a member.
type MemberEventKind int

// Kinds of MemberEvent.
const (
	// MemberJoin: a member appeared (for the first time, or again after it failed or left).
	MemberJoin MemberEventKind = iota + 1
	// MemberLeave: a member left gracefully (Membership.Leave).
	MemberLeave
	// MemberFail: a member stopped answering and was declared dead.
	MemberFail
	// MemberUpdate: a member changed its metadata (Membership.UpdateMeta).
	MemberUpdate
)

func (k MemberEventKind) String() string {
	switch k {
	case MemberJoin:
		return "join"
	case MemberLeave:
		return "leave"
	case MemberFail:
		return "fail"
	case MemberUpdate:
		return "update"
	}
	return "MemberEventKind(" + strconv.Itoa(int(k)) + ")"
}

// MemberEvent is one change of membership, as delivered to MembershipConfig.OnEvent.
type MemberEvent struct {
	Kind MemberEventKind
	Name string
	Meta MemberMeta
}

// Member is one member as this node knows it.
type Member struct {
	Name   string
	Gossip string     // host:port of the member's memberlist
	Meta   MemberMeta // zero if the member's metadata could not be decoded
	// State is "alive", "dead" (declared dead after it stopped answering) or "left"
	// (left gracefully). "suspect" is never reported: see Membership.Members.
	State string
	// Leaving: the member announced that it is leaving (AnnounceLeaving); it still
	// serves, but partitions should no longer be placed on it.
	Leaving bool
}

// Member states, as in Member.State.
const (
	memberAlive   = "alive"
	memberSuspect = "suspect"
	memberDead    = "dead"
	memberLeft    = "left"
)

// MembershipConfig configures a Membership.
type MembershipConfig struct {
	// NodeName is this node's name, unique in the cluster. Required.
	NodeName string
	// Bind is the IP gossip listens on, TCP and UDP (e.g. 127.0.0.1). "" means 0.0.0.0.
	Bind string
	// Port is the gossip port. 0 picks a free port; Addr reports the one picked, and it
	// is the one advertised.
	Port int
	// Advertise is the IP other members are told to use. "" means Bind, or, when Bind is
	// a wildcard, a private address of this host picked by memberlist.
	Advertise string
	// Join lists the members to join: "host:port" (a gossip address, given to
	// memberlist.Join as is) or "dns+name:port" (name resolved again on every attempt,
	// and every address it resolves to is tried). Empty: a one-node cluster others join.
	Join []string
	// Key is the cluster key. Empty: gossip is neither encrypted nor authenticated.
	// Otherwise gossip is encrypted with AES-256-GCM under sha256(Key), and packets
	// not encrypted with that key are refused, so a node without the key cannot join.
	Key []byte
	// Label is memberlist's label, stamped on every packet and stream (and authenticated
	// when Key is set): members with different labels refuse each other, so two clusters
	// never merge. At most 255 bytes.
	Label string
	// Preset names the timings in presets: "local" or "lan". "" means "local".
	Preset string
	// Meta is what this node tells the others about itself.
	Meta MemberMeta
	// JoinRetry is the interval between join attempts while not joined. Default 500ms
	// under "local", 2s under "lan".
	JoinRetry time.Duration
	// Logger receives the membership's logs and memberlist's (through
	// Logger.StandardLogger with inferred levels). nil: no logs.
	Logger hclog.Logger
	// OnEvent, if set, is called for every join, leave, fail and update of another member
	// (never for this node), in the order memberlist saw them. It is called from
	// memberlist's goroutines while memberlist holds its node lock: it must return
	// quickly (hand the event to a bounded queue or channel) and must not call
	// UpdateMeta, Leave or Shutdown, which would deadlock. Members, Alive, Joined and
	// Health are safe to call from it.
	OnEvent func(MemberEvent)
	// OnContact, if set, is called whenever a probe of another member is acked: proof
	// that this node still reaches the cluster (the node renews its fencing lease from
	// it). Same rules as OnEvent: quick, no blocking.
	OnContact func() // also called when this node acks another member's probe
}

// presets are memberlist's timings by name. Failure detection (a member that stops
// answering is declared dead) takes: the wait for the member's turn in the probe round
// robin (up to one ProbeInterval per other member), ProbeInterval for the failed probe
// (direct, indirect and TCP fallback), then the suspicion timeout, which starts at
// SuspicionMaxTimeoutMult × SuspicionMult × ProbeInterval × max(1, log10(n)) and falls to
// SuspicionMult × ProbeInterval × max(1, log10(n)) as other members confirm the suspicion
// (n members; with fewer than SuspicionMult members no confirmation is awaited and the
// lower value applies at once).
var presets = map[string]func() *memberlist.Config{
	// "local": every member on one machine (loopback). ProbeInterval 200ms,
	// ProbeTimeout 150ms, SuspicionMult 4, SuspicionMaxTimeoutMult 2, GossipInterval
	// 50ms, PushPullInterval 5s, TCPTimeout 1s, GossipToTheDeadTime 5s,
	// DeadNodeReclaimTime 1s (a restarted member may rejoin from new ports), the rest from
	// memberlist.DefaultLocalConfig. A crashed member is declared dead after about
	// 1–2 s in a cluster of 3 (probe 0.2 s + suspicion 0.8–1.6 s, plus the wait for its
	// probe turn); DetectionBound is 0.95 s.
	"local": func() *memberlist.Config {
		c := memberlist.DefaultLocalConfig()
		c.ProbeInterval = 200 * time.Millisecond
		c.ProbeTimeout = 150 * time.Millisecond
		c.SuspicionMult = 4
		c.SuspicionMaxTimeoutMult = 2
		c.GossipInterval = 50 * time.Millisecond
		c.PushPullInterval = 5 * time.Second
		c.TCPTimeout = time.Second
		c.GossipToTheDeadTime = 5 * time.Second
		c.DeadNodeReclaimTime = time.Second // a restarted node may come back on new ports
		return c
	},
	// "lan": memberlist.DefaultLANConfig: ProbeInterval 1s, ProbeTimeout 500ms,
	// SuspicionMult 4, SuspicionMaxTimeoutMult 6; and DeadNodeReclaimTime 10s, so a pod
	// restarted with a new IP rejoins under its name. A crashed member is declared dead
	// after about 5–10 s (probe 1 s + suspicion 4 s with confirmations, up to 24 s
	// without); DetectionBound is 4.5 s.
	"lan": func() *memberlist.Config {
		c := memberlist.DefaultLANConfig()
		c.DeadNodeReclaimTime = 10 * time.Second
		return c
	},
}

// Default join retry intervals by preset.
var defaultJoinRetry = map[string]time.Duration{
	"local": 500 * time.Millisecond,
	"lan":   2 * time.Second,
}

const (
	// dnsJoinPrefix marks a Join entry whose name is resolved on every attempt.
	dnsJoinPrefix = "dns+"
	// joinLookupTimeout bounds one DNS lookup of a "dns+" Join entry.
	joinLookupTimeout = 5 * time.Second
	// updateMetaTimeout bounds how long UpdateMeta waits for its broadcast to go out.
	updateMetaTimeout = 5 * time.Second
	// joinSummaryEvery is how many failed join attempts pass between two Warn summaries.
	joinSummaryEvery = 10
	// maxGoneMembers bounds how many dead and left members Members keeps listing; the
	// oldest are forgotten first.
	maxGoneMembers = 256
)

var errMembershipShutdown = errors.New("membership is shut down")

// wireMeta is what a node puts in memberlist's node metadata: its MemberMeta and whether
// it is leaving.
//
// Leaving exists because memberlist (v0.5.4) cannot tell the others whether a member
// left or failed: EventDelegate.NotifyLeave gets a Node whose State is always
// StateAlive, since memberlist keeps the real state in a State field of its private
// nodeState that shadows the embedded Node.State (hashicorp/memberlist#293). So, like
// Serf with its leave intents, Leave first re-broadcasts the metadata with Leaving set,
// waits for that broadcast to go out, and only then has memberlist broadcast that the
// node is gone: the others see the flag before the departure and report MemberLeave.
// Should gossip deliver the departure first (possible in a large cluster, rare), that
// member reports MemberFail instead; a crash is never reported as a leave unless the node
// had called Leave before.
type wireMeta struct {
	MemberMeta `msgpack:",inline"`
	Leaving    bool `msgpack:"leaving,omitempty"`
}

// Membership is a node's view of who is in the cluster: hashicorp/memberlist gossip
// (SWIM with Lifeguard suspicion) over TCP+UDP, with the node's addresses carried as
// member metadata, events for join/leave/fail/update, and a background join loop that
// keeps trying static peers and DNS names until the node is part of a cluster. Create it
// with NewMembership, join with Start, stop with Leave (graceful) and Shutdown.
type Membership struct {
	cfg   MembershipConfig
	log   hclog.Logger
	list  *memberlist.Memberlist
	mlCfg *memberlist.Config // the timings in use; read-only once created
	addr  string             // advertised gossip host:port
	joins []string           // cfg.Join, validated

	joined atomic.Bool

	metaMu sync.Mutex // protects meta and metaB
	meta   wireMeta   // this node's metadata
	metaB  []byte     // meta, encoded

	mu          sync.Mutex              // protects members and undecodable
	members     map[string]*memberEntry // by name, self included
	undecodable map[string]bool         // names whose undecodable metadata was logged

	lifeMu   sync.Mutex    // serializes Start, Leave and Shutdown; protects the fields below
	started  bool          // Start was called
	stopJoin chan struct{} // closed to stop the join loop
	joinDone chan struct{} // closed when the join loop has returned
	left     bool          // Leave was called
	shut     bool          // Shutdown was called
	shutErr  error         // what the first Shutdown returned
}

// memberEntry is one member, whether it announced that it is leaving, and when its
// state last changed.
type memberEntry struct {
	Member
	leaving bool
	since   time.Time
}

// NewMembership creates the memberlist, listening on cfg.Bind:cfg.Port, with only this
// node as member. It does not join anyone: Start does.
func NewMembership(cfg MembershipConfig) (*Membership, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("membership: NodeName is required")
	}
	if cfg.Preset == "" {
		cfg.Preset = "local"
	}
	preset, ok := presets[cfg.Preset]
	if !ok {
		return nil, fmt.Errorf("membership: unknown preset %q (allowed: %s)", cfg.Preset, strings.Join(presetNames(), ", "))
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("membership: port %d out of range", cfg.Port)
	}
	if len(cfg.Label) > memberlist.LabelMaxSize {
		return nil, fmt.Errorf("membership: label is %d bytes, at most %d allowed", len(cfg.Label), memberlist.LabelMaxSize)
	}
	if cfg.Bind == "" {
		cfg.Bind = "0.0.0.0"
	}
	if net.ParseIP(cfg.Bind) == nil {
		return nil, fmt.Errorf("membership: bind address %q is not an IP", cfg.Bind)
	}
	if cfg.Advertise != "" && net.ParseIP(cfg.Advertise) == nil {
		return nil, fmt.Errorf("membership: advertise address %q is not an IP", cfg.Advertise)
	}
	for _, j := range cfg.Join {
		if err := checkJoinEntry(j); err != nil {
			return nil, fmt.Errorf("membership: join entry %q: %w", j, err)
		}
	}
	if cfg.JoinRetry <= 0 {
		cfg.JoinRetry = defaultJoinRetry[cfg.Preset]
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	// Check the size with Leaving set, the largest the metadata gets.
	if _, err := encodeMeta(wireMeta{MemberMeta: cfg.Meta, Leaving: true}); err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	meta := wireMeta{MemberMeta: cfg.Meta}
	metaB, err := encodeMeta(meta)
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}

	m := &Membership{
		cfg:         cfg,
		log:         cfg.Logger,
		joins:       slices.Clone(cfg.Join),
		meta:        meta,
		metaB:       metaB,
		members:     make(map[string]*memberEntry),
		undecodable: make(map[string]bool),
	}
	m.joined.Store(len(cfg.Join) == 0)

	c := preset()
	c.Name = cfg.NodeName
	c.BindAddr = cfg.Bind
	c.BindPort = cfg.Port
	c.AdvertiseAddr = cfg.Advertise
	c.AdvertisePort = cfg.Port // with Port 0 memberlist sets both to the port it bound
	c.Label = cfg.Label
	if len(cfg.Key) > 0 {
		key := sha256.Sum256(cfg.Key)
		c.SecretKey = key[:]
		c.GossipVerifyIncoming = true
		c.GossipVerifyOutgoing = true
	}
	d := &membershipDelegate{m: m}
	c.Delegate = d
	c.Events = d
	c.Ping = d
	c.Logger = cfg.Logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	c.LogOutput = nil
	m.mlCfg = c

	list, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("membership: gossip on %s: %w", net.JoinHostPort(cfg.Bind, strconv.Itoa(cfg.Port)), err)
	}
	m.list = list
	self := list.LocalNode() // read before any other member can change it
	m.addr = net.JoinHostPort(self.Addr.String(), strconv.Itoa(int(self.Port)))
	m.stopJoin = make(chan struct{})
	m.joinDone = make(chan struct{})
	m.log.Info("gossip listening", "node", cfg.NodeName, "gossip", m.addr, "preset", cfg.Preset,
		"encrypted", len(cfg.Key) > 0, "label", cfg.Label)
	return m, nil
}

func presetNames() []string {
	names := make([]string, 0, len(presets))
	for name := range presets {
		names = append(names, strconv.Quote(name))
	}
	slices.Sort(names)
	return names
}

// checkJoinEntry validates one Join entry.
func checkJoinEntry(j string) error {
	if name, ok := strings.CutPrefix(j, dnsJoinPrefix); ok {
		host, port, err := net.SplitHostPort(name)
		if err != nil {
			return fmt.Errorf("want dns+name:port: %w", err)
		}
		if host == "" {
			return errors.New("empty name")
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("bad port %q", port)
		}
		return nil
	}
	if j == "" {
		return errors.New("empty")
	}
	return nil
}

// encodeMeta encodes meta and checks that it fits memberlist's limit.
func encodeMeta(meta wireMeta) ([]byte, error) {
	b, err := transport.Encode(&meta)
	if err != nil {
		return nil, fmt.Errorf("encode member meta: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("member meta is %d bytes encoded, more than memberlist's limit of %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// Start starts joining cfg.Join in the background, if it is not empty: every JoinRetry
// until a join with another member succeeded (or another member joined this one), ctx
// ends, or Leave or Shutdown is called. Only the first call does anything.
func (m *Membership) Start(ctx context.Context) {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.started || m.shut || m.left {
		return
	}
	m.started = true
	if len(m.joins) == 0 {
		close(m.joinDone)
		return
	}
	go m.joinLoop(ctx)
}

// joinLoop tries to join until joined; it returns when joined, when ctx ends or when
// stopJoin is closed.
func (m *Membership) joinLoop(ctx context.Context) {
	defer close(m.joinDone)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-m.stopJoin:
			cancel()
		case <-ctx.Done():
		}
	}()

	timer := time.NewTimer(0)
	defer timer.Stop()
	for attempt := 1; ; attempt++ {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if other := m.anotherAliveMember(); other != "" {
			m.joined.Store(true)
			m.log.Info("joined cluster: joined by another member", "member", other, "attempts", attempt-1)
			return
		}
		contacted, err := m.joinOnce(ctx)
		if err == nil {
			m.joined.Store(true)
			m.log.Info("joined cluster", "contacted", contacted, "attempts", attempt, "alive", len(m.Alive()))
			return
		}
		if ctx.Err() != nil {
			return
		}
		m.log.Debug("join attempt failed", "attempt", attempt, "join", m.joins, "error", err)
		switch {
		case attempt == 1:
			m.log.Info("not joined yet, retrying", "join", m.joins, "every", m.cfg.JoinRetry, "error", err, "hint", joinHint(err))
		case attempt%joinSummaryEvery == 0:
			m.log.Warn("still not joined", "attempts", attempt, "join", m.joins, "error", err, "hint", joinHint(err))
		}
		timer.Reset(m.cfg.JoinRetry)
	}
}

// joinHint explains the join errors of a member that answers but refuses this node.
func joinHint(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "crypt"): // "no installed keys could decrypt", "encryption is (not) configured"
		return "the member has another cluster key, or only one side has one"
	case strings.Contains(msg, "EOF"), strings.Contains(msg, "connection reset"):
		return "the member closed the connection: another cluster name (label) or cluster key?"
	case strings.Contains(msg, "connection refused"), strings.Contains(msg, "i/o timeout"), strings.Contains(msg, "no such host"):
		return "the member is not up (yet)"
	}
	return ""
}

// joinOnce makes one join attempt: it resolves the Join entries, asks memberlist to
// join them all, and succeeds when memberlist now knows another alive member.
func (m *Membership) joinOnce(ctx context.Context) (contacted int, err error) {
	targets, resolveErr := m.joinTargets(ctx)
	if len(targets) == 0 {
		if resolveErr != nil {
			return 0, resolveErr
		}
		return 0, errors.New("no join target other than this node")
	}
	contacted, err = m.list.Join(targets)
	if err != nil {
		err = fmt.Errorf("join %v: %w", targets, err)
		if resolveErr != nil {
			err = errors.Join(err, resolveErr)
		}
		return 0, err
	}
	if m.anotherAliveMember() == "" {
		return 0, fmt.Errorf("join %v: reached no member but this node", targets)
	}
	return contacted, nil
}

// joinTargets resolves the Join entries into the addresses to try, leaving out this
// node's own address. err reports the "dns+" names that did not resolve.
func (m *Membership) joinTargets(ctx context.Context) (targets []string, err error) {
	var errs []error
	for _, j := range m.joins {
		name, ok := strings.CutPrefix(j, dnsJoinPrefix)
		if !ok {
			if !m.isSelf(j) {
				targets = append(targets, j)
			}
			continue
		}
		host, port, _ := net.SplitHostPort(name) // checked by NewMembership
		lctx, cancel := context.WithTimeout(ctx, joinLookupTimeout)
		addrs, lerr := net.DefaultResolver.LookupHost(lctx, host)
		cancel()
		if lerr != nil {
			errs = append(errs, fmt.Errorf("resolve %s: %w", host, lerr))
			continue
		}
		for _, a := range addrs {
			if t := net.JoinHostPort(a, port); !m.isSelf(t) {
				targets = append(targets, t)
			}
		}
	}
	return targets, errors.Join(errs...)
}

// isSelf reports whether the gossip address hostport is, as far as can be told without
// dialing, this node itself. A miss is harmless: joining oneself does not count as
// joined (joinOnce checks for another alive member).
func (m *Membership) isSelf(hostport string) bool {
	if hostport == m.addr {
		return true
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || port != strconv.Itoa(m.mlCfg.BindPort) {
		return false
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	bind := net.ParseIP(m.cfg.Bind)
	if ip.Equal(bind) {
		return true
	}
	if !bind.IsUnspecified() {
		return false
	}
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range ifAddrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// anotherAliveMember returns the name of an alive member other than this node, or "".
func (m *Membership) anotherAliveMember() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, e := range m.members {
		if name != m.cfg.NodeName && (e.State == memberAlive || e.State == memberSuspect) {
			return name
		}
	}
	return ""
}

// Joined reports whether this node is part of a cluster: a join with another member
// succeeded, another member joined it, or Join is empty (a one-node cluster needs no
// join).
func (m *Membership) Joined() bool { return m.joined.Load() }

// Name is this node's name.
func (m *Membership) Name() string { return m.cfg.NodeName }

// Addr is the host:port other members reach this node's gossip on (the advertised
// address; with Port 0, the port that was picked).
func (m *Membership) Addr() string { return m.addr }

// Members lists every member this node has known since it started, itself included,
// sorted by name: alive ones, and dead and left ones (unlike memberlist's Members, and
// even after memberlist forgot them) — of those, only the latest 256 (maxGoneMembers).
//
// States come from memberlist's join, leave and update events, so a member memberlist
// currently suspects is listed as "alive" until it is declared dead: memberlist v0.5.4
// reports suspicion neither by event nor in Node.State (which it never sets, see
// wireMeta), and its real state is private.
func (m *Membership) Members() []Member {
	return m.filterMembers(func(Member) bool { return true })
}

// Alive lists the members in state alive or suspect (a suspect is still a member until
// it is declared dead), itself included, sorted by name.
func (m *Membership) Alive() []Member {
	return m.filterMembers(func(mb Member) bool { return mb.State == memberAlive || mb.State == memberSuspect })
}

func (m *Membership) filterMembers(keep func(Member) bool) []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.members))
	for _, e := range m.members {
		if keep(e.Member) {
			out = append(out, e.Member)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// UpdateMeta changes what this node tells the others about itself and broadcasts it;
// the others get a MemberUpdate. It waits up to 5 s for the broadcast to go out (an error
// then does not undo the update: push/pull syncs spread it later).
func (m *Membership) UpdateMeta(meta MemberMeta) error {
	if _, err := encodeMeta(wireMeta{MemberMeta: meta, Leaving: true}); err != nil {
		return err
	}
	m.lifeMu.Lock()
	shut := m.shut
	m.lifeMu.Unlock()
	if shut {
		return errMembershipShutdown
	}
	return m.setMeta(func(w *wireMeta) { w.MemberMeta = meta }, updateMetaTimeout)
}

// setMeta changes this node's metadata with change and broadcasts it, waiting up to
// timeout for the broadcast to go out (0: no limit).
func (m *Membership) setMeta(change func(*wireMeta), timeout time.Duration) error {
	m.metaMu.Lock()
	w := m.meta
	change(&w)
	b, err := encodeMeta(w)
	if err == nil {
		m.meta, m.metaB = w, b
	}
	m.metaMu.Unlock()
	if err != nil {
		return err
	}
	if err := m.list.UpdateNode(timeout); err != nil {
		return fmt.Errorf("broadcast member meta: %w", err)
	}
	return nil
}

// Health is memberlist's health score: 0 is healthy; higher means this node misses the
// protocol's soft real-time deadlines (it is overloaded or its network drops packets),
// and memberlist stretches its probe timings accordingly.
func (m *Membership) Health() int { return m.list.GetHealthScore() }

// DetectionBound is a lower bound on how long after this node stops answering the other
// members can declare it dead under the preset:
//
//	ProbeTimeout + SuspicionMult × ProbeInterval
//
// A member is declared dead only after a probe of it failed (no ack within ProbeTimeout
// at the very least — memberlist in fact waits a whole ProbeInterval before suspecting)
// and its suspicion timer then ran out; that timer never runs shorter than memberlist's
// minimum suspicion timeout, SuspicionMult × ProbeInterval × max(1, log10(n)), whatever
// the number n of members and of confirmations, and memberlist's health awareness only
// stretches timings. "local": 150ms + 4 × 200ms = 950ms; "lan": 500ms + 4 × 1s = 4.5s.
// A node that has heard from no member for less than this cannot have been declared
// dead by them (the node uses half of it as its lease).
func (m *Membership) DetectionBound() time.Duration {
	return m.mlCfg.ProbeTimeout + time.Duration(m.mlCfg.SuspicionMult)*m.mlCfg.ProbeInterval
}

// JoinAddrs tries to join the members at addrs (gossip host:port) now, and reports how
// many answered. The router calls it for members it declared dead, so that the two sides
// of a healed partition merge again.
func (m *Membership) JoinAddrs(addrs []string) (int, error) {
	return m.list.Join(addrs)
}

// AnnounceLeaving tells the others that this node is about to leave, so they stop
// placing partitions on it while it hands its own over; it stays a member until Leave.
func (m *Membership) AnnounceLeaving(timeout time.Duration) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.shut {
		return errMembershipShutdown
	}
	return m.setMeta(func(w *wireMeta) { w.Leaving = true }, timeout)
}

// Leave leaves the cluster gracefully: it stops the join loop, broadcasts metadata
// saying this node is leaving (waiting up to half of timeout for it to go out), then
// broadcasts that it is gone (waiting up to the rest); the others get a MemberLeave (see
// wireMeta). timeout 0 waits without limit. Gossip keeps running until Shutdown.
func (m *Membership) Leave(timeout time.Duration) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.shut {
		return errMembershipShutdown
	}
	m.left = true
	m.stopJoinLoop()
	start := time.Now()
	if err := m.setMeta(func(w *wireMeta) { w.Leaving = true }, timeout/2); err != nil {
		m.log.Warn("leaving: others may see this node as failed rather than left", "error", err)
	}
	rest := time.Duration(0)
	if timeout > 0 {
		rest = max(timeout-time.Since(start), time.Millisecond)
	}
	if err := m.list.Leave(rest); err != nil {
		return fmt.Errorf("leave cluster: %w", err)
	}
	m.log.Info("left cluster", "node", m.cfg.NodeName)
	return nil
}

// Shutdown stops gossip and the join loop without telling anyone: the others will
// declare this node dead. It waits for an attempt of the join loop in progress (at most
// the preset's TCPTimeout). Calling it again returns what the first call returned.
func (m *Membership) Shutdown() error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.shut {
		return m.shutErr
	}
	m.shut = true
	m.closeStopJoin() // before the memberlist goes: an attempt in progress fails fast
	if err := m.list.Shutdown(); err != nil {
		m.shutErr = fmt.Errorf("shut down gossip: %w", err)
	}
	if m.started {
		<-m.joinDone
	}
	return m.shutErr
}

// stopJoinLoop stops the join loop and waits for it. lifeMu must be held.
func (m *Membership) stopJoinLoop() {
	m.closeStopJoin()
	if m.started {
		<-m.joinDone
	}
}

// closeStopJoin closes stopJoin once. lifeMu must be held.
func (m *Membership) closeStopJoin() {
	select {
	case <-m.stopJoin:
	default:
		close(m.stopJoin)
	}
}

// observe records what an event says of member n: it joined or was updated (alive), or
// it is gone (left if it announced leaving, else dead). It returns the member, and
// whether it announced that it is leaving, and whether its MemberMeta changed.
func (m *Membership) observe(kind MemberEventKind, n *memberlist.Node) (mb Member, leaving, metaChanged bool) {
	var w wireMeta
	err := transport.Decode(n.Meta, &w)
	if err != nil {
		w = wireMeta{}
	}
	mb = Member{Name: n.Name, Gossip: n.Address(), Meta: w.MemberMeta, State: memberAlive, Leaving: w.Leaving}

	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil && !m.undecodable[n.Name] {
		m.undecodable[n.Name] = true
		m.log.Warn("member metadata undecodable, member listed without addresses", "member", n.Name,
			"gossip", mb.Gossip, "error", err)
	} else if err == nil {
		delete(m.undecodable, n.Name)
	}
	e, ok := m.members[n.Name]
	if !ok {
		e = &memberEntry{}
		m.members[n.Name] = e
	}
	if kind == MemberLeave { // memberlist's NotifyLeave: left or failed
		mb.State = memberDead
		if w.Leaving || e.leaving {
			mb.State = memberLeft
		}
	}
	metaChanged = !ok || e.Meta != mb.Meta
	if !ok || e.State != mb.State {
		e.since = time.Now()
	}
	e.Member = mb
	e.leaving = w.Leaving
	if mb.State == memberDead || mb.State == memberLeft {
		m.forgetOldestGone()
	}
	return mb, w.Leaving, metaChanged
}

// forgetOldestGone drops the dead and left members beyond maxGoneMembers, oldest first.
// m.mu must be held.
func (m *Membership) forgetOldestGone() {
	var gone []*memberEntry
	for _, e := range m.members {
		if e.State == memberDead || e.State == memberLeft {
			gone = append(gone, e)
		}
	}
	if len(gone) <= maxGoneMembers {
		return
	}
	slices.SortFunc(gone, func(a, b *memberEntry) int { return a.since.Compare(b.since) })
	for _, e := range gone[:len(gone)-maxGoneMembers] {
		delete(m.members, e.Name)
		delete(m.undecodable, e.Name)
	}
}

// membershipDelegate is memberlist's Delegate (our metadata), EventDelegate (the member
// map and OnEvent) and PingDelegate (OnContact).
type membershipDelegate struct {
	m *Membership
}

// NodeMeta returns this node's encoded metadata (checked against the limit when set).
func (d *membershipDelegate) NodeMeta(limit int) []byte {
	d.m.metaMu.Lock()
	defer d.m.metaMu.Unlock()
	return slices.Clone(d.m.metaB)
}

// NotifyMsg, GetBroadcasts, LocalState and MergeRemoteState: no user messages or state
// ride on gossip; the peer transport carries them.
func (d *membershipDelegate) NotifyMsg([]byte)                           {}
func (d *membershipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *membershipDelegate) LocalState(join bool) []byte                { return nil }
func (d *membershipDelegate) MergeRemoteState(buf []byte, join bool)     {}

// NotifyJoin, NotifyLeave and NotifyUpdate run under memberlist's node lock.
func (d *membershipDelegate) NotifyJoin(n *memberlist.Node)   { d.notify(MemberJoin, n) }
func (d *membershipDelegate) NotifyLeave(n *memberlist.Node)  { d.notify(MemberLeave, n) }
func (d *membershipDelegate) NotifyUpdate(n *memberlist.Node) { d.notify(MemberUpdate, n) }

// notify records the event and passes it on to OnEvent. kind is memberlist's: MemberLeave
// stands for both leave and fail.
func (d *membershipDelegate) notify(kind MemberEventKind, n *memberlist.Node) {
	mb, leaving, metaChanged := d.m.observe(kind, n)
	if n.Name == d.m.cfg.NodeName {
		return
	}
	level := hclog.Info
	switch {
	case kind == MemberLeave && mb.State == memberDead:
		kind, level = MemberFail, hclog.Warn
	case kind == MemberUpdate && !metaChanged:
		// Only the leaving flag changed: nothing OnEvent could see.
		if leaving {
			d.m.log.Info("member leaving", "member", n.Name, "gossip", mb.Gossip)
		}
		return
	case kind == MemberUpdate:
		level = hclog.Debug
	}
	d.m.log.Log(level, "member "+kind.String(), "member", n.Name, "gossip", mb.Gossip, "peer", mb.Meta.Peer)
	if d.m.cfg.OnEvent != nil {
		d.m.cfg.OnEvent(MemberEvent{Kind: kind, Name: n.Name, Meta: mb.Meta})
	}
}

// AckPayload is called when this node acks a probe from another member: that member
// reached this node, which is contact too. Acks carry nothing.
func (d *membershipDelegate) AckPayload() []byte {
	if d.m.cfg.OnContact != nil {
		d.m.cfg.OnContact()
	}
	return nil
}

// NotifyPingComplete is called when a probe of another member is acked.
func (d *membershipDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	if d.m.cfg.OnContact != nil {
		d.m.cfg.OnContact()
	}
}
