package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tagcache/tagcache/cache"
)

// Backend is what every client-facing server (text protocol, HTTP, RESP) calls. On a
// single node it is the local store (Local); on a cluster node it is the router, which
// runs a command locally or forwards it to the key's owner, and fans cluster-wide
// commands out to every peer. Keeping the servers behind this seam means a protocol is
// written once and behaves the same on one node and on many.
//
// ttl follows cache.Store.Put: 0 means none (for Incr/Decr: keep the existing TTL), a
// positive duration sets it, cache.ExpireNow stores an already-expired entry. Errors are
// the cache package's sentinels and limit errors, or transport errors on a cluster.
type Backend interface {
	Put(ctx context.Context, key string, value []byte, ttl time.Duration, tags []string) error
	Add(ctx context.Context, key string, value []byte, ttl time.Duration, tags []string) (bool, error)
	// Set is the general write (Redis SET with NX/XX/KEEPTTL/GET); see cache.Store.Set.
	Set(ctx context.Context, key string, value []byte, opts cache.SetOptions) (cache.SetResult, error)
	// SetTTL changes a live entry's TTL (0 removes it) and reports whether there was one.
	SetTTL(ctx context.Context, key string, ttl time.Duration) (bool, error)
	Incr(ctx context.Context, key string, delta int64, ttl time.Duration, tags []string) (int64, error)
	Decr(ctx context.Context, key string, by int64, ttl time.Duration, tags []string) (int64, error)
	// Get returns the value; the slice must not be modified.
	Get(ctx context.Context, key string) ([]byte, bool, error)
	GetEntry(ctx context.Context, key string) (cache.Entry, bool, error)
	Del(ctx context.Context, key string) (bool, error)

	InvalidateTag(ctx context.Context, tag string) (int, error)
	InvalidateTagsAny(ctx context.Context, tags []string) (int, error)
	InvalidateTagsAll(ctx context.Context, tags []string) (int, error)
	InvalidateKeys(ctx context.Context, keys []string) (int, error)
	// KeysByTag returns the live keys carrying tag, sorted; limit <= 0 means all.
	KeysByTag(ctx context.Context, tag string, limit int) ([]string, error)
	Flush(ctx context.Context) (int, error)
	Stats(ctx context.Context) (cache.Stats, error)
	// Tags returns tags with their key counts, largest first, at most limit (<= 0: all).
	Tags(ctx context.Context, limit int) ([]cache.TagCount, error)
	// Scan returns up to limit live entries whose key starts with prefix ("": all), in a
	// stable order, starting at cursor ("" for the start); next is "" when done.
	Scan(ctx context.Context, cursor string, limit int, prefix string) (entries []cache.Entry, next string, err error)
}

// ErrInvalidCursor is what a Backend's Scan wraps when it is given a cursor it did not
// issue; the HTTP API answers it with 422 rather than 503.
var ErrInvalidCursor = errors.New("invalid cursor")

// Local is the Backend of a single node: the local store, with nothing to route.
type Local struct {
	Store *cache.Store
}

var _ Backend = Local{}

func (l Local) Put(_ context.Context, key string, value []byte, ttl time.Duration, tags []string) error {
	return l.Store.Put(key, value, ttl, tags)
}

func (l Local) Add(_ context.Context, key string, value []byte, ttl time.Duration, tags []string) (bool, error) {
	return l.Store.Add(key, value, ttl, tags)
}

func (l Local) Set(_ context.Context, key string, value []byte, opts cache.SetOptions) (cache.SetResult, error) {
	return l.Store.Set(key, value, opts)
}

func (l Local) SetTTL(_ context.Context, key string, ttl time.Duration) (bool, error) {
	return l.Store.SetTTL(key, ttl), nil
}

func (l Local) Incr(_ context.Context, key string, delta int64, ttl time.Duration, tags []string) (int64, error) {
	return l.Store.Incr(key, delta, ttl, tags)
}

func (l Local) Decr(_ context.Context, key string, by int64, ttl time.Duration, tags []string) (int64, error) {
	return l.Store.Decr(key, by, ttl, tags)
}

func (l Local) Get(_ context.Context, key string) ([]byte, bool, error) {
	v, ok := l.Store.Get(key)
	return v, ok, nil
}

func (l Local) GetEntry(_ context.Context, key string) (cache.Entry, bool, error) {
	e, ok := l.Store.GetEntry(key)
	return e, ok, nil
}

func (l Local) Del(_ context.Context, key string) (bool, error) { return l.Store.Del(key), nil }

func (l Local) InvalidateTag(_ context.Context, tag string) (int, error) {
	return l.Store.InvalidateTag(tag), nil
}

func (l Local) InvalidateTagsAny(_ context.Context, tags []string) (int, error) {
	return l.Store.InvalidateTagsAny(tags), nil
}

func (l Local) InvalidateTagsAll(_ context.Context, tags []string) (int, error) {
	return l.Store.InvalidateTagsAll(tags), nil
}

func (l Local) InvalidateKeys(_ context.Context, keys []string) (int, error) {
	return l.Store.InvalidateKeys(keys), nil
}

func (l Local) KeysByTag(_ context.Context, tag string, limit int) ([]string, error) {
	return l.Store.KeysByTag(tag, limit), nil
}

func (l Local) Flush(context.Context) (int, error) { return l.Store.Flush(), nil }

func (l Local) Stats(context.Context) (cache.Stats, error) { return l.Store.Stats(), nil }

func (l Local) Tags(_ context.Context, limit int) ([]cache.TagCount, error) {
	t := l.Store.Tags()
	if limit > 0 && len(t) > limit {
		t = t[:limit]
	}
	return t, nil
}

// Scan walks partitions in order and keys in order within a partition. The cursor is
// "<partition>:<last key returned>".
func (l Local) Scan(ctx context.Context, cursor string, limit int, prefix string) ([]cache.Entry, string, error) {
	return scanPartitions(ctx, l.Store, cursor, limit, prefix, nil)
}

// scanPartitions is Scan over the partitions of store for which include (nil: all) is
// true.
func scanPartitions(ctx context.Context, store *cache.Store, cursor string, limit int, prefix string, include func(p int) bool) ([]cache.Entry, string, error) {
	p, after, err := parseCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	if limit <= 0 {
		return nil, "", fmt.Errorf("scan: limit must be positive, got %d", limit)
	}
	var out []cache.Entry
	for ; p < store.Partitions(); p, after = p+1, "" {
		if err := ctx.Err(); err != nil {
			return nil, "", err
		}
		if include != nil && !include(p) {
			continue
		}
		full := false
		store.RangePartition(p, after, func(e cache.Entry) bool {
			if !strings.HasPrefix(e.Key, prefix) {
				return true
			}
			out = append(out, e)
			full = len(out) >= limit
			return !full
		})
		if full {
			return out, strconv.Itoa(p) + ":" + out[len(out)-1].Key, nil
		}
	}
	return out, "", nil
}

func parseCursor(c string) (int, string, error) {
	if c == "" {
		return 0, "", nil
	}
	ps, after, ok := strings.Cut(c, ":")
	p, err := strconv.Atoi(ps)
	if !ok || err != nil || p < 0 {
		return 0, "", fmt.Errorf("%w %q", ErrInvalidCursor, c)
	}
	return p, after, nil
}
