package clustertests

// The checker: promises 1–3 of BRIEF.md on a recorded history.
//
//  1. Per-key linearizability, with porcupine, one key at a time. The model is a register
//     that may lose its value (a node crash loses the entries it held, and the cluster
//     then answers misses, which promise 1 allows), but never brings back a value that
//     was overwritten, deleted or invalidated:
//     - a GET miss is always legal and changes nothing (it is left out of the check);
//     - a GET hit must return the current value;
//     - PUT sets the value and its tags; ADD that answered "added" sets them (the old
//     value may have been lost); ADD that answered "exists" needs a current value;
//     - INCR by d answering n: n = current + d (keeping the tags, or taking the ones
//     given), or n = d (the value was lost, or absent);
//     - DEL answering "deleted" needs a current value; "not found" is always legal (lost);
//     either way the key is then absent;
//     - INV_TAG t belongs to the history of every key (at the same times), and removes
//     the current value if it carries t; it is left out of a key's history where it
//     cannot remove anything in any order (invalidationRelevance);
//     - KEYS_BY_TAG t belongs to the history of each key it listed, which must then hold
//     a value carrying t (a key left out proves nothing: a miss);
//     - a PUT, ADD or INCR that failed or got no answer may have taken effect at any
//     time within CheckOptions.UnknownHorizon of its invocation, or never: it returns
//     then (or at the end of the history) with an outcome that fits any state — unless
//     the node said it refused it before running it (refusedUnrun): then it is left out; a DEL or INV_TAG that failed or
//     got no answer is left out (never applying it explains every history applying it
//     could, see keyHistories); a failed read is left out.
//     A key's history is checked in pieces where nothing spans the cut (segments).
//  2. Stale reads: a GET that began after an INV_TAG t (or a DEL of its key) succeeded
//     and returned a value whose write carried t (was of that key) and was acknowledged
//     before the invalidation was invoked.
//  3. Resurrections: a GET that began after an acknowledged overwrite (or DEL) of its key
//     completed and returned a value acknowledged before that overwrite was invoked,
//     when it is not already a stale read.
//
// Every violation comes with evidence: the operations that prove it.

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/tagcache/tagcache/node"
)

// Report is the checker's verdict on a history.
type Report struct {
	// Ops counts every operation; OK those answered without error, Errors those
	// answered with one, Unknown those without an answer (timed out or connection lost:
	// they may or may not have taken effect). Misses counts the GETs that found nothing.
	Ops, OK, Errors, Unknown, Misses int
	// StaleReads counts the GETs that broke promise 2.
	StaleReads int
	// Resurrections counts the GETs that broke promise 3 and are not stale reads.
	Resurrections int
	// LinearizabilityViolations counts the keys whose history porcupine rejects
	// (promise 1).
	LinearizabilityViolations int
	// CheckTimeouts counts the keys whose linearizability check did not finish within
	// CheckOptions.KeyTimeout: neither a pass nor a violation.
	CheckTimeouts int
	// Evidence holds, for every violation (and check timeout), the operations that
	// prove it, printable.
	Evidence []string
}

// Violations returns the number of violations of promises 1–3 in r.
func (r Report) Violations() int {
	return r.StaleReads + r.Resurrections + r.LinearizabilityViolations
}

func (r Report) String() string {
	return fmt.Sprintf("%d ops (%d ok, %d errors, %d unknown, %d misses): %d stale reads, %d resurrections, %d keys not linearizable, %d key checks timed out",
		r.Ops, r.OK, r.Errors, r.Unknown, r.Misses, r.StaleReads, r.Resurrections, r.LinearizabilityViolations, r.CheckTimeouts)
}

// CheckOptions tune CheckWith.
type CheckOptions struct {
	// KeyTimeout bounds porcupine's search on one key's history (default 10s). A key
	// whose check times out counts in Report.CheckTimeouts.
	KeyTimeout time.Duration
	// VisualizeDir, when set, receives porcupine's HTML visualization of every key that
	// is not linearizable (the evidence names the file).
	VisualizeDir string
	// UnknownHorizon bounds when an operation without an answer took effect, if it did:
	// within this long of its invocation (default DefaultUnknownHorizon). Without a
	// bound such an operation spans the rest of the history, no piece can be cut after
	// it and porcupine's search on a long history times out. A bound that is too short
	// can only report more violations, never hide one.
	UnknownHorizon time.Duration
}

