package cache

// Import installs an entry handed over by another node (a partition moving between
// owners) with its own stamp and expiry, and reports whether it did. It validates like
// Put (same errors; ErrNoStamp for a zero stamp) and advances the store's Clock past
// e.Stamp. Then, under the key's lock:
//
//   - if the key holds an entry stamped at or above e.Stamp — live, expired or killed by
//     an invalidation not yet reclaimed — that write is the newer one (or the same one):
//     it stays and Import returns false;
//   - if e is gone already — expired (ExpireAt != 0 and <= now), stamped before a FLUSH
//     the store has seen, or stamped before an invalidation of one of its tags the store
//     still records (the tag's invalidatedAt: kept while the tag has keys or an
//     invalidation of it is being reclaimed) — it is not installed, and the older entry
//     the key held, if any, is removed: e overwrote it, so it must not come back; Import
//     returns false;
//   - otherwise e replaces the key's older entry (or is added), indexed under its tags,
//     counted in Items and Bytes and in Stats().Imports (not in Puts), and the store
//     evicts if it is above MaxMemory; Import returns true.
//
// e.Created is not stored: an entry's creation time is its stamp's wall-clock part, so
// GetEntry shows Created = Stamp >> 16 (which is what another store's entry carries).
// The store keeps no record of DEL or of invalidations of tags it no longer holds; the
// caller refuses entries those would have removed (docs/store.md, "Import").
func (s *Store) Import(e Entry) (bool, error) {
	var buf tagBuf
	tags, err := s.validate(e.Key, len(e.Value), e.Tags, &buf)
	if err != nil {
		return false, err
	}
	if e.Stamp == 0 {
		return false, ErrNoStamp
	}
	s.clock.Observe(e.Stamp)
	sh, h := s.locate(e.Key)
	sh.mu.Lock()
	old := sh.t.get(e.Key, h)
	if old != nil && old.stamp.Load() >= e.Stamp {
		sh.mu.Unlock()
		return false, nil
	}
	installed := false
	// FLUSH stores flushedAt holding every key shard's lock: ours orders us before or
	// after it as a whole.
	if (e.ExpireAt == 0 || s.nowMs() < e.ExpireAt) && e.Stamp >= s.flushedAt.Load() {
		ne := newEntry(e.Key, e.Value, h, e.ExpireAt, len(tags))
		// Index first, then judge by the tags' invalidation stamps: an invalidation that
		// took a tag's keys before we indexed ne there stored its stamp before, and we
		// see it; one that took them after has ne in its snapshot and removes ne when
		// it reclaims (and counts it), as for any write stamped before it.
		s.indexTags(ne, tags)
		if deadByTag(ne, e.Stamp) {
			s.unindexNew(old, ne)
		} else {
			s.installLocked(sh, old, ne, e.Stamp)
			installed = true
		}
	}
	if !installed && old != nil {
		if s.stateOf(old) == expired {
			s.expirations.Add(1)
		}
		s.removeLocked(sh, old)
	}
	sh.mu.Unlock()
	if installed {
		s.imports.Add(1)
		s.evictIfNeeded()
	}
	return installed, nil
}
