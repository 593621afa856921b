package pool

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// callLog is a provider scripted call by call, which remembers when it was
// called (in the bubble's fake time).
type callLog struct {
	mu     sync.Mutex
	start  time.Time
	calls  []time.Duration
	answer func(call int) ([]Candidate, error)
}

func newCallLog(answer func(call int) ([]Candidate, error)) *callLog {
	return &callLog{start: time.Now(), answer: answer}
}

func (c *callLog) Candidates(context.Context) ([]Candidate, error) {
	c.mu.Lock()
	n := len(c.calls)
	c.calls = append(c.calls, time.Since(c.start))
	c.mu.Unlock()
	return c.answer(n)
}

func (c *callLog) times() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// distinct returns the instants of the calls, without repeats.
func (c *callLog) distinct() []time.Duration { return slices.Compact(c.times()) }

func seconds(s ...int) []time.Duration {
	var d []time.Duration
	for _, v := range s {
		d = append(d, time.Duration(v)*time.Second)
	}
	return d
}

// The recruiter skips duplicates (also spelled differently) and invalid
// URLs, and fills the pool up to Workers.
func TestRecruitSkipsDuplicatesAndInvalid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		p := startBubblePool(t, Config{Workers: 4},
			a,
			"http://a.example/repo", // a, without its trailing slash
			"ftp://c.example/repo/",
			"http://user:secret@d.example/repo/",
			"http://e.example/repo/?x=1",
			"e.example/repo/",
			"http://%zz/",
			"",
			a,
			b,
		)
		if got := members(p); !slices.Equal(got, []string{a, b}) {
			t.Fatalf("members %v, want [%s %s]", got, a, b)
		}
	})
}

// The recruiter stops at Workers, and the mirrors it did not take can join
// later.
func TestRecruitStopsAtWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c := mirrorURL("a"), mirrorURL("b"), mirrorURL("c")
		cfg := rankCfg()
		cfg.Workers = 2
		cfg.EvictAfter = 1
		p := startBubblePool(t, cfg, a, b, c)
		if got := members(p); !slices.Equal(got, []string{a, b}) {
			t.Fatalf("members %v", got)
		}
		finish(t, p, a, failedTransfer)
		synctest.Wait()
		if got := members(p); !slices.Equal(got, []string{b, c}) {
			t.Fatalf("members after a left %v, want [b c] at once", got)
		}
	})
}

// Provider errors are retried with exponential backoff from minBackoff to
// maxBackoff; ProviderStatus records them; once the provider works again the
// backoff starts over.
func TestRecruitBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := mirrorURL("a")
		const failing = 11
		prov := newCallLog(func(call int) ([]Candidate, error) {
			if call < failing {
				return nil, errors.New("mirror list unreachable")
			}
			return []Candidate{{URL: a}}, nil
		})
		p := startBubblePool(t, Config{Workers: 2, Provider: prov})
		time.Sleep(20 * time.Minute)
		got := prov.distinct()
		// 0, then +1s, +2s, +4s, ... capped at +2m; after the call that
		// worked, the provider has nothing new and the backoff restarts
		// from 1s.
		want := seconds(0, 1, 3, 7, 15, 31, 63, 127, 247, 367, 487, 607, 608, 610, 614, 622, 638, 670, 734, 854, 974, 1094)
		if !slices.Equal(got, want) {
			t.Fatalf("provider called at %v,\nwant %v", got, want)
		}
		if got := members(p); !slices.Equal(got, []string{a}) {
			t.Fatalf("members %v", got)
		}
		st := p.Status().Provider
		if st.LastError != "mirror list unreachable" {
			t.Fatalf("LastError %q", st.LastError)
		}
		start := prov.start
		if st.ErrorTime.Sub(start) != 487*time.Second || st.LastFetch.Sub(start) != 1094*time.Second {
			t.Fatalf("ErrorTime %v LastFetch %v after the start", st.ErrorTime.Sub(start), st.LastFetch.Sub(start))
		}
	})
}

// While the provider fails, the pool goes on serving with the mirrors it
// has.
func TestProviderOutageKeepsThePool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := mirrorURL("a")
		prov := newCallLog(func(call int) ([]Candidate, error) {
			if call == 0 {
				return []Candidate{{URL: a}}, nil
			}
			return nil, errors.New("provider down")
		})
		p := startBubblePool(t, Config{Workers: 3, Provider: prov})
		for range 5 {
			time.Sleep(time.Minute)
			w, err := p.acquire(t.Context(), want{exclude: map[string]bool{}})
			if err != nil || w.key != a {
				t.Fatalf("acquire during the outage: %v, %v", w, err)
			}
			p.release(w, transferAt(1e6))
		}
		st := p.Status()
		if len(st.Workers) != 1 || st.Provider.LastError != "provider down" || st.Provider.LastFetch != prov.start {
			t.Fatalf("status %+v", st)
		}
	})
}

