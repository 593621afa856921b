package pool

import (
	"encoding/json"
	"math"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// learnedState returns a State in which a pool measured fast (3 samples of
// 8 MB/s) and slow (3 of 100 kB/s), then closed.
func learnedState(t *testing.T, fast, slow string) *State {
	t.Helper()
	state := NewState()
	p := startBubblePool(t, Config{MembersKey: "arch", Workers: 2, State: state}, slow, fast)
	setSamples(t, p, fast, 8e6, 8e6, 8e6)
	setSamples(t, p, slow, 1e5, 1e5, 1e5)
	p.Close()
	return state
}

// throughJSON is the snapshot as a new process reads it back.
func throughJSON(t *testing.T, snap Snapshot) Snapshot {
	t.Helper()
	b, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	var out Snapshot
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// A restarted process restores what the last one learned: a pool whose
// provider lists the slow mirror first takes the fast one first, both
// ranked (no trial for either), their samples marked restored; and a pool
// takes back the members it had.
func TestRestoreRanksKnownMirrorsFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fast, slow, unknown := mirrorURL("fast"), mirrorURL("slow"), mirrorURL("unknown")
		snap := throughJSON(t, learnedState(t, fast, slow).Snapshot(time.Now()))
		time.Sleep(time.Hour) // the restart

		state := NewState()
		state.Restore(snap, time.Now())
		p := startBubblePool(t, Config{MembersKey: "edited", Workers: 2, State: state}, slow, unknown, fast)
		if got := members(p); !slices.Equal(got, []string{fast, unknown}) {
			t.Fatalf("members %v, want the known-fast mirror, then the unknown one (the known-slow one last)", got)
		}
		if s := statsOf(t, p, fast); s.count != 3 || !near(s.score, 8e6) {
			t.Fatalf("fast restored as %+v, want 3 samples at 8e6", s)
		}
		from := p.Status().Workers[0].From
		if from["restored"].Samples != 3 || from["local"].Samples != 0 {
			t.Fatalf("sources %+v, want 3 restored samples", from)
		}
		q := startBubblePool(t, Config{MembersKey: "arch", Workers: 2, State: state, Provider: listProvider()})
		if got := members(q); !slices.Equal(got, []string{fast, slow}) {
			t.Fatalf("pool arch took back %v, want the members it had, fast first", got)
		}
	})
}

// Old knowledge fades both ways: a day later, neither the fast nor the
// slow mirror keeps its rank (each gets a new trial), and trust is gone.
func TestRestoreForgetsOldKnowledge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fast, slow := mirrorURL("fast"), mirrorURL("slow")
		old := learnedState(t, fast, slow)
		old.mu.Lock()
		old.mirrors[fast].verified = trustAfter
		old.mu.Unlock()
		snap := throughJSON(t, old.Snapshot(time.Now()))
		if snap.Mirrors[fast].Verified != trustAfter {
			t.Fatalf("trust not saved: %+v", snap.Mirrors[fast])
		}

		time.Sleep(ForgetAfter + time.Minute)
		state := NewState()
		state.Restore(snap, time.Now())
		p := startBubblePool(t, Config{Workers: 2, State: state}, slow, fast)
		for _, m := range []string{fast, slow} {
			if s := statsOf(t, p, m); s.count != 0 {
				t.Errorf("%s kept %d samples from a day ago", m, s.count)
			}
		}
		if got := members(p); !slices.Equal(got, []string{slow, fast}) {
			t.Errorf("members %v, want the provider's order", got)
		}
		state.mu.Lock()
		defer state.mu.Unlock()
		if v := state.mirrors[fast].verified; v != 0 {
			t.Errorf("fast still trusted (%d verified files) after a day", v)
		}
	})
}

// Newer samples weigh more than older ones in a mirror's score: one that
// was fast hours ago and is slow now scores nearer slow.
func TestOlderSamplesWeighLess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := &mirrorStats{samples: make([]sample, 4)}
		ms.push(oneSecondAt(8e6))
		time.Sleep(12 * time.Hour)
		ms.push(oneSecondAt(1e6))
		// Weights 1/4 and 1: (2e6+1e6)/(0.25+1) = 2.4e6.
		if got := ms.score(); !near(got, 2.4e6) {
			t.Fatalf("score %v, want 2.4e6", got)
		}
	})
}

// Cool-downs survive a restart, a liar's with its reason; a mirror still
// cooling down does not join.
func TestRestoreKeepsCooldowns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		liar, good := mirrorURL("liar"), mirrorURL("good")
		old := NewState()
		p := startBubblePool(t, Config{Workers: 2, State: old}, liar, good)
		p.mu.Lock()
		p.evictLiar(liar)
		p.mu.Unlock()
		p.Close()
		snap := throughJSON(t, old.Snapshot(time.Now()))
		if rec := snap.Mirrors[liar]; !rec.Lied || !rec.CooldownUntil.After(time.Now()) {
			t.Fatalf("liar saved as %+v", rec)
		}
		state := NewState()
		state.Restore(snap, time.Now())
		q := startBubblePool(t, Config{Workers: 2, State: state}, liar, good)
		if got := members(q); !slices.Equal(got, []string{good}) {
			t.Fatalf("members %v: the liar came back during its cool-down", got)
		}
	})
}

