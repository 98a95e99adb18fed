package clustertests

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Histories built by hand: legal ones the checker must pass, and negative controls it must
// catch, each with the right counter and evidence naming the operations.

// synth builds a history; times are milliseconds after base.
type synth struct {
	base time.Time
	ops  []Op
}

func newSynth() *synth { return &synth{base: time.Now()} }

// at records op performed by client from ms to ms after the start.
func (s *synth) at(client, from, to int, op Op) Op {
	op.Client = client
	op.Node = fmt.Sprintf("n%d", client%3)
	op.Proto = Protocol(client % int(numProtocols))
	op.Invoke = s.base.Add(time.Duration(from) * time.Millisecond)
	op.Complete = s.base.Add(time.Duration(to) * time.Millisecond)
	s.ops = append(s.ops, op)
	return op
}

func (s *synth) history() *History {
	h := newHistory(s.base)
	h.add(s.ops...)
	return h
}

func putOp(key, value string, tags ...string) Op {
	return Op{Kind: OpPut, Key: key, Value: value, Tags: tags}
}
func addOp(key, value string, added bool, tags ...string) Op {
	return Op{Kind: OpAdd, Key: key, Value: value, Tags: tags, Found: added}
}
func incrOp(key string, by int64, result int64) Op {
	return Op{Kind: OpIncr, Key: key, By: by, Result: fmt.Sprint(result)}
}
func delOp(key string, deleted bool) Op { return Op{Kind: OpDel, Key: key, Found: deleted} }
func getOp(key, value string) Op        { return Op{Kind: OpGet, Key: key, Found: true, Result: value} }
func missOp(key string) Op              { return Op{Kind: OpGet, Key: key} }
func invTagOp(tag string, count int) Op { return Op{Kind: OpInvTag, Tag: tag, Count: count} }
func keysByTagOp(tag string, keys ...string) Op {
	return Op{Kind: OpKeysByTag, Tag: tag, Keys: keys}
}

// unknownOp and failedOp turn op into one without an answer, or with an error answer.
func unknownOp(op Op) Op {
	op.Status, op.Err, op.Found, op.Result = StatusUnknown, "i/o timeout", false, ""
	return op
}
func failedOp(op Op, msg string) Op {
	op.Status, op.Err, op.Found, op.Result = StatusError, msg, false, ""
	return op
}

func expectNoViolation(t *testing.T, name string, s *synth) {
	t.Helper()
	r := Check(s.history())
	if r.Violations() != 0 || r.CheckTimeouts != 0 {
		t.Errorf("%s: %s\n%s", name, r, strings.Join(r.Evidence, "\n"))
	}
}

func TestCheckPassesConcurrentWritesReadInAnyLegalOrder(t *testing.T) {
	s := newSynth()
	s.at(0, 0, 10, putOp("k", "v1", "t1"))
	s.at(1, 5, 15, putOp("k", "v2"))
	s.at(2, 6, 8, getOp("k", "v2"))   // v2 took effect first…
	s.at(2, 16, 17, getOp("k", "v1")) // …then v1, still within its interval
	s.at(3, 18, 19, getOp("k", "v1"))
	s.at(4, 20, 40, putOp("k", "v3", "t2"))
	s.at(5, 21, 22, getOp("k", "v1"))        // v3 not yet
	s.at(2, 30, 31, getOp("k", "v3"))        // v3 now
	s.at(3, 32, 50, putOp("k", "v4"))        // concurrent with the next two reads
	s.at(5, 33, 34, getOp("k", "v3"))        // v4 not yet
	s.at(1, 45, 46, getOp("k", "v4"))        // v4 now
	s.at(0, 60, 70, addOp("k", "v5", false)) // exists
	s.at(0, 71, 72, getOp("k", "v4"))
	expectNoViolation(t, "concurrent writes", s)
}

func TestCheckPassesMissesEverywhere(t *testing.T) {
	s := newSynth()
	s.at(0, 0, 10, putOp("k", "v1", "t1"))
	s.at(1, 11, 12, missOp("k")) // owner unreachable, moving, …
	s.at(2, 13, 14, getOp("k", "v1"))
	s.at(1, 15, 16, missOp("k"))
	s.at(0, 20, 30, invTagOp("t1", 1))
	s.at(1, 25, 26, getOp("k", "v1")) // concurrent with the invalidation
	s.at(2, 31, 32, missOp("k"))
	s.at(2, 33, 34, missOp("other")) // a key nobody wrote
	s.at(1, 35, 36, keysByTagOp("t1"))
	expectNoViolation(t, "misses", s)
}

