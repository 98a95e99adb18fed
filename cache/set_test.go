package cache

import (
	"slices"
	"testing"
	"time"
)

func TestSetModesReportTheOldValue(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	set := func(value string, opts SetOptions, want SetResult) {
		t.Helper()
		got, err := s.Set("k", []byte(value), opts)
		if err != nil || got.Stored != want.Stored || got.HadOld != want.HadOld || string(got.Old) != string(want.Old) {
			t.Fatalf("Set(%q, %+v) = %+v, %v; want %+v", value, opts, got, err, want)
		}
	}
	set("1", SetOptions{Mode: SetIfPresent}, SetResult{})
	wantMiss(t, s, "k")
	wantKeys(t, s, "t")
	set("1", SetOptions{Mode: SetIfAbsent, Tags: []string{"t"}, TTL: time.Second}, SetResult{Stored: true})
	set("2", SetOptions{Mode: SetIfAbsent}, SetResult{HadOld: true, Old: []byte("1")})
	set("3", SetOptions{Mode: SetIfPresent, KeepTTL: true, Tags: []string{"u"}}, SetResult{Stored: true, HadOld: true, Old: []byte("1")})
	e, _ := s.GetEntry("k")
	if e.ExpireAt != clk.Now().UnixMilli()+1000 || !slices.Equal(e.Tags, []string{"u"}) {
		t.Fatalf("after KeepTTL with new tags: %+v", e)
	}
	wantKeys(t, s, "t")
	wantKeys(t, s, "u", "k")
	set("4", SetOptions{}, SetResult{Stored: true, HadOld: true, Old: []byte("3")})
	if e, _ := s.GetEntry("k"); e.ExpireAt != 0 || len(e.Tags) != 0 {
		t.Fatalf("plain Set kept TTL or tags: %+v", e)
	}
	if !s.SetTTL("k", 500*time.Millisecond) {
		t.Fatal("SetTTL of a live key reported false")
	}
	clk.Advance(500 * time.Millisecond)
	wantMiss(t, s, "k")
	if s.SetTTL("k", time.Second) {
		t.Fatal("SetTTL of an expired key reported true")
	}
	set("5", SetOptions{KeepTTL: true, Mode: SetIfAbsent}, SetResult{Stored: true})
	if e, _ := s.GetEntry("k"); e.ExpireAt != 0 {
		t.Fatalf("KeepTTL over an absent key set a TTL: %+v", e)
	}
	checkConsistent(t, s)
	checkEmptyAfterFlush(t, s)
}

func TestSetTTLKeepsValueAndTags(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	mustPut(t, s, "k", "v", time.Second, "a", "b")
	before, _ := s.GetEntry("k")
	if !s.SetTTL("k", 0) {
		t.Fatal("SetTTL = false")
	}
	after, _ := s.GetEntry("k")
	if string(after.Value) != "v" || !slices.Equal(after.Tags, []string{"a", "b"}) || after.ExpireAt != 0 || after.Stamp <= before.Stamp {
		t.Fatalf("after SetTTL(0): %+v (before %+v)", after, before)
	}
	clk.Advance(time.Hour)
	wantGet(t, s, "k", "v")
	if s.SetTTL("absent", time.Second) {
		t.Fatal("SetTTL of an absent key = true")
	}
	s.InvalidateTag("b")
	wantKeys(t, s, "a")
	checkConsistent(t, s)
}
