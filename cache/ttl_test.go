package cache

import (
	"testing"
	"time"
)

// TestEntryIsNeverServedAtOrAfterItsExpiry checks every read path one millisecond before
// the expiry instant and at it.
func TestEntryIsNeverServedAtOrAfterItsExpiry(t *testing.T) {
	s, clk := newClockedStore(t, Config{Partitions: 1})
	mustPut(t, s, "k", "v", 100*time.Millisecond, "t")

	clk.Advance(99 * time.Millisecond)
	wantGet(t, s, "k", "v")
	if _, ok := s.GetEntry("k"); !ok {
		t.Fatal("GetEntry missed before expiry")
	}
	wantKeys(t, s, "t", "k")

	clk.Advance(time.Millisecond) // the expiry instant itself
	wantMiss(t, s, "k")
	if _, ok := s.GetEntry("k"); ok {
		t.Fatal("GetEntry served an entry at its expiry instant")
	}
	wantKeys(t, s, "t")
	s.RangePartition(0, "", func(e Entry) bool {
		t.Fatalf("RangePartition served expired %q", e.Key)
		return true
	})
	checkConsistent(t, s)
}

func TestExpiredEntryIsAbsentToEveryOperation(t *testing.T) {
	s, clk := newClockedStore(t, Config{Partitions: 1})
	put := func() {
		mustPut(t, s, "k", "41", 50*time.Millisecond, "t")
		clk.Advance(50 * time.Millisecond)
	}
	put()
	if s.Del("k") {
		t.Fatal("Del reported an expired entry as live")
	}
	put()
	if added, _ := s.Add("k", []byte("x"), 0, nil); !added {
		t.Fatal("Add found an expired entry present")
	}
	put()
	if n, err := s.Incr("k", 1, 0, nil); err != nil || n != 1 {
		t.Fatalf("Incr over an expired entry = %d, %v; want a fresh 1", n, err)
	}
	if e, _ := s.GetEntry("k"); e.ExpireAt != 0 {
		t.Fatalf("Incr over an expired entry kept its TTL: %+v", e)
	}
	put()
	if n := s.InvalidateTag("t"); n != 0 {
		t.Fatalf("InvalidateTag counted an expired entry: %d", n)
	}
	put()
	if n := s.InvalidateTagsAll([]string{"t"}); n != 0 {
		t.Fatalf("InvalidateTagsAll counted an expired entry: %d", n)
	}
	put()
	if n := s.InvalidateKeys([]string{"k"}); n != 0 {
		t.Fatalf("InvalidateKeys counted an expired entry: %d", n)
	}
	put()
	if n := s.Flush(); n != 0 {
		t.Fatalf("Flush counted an expired entry: %d", n)
	}
	put()
	if n := s.DropPartition(0); n != 0 {
		t.Fatalf("DropPartition counted an expired entry: %d", n)
	}
	checkConsistent(t, s)
}

func TestExpireNowStoresAnUnreadableEntry(t *testing.T) {
	s, _ := newClockedStore(t, Config{})
	mustPut(t, s, "k", "old", 0, "t")
	mustPut(t, s, "k", "new", ExpireNow, "t")
	wantMiss(t, s, "k") // the old value is gone too
	wantKeys(t, s, "t")
	mustPut(t, s, "j", "v", ExpireNow)
	if added, err := s.Add("j", []byte("w"), 0, nil); err != nil || !added {
		t.Fatalf("Add after ExpireNow = %v, %v", added, err)
	}
	if _, err := s.Add("a", []byte("v"), ExpireNow, nil); err != nil {
		t.Fatal(err)
	}
	wantMiss(t, s, "a")
	checkConsistent(t, s)
}

func TestSubMillisecondTTLRoundsUpToOneMillisecond(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	mustPut(t, s, "k", "v", 300*time.Microsecond)
	wantGet(t, s, "k", "v")
	clk.Advance(time.Millisecond)
	wantMiss(t, s, "k")
}

func TestTTLNeverOutlivesItsDurationWithARealClock(t *testing.T) {
	s := newTestStore(t, Config{})
	const ttl = 20 * time.Millisecond
	mustPut(t, s, "k", "v", ttl)
	// The entry's deadline is at most ttl after Put returned; a Get that began later than
	// that must miss. (Time read before Get: a loaded machine may deschedule the test
	// between a hit and a clock read after it.)
	start := time.Now()
	for {
		began := time.Since(start)
		_, ok := s.Get("k")
		if !ok {
			break
		}
		if began > ttl {
			t.Fatalf("served by a Get begun %s after a write with TTL %s returned", began, ttl)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// Promises 3 and 5: a wall clock stepping back (an NTP correction) must not bring an
// expired entry back.
func TestExpiredEntryStaysExpiredWhenTheClockStepsBack(t *testing.T) {
	clk := newFakeClock()
	s := newTestStore(t, Config{Now: clk.Now})
	mustPut(t, s, "k", "v", 50*time.Millisecond)
	clk.Advance(100 * time.Millisecond)
	if _, ok := s.Get("k"); ok {
		t.Fatal("served after its TTL")
	}
	mustPut(t, s, "k2", "v", 50*time.Millisecond)
	clk.Advance(100 * time.Millisecond)
	mustPut(t, s, "other", "v", time.Minute) // the store reads the clock: it has seen this time
	clk.Advance(-time.Second)
	if v, ok := s.Get("k2"); ok {
		t.Fatalf("expired entry served again after the clock stepped back: %q", v)
	}
}