// DefaultKeyTimeout is CheckOptions.KeyTimeout's default.
const DefaultKeyTimeout = 10 * time.Second

// DefaultUnknownHorizon is CheckOptions.UnknownHorizon's default: a node refuses a
// forwarded command that arrives more than a second past its deadline (the forward
// timeout, node.DefaultForwardTimeout), and a command run where it was sent took effect
// before the node stopped answering; two more seconds of margin.
const DefaultUnknownHorizon = node.DefaultForwardTimeout + 3*time.Second

// maxEvidence bounds the evidence of each kind of violation; a last line counts the
// rest.
const maxEvidence = 200

// Check verifies promises 1–3 on h with the default options.
func Check(h *History) Report { return CheckWith(h, CheckOptions{}) }

// CheckWith verifies promises 1–3 on h.
func CheckWith(h *History, opts CheckOptions) Report {
	if opts.KeyTimeout <= 0 {
		opts.KeyTimeout = DefaultKeyTimeout
	}
	if opts.UnknownHorizon <= 0 {
		opts.UnknownHorizon = DefaultUnknownHorizon
	}
	ops := h.Ops()
	base := h.Start()
	var r Report
	r.Ops = len(ops)
	for i := range ops {
		switch ops[i].Status {
		case StatusOK:
			r.OK++
			if ops[i].Kind == OpGet && !ops[i].Found {
				r.Misses++
			}
		case StatusError:
			r.Errors++
		case StatusUnknown:
			r.Unknown++
		}
	}
	checkStale(ops, base, &r)
	checkLinearizable(ops, base, opts, &r)
	return r
}

// --- promises 2 and 3

// removals are acknowledged operations that remove or replace a value, ordered by
// invocation, with the suffix minimum of their completion: find answers "is there one
// invoked after a and completed before b?" in O(log n).
type removals struct {
	ops    []*Op
	minEnd []int // minEnd[i]: index in ops[i:] of the earliest completion
}

func newRemovals(ops []*Op) *removals {
	slices.SortFunc(ops, func(a, b *Op) int { return a.Invoke.Compare(b.Invoke) })
	r := &removals{ops: ops, minEnd: make([]int, len(ops))}
	for i := len(ops) - 1; i >= 0; i-- {
		r.minEnd[i] = i
		if j := i + 1; j < len(ops) && ops[r.minEnd[j]].Complete.Before(ops[i].Complete) {
			r.minEnd[i] = r.minEnd[j]
		}
	}
	return r
}

// firstAfter returns, of the operations invoked after a, the one that completed first,
// or nil.
func (r *removals) firstAfter(a time.Time) *Op {
	if r == nil {
		return nil
	}
	i := sort.Search(len(r.ops), func(i int) bool { return r.ops[i].Invoke.After(a) })
	if i == len(r.ops) {
		return nil
	}
	return r.ops[r.minEnd[i]]
}

// find returns an operation invoked after a that completed before b, or nil.
func (r *removals) find(a, b time.Time) *Op {
	if op := r.firstAfter(a); op != nil && op.Complete.Before(b) {
		return op
	}
	return nil
}

