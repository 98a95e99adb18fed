package ring

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/cespare/xxhash/v2"
)

func mustNew(t *testing.T, members ...string) *Ring {
	t.Helper()
	r, err := New(DefaultConfig(), members, 1)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "node-" + strconv.Itoa(i)
	}
	return out
}

func TestEveryNodeBuildsTheSameRingWhateverTheMemberOrder(t *testing.T) {
	a := mustNew(t, "c", "a", "b")
	b := mustNew(t, "b", "c", "a")
	for p := range a.Partitions() {
		if a.Owner(p) != b.Owner(p) {
			t.Fatalf("partition %d: owner %q vs %q", p, a.Owner(p), b.Owner(p))
		}
	}
}

func TestPartitionOfMatchesTheStoresPartitionFunction(t *testing.T) {
	r := mustNew(t, "a")
	for i := range 1000 {
		k := "key:" + strconv.Itoa(i)
		if got, want := r.PartitionOf(k), int(xxhash.Sum64String(k)%DefaultPartitions); got != want {
			t.Fatalf("PartitionOf(%q) = %d, want %d (xxhash64 mod partitions, as cache/ uses)", k, got, want)
		}
	}
}

func TestPartitionOfFunctionAgreesWithTheRingsMethod(t *testing.T) {
	for _, partitions := range []int{1, 7, DefaultPartitions, 500} {
		r, err := New(Config{Partitions: partitions, Load: DefaultLoad, VirtualNodes: DefaultVirtualNodes}, []string{"a", "b", "c"}, 1)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int]bool{}
		for i := range 5000 {
			k := "bench:" + strconv.Itoa(i)
			got, want := PartitionOf(k, partitions), r.PartitionOf(k)
			if got != want || got < 0 || got >= partitions {
				t.Fatalf("%d partitions: PartitionOf(%q) = %d, ring says %d", partitions, k, got, want)
			}
			if r.OwnerOf(k) != r.Owner(got) {
				t.Fatalf("%d partitions: OwnerOf(%q) = %q, owner of partition %d is %q", partitions, k, r.OwnerOf(k), got, r.Owner(got))
			}
			seen[got] = true
		}
		if len(seen) != partitions {
			t.Errorf("%d partitions: 5000 keys fell in %d partitions", partitions, len(seen))
		}
	}
}

func TestEveryPartitionHasAnOwnerAndLoadsAreBounded(t *testing.T) {
	for n := 1; n <= 7; n++ {
		r := mustNew(t, names(n)...)
		bound := int(float64(DefaultPartitions)/float64(n)*DefaultLoad) + 1
		total := 0
		for _, m := range r.Members() {
			owned := len(r.Owned(m))
			if owned == 0 || owned > bound {
				t.Errorf("%d members: %s owns %d partitions, want 1..%d", n, m, owned, bound)
			}
			total += owned
		}
		if total != DefaultPartitions {
			t.Errorf("%d members: %d partitions owned, want %d", n, total, DefaultPartitions)
		}
	}
}

// Consistent hashing's point: a join moves only a share of the partitions, mostly to
// the new member.
func TestJoinMovesFewPartitions(t *testing.T) {
	before := mustNew(t, names(3)...)
	after := mustNew(t, names(4)...)
	moved, toNew := 0, 0
	for p := range before.Partitions() {
		if before.Owner(p) != after.Owner(p) {
			moved++
			if after.Owner(p) == "node-3" {
				toNew++
			}
		}
	}
	if moved > DefaultPartitions/2 {
		t.Fatalf("joining a 4th member moved %d of %d partitions", moved, DefaultPartitions)
	}
	if toNew < moved/2 {
		t.Fatalf("of %d moved partitions only %d went to the new member", moved, toNew)
	}
}

func TestChangesListsGainedAndLostPartitions(t *testing.T) {
	before := mustNew(t, names(3)...)
	after := mustNew(t, names(4)...)
	for _, m := range after.Members() {
		gained, lost := before.Changes(after, m)
		for _, p := range gained {
			if before.Owner(p) == m || after.Owner(p) != m {
				t.Fatalf("%s: partition %d listed as gained", m, p)
			}
		}
		for _, p := range lost {
			if before.Owner(p) != m || after.Owner(p) == m {
				t.Fatalf("%s: partition %d listed as lost", m, p)
			}
		}
		if got, want := len(before.Owned(m))+len(gained)-len(lost), len(after.Owned(m)); got != want {
			t.Fatalf("%s: owned %d + gained %d - lost %d != %d", m, len(before.Owned(m)), len(gained), len(lost), want)
		}
	}
	gained, lost := (*Ring)(nil).Changes(before, "node-0")
	if len(gained) != len(before.Owned("node-0")) || len(lost) != 0 {
		t.Fatalf("from no ring: gained %d lost %d", len(gained), len(lost))
	}
}

func TestEmptyRingHasNoOwners(t *testing.T) {
	r := mustNew(t)
	if r.OwnerOf("k") != "" {
		t.Fatal("a ring without members named an owner")
	}
}

func TestBadConfigAndDuplicateMembersAreErrors(t *testing.T) {
	if _, err := New(Config{Partitions: 0, Load: 1.25, VirtualNodes: 20}, nil, 1); err == nil {
		t.Error("0 partitions accepted")
	}
	if _, err := New(DefaultConfig(), []string{"a", "a"}, 1); err == nil {
		t.Error("duplicate member accepted")
	}
}

func ExampleRing_OwnerOf() {
	r, _ := New(DefaultConfig(), []string{"node-a", "node-b", "node-c"}, 7)
	fmt.Println(r.Version(), r.OwnerOf("user:42") != "")
	// Output: 7 true
}