// Other instances' samples rank a mirror this process never used, are
// replaced by the next reading of their record, and never go into this
// process's own snapshot (they would echo back).
func TestSharedSamplesRankButNeverEcho(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fast, slow := mirrorURL("fast"), mirrorURL("slow")
		theirs := throughJSON(t, learnedState(t, fast, slow).Snapshot(time.Now()))

		state := NewState()
		state.Share("instance-a", theirs, time.Now())
		p := startBubblePool(t, Config{Workers: 1, State: state}, slow, fast)
		if got := members(p); !slices.Equal(got, []string{fast}) {
			t.Fatalf("members %v, want the mirror the other instance found fast", got)
		}
		st := p.Status().Workers[0]
		if !st.Ranked || st.From["shared"].Samples != 3 || !near(st.Score, 8e6) {
			t.Fatalf("status %+v, want ranked by 3 shared samples at 8e6", st)
		}
		if mine := state.Snapshot(time.Now()); len(mine.Mirrors) != 0 {
			t.Fatalf("own snapshot holds %v: shared samples would echo back", mine.Mirrors)
		}
		state.Unshare("instance-a")
		if st := p.Status().Workers[0]; st.Samples != 0 {
			t.Fatalf("%d samples left after the record went away", st.Samples)
		}
	})
}

func TestPriorOrder(t *testing.T) {
	a, b, c, d, e := member{Candidate: Candidate{URL: "a"}}, member{Candidate: Candidate{URL: "b"}}, member{Candidate: Candidate{URL: "c"}}, member{Candidate: Candidate{URL: "d"}}, member{Candidate: Candidate{URL: "e"}}
	for _, tc := range []struct {
		name  string
		known map[string]float64
		want  []member
	}{
		{"nothing known keeps the provider's order", nil, []member{a, b, c, d, e}},
		{"fast first, best first; slow last", map[string]float64{"a": 1e5, "c": 4e6, "e": 8e6}, []member{e, c, b, d, a}},
		{"good never counts as slow", map[string]float64{"a": 11 << 20, "b": 100 << 20}, []member{b, a, c, d, e}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := priorOrder([]member{a, b, c, d, e}, tc.known, 10<<20); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// A member taken back after a restart keeps the probation it had (it had
// come back from a cool-down): the restored ranking does not make it
// resign before it has shown new samples.
func TestRestoredMembersKeepTheirProbation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow, fast := mirrorURL("slow"), mirrorURL("fast")
		at := time.Now().Unix()
		samples := func(rate int64) []SampleRecord {
			return []SampleRecord{{rate, 1, at}, {rate, 1, at}, {rate, 1, at}}
		}
		snap := throughJSON(t, Snapshot{
			Mirrors: map[string]MirrorRecord{slow: {Samples: samples(1e5)}, fast: {Samples: samples(8e6)}},
			Pools:   map[string][]PoolMember{"k": {{URL: slow, Probation: 3}, {URL: fast}}},
		})
		state := NewState()
		state.Restore(snap, time.Now())
		p := startBubblePool(t, Config{MembersKey: "k", Workers: 2, Resign: 1, State: state, Provider: listProvider()})
		if w := workerOf(t, p, slow); w.probation != 3 {
			t.Fatalf("slow back on probation %d, want 3", w.probation)
		}
		p.mu.Lock()
		resigned := p.resignIdle()
		p.mu.Unlock()
		if resigned {
			t.Fatal("a member on probation resigned on restored samples")
		}
	})
}

// Samples no transfer could have made (another instance's record is not
// trusted blindly) are left out, and counters below zero read as zero.
func TestRestoreLeavesOutImpossibleSamples(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := mirrorURL("m")
		at := time.Now().Unix()
		state := NewState()
		state.Restore(Snapshot{Mirrors: map[string]MirrorRecord{m: {
			Samples: []SampleRecord{
				{Bytes: 1 << 20, Seconds: 1, At: at},
				{Bytes: 1 << 20, Seconds: math.NaN(), At: at},
				{Bytes: 1 << 20, Seconds: 1e12, At: at},
				{Bytes: -5, Seconds: 1, At: at},
				{Bytes: 1 << 20, Seconds: -1, At: at},
			},
			FailStreak: -3, Verified: -1,
		}}}, time.Now())
		state.mu.Lock()
		defer state.mu.Unlock()
		ms := state.mirrors[m]
		if ms.count != 1 || ms.failStreak != 0 || ms.verified != 0 || !near(ms.score(), 1<<20) {
			t.Fatalf("restored %d samples (score %v), streak %d, verified %d; want the one possible sample and zeros",
				ms.count, ms.score(), ms.failStreak, ms.verified)
		}
	})
}