func TestCheckPassesLossThenIncrFromZero(t *testing.T) {
	s := newSynth()
	s.at(0, 0, 10, incrOp("c", 2, 2))
	s.at(1, 11, 12, incrOp("c", 5, 7))
	s.at(2, 13, 14, getOp("c", "7"))
	// The owner crashed: the counter is gone and starts again from nothing.
	s.at(0, 20, 21, incrOp("c", 3, 3))
	s.at(1, 22, 23, getOp("c", "3"))
	s.at(2, 24, 25, incrOp("c", 1, 4))
	// A lost value: ADD adds, DEL finds nothing.
	s.at(0, 30, 31, putOp("k", "v1", "t1"))
	s.at(1, 32, 33, keysByTagOp("t1", "k"))
	s.at(1, 34, 35, addOp("k", "v2", true))
	s.at(2, 36, 37, getOp("k", "v2"))
	s.at(0, 40, 41, putOp("k2", "w1"))
	s.at(1, 42, 43, delOp("k2", false))
	s.at(2, 44, 45, missOp("k2"))
	expectNoViolation(t, "loss", s)
}

func TestCheckPassesUnknownOutcomes(t *testing.T) {
	s := newSynth()
	// A PUT that timed out took effect much later, after a newer acknowledged one.
	s.at(0, 0, 10, unknownOp(putOp("k", "v1")))
	s.at(1, 20, 30, putOp("k", "v2"))
	s.at(2, 40, 41, getOp("k", "v2"))
	s.at(2, 200, 201, getOp("k", "v1"))
	// A PUT that failed never took effect; one that failed may have.
	s.at(0, 300, 310, failedOp(putOp("k", "v3"), "owner n2 unreachable"))
	s.at(1, 320, 321, getOp("k", "v1"))
	s.at(0, 330, 340, failedOp(putOp("k", "v4"), "owner n2 unreachable"))
	s.at(1, 350, 351, getOp("k", "v4"))
	// An INV_TAG that failed may or may not have removed the value.
	s.at(0, 400, 410, putOp("j", "w1", "t1"))
	s.at(1, 420, 430, failedOp(invTagOp("t1", 0), "invalidation incomplete: not acknowledged by n2"))
	s.at(2, 440, 441, getOp("j", "w1"))
	s.at(2, 450, 451, missOp("j"))
	// An INCR without an answer: the next one shows whether it counted.
	s.at(0, 500, 510, incrOp("c", 2, 2))
	s.at(1, 520, 530, unknownOp(incrOp("c", 3, 0)))
	s.at(2, 540, 541, incrOp("c", 1, 6))
	s.at(0, 550, 560, unknownOp(incrOp("d", 3, 0)))
	s.at(2, 570, 571, incrOp("d", 1, 1))
	// A DEL without an answer that did not happen, and a failed read.
	s.at(0, 600, 610, putOp("e", "x1"))
	s.at(1, 620, 630, unknownOp(delOp("e", false)))
	s.at(2, 640, 641, getOp("e", "x1"))
	s.at(2, 650, 651, failedOp(getOp("e", ""), "routing: ownership of partition 3 is moving, retry"))
	// An ADD without an answer that found the key taken.
	s.at(1, 700, 701, unknownOp(addOp("e", "x2", false)))
	s.at(2, 710, 711, getOp("e", "x1"))
	expectNoViolation(t, "unknown outcomes", s)
	r := Check(s.history())
	if r.Unknown != 5 || r.Errors != 4 || r.Ops != len(s.ops) {
		t.Errorf("counts: %s", r)
	}
}

