package cache

import "time"

// SetMode says when Set writes.
type SetMode uint8

const (
	SetAlways    SetMode = iota // write whatever the key holds (PUT, Redis SET)
	SetIfAbsent                 // write only if the key holds no live entry (ADD, SET NX)
	SetIfPresent                // write only if the key holds a live entry (SET XX)
)

// SetOptions are the knobs of Set.
type SetOptions struct {
	// TTL as for Put: 0 none, > 0 a TTL, ExpireNow an already-expired entry.
	TTL time.Duration
	// KeepTTL keeps the TTL of the live entry being replaced (TTL is then ignored).
	KeepTTL bool
	// Tags of the new entry (nil: none).
	Tags []string
	// Mode says when to write.
	Mode SetMode
}

// SetResult says what Set did.
type SetResult struct {
	Stored bool   // the value was written
	Old    []byte // the live value the key held before (shared: do not modify)
	HadOld bool   // the key held a live value before
}

// Set writes value under key as opts say, and reports what the key held before, all in
// one step (Redis's SET with NX/XX/KEEPTTL/GET). The store keeps its own copy of value.
func (s *Store) Set(key string, value []byte, opts SetOptions) (SetResult, error) {
	var buf tagBuf
	tags, err := s.validate(key, len(value), opts.Tags, &buf)
	if err != nil {
		return SetResult{}, err
	}
	sh, h := s.locate(key)
	sh.mu.Lock()
	old := sh.t.get(key, h)
	var res SetResult
	if old != nil && s.stateOf(old) == live {
		res.Old, res.HadOld = old.value(), true
	}
	if (opts.Mode == SetIfAbsent && res.HadOld) || (opts.Mode == SetIfPresent && !res.HadOld) {
		sh.mu.Unlock()
		return res, nil
	}
	e := newEntry(key, value, h, s.expireAt(opts.TTL), len(tags))
	stamp, oldLive := s.stampDerivedLocked(old, e, tags)
	if !oldLive && res.HadOld {
		// An invalidation or FLUSH stamped before this write removed old after we read
		// it: as of this write, the key is absent.
		res = SetResult{}
		if opts.Mode == SetIfPresent {
			s.unindexNew(old, e)
			sh.mu.Unlock()
			return res, nil
		}
	}
	if !res.HadOld {
		s.countExpired(old)
	}
	if opts.KeepTTL {
		e.expireAt = 0
		if res.HadOld {
			e.expireAt = old.expireAt
		}
	}
	s.installLocked(sh, old, e, stamp)
	sh.puts.Add(1)
	sh.mu.Unlock()
	res.Stored = true
	s.evictIfNeeded()
	return res, nil
}

// SetTTL changes the TTL of key's live entry (0: remove the TTL; ExpireNow: expire it
// now) and reports whether there was one. The entry keeps its value and tags; the change
// is a write with a new stamp.
func (s *Store) SetTTL(key string, ttl time.Duration) bool {
	sh, h := s.locate(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old := sh.t.get(key, h)
	if old == nil || s.stateOf(old) != live {
		return false
	}
	e := newEntry(key, old.value(), h, s.expireAt(ttl), int(old.ntags))
	e.copyTags(old)
	stamp, oldLive := s.stampDerivedLocked(old, e, nil)
	if !oldLive {
		s.unindexNew(old, e)
		return false // removed by an invalidation or FLUSH stamped before this write
	}
	s.installLocked(sh, old, e, stamp)
	return true
}