// checkStale counts stale reads (promise 2) and resurrections (promise 3).
func checkStale(ops []Op, base time.Time, r *Report) {
	writes := map[string]*Op{}     // value -> its write (nil: written more than once)
	invs := map[string][]*Op{}     // tag -> acknowledged INV_TAGs
	dels := map[string][]*Op{}     // key -> acknowledged DELs
	replaces := map[string][]*Op{} // key -> acknowledged PUTs, ADDs that added, INCRs, DELs
	for i := range ops {
		op := &ops[i]
		if op.Kind == OpPut || op.Kind == OpAdd {
			if _, dup := writes[op.Value]; dup {
				writes[op.Value] = nil
			} else {
				writes[op.Value] = op
			}
		}
		if !op.acknowledged() {
			continue
		}
		switch op.Kind {
		case OpInvTag:
			invs[op.Tag] = append(invs[op.Tag], op)
		case OpDel:
			dels[op.Key] = append(dels[op.Key], op)
			replaces[op.Key] = append(replaces[op.Key], op)
		case OpPut, OpAdd, OpIncr:
			replaces[op.Key] = append(replaces[op.Key], op)
		}
	}
	index := func(m map[string][]*Op) map[string]*removals {
		out := make(map[string]*removals, len(m))
		for k, ops := range m {
			out[k] = newRemovals(ops)
		}
		return out
	}
	invBy, delBy, replaceBy := index(invs), index(dels), index(replaces)

	var stale, resurrected []string
	for i := range ops {
		get := &ops[i]
		if get.Kind != OpGet || get.Status != StatusOK || !get.Found {
			continue
		}
		w := writes[get.Result]
		if w == nil || w.Key != get.Key || !w.acknowledged() {
			continue // not a unique acknowledged write of this key: porcupine judges it
		}
		var by *Op
		for _, t := range w.Tags {
			if by = invBy[t].find(w.Complete, get.Invoke); by != nil {
				break
			}
		}
		if by == nil {
			by = delBy[get.Key].find(w.Complete, get.Invoke)
		}
		if by != nil {
			r.StaleReads++
			what := "DEL of its key"
			if by.Kind == OpInvTag {
				what = "INV_TAG " + by.Tag
			}
			stale = append(stale, fmt.Sprintf("stale read (promise 2): a GET began after the %s succeeded and returned a value acknowledged before that invalidation was issued\n"+
				"  read:         %s\n  write:        %s\n  invalidation: %s",
				what, get.describe(base), w.describe(base), by.describe(base)))
			continue
		}
		if by = replaceBy[get.Key].find(w.Complete, get.Invoke); by != nil {
			r.Resurrections++
			resurrected = append(resurrected, fmt.Sprintf("resurrection (promise 3): a GET began after a later write of its key completed and returned the overwritten value\n"+
				"  read:      %s\n  write:     %s\n  overwrite: %s",
				get.describe(base), w.describe(base), by.describe(base)))
		}
	}
	r.Evidence = append(r.Evidence, capEvidence(stale, "stale reads")...)
	r.Evidence = append(r.Evidence, capEvidence(resurrected, "resurrections")...)
}

// capEvidence keeps the first maxEvidence items and counts the rest.
func capEvidence(items []string, what string) []string {
	if len(items) <= maxEvidence {
		return items
	}
	return append(items[:maxEvidence:maxEvidence], fmt.Sprintf("… and %d more %s", len(items)-maxEvidence, what))
}

// --- promise 1

// linInput is an operation as the model sees it.
type linInput struct {
	op      *Op // the operation, for evidence
	kind    OpKind
	value   string // PUT, ADD: the value; "" when unread
	unread  bool   // PUT, ADD: no GET returned the value, so it only matters that there is one
	tags    uint64 // PUT, ADD, INCR: the value's tags; INV_TAG, KEYS_BY_TAG: the tag
	setTags bool   // INCR: tags replaces the entry's tags
	by      int64  // INCR
}

// linOutput is an operation's outcome as the model sees it.
type linOutput struct {
	unknown bool   // the write failed or got no answer: any outcome
	found   bool   // ADD: added; DEL: deleted
	value   string // GET: the value read
	n       int64  // INCR: the result
}

// linState is one key's value in the model.
type linState struct {
	present bool
	unread  bool   // a value nobody read (all of them are alike)
	value   string // when present and not unread
	tags    uint64
}

// number returns the state's value as an integer.
func (s linState) number() (int64, bool) {
	if !s.present || s.unread {
		return 0, false
	}
	n, err := strconv.ParseInt(s.value, 10, 64)
	return n, err == nil
}

// linStep returns the states the key may be in after in answered out in state s; none
// when that answer is impossible.
func linStep(s linState, in linInput, out linOutput) []any {
	written := linState{present: true, unread: in.unread, value: in.value, tags: in.tags}
	switch in.kind {
	case OpPut:
		return []any{written}
	case OpAdd:
		switch {
		case out.unknown && s.present:
			return []any{s, written} // "exists", or the value was lost and ADD added
		case out.unknown, out.found:
			return []any{written}
		case s.present:
			return []any{s} // "exists"
		}
		return nil // "exists" with nothing there
	case OpIncr:
		fresh := linState{present: true, value: strconv.FormatInt(in.by, 10)} // from nothing (or a lost value)
		if in.setTags {
			fresh.tags = in.tags
		}
		var next []any
		cur, numeric := s.number()
		if numeric {
			sum := linState{present: true, value: strconv.FormatInt(cur+in.by, 10), tags: s.tags}
			if in.setTags {
				sum.tags = in.tags
			}
			if out.unknown || out.n == cur+in.by {
				next = append(next, sum)
			}
		} else if out.unknown && s.present {
			next = append(next, s) // not an integer: the INCR failed
		}
		if out.unknown || out.n == in.by {
			next = append(next, fresh)
		}
		return next
	case OpDel:
		if !out.unknown && out.found && !s.present {
			return nil
		}
		return []any{linState{}}
	case OpGet:
		if s.present && !s.unread && s.value == out.value {
			return []any{s}
		}
		return nil
	case OpInvTag:
		if s.present && s.tags&in.tags != 0 {
			return []any{linState{}}
		}
		return []any{s}
	case OpKeysByTag:
		if s.present && s.tags&in.tags != 0 {
			return []any{s}
		}
		return nil
	}
	panic("linStep: unknown operation " + in.kind.String())
}

