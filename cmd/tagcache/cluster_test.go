package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tagcache/tagcache/node"
)

func TestClusterMembersListsTheStandaloneNodeWithItsStatistics(t *testing.T) {
	n := startNode(t)
	n.ok("put", "k", "v")
	n.ok("get", "key", "k")
	n.miss("absent")
	httpAddr := "127.0.0.1:" + n.flags[3]
	wantOutput(t, n.ok("cluster", "members"), fmt.Sprintf(""+
		"NAME               STATE  GOSSIP  PEER  %-*s  PARTITIONS  ITEMS  HIT RATIO\n"+
		"standalone (self)  alive  -       -     %s  271         1      50.00%%\n", len(httpAddr), "HTTP", httpAddr))

	var reply struct{ Members []node.MemberInfo }
	if err := json.Unmarshal([]byte(n.ok("cluster", "members", "--json")), &reply); err != nil {
		t.Fatal(err)
	}
	if len(reply.Members) != 1 {
		t.Fatalf("members --json: %d members, want 1", len(reply.Members))
	}
	m := reply.Members[0]
	if m.Name != "standalone" || m.State != "alive" || !m.Self || m.HTTP != httpAddr || m.Partitions != 271 ||
		m.Stats == nil || m.Stats.Items != 1 || m.Stats.HitRatio != 0.5 {
		t.Errorf("members --json: %+v (stats %+v)", m, m.Stats)
	}
}

func TestClusterRingShowsEveryPartitionOwnedByTheStandaloneNode(t *testing.T) {
	n := startNode(t)
	summary := "Ring version 1: 271 partitions over 1 member\nMEMBER      PARTITIONS\nstandalone  271\n"
	wantOutput(t, n.ok("cluster", "ring"), summary)

	var all strings.Builder
	all.WriteString(summary + "\nPARTITION  OWNER\n")
	for p := range 271 {
		fmt.Fprintf(&all, "%-9d  standalone\n", p)
	}
	wantOutput(t, n.ok("cluster", "ring", "--partitions"), all.String())

	var ring node.RingInfo
	if err := json.Unmarshal([]byte(n.ok("cluster", "--json", "ring")), &ring); err != nil {
		t.Fatal(err)
	}
	if ring.Version != 1 || ring.Partitions != 271 || len(ring.Owners) != 271 || len(ring.Members) != 1 {
		t.Errorf("ring --json: version %d, %d partitions, %d owners, members %q", ring.Version, ring.Partitions, len(ring.Owners), ring.Members)
	}
}

func TestClusterCommandsNeedCredentials(t *testing.T) {
	n := startNode(t)
	for _, sub := range []string{"members", "ring"} {
		r := n.run("cluster", sub, "--password", "wrong")
		if r.code != 1 || r.stdout != "" || !strings.HasPrefix(r.stderr, "tagcache cluster: unauthorized (HTTP 401)") {
			t.Errorf("cluster %s with a wrong password: exit %d, stdout %q, stderr %q", sub, r.code, r.stdout, r.stderr)
		}
	}
}

func TestClusterUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"cluster"},
		{"cluster", "nodes"},
		{"cluster", "members", "extra"},
		{"cluster", "members", "--partitions"},
		{"cluster", "ring", "--port", "0"},
	} {
		r := tagcache(args...)
		if r.code != 2 || r.stdout != "" || !strings.HasPrefix(r.stderr, "tagcache cluster: ") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%q: want exit 2 and one line on stderr, got exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
}

func TestClusterHelpListsSubcommandsAndFlags(t *testing.T) {
	r := tagcache("cluster", "--help")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("cluster --help: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{
		"\n  tagcache cluster members [flags]\n", "\n  tagcache cluster ring [--partitions] [flags]\n",
		"\n  -partitions\n", "\n  -json\n", "\n  -host string\n", `(default "127.0.0.1")`, "(default 8080)",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("cluster --help lacks %q:\n%s", want, r.stdout)
		}
	}
	if r := tagcache("--help"); !strings.Contains(r.stdout, "\n  cluster     show the cluster's members") {
		t.Errorf("tagcache --help does not list cluster:\n%s", r.stdout)
	}
}
