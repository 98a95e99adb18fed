package node

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// msNode is one Membership under test with what it logged, the events it got and how
// often it was contacted.
type msNode struct {
	*Membership
	logs     *msLogBuffer
	events   *msEventLog
	contacts atomic.Int64
}

// msLogBuffer collects a membership's logs; they are printed if the test fails.
type msLogBuffer struct {
	mu    sync.Mutex // protects buf and lines
	buf   bytes.Buffer
	lines []msLogLine
}

// msLogLine is one line logged, and when.
type msLogLine struct {
	at   time.Time
	line string
}

func (b *msLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, msLogLine{time.Now(), string(p)})
	return b.buf.Write(p)
}

// logged returns the lines holding s logged from from to to.
func (b *msLogBuffer) logged(s string, from, to time.Time) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range b.lines {
		if strings.Contains(l.line, s) && !l.at.Before(from) && !l.at.After(to) {
			out = append(out, strings.TrimSpace(l.line))
		}
	}
	return out
}

func (b *msLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// msEventLog records MemberEvents with when they arrived.
type msEventLog struct {
	mu     sync.Mutex // protects events and at
	events []MemberEvent
	at     []time.Time
}

func (l *msEventLog) add(e MemberEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
	l.at = append(l.at, time.Now())
}

// find returns the first event of kind about name, and when it arrived.
func (l *msEventLog) find(kind MemberEventKind, name string) (MemberEvent, time.Time, bool) {
	return l.findAfter(kind, name, time.Time{})
}

// findAfter returns the first event of kind about name that arrived at or after t0, and
// when it arrived. On a loaded machine memberlist can declare a member dead for a moment
// before (it refutes and rejoins: a flap); events from before what the test did are not
// about it.
func (l *msEventLog) findAfter(kind MemberEventKind, name string, t0 time.Time) (MemberEvent, time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, e := range l.events {
		if e.Kind == kind && e.Name == name && !l.at[i].Before(t0) {
			return e, l.at[i], true
		}
	}
	return MemberEvent{}, time.Time{}, false
}

// suspectedBefore returns what the observers logged about suspecting name within 2 s
// (longer than the longest suspicion, "local": 2 × 4 × 200 ms) before t0: a suspicion
// that began then may declare name dead after t0, less than DetectionBound after it.
func suspectedBefore(name string, t0 time.Time, observers ...*msNode) []string {
	var out []string
	for _, n := range observers {
		out = append(out, n.logs.logged("Suspect "+name+" has failed", t0.Add(-2*time.Second), t0)...)
	}
	return out
}

// msMeta is the Meta a test node advertises.
func msMeta(name string) MemberMeta {
	return MemberMeta{Version: 1, Peer: "127.0.0.1:1" + name, TCP: "tcp-" + name, HTTP: "http-" + name, RESP: "resp-" + name}
}

// newMS creates a membership named name on 127.0.0.1, port 0, "local" preset; mut
// adjusts the config first. It is shut down when the test ends.
func newMS(t *testing.T, name string, mut func(*MembershipConfig)) *msNode {
	t.Helper()
	n, err := tryNewMS(t, name, mut)
	if err != nil {
		t.Fatalf("NewMembership(%s): %v", name, err)
	}
	return n
}

func tryNewMS(t *testing.T, name string, mut func(*MembershipConfig)) (*msNode, error) {
	t.Helper()
	n := &msNode{logs: &msLogBuffer{}, events: &msEventLog{}}
	cfg := MembershipConfig{
		NodeName: name,
		Bind:     "127.0.0.1",
		Label:    "tagcache-test",
		Preset:   "local",
		Meta:     msMeta(name),
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: name, Level: hclog.Debug, Output: n.logs, TimeFormat: "15:04:05.000",
		}),
		OnEvent:   n.events.add,
		OnContact: func() { n.contacts.Add(1) },
	}
	if mut != nil {
		mut(&cfg)
	}
	m, err := NewMembership(cfg)
	if err != nil {
		return nil, err
	}
	n.Membership = m
	t.Cleanup(func() {
		if err := m.Shutdown(); err != nil {
			t.Errorf("Shutdown(%s): %v", name, err)
		}
		if t.Failed() {
			t.Logf("logs of %s:\n%s", name, n.logs.String())
		}
	})
	return n, nil
}