// linModel is the per-key model (a set of possible states, by porcupine's power-set
// construction); tagNames names the tag bits of the key's history.
func linModel(tagNames []string) porcupine.Model {
	tagList := func(mask uint64) string {
		var out []string
		for mask != 0 {
			i := bits.TrailingZeros64(mask)
			mask &^= 1 << i
			out = append(out, tagNames[i])
		}
		return strings.Join(out, ",")
	}
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{linState{}} },
		Step: func(state, input, output any) []any {
			return linStep(state.(linState), input.(linInput), output.(linOutput))
		},
		Equal: func(a, b any) bool { return a.(linState) == b.(linState) },
		Hash: func(state any) uint64 {
			s := state.(linState)
			h := fnv.New64a()
			h.Write([]byte{boolByte(s.present), boolByte(s.unread)})
			h.Write([]byte(s.value))
			return h.Sum64() ^ s.tags
		},
		DescribeOperation: func(input, output any) string {
			return input.(linInput).op.summary()
		},
		DescribeState: func(state any) string {
			s := state.(linState)
			switch {
			case !s.present:
				return "absent"
			}
			d := fmt.Sprintf("%q", s.value)
			if s.unread {
				d = "a value never read"
			}
			if s.tags != 0 {
				d += " tags=" + tagList(s.tags)
			}
			return d
		},
	}
	return nm.ToModel()
}

// keyHistory is one key's history for porcupine.
type keyHistory struct {
	key      string
	ops      []porcupine.Operation
	tagNames []string
	tooMany  bool // more than 64 distinct tags: not checked
}