// A provider that proposes one mirror a call, like a shell command, is
// asked again within the same round when it proposed a duplicate: the pool
// fills up at once, without waiting for a backoff.
func TestRecruitAsksASingleCandidateProviderAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		script := []string{a, a, b}
		prov := newCallLog(func(call int) ([]Candidate, error) {
			return []Candidate{{URL: script[min(call, len(script)-1)]}}, nil
		})
		p := startBubblePool(t, Config{Workers: 2, Provider: prov})
		if got := members(p); !slices.Equal(got, []string{a, b}) {
			t.Fatalf("members %v, want [a b] before any time passed", got)
		}
		if got := prov.times(); !slices.Equal(got, seconds(0, 0, 0)) {
			t.Fatalf("provider called at %v", got)
		}
	})
}

// A mirror that was cooling down, proposed by a single-candidate provider,
// also makes the recruiter ask again.
func TestRecruitAsksAgainAfterACoolingMirror(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c := mirrorURL("a"), mirrorURL("b"), mirrorURL("c")
		script := []string{a, b, a, c}
		prov := newCallLog(func(call int) ([]Candidate, error) {
			return []Candidate{{URL: script[min(call, len(script)-1)]}}, nil
		})
		cfg := rankCfg()
		cfg.Workers, cfg.EvictAfter, cfg.Provider = 2, 1, prov
		p := startBubblePool(t, cfg)
		finish(t, p, a, failedTransfer)
		synctest.Wait()
		if got := members(p); !slices.Equal(got, []string{b, c}) {
			t.Fatalf("members %v, want [b c] before any time passed", got)
		}
	})
}

// A list provider with nothing new is not asked again in the same round.
func TestRecruitDoesNotRepeatAList(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		prov := newCallLog(func(int) ([]Candidate, error) {
			return []Candidate{{URL: a}, {URL: b}}, nil
		})
		startBubblePool(t, Config{Workers: 3, Provider: prov})
		time.Sleep(2 * time.Second)
		// At 0: the first call fills two workers, the second has nothing
		// new, and so has the next round's. At 1s, one call: nothing new.
		if got := prov.times(); !slices.Equal(got, seconds(0, 0, 0, 1)) {
			t.Fatalf("provider called at %v", got)
		}
	})
}

// After a reload, the new pool takes back the previous pool's mirrors and
// their stats from the State before asking the provider.
func TestStateCarriesMembersAcrossPools(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		state := NewState()
		p := startBubblePool(t, Config{Workers: 2, State: state}, a, b)
		setSamples(t, p, b, 1234)
		p.Close()
		q := startBubblePool(t, Config{Workers: 2, State: state,
			Provider: ProviderFunc(func(context.Context) ([]Candidate, error) {
				return nil, errors.New("no provider after the reload")
			})})
		if got := members(q); !slices.Equal(got, []string{a, b}) {
			t.Fatalf("members %v", got)
		}
		if s := statsOf(t, q, b); s.count != 1 || s.score != 1234 {
			t.Fatalf("stats lost across the reload: %+v", s)
		}
	})
}

func TestNewNeedsAProvider(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without a provider succeeded")
	}
}

// Close stops the recruiter even while it backs off, and is idempotent.
func TestCloseStopsTheRecruiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		p := startBubblePool(t, Config{Provider: ProviderFunc(func(context.Context) ([]Candidate, error) {
			calls.Add(1)
			return nil, errors.New("down")
		})})
		p.Close()
		p.Close()
		n := calls.Load()
		time.Sleep(time.Hour)
		if got := calls.Load(); got != n {
			t.Fatalf("the provider was called %d times after Close", got-n)
		}
	})
}

// The same mirror spelled with another host case or its default port is a
// duplicate too.
func TestRecruitSkipsDuplicateSpellings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := startBubblePool(t, Config{Workers: 4},
			"http://m.example/repo/", "http://M.EXAMPLE/repo/", "http://m.example:80/repo/", "https://m.example:443/repo/", "https://m.example/repo/")
		if got := members(p); len(got) != 2 {
			t.Fatalf("members %v, want http://m.example/repo/ and https://m.example/repo/ once each", got)
		}
	})
}

// Pools that share a State share what they learn of each mirror, and each
// takes back only the members of its own key.
func TestStateIsPerMirrorAndMembersPerPool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		state := NewState()
		p := startBubblePool(t, Config{MembersKey: "one", Workers: 1, State: state}, a)
		setSamples(t, p, a, 1234)
		q := startBubblePool(t, Config{MembersKey: "two", Workers: 2, State: state}, b, a)
		if got := members(q); !slices.Equal(got, []string{b, a}) {
			t.Fatalf("members %v, want the provider's order (not the other pool's members)", got)
		}
		if s := statsOf(t, q, a); s.count != 1 || s.score != 1234 {
			t.Fatalf("what the other pool learned of %s is not shared: %+v", a, s)
		}
	})
}
