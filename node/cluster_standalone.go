package node

import (
	"context"
	"net"

	"github.com/tagcache/tagcache/cache"
)

// standaloneName is the member name a standalone node (Config.Cluster == nil) reports: it
// has no cluster name, and a fixed one tells a reader at once that no cluster is involved.
const standaloneName = "standalone"

// standaloneView is the clusterView of a standalone node: a cluster of one that owns every
// partition, always ready, with no gossip or peer address.
type standaloneView struct {
	n *Node
}

func (v standaloneView) Members(context.Context) []MemberInfo {
	st := statsReplyOf(v.n.store.Stats())
	return []MemberInfo{{
		Name:       standaloneName,
		State:      "alive",
		Self:       true,
		TCP:        addrString(v.n.Addr("tcp")),
		HTTP:       addrString(v.n.Addr("http")),
		RESP:       addrString(v.n.Addr("resp")),
		Partitions: v.n.store.Partitions(),
		Stats:      &st,
	}}
}

func (v standaloneView) RingInfo() RingInfo {
	owners := make([]string, v.n.store.Partitions())
	for p := range owners {
		owners[p] = standaloneName
	}
	return RingInfo{Version: 1, Partitions: len(owners), Members: []string{standaloneName}, Owners: owners}
}

func (standaloneView) Ready() (bool, string) { return true, "" }

// statsReplyOf is the JSON form of a store's counters, as GET /stats and
// /cluster/members show them.
func statsReplyOf(st cache.Stats) StatsReply {
	return StatsReply{st.Hits, st.Misses, st.Puts, st.Invalidations, st.HitRatio(), st.Items, st.Bytes, st.Tags,
		st.Evictions, st.Expirations}
}

// addrString is a's "host:port", or "" for a nil address (a listener the node does not open).
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