// keyHistories splits ops into one history per key: the key's own operations and the
// INV_TAGs and KEYS_BY_TAGs that concern it.
//
// Unacknowledged removals (a DEL or an INV_TAG that failed or got no answer) are left
// out. Leaving one out is the same as taking it to have never happened, and that
// explains every history it could explain: an absent key allows no answer that a
// present one forbids (PUT, ADD "added", INCR from scratch and DEL "not found" are legal
// on any state, by loss), so whatever follows a removal is legal without it too. Each
// such removal would otherwise stay pending to the end of the history, and porcupine's
// search can grow exponentially with the number of those (a paused node makes every
// INV_TAG through it fail for seconds).
func keyHistories(ops []Op, base time.Time, horizon time.Duration) []*keyHistory {
	read := map[string]bool{} // values some GET returned
	var end time.Time
	for i := range ops {
		if ops[i].Kind == OpGet && ops[i].Status == StatusOK && ops[i].Found {
			read[ops[i].Result] = true
		}
		end = maxTime(end, maxTime(ops[i].Invoke, ops[i].Complete))
	}
	infinity := int64(end.Sub(base)) + 1 // after everything: an unknown outcome's return

	byKey := map[string]*keyHistory{}
	tagBits := map[string]map[string]int{} // key -> tag -> bit
	history := func(key string) *keyHistory {
		kh := byKey[key]
		if kh == nil {
			kh = &keyHistory{key: key}
			byKey[key] = kh
			tagBits[key] = map[string]int{}
		}
		return kh
	}
	mask := func(kh *keyHistory, tags ...string) uint64 {
		var m uint64
		for _, t := range tags {
			b, ok := tagBits[kh.key][t]
			if !ok {
				b = len(kh.tagNames)
				if b == 64 {
					kh.tooMany = true
					continue
				}
				tagBits[kh.key][t] = b
				kh.tagNames = append(kh.tagNames, t)
			}
			m |= 1 << b
		}
		return m
	}
	add := func(kh *keyHistory, op *Op, in linInput, out linOutput) {
		in.op, in.kind = op, op.Kind
		ret := int64(op.Complete.Sub(base))
		if out.unknown {
			ret = min(infinity, int64(op.Invoke.Add(horizon).Sub(base)))
		}
		kh.ops = append(kh.ops, porcupine.Operation{ClientId: op.Client, Input: in, Call: int64(op.Invoke.Sub(base)),
			Output: out, Return: ret})
	}
	// Key operations first, so that every tag a key's writes carry has its bit.
	setters := map[string]map[string][]*Op{} // tag -> key -> the writes that gave the key's value that tag
	for i := range ops {
		op := &ops[i]
		switch op.Kind {
		case OpPut, OpAdd, OpIncr, OpDel:
			if op.Kind == OpDel && op.Status != StatusOK {
				history(op.Key)
				break // see unacknowledged removals, above
			}
			if op.Status == StatusError && refusedUnrun(op.Err) {
				history(op.Key)
				break // refused before it ran: no effect (refusedUnrun)
			}
			kh := history(op.Key)
			in := linInput{value: op.Value, unread: !read[op.Value], tags: mask(kh, op.Tags...), setTags: op.Tags != nil, by: op.By}
			if in.unread {
				in.value = ""
			}
			out := linOutput{unknown: op.Status != StatusOK, found: op.Found}
			if op.Kind == OpIncr && !out.unknown {
				n, err := strconv.ParseInt(op.Result, 10, 64)
				out.n, out.unknown = n, err != nil
			}
			add(kh, op, in, out)
			if op.Kind == OpAdd && op.Status == StatusOK && !op.Found {
				break // "exists": wrote nothing
			}
			for _, t := range op.Tags {
				if setters[t] == nil {
					setters[t] = map[string][]*Op{}
				}
				setters[t][op.Key] = append(setters[t][op.Key], op)
			}
		case OpGet:
			if op.Status == StatusOK && op.Found { // a miss or a failed read proves nothing
				add(history(op.Key), op, linInput{}, linOutput{value: op.Result})
			}
		}
	}
	relevant := invalidationRelevance(ops, setters, base)
	for i := range ops {
		op := &ops[i]
		switch op.Kind {
		case OpInvTag:
			if op.Status != StatusOK {
				break // see unacknowledged removals, above
			}
			for key := range setters[op.Tag] {
				if relevant(op, key) {
					kh := byKey[key]
					add(kh, op, linInput{tags: mask(kh, op.Tag)}, linOutput{unknown: op.Status != StatusOK})
				}
			}
		case OpKeysByTag:
			if op.Status != StatusOK {
				continue
			}
			seen := map[string]bool{}
			for _, k := range op.Keys {
				if seen[k] {
					continue
				}
				seen[k] = true
				kh := history(k)
				add(kh, op, linInput{tags: mask(kh, op.Tag)}, linOutput{})
			}
		}
	}
	out := make([]*keyHistory, 0, len(byKey))
	for _, kh := range byKey {
		out = append(out, kh)
	}
	slices.SortFunc(out, func(a, b *keyHistory) int { return strings.Compare(a.key, b.key) })
	return out
}

