package cache

// Promise 1 (per-key linearizability) and promise 2 (complete invalidation) of the local
// store, checked with porcupine: concurrent clients record a history of PUT/ADD/INCR/DEL/
// GET and INV_TAG/INV_TAGS_ANY/INV_TAGS_ALL/FLUSH with invoke and return times, and the
// history must be explainable by a sequential model, partitioned per key. An invalidation
// belongs to every key's partition (and may take effect at a different instant for each
// key, which is all the per-key promise asks). No TTLs are used, so a GET may never miss
// arbitrarily: it must match the model exactly.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

type linKind uint8

const (
	linPut linKind = iota
	linAdd
	linIncr
	linDel
	linGet
	linInvTag // tags holds one tag
	linInvAny // tags holds the tags named
	linInvAll // tags holds the tags named
	linFlush  // no key
	linSetGet // Set(SetAlways), returning the old value
	linSetXX  // Set(SetIfPresent), returning the old value
	linSetTTL // SetTTL(key, 0): rewrites a live entry without a TTL
)

const linNumTags = 3 // tags t0..t2

var linKindNames = [...]string{"put", "add", "incr", "del", "get", "inv_tag", "inv_any", "inv_all", "flush",
	"set_get", "set_xx", "set_ttl"}

// linIn is an operation's input. Tag sets are bit masks over t0..t2.
type linIn struct {
	kind     linKind
	key      string // "" for invalidations and FLUSH: they belong to every partition
	value    string // put, add
	tags     uint8  // put, add: the entry's tags; incr: new tags if withTags; inv*: the tags named
	withTags bool   // incr: replace the tags (an empty set means "none given": keep them)
	delta    int64  // incr
}

// linOut is an operation's output.
type linOut struct {
	ok    bool   // get, set_*: hit; add: added; del: removed a live entry; incr: succeeded
	value string // get, set_get, set_xx: the (old) value; incr: the result
	err   string // incr: the error
}

// linState is one key's state in the model.
type linState struct {
	present bool
	value   string
	tags    uint8
}

func linTagList(mask uint8) []string {
	var out []string
	for i := range linNumTags {
		if mask&(1<<i) != 0 {
			out = append(out, fmt.Sprint("t", i))
		}
	}
	return out
}

func linStep(st linState, in linIn, out linOut) (bool, linState) {
	switch in.kind {
	case linPut:
		return true, linState{true, in.value, in.tags}
	case linAdd:
		if st.present {
			return !out.ok, st
		}
		return out.ok, linState{true, in.value, in.tags}
	case linIncr:
		replace := in.withTags && in.tags != 0
		next := linState{true, strconv.FormatInt(in.delta, 10), 0}
		if replace {
			next.tags = in.tags
		}
		if st.present {
			cur, err := strconv.ParseInt(st.value, 10, 64)
			if err != nil {
				return !out.ok && out.err == ErrNotInteger.Error(), st
			}
			next.value = strconv.FormatInt(cur+in.delta, 10)
			if !replace {
				next.tags = st.tags
			}
		}
		return out.ok && out.value == next.value, next
	case linDel:
		return out.ok == st.present, linState{}
	case linGet:
		if !st.present {
			return !out.ok, st
		}
		return out.ok && out.value == st.value, st
	case linInvTag, linInvAny:
		if st.present && st.tags&in.tags != 0 {
			return true, linState{}
		}
		return true, st
	case linInvAll:
		if st.present && st.tags&in.tags == in.tags {
			return true, linState{}
		}
		return true, st
	case linFlush:
		return true, linState{}
	case linSetGet, linSetXX, linSetTTL:
		if out.ok != st.present || (in.kind != linSetTTL && out.value != st.value) {
			return false, st
		}
		switch {
		case in.kind == linSetGet || (in.kind == linSetXX && st.present):
			return true, linState{true, in.value, in.tags}
		default:
			return true, st
		}
	}
	panic("unknown op")
}

var linModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var global []porcupine.Operation
		for _, op := range history {
			if k := op.Input.(linIn).key; k != "" {
				byKey[k] = append(byKey[k], op)
			} else {
				global = append(global, op)
			}
		}
		var out [][]porcupine.Operation
		for _, ops := range byKey {
			out = append(out, append(ops, global...))
		}
		return out
	},
	Init: func() any { return linState{} },
	Step: func(state, input, output any) (bool, any) {
		return linStep(state.(linState), input.(linIn), output.(linOut))
	},
	Equal: func(a, b any) bool { return a.(linState) == b.(linState) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(linIn), output.(linOut)
		return fmt.Sprintf("%s(%s %q tags=%v withTags=%v by=%d) -> %+v", linKindNames[in.kind], in.key,
			in.value, linTagList(in.tags), in.withTags, in.delta, out)
	},
	DescribeState: func(state any) string {
		st := state.(linState)
		if !st.present {
			return "absent"
		}
		return fmt.Sprintf("%q %v", st.value, linTagList(st.tags))
	},
}

// linApply performs in on s.
func linApply(s *Store, in linIn) linOut {
	tags := linTagList(in.tags)
	switch in.kind {
	case linPut:
		if err := s.Put(in.key, []byte(in.value), 0, tags); err != nil {
			panic(err)
		}
		return linOut{ok: true}
	case linAdd:
		added, err := s.Add(in.key, []byte(in.value), 0, tags)
		if err != nil {
			panic(err)
		}
		return linOut{ok: added}
	case linIncr:
		if !in.withTags {
			tags = nil
		}
		n, err := s.Incr(in.key, in.delta, 0, tags)
		if err != nil {
			return linOut{err: err.Error()}
		}
		return linOut{ok: true, value: strconv.FormatInt(n, 10)}
	case linDel:
		return linOut{ok: s.Del(in.key)}
	case linGet:
		v, ok := s.Get(in.key)
		return linOut{ok: ok, value: string(v)}
	case linInvTag:
		s.InvalidateTag(tags[0])
	case linInvAny:
		s.InvalidateTagsAny(tags)
	case linInvAll:
		s.InvalidateTagsAll(tags)
	case linFlush:
		s.Flush()
	case linSetGet, linSetXX:
		mode := SetAlways
		if in.kind == linSetXX {
			mode = SetIfPresent
		}
		res, err := s.Set(in.key, []byte(in.value), SetOptions{Tags: tags, Mode: mode})
		if err != nil {
			panic(err)
		}
		if res.Stored != (mode == SetAlways || res.HadOld) {
			panic(fmt.Sprintf("Set %+v", res))
		}
		return linOut{ok: res.HadOld, value: string(res.Old)}
	case linSetTTL:
		return linOut{ok: s.SetTTL(in.key, 0)}
	}
	return linOut{}
}

func linRandomInput(rng *rand.Rand, client, i, keys int) linIn {
	in := linIn{key: fmt.Sprint("k", rng.IntN(keys)), tags: uint8(rng.IntN(1 << linNumTags))}
	value := func() string {
		if rng.IntN(4) == 0 {
			return fmt.Sprintf("x%d.%d", client, i) // not an integer
		}
		return strconv.Itoa(rng.IntN(1000))
	}
	switch r := rng.IntN(100); {
	case r < 22:
		in.kind, in.value = linPut, value()
	case r < 28:
		in.kind, in.value = linAdd, value()
	case r < 42:
		in.kind, in.delta, in.withTags = linIncr, int64(rng.IntN(7)-3), rng.IntN(2) == 0
	case r < 47:
		in.kind, in.value = linSetGet, value()
	case r < 51:
		in.kind, in.value = linSetXX, value()
	case r < 54:
		in.kind = linSetTTL
	case r < 60:
		in.kind = linDel
	case r < 89:
		in.kind = linGet
	case r < 94:
		in.kind, in.key, in.tags = linInvTag, "", 1<<rng.IntN(linNumTags)
	case r < 96:
		in.kind, in.key = linInvAny, ""
	case r < 99:
		in.kind, in.key = linInvAll, ""
	default:
		in.kind, in.key = linFlush, ""
	}
	if (in.kind == linInvAny || in.kind == linInvAll) && in.tags == 0 {
		in.tags = 1
	}
	return in
}

