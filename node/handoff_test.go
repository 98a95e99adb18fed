package node

import (
	"maps"
	"slices"
	"testing"
)

// A partition nobody holds is claimed only when every member's ring gives it to this
// node and every member sees the members this node sees; otherwise the node waits, and a
// partition some member holds is followed.
func TestSettleClaimsOnlyWhenRingsAndViewsAgree(t *testing.T) {
	mine := []string{"a", "c"}
	wanted := []int{1, 2}
	agree := whoHoldsReply{Owners: []string{"c", "c"}, Members: mine}
	cases := []struct {
		name    string
		replies map[string]whoHoldsReply
		claim   []int
		holders map[int]string
		waiting bool
	}{
		{"all agree", map[string]whoHoldsReply{"a": agree}, []int{1, 2}, map[int]string{}, false},
		{"a holds 2", map[string]whoHoldsReply{"a": {Held: []int{2}, Owners: []string{"c", "c"}, Members: mine}},
			[]int{1}, map[int]string{2: "a"}, false},
		{"a's ring gives 1 to b", map[string]whoHoldsReply{"a": {Owners: []string{"b", "c"}, Members: mine}},
			[]int{2}, map[int]string{}, true},
		// After a heal: a already sees b (which may hold the partitions), c does not yet.
		{"a sees b too", map[string]whoHoldsReply{"a": {Owners: []string{"c", "c"}, Members: []string{"a", "b", "c"}}},
			nil, map[int]string{}, true},
		{"an older version sends no view", map[string]whoHoldsReply{"a": {Owners: []string{"c", "c"}}},
			[]int{1, 2}, map[int]string{}, false},
	}
	for _, tc := range cases {
		st := settleFrom("c", mine, wanted, tc.replies)
		if !slices.Equal(st.claim, tc.claim) || !maps.Equal(st.holders, tc.holders) || st.waiting != tc.waiting {
			t.Errorf("%s: claim %v holders %v waiting %v; want %v %v %v", tc.name, st.claim, st.holders, st.waiting,
				tc.claim, tc.holders, tc.waiting)
		}
	}
}