// invalidationRelevance returns whether an INV_TAG t can remove anything from a key
// whose writes that set t are ws (ordered by invocation).
//
// A key's value carries t only from the invocation of such a write W until an
// acknowledged operation invoked after W completed has replaced the value's tags or
// removed it (a PUT, an ADD that added, a DEL, an INCR with tags, an INV_TAG of one of
// W's tags) — W's value and its tags never come back after it. An INV_TAG whose interval
// meets none of those spans removes nothing in any order, so it is left out of the key's
// history: INV_TAGs belong to every key's history, and without this the histories grow
// with the number of keys times the number of invalidations. A write without an
// acknowledgement may take effect at any time: its span never ends.
func invalidationRelevance(ops []Op, setters map[string]map[string][]*Op, base time.Time) func(inv *Op, key string) bool {
	const never = int64(math.MaxInt64)
	replacers := map[string][]*Op{} // key -> acknowledged PUTs, ADDs that added, DELs, INCRs with tags
	invs := map[string][]*Op{}      // tag -> acknowledged INV_TAGs
	for i := range ops {
		op := &ops[i]
		switch {
		case !op.acknowledged():
		case op.Kind == OpInvTag:
			invs[op.Tag] = append(invs[op.Tag], op)
		case op.Kind != OpIncr || op.Tags != nil:
			replacers[op.Key] = append(replacers[op.Key], op)
		}
	}
	replacedBy, invBy := map[string]*removals{}, map[string]*removals{}
	for k, rs := range replacers {
		replacedBy[k] = newRemovals(rs)
	}
	for t, is := range invs {
		invBy[t] = newRemovals(is)
	}
	// end returns when w's span ends at the latest.
	end := func(w *Op) int64 {
		if w.Status != StatusOK {
			return never
		}
		e := never
		if x := replacedBy[w.Key].firstAfter(w.Complete); x != nil {
			e = min(e, int64(x.Complete.Sub(base)))
		}
		for _, t := range w.Tags {
			if x := invBy[t].firstAfter(w.Complete); x != nil {
				e = min(e, int64(x.Complete.Sub(base)))
			}
		}
		return e
	}
	// For each tag and key, the latest end of the spans of the first i+1 writes.
	type tagKey struct{ tag, key string }
	spans := map[tagKey][]int64{}
	for tag, byKey := range setters {
		for key, ws := range byKey {
			slices.SortFunc(ws, func(a, b *Op) int { return a.Invoke.Compare(b.Invoke) })
			latest := make([]int64, len(ws))
			for i, w := range ws {
				latest[i] = end(w)
				if i > 0 {
					latest[i] = max(latest[i], latest[i-1])
				}
			}
			spans[tagKey{tag, key}] = latest
		}
	}
	return func(inv *Op, key string) bool {
		ws := setters[inv.Tag][key]
		from, to := int64(inv.Invoke.Sub(base)), never
		if inv.Status == StatusOK {
			to = int64(inv.Complete.Sub(base))
		}
		// The writes invoked by the end of the invalidation; one of them still spans its
		// beginning?
		n := sort.Search(len(ws), func(i int) bool { return int64(ws[i].Invoke.Sub(base)) > to })
		return n > 0 && spans[tagKey{inv.Tag, key}][n-1] >= from
	}
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// checkLinearizable checks every key's history with porcupine, a few keys at a time.
func checkLinearizable(ops []Op, base time.Time, opts CheckOptions, r *Report) {
	khs := keyHistories(ops, base, opts.UnknownHorizon)
	evidence := make([]string, len(khs))
	results := make([]porcupine.CheckResult, len(khs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(khs)) {
		wg.Go(func() {
			for i := range next {
				results[i], evidence[i] = checkKey(khs[i], base, opts)
			}
		})
	}
	for i := range khs {
		next <- i
	}
	close(next)
	wg.Wait()
	var violations []string
	for i, res := range results {
		switch res {
		case porcupine.Illegal:
			r.LinearizabilityViolations++
			violations = append(violations, evidence[i])
		case porcupine.Unknown:
			r.CheckTimeouts++
			violations = append(violations, evidence[i])
		}
	}
	r.Evidence = append(r.Evidence, capEvidence(violations, "keys")...)
}

// checkKey checks one key's history and, when it is not linearizable (or the check
// timed out), describes why.
func checkKey(kh *keyHistory, base time.Time, opts CheckOptions) (porcupine.CheckResult, string) {
	if kh.tooMany {
		return porcupine.Unknown, fmt.Sprintf("linearizability of key %s not checked: its writes carry more than 64 tags", kh.key)
	}
	model := linModel(kh.tagNames)
	deadline := time.Now().Add(opts.KeyTimeout)
	for _, seg := range segments(kh.ops) {
		left := time.Until(deadline)
		res := porcupine.Unknown
		if left > 0 {
			res = porcupine.CheckOperationsTimeout(model, seg, left)
		}
		switch res {
		case porcupine.Unknown:
			return res, fmt.Sprintf("linearizability of key %s (%d operations) unknown: the check timed out after %s; not a pass",
				kh.key, len(kh.ops), opts.KeyTimeout)
		case porcupine.Illegal:
			_, info := porcupine.CheckOperationsVerbose(model, seg, max(time.Until(deadline), opts.KeyTimeout/10))
			return res, explainViolation(kh, seg, model, info, base, opts)
		}
	}
	return porcupine.Ok, ""
}

// segments splits a key's history (porcupine may need memory quadratic in its length)
// where that changes nothing: before an operation that leaves the same state whatever
// the state before (an acknowledged PUT, an ADD that added, a DEL that found nothing),
// when every operation invoked before it returned before it was invoked and it returned
// before any other was invoked. An operation without an answer returns UnknownHorizon
// after its invocation, so no cut falls within that.
func segments(ops []porcupine.Operation) [][]porcupine.Operation {
	slices.SortStableFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	var out [][]porcupine.Operation
	start := 0
	lastReturn := int64(math.MinInt64) // of ops[start:i]
	for i, op := range ops {
		in, o := op.Input.(linInput), op.Output.(linOutput)
		reset := !o.unknown && (in.kind == OpPut || in.kind == OpAdd && o.found || in.kind == OpDel && !o.found)
		if reset && i > start && lastReturn < op.Call && (i+1 == len(ops) || op.Return < ops[i+1].Call) {
			out = append(out, ops[start:i])
			start = i
		}
		lastReturn = max(lastReturn, op.Return)
	}
	return append(out, ops[start:])
}

// explainViolation names the operation no order can explain — the earliest to return
// of those missing from the longest linearizable prefix porcupine found — with the
// state after that prefix, the prefix's last operations and the operations concurrent
// with it.
func explainViolation(kh *keyHistory, seg []porcupine.Operation, model porcupine.Model, info porcupine.LinearizationInfo, base time.Time, opts CheckOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "linearizability (promise 1): key %s (%s", kh.key, plural(len(kh.ops), "operation"))
	if len(seg) < len(kh.ops) {
		fmt.Fprintf(&b, "; checked in pieces, this one of %d from %s", len(seg), relTime(base.Add(time.Duration(seg[0].Call)), base))
	}
	b.WriteString("): no order of its operations explains")
	var prefix []porcupine.Operation
	if parts := info.PartialLinearizationsOperations(); len(parts) == 1 {
		for _, p := range parts[0] {
			if len(p) > len(prefix) {
				prefix = p
			}
		}
	}
	in := map[*Op]bool{}
	for _, p := range prefix {
		in[p.Input.(linInput).op] = true
	}
	var stuck *porcupine.Operation
	for i := range seg {
		op := &seg[i]
		if !in[op.Input.(linInput).op] && (stuck == nil || op.Return < stuck.Return ||
			op.Return == stuck.Return && op.Call < stuck.Call) {
			stuck = op
		}
	}
	describe := func(op porcupine.Operation) string { return op.Input.(linInput).op.describe(base) }
	if stuck == nil {
		b.WriteString(" them (porcupine gave no partial order)")
	} else {
		fmt.Fprintf(&b, "\n  %s", describe(*stuck))
		state := model.Init()
		for _, p := range prefix {
			_, state = model.Step(state, p.Input, p.Output)
		}
		fmt.Fprintf(&b, "\n  after the longest explainable prefix (%s) the key holds one of %s", plural(len(prefix), "operation"), model.DescribeState(state))
		if len(prefix) > 0 {
			b.WriteString("; that prefix ends with:")
			for _, p := range prefix[max(0, len(prefix)-4):] {
				fmt.Fprintf(&b, "\n    %s", describe(p))
			}
		}
		var concurrent []string
		for _, op := range seg {
			if op.Input.(linInput).op != stuck.Input.(linInput).op && !in[op.Input.(linInput).op] &&
				op.Call <= stuck.Return && op.Return >= stuck.Call && len(concurrent) < 8 {
				concurrent = append(concurrent, describe(op))
			}
		}
		if len(concurrent) > 0 {
			b.WriteString("\n  concurrent with it, not yet placed:")
			for _, c := range concurrent {
				fmt.Fprintf(&b, "\n    %s", c)
			}
		}
	}
	if len(seg) <= maxPieceShown {
		b.WriteString("\n  every operation of the piece, by invocation:")
		for _, op := range seg {
			fmt.Fprintf(&b, "\n    %s", describe(op))
		}
	}
	if opts.VisualizeDir != "" {
		path := filepath.Join(opts.VisualizeDir, fmt.Sprintf("linearizability-%s-%d.html", sanitize(kh.key), time.Now().UnixNano()))
		if err := os.MkdirAll(opts.VisualizeDir, 0o755); err == nil {
			err = porcupine.VisualizePath(model, info, path)
			if err == nil {
				fmt.Fprintf(&b, "\n  visualization: %s", path)
			}
		}
	}
	return b.String()
}

// maxPieceShown bounds the pieces of history a violation lists whole.
const maxPieceShown = 40

// plural returns "n thing" or "n things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// sanitize makes s usable in a file name.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == 0 || r == ':' {
			return '_'
		}
		return r
	}, s)
}
