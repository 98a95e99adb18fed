package node

import (
	"context"
	"time"
)

// ClusterConfig makes a node a cluster member. A nil Config.Cluster runs the node
// standalone: the local store behind the servers, no gossip, no peer transport (tests
// and embedding). `tagcache server` always runs a cluster member; with no Join it is a
// one-node cluster that others can join.
type ClusterConfig struct {
	// NodeName is the node's unique name in the cluster. Default: hostname plus a random
	// suffix.
	NodeName string
	// Bind is the address gossip and the peer transport listen on. Default: Config.Bind.
	Bind string
	// Advertise is the address peers are told to use for this node. Default: Bind (when
	// Bind is a wildcard, memberlist picks a private address).
	Advertise string
	// GossipPort is memberlist's TCP+UDP port; PeerPort the msgpack peer transport's.
	// 0 picks a free port (tests).
	GossipPort int
	PeerPort   int
	// Join lists peers to join at start: "host:port" (gossip ports) or "dns+name:port",
	// which is resolved again and again until the node has joined (Kubernetes headless
	// services list pods as they start).
	Join []string
	// Key is the cluster key: memberlist encrypts gossip with a key derived from it and
	// peers prove they hold it before the transport accepts anything. Empty is allowed
	// only on a loopback Bind.
	Key []byte
	// Name labels gossip so that two clusters never merge. Default "tagcache".
	Name string
	// Preset picks memberlist's timings: "local" (one machine: failure detected in about
	// 1–2 s) or "lan" (memberlist's LAN defaults). Default "lan" on a non-loopback Bind,
	// "local" on loopback.
	Preset string
	// InvalidationTimeout bounds the fan-out of one INV_*/FLUSH to every peer.
	InvalidationTimeout time.Duration
	// ForwardTimeout bounds one forwarded key command.
	ForwardTimeout time.Duration
	// DeadForget is how long a failed member still counts toward the cluster size that
	// the majority check uses (a node that sees at most half of the cluster fences
	// itself). After it, the survivors count as the whole cluster.
	DeadForget time.Duration
	// HandoffBatch is how many entries one handoff message carries.
	HandoffBatch int
}

// Defaults of ClusterConfig.
const (
	DefaultGossipPort          = 7946
	DefaultPeerPort            = 7947
	DefaultClusterName         = "tagcache"
	DefaultInvalidationTimeout = 2 * time.Second
	DefaultForwardTimeout      = 2 * time.Second
	DefaultDeadForget          = 5 * time.Minute
	DefaultHandoffBatch        = 512
)

// MemberInfo is one member as /cluster/members shows it.
type MemberInfo struct {
	Name    string `json:"name"`
	State   string `json:"state"` // alive, suspect, dead, left
	Self    bool   `json:"self"`
	Gossip  string `json:"gossip"`         // host:port of memberlist
	Peer    string `json:"peer"`           // host:port of the peer transport
	TCP     string `json:"tcp,omitempty"`  // client addresses, as advertised
	HTTP    string `json:"http,omitempty"` //
	RESP    string `json:"resp,omitempty"` //
	Version int    `json:"version"`        // peer protocol version
	// Partitions is how many partitions the member owns in this node's ring.
	Partitions int `json:"partitions"`
	// Stats are the member's own store figures; nil when it did not answer
	// (StatsError says why).
	Stats      *StatsReply `json:"stats,omitempty"`
	StatsError string      `json:"stats_error,omitempty"`
}

// RingInfo is the ring as /cluster/ring shows it.
type RingInfo struct {
	Version    uint64   `json:"version"`
	Partitions int      `json:"partitions"`
	Members    []string `json:"members"`
	// Owners[p] is partition p's owner.
	Owners []string `json:"owners"`
}

// clusterView is what the HTTP API (/ready, /cluster/…) asks of a
// node's cluster side. A standalone node answers for itself alone.
type clusterView interface {
	// Members lists the members this node knows, with per-node statistics fetched from
	// each (in parallel, bounded by ctx).
	Members(ctx context.Context) []MemberInfo
	// RingInfo is the ring this node routes by.
	RingInfo() RingInfo
	// Ready reports whether the node serves: joined, ring built, not fenced. reason
	// says what is missing when it is not.
	Ready() (ready bool, reason string)
	// Series returns every live member's request samples of the seconds since+1 … upTo
	// (the dashboard's charts), fetched from each in parallel, bounded by ctx.
	Series(ctx context.Context, since, upTo int64) []memberSeries
	// InvalidateTagReport invalidates tag on every member and reports each one's part.
	InvalidateTagReport(ctx context.Context, tag string) (InvalidationReport, error)
}
