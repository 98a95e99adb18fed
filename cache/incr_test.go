package cache

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"testing"
	"time"
)

func incr(t *testing.T, s *Store, key string, by int64, ttl time.Duration, tags []string, want int64) {
	t.Helper()
	n, err := s.Incr(key, by, ttl, tags)
	if err != nil || n != want {
		t.Fatalf("Incr(%q, %d) = %d, %v; want %d", key, by, n, err, want)
	}
	wantGet(t, s, key, strconv.FormatInt(want, 10))
}

func TestIncrCreatesAMissingKey(t *testing.T) {
	s, _ := newClockedStore(t, Config{})
	incr(t, s, "n", 5, 0, nil, 5)
	incr(t, s, "n", 2, 0, nil, 7)
	incr(t, s, "n", -10, 0, nil, -3)
	incr(t, s, "n", 0, 0, nil, -3)
	if n, err := s.Decr("n", 4, 0, nil); err != nil || n != -7 {
		t.Fatalf("Decr = %d, %v; want -7", n, err)
	}
	if n, err := s.Decr("m", 3, 0, nil); err != nil || n != -3 {
		t.Fatalf("Decr of a missing key = %d, %v; want -3", n, err)
	}
	e, _ := s.GetEntry("n")
	if e.ExpireAt != 0 || len(e.Tags) != 0 {
		t.Fatalf("created counter has TTL or tags: %+v", e)
	}
	checkConsistent(t, s)
}

func TestIncrWorksOnValuesWrittenByPut(t *testing.T) {
	s := newTestStore(t, Config{})
	mustPut(t, s, "n", "-42", 0)
	incr(t, s, "n", 2, 0, nil, -40)
	mustPut(t, s, "n", "9223372036854775806", 0)
	incr(t, s, "n", 1, 0, nil, math.MaxInt64)
}

func TestIncrKeepsTTLUnlessGivenANewOne(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	start := clk.Now().UnixMilli()
	incr(t, s, "n", 1, time.Second, nil, 1)
	clk.Advance(300 * time.Millisecond)
	incr(t, s, "n", 1, 0, nil, 2)
	if e, _ := s.GetEntry("n"); e.ExpireAt != start+1000 {
		t.Fatalf("ExpireAt = %d after Incr without TTL, want the original %d", e.ExpireAt, start+1000)
	}
	incr(t, s, "n", 1, 5*time.Second, nil, 3)
	if e, _ := s.GetEntry("n"); e.ExpireAt != start+300+5000 {
		t.Fatalf("ExpireAt = %d after Incr with a new TTL, want %d", e.ExpireAt, start+5300)
	}
	// A counter with no TTL keeps having none.
	incr(t, s, "m", 1, 0, nil, 1)
	incr(t, s, "m", 1, 0, nil, 2)
	if e, _ := s.GetEntry("m"); e.ExpireAt != 0 {
		t.Fatalf("counter without TTL got one: %+v", e)
	}
	// ExpireNow on an existing counter expires it.
	if _, err := s.Incr("m", 1, ExpireNow, nil); err != nil {
		t.Fatal(err)
	}
	wantMiss(t, s, "m")
}

func TestIncrReplacesTagsOnlyWhenGiven(t *testing.T) {
	s := newTestStore(t, Config{})
	incr(t, s, "n", 1, 0, []string{"b", "a"}, 1)
	incr(t, s, "n", 1, 0, nil, 2)
	if e, _ := s.GetEntry("n"); !slices.Equal(e.Tags, []string{"a", "b"}) {
		t.Fatalf("Incr without tags changed them: %q", e.Tags)
	}
	wantKeys(t, s, "a", "n")
	incr(t, s, "n", 1, 0, []string{"c"}, 3)
	if e, _ := s.GetEntry("n"); !slices.Equal(e.Tags, []string{"c"}) {
		t.Fatalf("Incr with tags [c] left %q", e.Tags)
	}
	wantKeys(t, s, "a")
	wantKeys(t, s, "b")
	wantKeys(t, s, "c", "n")
	if n := s.InvalidateTag("a"); n != 0 {
		t.Fatalf("InvalidateTag of a replaced tag removed %d", n)
	}
	wantGet(t, s, "n", "3")
	checkConsistent(t, s)
	if n := s.InvalidateTag("c"); n != 1 {
		t.Fatalf("InvalidateTag(c) = %d", n)
	}
	checkEmptyAfterFlush(t, s)
}

func TestIncrRejectsNonIntegers(t *testing.T) {
	s := newTestStore(t, Config{})
	for _, v := range []string{"abc", "", "1.5", "12x", "99999999999999999999", " 1"} {
		mustPut(t, s, "k", v, 0, "t")
		if _, err := s.Incr("k", 1, 0, []string{"u"}); !errors.Is(err, ErrNotInteger) {
			t.Fatalf("Incr over %q: err = %v, want ErrNotInteger", v, err)
		}
		if _, err := s.Decr("k", 1, 0, nil); !errors.Is(err, ErrNotInteger) {
			t.Fatalf("Decr over %q: err = %v, want ErrNotInteger", v, err)
		}
		wantGet(t, s, "k", v) // unchanged, tags too
		wantKeys(t, s, "t", "k")
		wantKeys(t, s, "u")
	}
	if ErrNotInteger.Error() != "value is not an integer" || ErrOverflow.Error() != "integer overflow" {
		t.Fatal("error texts are not the protocol's")
	}
	checkConsistent(t, s)
}

func TestIncrRejectsOverflow(t *testing.T) {
	s := newTestStore(t, Config{})
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, ErrOverflow) {
			t.Fatalf("%s: err = %v, want ErrOverflow", op, err)
		}
	}
	incr(t, s, "max", math.MaxInt64, 0, nil, math.MaxInt64)
	_, err := s.Incr("max", 1, 0, nil)
	check("MaxInt64+1", err)
	wantGet(t, s, "max", strconv.FormatInt(math.MaxInt64, 10))

	incr(t, s, "min", math.MinInt64, 0, nil, math.MinInt64)
	_, err = s.Decr("min", 1, 0, nil)
	check("MinInt64-1", err)
	_, err = s.Incr("min", -1, 0, nil)
	check("MinInt64+(-1)", err)
	wantGet(t, s, "min", strconv.FormatInt(math.MinInt64, 10))
	incr(t, s, "min", math.MaxInt64, 0, nil, -1)

	// Decr by MinInt64 cannot negate its amount: always an overflow, never a write.
	_, err = s.Decr("absent", math.MinInt64, 0, nil)
	check("Decr(absent, MinInt64)", err)
	wantMiss(t, s, "absent")
	mustPut(t, s, "zero", "0", 0)
	_, err = s.Decr("zero", math.MinInt64, 0, nil)
	check("Decr(0, MinInt64)", err)
	wantGet(t, s, "zero", "0")
	checkConsistent(t, s)
}

func TestIncrOverInvalidatedEntryStartsFresh(t *testing.T) {
	s := newTestStore(t, Config{})
	incr(t, s, "n", 10, 0, []string{"t"}, 10)
	s.InvalidateTag("t")
	incr(t, s, "n", 1, 0, nil, 1)
	if e, _ := s.GetEntry("n"); len(e.Tags) != 0 {
		t.Fatalf("fresh counter inherited the invalidated entry's tags: %q", e.Tags)
	}
	checkConsistent(t, s)
}