// expectViolation checks one negative control: the counters named in want are what the report
// has (the others are 0), and the evidence names every operation of proof.
func expectViolation(t *testing.T, s *synth, want Report, proof ...Op) Report {
	t.Helper()
	r := Check(s.history())
	if r.StaleReads != want.StaleReads || r.Resurrections != want.Resurrections ||
		r.LinearizabilityViolations != want.LinearizabilityViolations || r.CheckTimeouts != 0 {
		t.Errorf("got %s; want %d stale reads, %d resurrections, %d keys not linearizable",
			r, want.StaleReads, want.Resurrections, want.LinearizabilityViolations)
	}
	evidence := strings.Join(r.Evidence, "\n")
	for _, op := range proof {
		if d := op.describe(s.base); !strings.Contains(evidence, d) {
			t.Errorf("evidence does not name %s:\n%s", d, evidence)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("evidence:\n%s", evidence)
	}
	return r
}

func TestCheckCatchesReadOfInvalidatedValue(t *testing.T) {
	s := newSynth()
	w := s.at(0, 0, 10, putOp("k", "v1", "t1", "t2"))
	inv := s.at(1, 20, 30, invTagOp("t2", 1))
	g := s.at(2, 40, 50, getOp("k", "v1"))
	r := expectViolation(t, s, Report{StaleReads: 1, LinearizabilityViolations: 1}, w, inv, g)
	if !strings.Contains(strings.Join(r.Evidence, "\n"), "stale read") {
		t.Errorf("evidence does not say stale read: %q", r.Evidence)
	}
}

func TestCheckCatchesReadOfDeletedValue(t *testing.T) {
	s := newSynth()
	w := s.at(0, 0, 10, putOp("k", "v1"))
	d := s.at(1, 20, 30, delOp("k", true))
	s.at(2, 31, 32, missOp("k"))
	g := s.at(2, 40, 50, getOp("k", "v1"))
	expectViolation(t, s, Report{StaleReads: 1, LinearizabilityViolations: 1}, w, d, g)
}

func TestCheckCatchesResurrectedOverwrittenValue(t *testing.T) {
	s := newSynth()
	w := s.at(0, 0, 10, putOp("k", "v1"))
	o := s.at(1, 20, 30, putOp("k", "v2"))
	s.at(2, 40, 50, getOp("k", "v2"))
	g := s.at(2, 60, 70, getOp("k", "v1")) // the old owner came back with its copy
	r := expectViolation(t, s, Report{Resurrections: 1, LinearizabilityViolations: 1}, w, o, g)
	if !strings.Contains(strings.Join(r.Evidence, "\n"), "resurrection") {
		t.Errorf("evidence does not say resurrection: %q", r.Evidence)
	}
}

func TestCheckCatchesStaleValueAfterNewerWriteCompleted(t *testing.T) {
	s := newSynth()
	w := s.at(0, 0, 10, putOp("k", "v1", "t1"))
	o := s.at(1, 20, 30, addOp("k", "v2", true)) // the value was lost, ADD added
	g := s.at(2, 40, 50, getOp("k", "v1"))
	expectViolation(t, s, Report{Resurrections: 1, LinearizabilityViolations: 1}, w, o, g)
}

func TestCheckCatchesReadOfValueNeverWritten(t *testing.T) {
	s := newSynth()
	s.at(0, 0, 10, putOp("k", "v1"))
	s.at(1, 5, 15, unknownOp(putOp("other", "v9"))) // written, but to another key
	g := s.at(2, 20, 30, getOp("k", "v9"))
	r := expectViolation(t, s, Report{LinearizabilityViolations: 1}, g)
	if !strings.Contains(r.Evidence[0], "key k ") {
		t.Errorf("evidence does not name the key: %q", r.Evidence[0])
	}
}

func TestCheckCatchesImpossibleAnswers(t *testing.T) {
	cases := []struct {
		name  string
		build func(s *synth) []Op // the operations the evidence must name
	}{
		{"INCR neither adding nor starting over", func(s *synth) []Op {
			s.at(0, 0, 10, incrOp("c", 2, 2))
			return []Op{s.at(1, 20, 30, incrOp("c", 3, 4))}
		}},
		{"KEYS_BY_TAG listing an invalidated key", func(s *synth) []Op {
			s.at(0, 0, 10, putOp("k", "v1", "t1"))
			s.at(1, 20, 30, invTagOp("t1", 1))
			return []Op{s.at(2, 40, 50, keysByTagOp("t1", "k"))}
		}},
		{"KEYS_BY_TAG listing a key under a tag it does not carry", func(s *synth) []Op {
			s.at(0, 0, 10, putOp("k", "v1", "t1"))
			s.at(0, 20, 30, putOp("k", "v2", "t2"))
			return []Op{s.at(2, 40, 50, keysByTagOp("t1", "k"))}
		}},
		{"ADD finding a deleted key", func(s *synth) []Op {
			s.at(0, 0, 10, putOp("k", "v1"))
			s.at(1, 20, 30, delOp("k", true))
			return []Op{s.at(2, 40, 50, addOp("k", "v2", false))}
		}},
		{"DEL removing an invalidated value", func(s *synth) []Op {
			s.at(0, 0, 10, putOp("k", "v1", "t1"))
			s.at(1, 20, 30, invTagOp("t1", 1))
			return []Op{s.at(2, 40, 50, delOp("k", true))}
		}},
		{"INCR without tags dropping the tags of the value it counted on", func(s *synth) []Op {
			s.at(0, 0, 10, Op{Kind: OpIncr, Key: "c", By: 1, Result: "1", Tags: []string{"t1"}})
			s.at(0, 20, 30, incrOp("c", 1, 2))
			s.at(1, 40, 50, invTagOp("t1", 1))
			return []Op{s.at(2, 60, 70, getOp("c", "2"))}
		}},
		{"a write without an answer read after its invalidation", func(s *synth) []Op {
			s.at(0, 0, 10, unknownOp(putOp("k", "v1", "t1")))
			s.at(1, 20, 21, getOp("k", "v1"))
			s.at(1, 30, 40, invTagOp("t1", 1))
			return []Op{s.at(2, 50, 60, getOp("k", "v1"))}
		}},
		{"INCR keeping tags it replaced", func(s *synth) []Op {
			s.at(0, 0, 10, incrOp("c", 1, 1))
			i := Op{Kind: OpIncr, Key: "c", By: 1, Result: "2", Tags: []string{"t1"}}
			s.at(0, 20, 30, i)
			s.at(1, 40, 50, invTagOp("t1", 1))
			return []Op{s.at(2, 60, 70, getOp("c", "2"))}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSynth()
			proof := c.build(s)
			expectViolation(t, s, Report{LinearizabilityViolations: 1}, proof...)
		})
	}
}

// A read concurrent with the invalidation, or of a write the invalidation did not
// follow, or after an invalidation that failed, is no stale read.
func TestCheckStaleReadNeedsOrderedAcknowledgedOperations(t *testing.T) {
	s := newSynth()
	s.at(0, 0, 25, putOp("k", "v1", "t1")) // completes after the INV_TAG was invoked
	s.at(1, 20, 30, invTagOp("t1", 0))
	s.at(2, 40, 50, getOp("k", "v1"))
	s.at(0, 100, 110, putOp("j", "w1", "t1"))
	s.at(1, 120, 130, unknownOp(invTagOp("t1", 0)))
	s.at(2, 140, 150, getOp("j", "w1"))
	s.at(0, 200, 210, putOp("i", "x1", "t1"))
	s.at(1, 220, 230, invTagOp("t1", 1))
	s.at(2, 225, 250, getOp("i", "x1")) // began before the INV_TAG completed
	expectNoViolation(t, "ordering", s)
}

func TestCheckReportsTimeoutAsUnknownNotPass(t *testing.T) {
	// Many writes without an answer, each of which may take effect at any time: a search
	// that cannot finish in a nanosecond.
	s := newSynth()
	for i := range 300 {
		s.at(i%7, i, i+1, unknownOp(putOp("k", fmt.Sprintf("v%d", i), "t1")))
		s.at(7, i, i+1, getOp("k", fmt.Sprintf("v%d", i/2)))
	}
	r := CheckWith(s.history(), CheckOptions{KeyTimeout: time.Nanosecond})
	if r.CheckTimeouts != 1 || r.LinearizabilityViolations != 0 {
		t.Fatalf("got %s, want 1 key check timed out", r)
	}
	if !strings.Contains(strings.Join(r.Evidence, "\n"), "timed out") {
		t.Errorf("evidence does not say the check timed out: %q", r.Evidence)
	}
}

func TestCheckCountsOutcomes(t *testing.T) {
	s := newSynth()
	s.at(0, 0, 1, putOp("k", "v1"))
	s.at(0, 2, 3, missOp("j"))
	s.at(0, 4, 5, getOp("k", "v1"))
	s.at(0, 6, 7, failedOp(delOp("k", false), "boom"))
	s.at(0, 8, 9, unknownOp(getOp("k", "")))
	r := Check(s.history())
	want := Report{Ops: 5, OK: 3, Errors: 1, Unknown: 1, Misses: 1}
	if r.Ops != want.Ops || r.OK != want.OK || r.Errors != want.Errors || r.Unknown != want.Unknown || r.Misses != want.Misses {
		t.Errorf("got %s, want %s", r, want)
	}
	if hr := s.history().HitRatio(); hr != 0.5 {
		t.Errorf("hit ratio %v, want 0.5", hr)
	}
}

// A long history is checked in pieces, cut where nothing spans the cut; a violation in
// any piece is still found.
func TestCheckLongHistoryInPiecesStillFindsViolations(t *testing.T) {
	s := newSynth()
	for i := range 500 {
		at := 100 * i
		var tags []string
		if i%2 == 0 {
			tags = []string{"t1"}
		}
		s.at(0, at, at+10, putOp("k", fmt.Sprintf("v%d", i), tags...))
		s.at(1, at+12, at+30, getOp("k", fmt.Sprintf("v%d", i)))
		s.at(2, at+20, at+40, getOp("k", fmt.Sprintf("v%d", i))) // concurrent with the one before
		s.at(3, at+50, at+60, missOp("k"))
	}
	expectNoViolation(t, "long history", s)
	if n := len(segments(keyHistories(s.ops, s.base, DefaultUnknownHorizon)[0].ops)); n != 500 {
		t.Errorf("%d pieces, want one per PUT", n)
	}

	s.at(1, 50000, 50001, invTagOp("t1", 1))
	stale := s.at(2, 50010, 50011, getOp("k", "v498")) // tagged t1
	back := s.at(2, 50020, 50021, getOp("k", "v101"))  // untagged, overwritten
	r := expectViolation(t, s, Report{StaleReads: 1, Resurrections: 1, LinearizabilityViolations: 1}, stale, back)
	if !strings.Contains(strings.Join(r.Evidence, "\n"), "in pieces") {
		t.Errorf("evidence does not say the history was checked in pieces: %q", r.Evidence)
	}
}

// A fault leaves many operations without an answer (every INV_TAG through a paused node
// fails for seconds; writes in flight to a killed node are lost): the check still ends,
// and quickly.
func TestCheckManyUnansweredOperationsStayCheckable(t *testing.T) {
	s := newSynth()
	// A value written before the failed invalidations and read after them: explained
	// only if none took effect, which a search over every subset of them would take
	// forever to find.
	s.at(0, -10, -5, putOp("j", "w0", "t1"))
	s.at(0, 2500, 2501, getOp("j", "w0"))
	for i := range 40 {
		s.at(i%8, 10*i, 10*i+2000, failedOp(invTagOp("t1", 0), "invalidation incomplete: not acknowledged by n2"))
		s.at(8+i%8, 10*i, 10*i+2000, unknownOp(putOp("k", fmt.Sprintf("lost%d", i), "t1")))
		s.at(16+i%8, 10*i, 10*i+2000, unknownOp(delOp("k", false)))
	}
	for i := range 400 {
		at := 3000 + 100*i
		s.at(0, at, at+10, putOp("k", fmt.Sprintf("v%d", i), "t1"))
		s.at(1, at+5, at+30, getOp("k", fmt.Sprintf("v%d", i)))
		s.at(2, at+20, at+40, keysByTagOp("t1", "k"))
	}
	start := time.Now()
	r := CheckWith(s.history(), CheckOptions{KeyTimeout: 5 * time.Second})
	if r.Violations() != 0 || r.CheckTimeouts != 0 {
		t.Fatalf("%s\n%s", r, strings.Join(r.Evidence, "\n"))
	}
	t.Logf("%s in %s", r, time.Since(start))
}

// A write the node refused before running it is left out: its value showing up is a
// violation (the node's word is tested, not assumed), while a write whose forward went
// unanswered may have run.
func TestCheckHoldsANodeToItsRefusal(t *testing.T) {
	s := newSynth()
	s.at(0, 0, 10, putOp("k", "v1"))
	s.at(1, 20, 30, failedOp(putOp("k", "v2"), "owner n2 unreachable: call 127.0.0.1:9 kind 1: transport: request not sent"))
	g := s.at(2, 40, 41, getOp("k", "v2"))
	expectViolation(t, s, Report{LinearizabilityViolations: 1}, g)

	s = newSynth()
	s.at(0, 0, 10, putOp("k", "v1"))
	s.at(1, 20, 30, failedOp(putOp("k", "v2"), "owner n2 did not answer, the command may have run: call 127.0.0.1:9 kind 1: transport: peer unreachable: connection lost"))
	s.at(2, 40, 41, getOp("k", "v2"))
	expectNoViolation(t, "a forward that may have run", s)
}
