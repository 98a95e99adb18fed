// Package ring maps keys to partitions and partitions to owners for a TagCache cluster.
// It wraps buraksezer/consistent (consistent hashing with bounded loads) in an immutable
// Ring value with a version, so a node can compare the ring it routes by with the one it
// just built and learn which partitions it gained and lost.
package ring

import (
	"fmt"
	"slices"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// Config shapes a ring. Every node of a cluster must use the same values.
type Config struct {
	// Partitions is the number of partitions keys are hashed into (xxhash64 mod
	// Partitions, the same function the local store uses for its shards).
	Partitions int
	// Load bounds how many partitions one member may own: at most Load times the average.
	Load float64
	// VirtualNodes is how many points each member has on the hash circle; more points
	// spread partitions more evenly.
	VirtualNodes int
}

// Defaults of Config.
const (
	DefaultPartitions   = 271
	DefaultLoad         = 1.25
	DefaultVirtualNodes = 100
)

// DefaultConfig returns the ring every node uses unless configured otherwise.
func DefaultConfig() Config {
	return Config{Partitions: DefaultPartitions, Load: DefaultLoad, VirtualNodes: DefaultVirtualNodes}
}

// Ring is one immutable assignment of partitions to members.
type Ring struct {
	cfg     Config
	version uint64
	members []string // sorted
	owners  []string // partition -> member ("" when there are no members)
}

type member string

func (m member) String() string { return string(m) }

type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// New builds the ring of members (names must be unique) tagged with version. The same
// config and member set give the same assignment on every node, whatever the order.
func New(cfg Config, members []string, version uint64) (r *Ring, err error) {
	if cfg.Partitions < 1 || cfg.Load < 1 || cfg.VirtualNodes < 1 {
		return nil, fmt.Errorf("ring: partitions and virtual nodes must be at least 1 and load at least 1.0, got %+v", cfg)
	}
	sorted := slices.Clone(members)
	slices.Sort(sorted)
	if i := duplicate(sorted); i >= 0 {
		return nil, fmt.Errorf("ring: member %q appears twice", sorted[i])
	}
	r = &Ring{cfg: cfg, version: version, members: sorted, owners: make([]string, cfg.Partitions)}
	if len(sorted) == 0 {
		return r, nil
	}
	ms := make([]consistent.Member, len(sorted))
	for i, m := range sorted {
		ms[i] = member(m)
	}
	defer func() {
		// consistent panics when the load bound leaves no room for a partition.
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("ring: cannot place %d partitions on %d members with load %.2f: %v", cfg.Partitions, len(sorted), cfg.Load, p)
		}
	}()
	c := consistent.New(ms, consistent.Config{
		Hasher: hasher{}, PartitionCount: cfg.Partitions, ReplicationFactor: cfg.VirtualNodes, Load: cfg.Load,
	})
	for p := range r.owners {
		r.owners[p] = c.GetPartitionOwner(p).String()
	}
	return r, nil
}

func duplicate(sorted []string) int {
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return i
		}
	}
	return -1
}

// Version returns the version the ring was built with.
func (r *Ring) Version() uint64 { return r.version }

// Members returns the members, sorted.
func (r *Ring) Members() []string { return slices.Clone(r.members) }

// Partitions returns the number of partitions.
func (r *Ring) Partitions() int { return len(r.owners) }

// PartitionOf returns key's partition: PartitionOf(key, r.Partitions()).
func (r *Ring) PartitionOf(key string) int { return PartitionOf(key, len(r.owners)) }

// PartitionOf returns key's partition in a ring of partitions partitions (at least 1):
// xxhash64 of the key mod partitions. A client that knows a cluster's ring (GET
// /cluster/ring: partitions and owners) finds a key's owner with it.
func PartitionOf(key string, partitions int) int {
	return int(xxhash.Sum64String(key) % uint64(partitions))
}

// Owner returns partition p's owner ("" when the ring has no members).
func (r *Ring) Owner(p int) string { return r.owners[p] }

// OwnerOf returns the owner of key's partition.
func (r *Ring) OwnerOf(key string) string { return r.owners[r.PartitionOf(key)] }

// Owned returns the partitions m owns, in order.
func (r *Ring) Owned(m string) []int {
	var out []int
	for p, o := range r.owners {
		if o == m {
			out = append(out, p)
		}
	}
	return out
}

// Changes returns the partitions m owns in next but not in r (gained) and owns in r but
// not in next (lost). A nil r counts as a ring where m owns nothing.
func (r *Ring) Changes(next *Ring, m string) (gained, lost []int) {
	for p := range next.owners {
		was := r != nil && p < len(r.owners) && r.owners[p] == m
		is := next.owners[p] == m
		switch {
		case is && !was:
			gained = append(gained, p)
		case was && !is:
			lost = append(lost, p)
		}
	}
	return gained, lost
}