// msJoin is a mut that joins addrs.
func msJoin(addrs ...string) func(*MembershipConfig) {
	return func(c *MembershipConfig) { c.Join = addrs }
}

// msWait polls cond every 10ms until it holds or timeout passes.
func msWait(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func msNames(ms []Member) string {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name + "=" + m.State
	}
	return strings.Join(names, ",")
}

// msCluster starts a, b, c with b and c joining a, and waits until each sees all three.
func msCluster(t *testing.T) (a, b, c *msNode) {
	t.Helper()
	a = newMS(t, "a", nil)
	b = newMS(t, "b", msJoin(a.Addr()))
	c = newMS(t, "c", msJoin(a.Addr()))
	for _, n := range []*msNode{a, b, c} {
		n.Start(context.Background())
	}
	// b and c join at once: a's news of one may be gossiped out before the other is a
	// member, which then learns of it at the next push/pull (every 5s in this preset).
	for _, n := range []*msNode{a, b, c} {
		msWait(t, 12*time.Second, n.Name()+" sees three alive members", func() bool { return len(n.Alive()) == 3 })
	}
	return a, b, c
}

func TestMembershipThreeNodesJoinAndSeeEachOthersMeta(t *testing.T) {
	a, b, c := msCluster(t)
	nodes := []*msNode{a, b, c}
	for _, n := range nodes {
		if !n.Joined() {
			t.Errorf("%s: Joined() = false", n.Name())
		}
		alive := n.Alive()
		if got := msNames(alive); got != "a=alive,b=alive,c=alive" {
			t.Errorf("%s: Alive() = %s", n.Name(), got)
		}
		for _, mb := range alive {
			if mb.Meta != msMeta(mb.Name) {
				t.Errorf("%s sees %s with meta %+v, want %+v", n.Name(), mb.Name, mb.Meta, msMeta(mb.Name))
			}
			var owner *msNode
			for _, o := range nodes {
				if o.Name() == mb.Name {
					owner = o
				}
			}
			if mb.Gossip != owner.Addr() {
				t.Errorf("%s sees %s at %s, but it is at %s", n.Name(), mb.Name, mb.Gossip, owner.Addr())
			}
		}
		for _, o := range nodes {
			if o == n {
				if _, _, ok := n.events.find(MemberJoin, n.Name()); ok {
					t.Errorf("%s: OnEvent got its own join", n.Name())
				}
				continue
			}
			e, _, ok := n.events.find(MemberJoin, o.Name())
			if !ok {
				t.Errorf("%s: OnEvent got no join of %s", n.Name(), o.Name())
			} else if e.Meta != msMeta(o.Name()) {
				t.Errorf("%s: join of %s carries meta %+v", n.Name(), o.Name(), e.Meta)
			}
		}
	}
	if p := a.Addr(); !strings.HasPrefix(p, "127.0.0.1:") || strings.HasSuffix(p, ":0") {
		t.Errorf("Addr() = %q, want 127.0.0.1 and the port picked", p)
	}
}

func TestMembershipWithoutJoinIsAOneNodeCluster(t *testing.T) {
	a := newMS(t, "a", nil)
	a.Start(context.Background())
	if !a.Joined() {
		t.Error("Joined() = false with no Join")
	}
	if got := msNames(a.Members()); got != "a=alive" {
		t.Errorf("Members() = %s", got)
	}
}

func TestMembershipUpdateMetaReachesOthers(t *testing.T) {
	a, b, _ := msCluster(t)
	meta := msMeta("a")
	meta.Peer = "127.0.0.1:9999"
	if err := a.UpdateMeta(meta); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	msWait(t, 5*time.Second, "b gets MemberUpdate of a", func() bool {
		e, _, ok := b.events.find(MemberUpdate, "a")
		return ok && e.Meta == meta
	})
	for _, mb := range b.Members() {
		if mb.Name == "a" && mb.Meta != meta {
			t.Errorf("b sees a with meta %+v after update", mb.Meta)
		}
	}
	huge := meta
	huge.HTTP = strings.Repeat("h", 600)
	if err := a.UpdateMeta(huge); err == nil {
		t.Error("UpdateMeta accepted meta larger than 512 bytes")
	}
}