// recordHistory runs clients concurrent clients doing ops random operations each against
// apply and returns the history.
func recordHistory(clients, ops, keys int, seed uint64, apply func(linIn) linOut) []porcupine.Operation {
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	histories := make([][]porcupine.Operation, clients)
	var ready, wg sync.WaitGroup
	ready.Add(1)
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			ready.Wait()
			for i := range ops {
				in := linRandomInput(rng, c, i, keys)
				call := now()
				out := apply(in)
				histories[c] = append(histories[c], porcupine.Operation{
					ClientId: c, Input: in, Call: call, Output: out, Return: now(),
				})
			}
		})
	}
	ready.Done()
	wg.Wait()
	var all []porcupine.Operation
	for _, h := range histories {
		all = append(all, h...)
	}
	return all
}

// checkHistory fails the test if history is not linearizable, writing a visualization.
func checkHistory(t *testing.T, history []porcupine.Operation) porcupine.CheckResult {
	t.Helper()
	res := porcupine.CheckOperationsTimeout(linModel, history, 20*time.Second)
	if res == porcupine.Illegal {
		_, info := porcupine.CheckOperationsVerbose(linModel, history, 20*time.Second)
		path := filepath.Join(os.TempDir(), fmt.Sprintf("tagcache-linearizability-%d.html", time.Now().UnixNano()))
		if err := porcupine.VisualizePath(linModel, info, path); err == nil {
			t.Errorf("history of %d operations is not linearizable; visualization: %s", len(history), path)
		} else {
			t.Errorf("history of %d operations is not linearizable (visualization failed: %v)", len(history), err)
		}
	}
	return res
}

func TestPerKeyLinearizability(t *testing.T) {
	budget := 3 * time.Second
	if testing.Short() {
		budget = 500 * time.Millisecond
	}
	deadline := time.Now().Add(budget)
	rounds, ops, unknown := 0, 0, 0
	for seed := uint64(1); rounds == 0 || time.Now().Before(deadline); seed++ {
		s := newTestStore(t, Config{Partitions: 2, TagShards: 2})
		history := recordHistory(8, 200, 4, seed, func(in linIn) linOut { return linApply(s, in) })
		switch checkHistory(t, history) {
		case porcupine.Illegal:
			t.Fatalf("round %d (seed %d) failed", rounds, seed)
		case porcupine.Unknown:
			unknown++
		}
		checkConsistent(t, s)
		rounds++
		ops += len(history)
	}
	t.Logf("%d rounds, %d operations checked, %d checks timed out", rounds, ops, unknown)
	if unknown > rounds/2 {
		t.Fatalf("%d of %d checks timed out: the history is too large to check", unknown, rounds)
	}
}

