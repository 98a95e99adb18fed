package cache

import (
	"fmt"
	"time"
)

// Config sets a Store's shape and limits. The zero value of each field means "use the
// default" (DefaultConfig lists them); a negative limit is an error.
type Config struct {
	// Partitions is the number of ring partitions. Every key belongs to exactly one
	// partition (xxhash64(key) mod Partitions, the same function ring/ uses), and each
	// partition is its own shard with its own lock, so a partition can be iterated,
	// dropped or handed off as a unit. Change it only together with the ring.
	Partitions int

	// TagShards is the number of independently locked shards of the tag index. More
	// shards mean less contention between writers of different tags.
	TagShards int

	// MaxMemory bounds the estimated bytes the store holds (see docs/memory.md); when a
	// write takes it above the bound the store evicts approximately least recently used
	// entries. 0 means unlimited.
	MaxMemory int64

	// MaxKeyBytes is the longest key accepted, at most MaxKeyBytesLimit.
	MaxKeyBytes int
	// MaxValueBytes is the largest value accepted, at most MaxValueBytesLimit.
	MaxValueBytes int
	// MaxTags is the most tags one entry may carry, at most MaxTagsLimit.
	MaxTags int
	// MaxTagBytes is the longest tag accepted.
	MaxTagBytes int

	// SweepInterval is how often the background sweeper samples entries with a TTL and
	// removes expired ones (expired entries are never served either way; the sweeper only
	// reclaims their memory). It also sets the resolution of the LRU clock.
	SweepInterval time.Duration

	// Now returns the current time; tests replace it. Defaults to time.Now.
	Now func() time.Time
}

// Defaults for Config fields left zero.
const (
	DefaultPartitions    = 271
	DefaultTagShards     = 64
	DefaultMaxKeyBytes   = 1024
	DefaultMaxValueBytes = 1 << 20
	DefaultMaxTags       = 100
	DefaultMaxTagBytes   = 256
	DefaultSweepInterval = 100 * time.Millisecond
)

// Upper bounds of the limits: an entry keeps its key length and tag count in 16 bits and
// its value length in 32 (docs/memory.md).
const (
	MaxKeyBytesLimit   = 1<<16 - 1
	MaxValueBytesLimit = 1<<32 - 1
	MaxTagsLimit       = 1<<16 - 1
)

// DefaultConfig returns the configuration a node uses when nothing is set.
func DefaultConfig() Config {
	return Config{
		Partitions:    DefaultPartitions,
		TagShards:     DefaultTagShards,
		MaxKeyBytes:   DefaultMaxKeyBytes,
		MaxValueBytes: DefaultMaxValueBytes,
		MaxTags:       DefaultMaxTags,
		MaxTagBytes:   DefaultMaxTagBytes,
		SweepInterval: DefaultSweepInterval,
		Now:           time.Now,
	}
}

// withDefaults fills zero fields from DefaultConfig and rejects nonsense.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.Partitions == 0 {
		c.Partitions = d.Partitions
	}
	if c.TagShards == 0 {
		c.TagShards = d.TagShards
	}
	if c.MaxKeyBytes == 0 {
		c.MaxKeyBytes = d.MaxKeyBytes
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = d.MaxValueBytes
	}
	if c.MaxTags == 0 {
		c.MaxTags = d.MaxTags
	}
	if c.MaxTagBytes == 0 {
		c.MaxTagBytes = d.MaxTagBytes
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = d.SweepInterval
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	switch {
	case c.Partitions < 1:
		return c, fmt.Errorf("cache: partitions must be at least 1, got %d", c.Partitions)
	case c.TagShards < 1:
		return c, fmt.Errorf("cache: tag shards must be at least 1, got %d", c.TagShards)
	case c.MaxMemory < 0:
		return c, fmt.Errorf("cache: max memory must be 0 (unlimited) or positive, got %d", c.MaxMemory)
	case c.MaxKeyBytes < 1, c.MaxValueBytes < 1, c.MaxTags < 1, c.MaxTagBytes < 1:
		return c, fmt.Errorf("cache: key, value, tag count and tag length limits must be positive")
	case c.MaxKeyBytes > MaxKeyBytesLimit:
		return c, fmt.Errorf("cache: max key bytes must be at most %d, got %d", MaxKeyBytesLimit, c.MaxKeyBytes)
	case int64(c.MaxValueBytes) > MaxValueBytesLimit:
		return c, fmt.Errorf("cache: max value bytes must be at most %d, got %d", int64(MaxValueBytesLimit), c.MaxValueBytes)
	case c.MaxTags > MaxTagsLimit:
		return c, fmt.Errorf("cache: max tags must be at most %d, got %d", MaxTagsLimit, c.MaxTags)
	case c.SweepInterval < time.Millisecond:
		return c, fmt.Errorf("cache: sweep interval must be at least 1ms, got %s", c.SweepInterval)
	}
	return c, nil
}