func TestMembershipGracefulLeaveIsMemberLeave(t *testing.T) {
	a, b, c := msCluster(t)
	left := time.Now()
	if err := c.Leave(2 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	for _, n := range []*msNode{a, b} {
		msWait(t, 5*time.Second, n.Name()+" gets MemberLeave of c", func() bool {
			_, _, ok := n.events.findAfter(MemberLeave, "c", left)
			return ok
		})
		// Only a failure reported once the leave began counts (c may have flapped before),
		// and not one a suspicion begun before the leave explains.
		if _, at, ok := n.events.findAfter(MemberFail, "c", left); ok {
			if s := suspectedBefore("c", left, a, b); len(s) > 0 {
				t.Logf("%s reported c failed %v after its leave began, but c was suspected before:\n%s",
					n.Name(), at.Sub(left).Round(time.Millisecond), strings.Join(s, "\n"))
			} else {
				t.Errorf("%s: a graceful leave was reported as a failure", n.Name())
			}
		}
		// a or b may be declared dead for a moment on a loaded machine: wait for the view.
		msWait(t, 10*time.Second, n.Name()+" lists a and b alive and c left", func() bool {
			return msNames(n.Alive()) == "a=alive,b=alive" && msNames(n.Members()) == "a=alive,b=alive,c=left"
		})
	}
	if err := c.Shutdown(); err != nil {
		t.Errorf("Shutdown after Leave: %v", err)
	}
	if err := c.Leave(time.Second); err == nil {
		t.Error("Leave after Shutdown did not fail")
	}
}

func TestMembershipCrashIsMemberFailWithinSeconds(t *testing.T) {
	a, b, c := msCluster(t)
	bound := a.DetectionBound()
	crashed := time.Now()
	if err := c.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// Only events after the crash count: on a loaded machine c may have been declared
	// dead for a moment before, and rejoined (a flap).
	first := time.Duration(-1)
	for _, n := range []*msNode{a, b} {
		msWait(t, 10*time.Second, n.Name()+" gets MemberFail of c", func() bool {
			_, _, ok := n.events.findAfter(MemberFail, "c", crashed)
			return ok
		})
		_, at, _ := n.events.findAfter(MemberFail, "c", crashed)
		took := at.Sub(crashed)
		t.Logf("%s declared c dead %v after it stopped (DetectionBound %v)", n.Name(), took.Round(time.Millisecond), bound)
		if first < 0 || took < first {
			first = took
		}
		if _, _, ok := n.events.findAfter(MemberLeave, "c", crashed); ok {
			t.Errorf("%s: a crash was reported as a graceful leave", n.Name())
		}
		// a or b may be declared dead for a moment too: wait for the view to heal.
		msWait(t, 10*time.Second, n.Name()+" lists a and b alive and c dead", func() bool {
			return msNames(n.Members()) == "a=alive,b=alive,c=dead"
		})
	}
	// The node's lease is 70 % of DetectionBound: the bound must really be a lower bound,
	// counted from when c stopped answering. A suspicion of c that began before the crash
	// (a stall) ends sooner after it, and proves nothing.
	if first < bound {
		if s := suspectedBefore("c", crashed, a, b); len(s) > 0 {
			t.Logf("c was declared dead %v after the crash, but suspected before it:\n%s", first, strings.Join(s, "\n"))
		} else {
			t.Errorf("c was declared dead after %v, sooner than DetectionBound %v", first, bound)
		}
	}
	if err := c.Shutdown(); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

// msJoinErr asks memberlist directly whether from can join to.
func msJoinErr(from, to *msNode) error {
	_, err := from.list.Join([]string{to.Addr()})
	return err
}

func TestMembershipWrongKeyCannotJoin(t *testing.T) {
	a := newMS(t, "a", func(c *MembershipConfig) { c.Key = []byte("key one") })
	b := newMS(t, "b", func(c *MembershipConfig) { c.Key = []byte("key two") })
	none := newMS(t, "none", nil)
	for _, pair := range [][2]*msNode{{b, a}, {none, a}, {a, none}} {
		if err := msJoinErr(pair[0], pair[1]); err == nil {
			t.Errorf("%s joined %s with a different cluster key", pair[0].Name(), pair[1].Name())
		} else {
			t.Logf("%s → %s: %v", pair[0].Name(), pair[1].Name(), err)
		}
	}
	for _, n := range []*msNode{a, b, none} {
		if got := msNames(n.Members()); got != n.Name()+"=alive" {
			t.Errorf("%s: Members() = %s", n.Name(), got)
		}
	}
	msWait(t, 2*time.Second, "a logs the refused stream", func() bool {
		return strings.Contains(a.logs.String(), "[ERROR]")
	})

	same := newMS(t, "same", func(c *MembershipConfig) { c.Key = []byte("key one") })
	if err := msJoinErr(same, a); err != nil {
		t.Errorf("same key cannot join: %v", err)
	}
}

func TestMembershipStartNeverJoinsAClusterWithAnotherKey(t *testing.T) {
	a := newMS(t, "a", func(c *MembershipConfig) { c.Key = []byte("key one") })
	b := newMS(t, "b", func(c *MembershipConfig) {
		c.Key = []byte("key two")
		c.Join = []string{a.Addr()}
		c.JoinRetry = 100 * time.Millisecond
	})
	b.Start(context.Background())
	time.Sleep(time.Second)
	if b.Joined() {
		t.Error("b joined a cluster with another key")
	}
	if got := msNames(b.Members()); got != "b=alive" {
		t.Errorf("b: Members() = %s", got)
	}
	if logs := b.logs.String(); !strings.Contains(logs, "not joined yet") {
		t.Errorf("b did not log its failed join:\n%s", logs)
	}
}

func TestMembershipDifferentLabelCannotJoin(t *testing.T) {
	a := newMS(t, "a", func(c *MembershipConfig) { c.Label = "cluster-a" })
	b := newMS(t, "b", func(c *MembershipConfig) { c.Label = "cluster-b" })
	if err := msJoinErr(b, a); err == nil {
		t.Error("b joined a cluster with another label")
	} else {
		t.Logf("b → a: %v", err)
	}
	ka := newMS(t, "ka", func(c *MembershipConfig) { c.Label = "cluster-a"; c.Key = []byte("k") })
	kb := newMS(t, "kb", func(c *MembershipConfig) { c.Label = "cluster-b"; c.Key = []byte("k") })
	if err := msJoinErr(kb, ka); err == nil {
		t.Error("kb joined a cluster with the same key but another label")
	}
	nolabel := newMS(t, "nolabel", func(c *MembershipConfig) { c.Label = "" })
	if err := msJoinErr(nolabel, a); err == nil {
		t.Error("an unlabeled node joined a labeled cluster")
	}
	for _, n := range []*msNode{a, b, ka, kb, nolabel} {
		if got := msNames(n.Members()); got != n.Name()+"=alive" {
			t.Errorf("%s: Members() = %s", n.Name(), got)
		}
	}
}

func TestMembershipNoKeyOnBothSidesJoins(t *testing.T) {
	a := newMS(t, "a", nil)
	b := newMS(t, "b", msJoin(a.Addr()))
	b.Start(context.Background())
	msWait(t, 5*time.Second, "b joined a", b.Joined)
	msWait(t, 5*time.Second, "a sees b", func() bool { return len(a.Alive()) == 2 })
}

func TestMembershipJoinsThroughDNSName(t *testing.T) {
	a := newMS(t, "a", nil)
	_, port, _ := net.SplitHostPort(a.Addr())
	b := newMS(t, "b", msJoin("dns+localhost:"+port))
	b.Start(context.Background())
	msWait(t, 5*time.Second, "b joined a through dns+localhost", b.Joined)
	if got := msNames(a.Alive()); got != "a=alive,b=alive" {
		t.Errorf("a: Alive() = %s", got)
	}
}

// msFreePort returns a port that is free on 127.0.0.1 for TCP and UDP right now.
func msFreePort(t *testing.T) int {
	t.Helper()
	for range 10 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func TestMembershipJoinsATargetThatStartsLater(t *testing.T) {
	port := msFreePort(t)
	for _, target := range []string{"127.0.0.1:" + strconv.Itoa(port), "dns+localhost:" + strconv.Itoa(port)} {
		t.Run(strings.SplitN(target, ":", 2)[0], func(t *testing.T) {
			b := newMS(t, "b", msJoin(target))
			b.Start(context.Background())
			time.Sleep(time.Second)
			if b.Joined() {
				t.Fatal("b joined before its target existed")
			}
			a := newMS(t, "a", func(c *MembershipConfig) { c.Port = port })
			msWait(t, 5*time.Second, "b joined a that started 1 s later", b.Joined)
			msWait(t, 5*time.Second, "a sees b", func() bool { return len(a.Alive()) == 2 })
			// Free the port for the next subtest.
			if err := a.Shutdown(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMembershipJoinsWhenJoinedByAnother(t *testing.T) {
	port := msFreePort(t)
	// a waits for a member that never comes at port; b joins a: a is in a cluster.
	a := newMS(t, "a", func(c *MembershipConfig) {
		c.Join = []string{"127.0.0.1:" + strconv.Itoa(port)}
		c.JoinRetry = 100 * time.Millisecond
	})
	a.Start(context.Background())
	b := newMS(t, "b", msJoin(a.Addr()))
	b.Start(context.Background())
	msWait(t, 5*time.Second, "a counts itself joined once b joined it", a.Joined)
}

func TestMembershipJoiningItselfIsNotJoined(t *testing.T) {
	port := msFreePort(t)
	p := strconv.Itoa(port)
	a := newMS(t, "a", func(c *MembershipConfig) {
		c.Port = port
		c.Join = []string{"127.0.0.1:" + p, "dns+localhost:" + p}
		c.JoinRetry = 50 * time.Millisecond
	})
	a.Start(context.Background())
	time.Sleep(500 * time.Millisecond)
	if a.Joined() {
		t.Error("a counts a join with itself as joined")
	}
	if logs := a.logs.String(); !strings.Contains(logs, "not joined yet") {
		t.Errorf("a did not log its failed join:\n%s", logs)
	}
}

func TestMembershipJoinLoopStopsOnShutdown(t *testing.T) {
	port := msFreePort(t)
	a := newMS(t, "a", func(c *MembershipConfig) {
		c.Join = []string{"127.0.0.1:" + strconv.Itoa(port)}
		c.JoinRetry = 50 * time.Millisecond
	})
	a.Start(context.Background())
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.joinDone:
	default:
		t.Fatal("join loop still running after Shutdown")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Shutdown took %v", took)
	}
	if a.Joined() {
		t.Error("Joined() = true without any other member")
	}
}

func TestMembershipOnContactSoonAfterTheJoin(t *testing.T) {
	a := newMS(t, "a", nil)
	b := newMS(t, "b", msJoin(a.Addr()))
	b.Start(context.Background())
	msWait(t, 5*time.Second, "b joined a", b.Joined)
	joined := time.Now()
	for _, n := range []*msNode{a, b} {
		msWait(t, 5*time.Second, n.Name()+" gets OnContact", func() bool { return n.contacts.Load() > 0 })
	}
	t.Logf("both contacted within %v of the join", time.Since(joined).Round(time.Millisecond))
	if h := a.Health(); h != 0 {
		t.Logf("health score %d (0 = healthy)", h)
	}
}

func TestMembershipRefusesMetaOver512Bytes(t *testing.T) {
	_, err := tryNewMS(t, "big", func(c *MembershipConfig) { c.Meta.Peer = strings.Repeat("p", 600) })
	if err == nil || !strings.Contains(err.Error(), "512") {
		t.Errorf("NewMembership with 600-byte meta: err = %v, want one naming the 512-byte limit", err)
	}
}

func TestMembershipConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*MembershipConfig)
		want string
	}{
		{"unknown preset", func(c *MembershipConfig) { c.Preset = "wan" }, `"lan", "local"`},
		{"no name", func(c *MembershipConfig) { c.NodeName = "" }, "NodeName"},
		{"dns without port", func(c *MembershipConfig) { c.Join = []string{"dns+tagcache"} }, "dns+name:port"},
		{"label too long", func(c *MembershipConfig) { c.Label = strings.Repeat("l", 256) }, "label"},
	} {
		_, err := tryNewMS(t, "x", tc.mut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestMembershipDetectionBoundByPreset(t *testing.T) {
	for preset, want := range map[string]time.Duration{
		"local": 950 * time.Millisecond,
		"lan":   4500 * time.Millisecond,
		"":      950 * time.Millisecond,
	} {
		m := newMS(t, "x"+preset, func(c *MembershipConfig) { c.Preset = preset })
		if got := m.DetectionBound(); got != want {
			t.Errorf("preset %q: DetectionBound() = %v, want %v", preset, got, want)
		}
	}
}