// The checker and model can fail: hand-made histories that are not linearizable are
// rejected, and so is a recorded history from a store that ignores invalidations.
func TestLinearizabilityCheckerRejectsViolations(t *testing.T) {
	op := func(client int, call, ret int64, in linIn, out linOut) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
	}
	put := linIn{kind: linPut, key: "k", value: "1", tags: 1}
	cases := []struct {
		name    string
		history []porcupine.Operation
		want    porcupine.CheckResult
	}{
		{"read of a never-written value", []porcupine.Operation{
			op(0, 0, 10, put, linOut{ok: true}),
			op(1, 20, 30, linIn{kind: linGet, key: "k"}, linOut{ok: true, value: "2"}),
		}, porcupine.Illegal},
		{"miss after an acknowledged write", []porcupine.Operation{
			op(0, 0, 10, put, linOut{ok: true}),
			op(1, 20, 30, linIn{kind: linGet, key: "k"}, linOut{}),
		}, porcupine.Illegal},
		{"stale read after an overwrite", []porcupine.Operation{
			op(0, 0, 10, put, linOut{ok: true}),
			op(0, 20, 30, linIn{kind: linPut, key: "k", value: "2"}, linOut{ok: true}),
			op(1, 40, 50, linIn{kind: linGet, key: "k"}, linOut{ok: true, value: "1"}),
		}, porcupine.Illegal},
		{"read of an invalidated value", []porcupine.Operation{
			op(0, 0, 10, put, linOut{ok: true}),
			op(1, 20, 30, linIn{kind: linInvTag, tags: 1}, linOut{}),
			op(0, 40, 50, linIn{kind: linGet, key: "k"}, linOut{ok: true, value: "1"}),
		}, porcupine.Illegal},
		{"read concurrent with the invalidation", []porcupine.Operation{
			op(0, 0, 10, put, linOut{ok: true}),
			op(1, 20, 30, linIn{kind: linInvTag, tags: 1}, linOut{}),
			op(0, 25, 50, linIn{kind: linGet, key: "k"}, linOut{ok: true, value: "1"}),
		}, porcupine.Ok},
		{"resurrection after a miss", []porcupine.Operation{
			op(0, 0, 10, put, linOut{ok: true}),
			op(1, 20, 100, linIn{kind: linInvTag, tags: 1}, linOut{}),
			op(0, 30, 40, linIn{kind: linGet, key: "k"}, linOut{}),
			op(0, 50, 60, linIn{kind: linGet, key: "k"}, linOut{ok: true, value: "1"}),
		}, porcupine.Illegal},
		{"INV_TAGS_ALL of tags the entry does not all carry", []porcupine.Operation{
			op(0, 0, 10, put, linOut{ok: true}),
			op(1, 20, 30, linIn{kind: linInvAll, tags: 3}, linOut{}),
			op(0, 40, 50, linIn{kind: linGet, key: "k"}, linOut{}),
		}, porcupine.Illegal},
		{"INCR of a non-integer succeeding", []porcupine.Operation{
			op(0, 0, 10, linIn{kind: linPut, key: "k", value: "x"}, linOut{ok: true}),
			op(0, 20, 30, linIn{kind: linIncr, key: "k", delta: 1}, linOut{ok: true, value: "1"}),
		}, porcupine.Illegal},
		{"INCR dropping tags it was not given", []porcupine.Operation{
			op(0, 0, 10, linIn{kind: linPut, key: "k", value: "5", tags: 1}, linOut{ok: true}),
			op(0, 20, 30, linIn{kind: linIncr, key: "k", delta: 1}, linOut{ok: true, value: "6"}),
			op(1, 40, 50, linIn{kind: linInvTag, tags: 1}, linOut{}),
			op(0, 60, 70, linIn{kind: linGet, key: "k"}, linOut{ok: true, value: "6"}),
		}, porcupine.Illegal},
		{"ADD over a live entry", []porcupine.Operation{
			op(0, 0, 10, put, linOut{ok: true}),
			op(1, 20, 30, linIn{kind: linAdd, key: "k", value: "2"}, linOut{ok: true}),
		}, porcupine.Illegal},
	}
	for _, c := range cases {
		if got := porcupine.CheckOperations(linModel, c.history); got != (c.want == porcupine.Ok) {
			t.Errorf("%s: linearizable = %v, want %v", c.name, got, c.want == porcupine.Ok)
		}
	}

	// A recorded history from a store whose invalidations do nothing.
	s := newTestStore(t, Config{})
	broken := func(in linIn) linOut {
		if in.kind >= linInvTag && in.kind <= linFlush {
			return linOut{}
		}
		return linApply(s, in)
	}
	history := recordHistory(4, 300, 3, 7, broken)
	if res := porcupine.CheckOperationsTimeout(linModel, history, 20*time.Second); res != porcupine.Illegal {
		t.Fatalf("history from a store ignoring invalidations: %v, want Illegal", res)
	}
}
