package pool

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// rankCfg is a pool of three where everybody is below GoodThroughput, any
// transfer is a sample, and two samples make a worker ranked.
func rankCfg() Config {
	return Config{
		Workers:        3,
		Resign:         1,
		TrialSamples:   2,
		GoodThroughput: 1e12,
		MinSampleBytes: 1,
		EvictAfter:     100,
	}
}

// pick takes an idle worker as a request would, and returns its mirror.
func pickMirror(t *testing.T, p *Pool) string {
	t.Helper()
	w, err := p.acquire(t.Context(), want{exclude: map[string]bool{}})
	if err != nil {
		t.Fatal(err)
	}
	return w.key
}

// A worker on trial is dispatched first, whatever it has shown so far;
// among ranked workers the best is.
func TestPickIdlePrefersTrialThenBest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c := mirrorURL("a"), mirrorURL("b"), mirrorURL("c")
		cfg := rankCfg()
		cfg.Resign = -1
		p := startBubblePool(t, cfg, a, b, c)
		setSamples(t, p, a, 500, 500)
		setSamples(t, p, b, 9000, 9000)
		setSamples(t, p, c, 1) // on trial, and the slowest so far
		if got := pickMirror(t, p); got != c {
			t.Fatalf("picked %s, want %s, the worker on trial", got, c)
		}
		p.release(workerOf(t, p, c), outcome{})
		setSamples(t, p, c, 1) // now ranked
		if got := pickMirror(t, p); got != b {
			t.Fatalf("picked %s, want %s, the best ranked", got, b)
		}
		if got := pickMirror(t, p); got != a {
			t.Fatalf("picked %s, want %s, the best idle", got, a)
		}
	})
}

// An index (a file that changes in place, which every client waits for)
// goes to the best ranked fresh worker, not to one on trial.
func TestPickIndexSkipsTrial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		cfg := rankCfg()
		cfg.Resign = -1
		p := startBubblePool(t, cfg, a, b)
		setSamples(t, p, a, 9000, 9000)
		setSamples(t, p, b, 1) // on trial
		w, err := p.acquire(t.Context(), want{exclude: map[string]bool{}, fresh: true})
		if err != nil {
			t.Fatal(err)
		}
		if w.key != a {
			t.Fatalf("picked %s for an index, want %s, the best ranked", w.key, a)
		}
	})
}

// The resignation rule, condition by condition.
func TestShouldResign(t *testing.T) {
	type spec struct {
		samples []float64
	}
	ranked := func(rate float64) spec { return spec{[]float64{rate, rate}} }
	trial := func(rates ...float64) spec { return spec{rates} }
	tests := []struct {
		name   string
		cfg    func(*Config)
		pool   []spec
		target int
		want   bool
	}{
		{
			name: "bottom ranked below good resigns",
			pool: []spec{ranked(300), ranked(200), ranked(100)}, target: 2, want: true,
		},
		{
			name: "not bottom",
			pool: []spec{ranked(300), ranked(200), ranked(100)}, target: 1, want: false,
		},
		{
			name: "second from bottom with Resign 2",
			cfg:  func(c *Config) { c.Workers, c.Resign = 4, 2 },
			pool: []spec{ranked(400), ranked(300), ranked(200), ranked(100)}, target: 2, want: true,
		},
		{
			name: "third from bottom with Resign 2",
			cfg:  func(c *Config) { c.Workers, c.Resign = 4, 2 },
			pool: []spec{ranked(400), ranked(300), ranked(200), ranked(100)}, target: 1, want: false,
		},
		{
			name: "pool not at full strength",
			cfg:  func(c *Config) { c.Workers = 4 },
			pool: []spec{ranked(300), ranked(200), ranked(100)}, target: 2, want: false,
		},
		{
			name: "on trial, however slow",
			pool: []spec{ranked(300), ranked(200), trial(0)}, target: 2, want: false,
		},
		{
			name: "at GoodThroughput: exempt",
			cfg:  func(c *Config) { c.GoodThroughput = 100 },
			pool: []spec{ranked(300), ranked(200), ranked(100)}, target: 2, want: false,
		},
		{
			name: "just below GoodThroughput",
			cfg:  func(c *Config) { c.GoodThroughput = 100.5 },
			pool: []spec{ranked(300), ranked(200), ranked(100)}, target: 2, want: true,
		},
		{
			name: "Resign < 0 disables",
			cfg:  func(c *Config) { c.Resign = -1 },
			pool: []spec{ranked(300), ranked(200), ranked(100)}, target: 2, want: false,
		},
		{
			// ranked*2 >= Workers holds, ranked > Resign does not.
			name: "no more ranked than Resign",
			cfg:  func(c *Config) { c.Workers, c.Resign = 4, 2 },
			pool: []spec{ranked(300), ranked(100), trial(500), trial(500)}, target: 1, want: false,
		},
		{
			name: "one more ranked than Resign",
			cfg:  func(c *Config) { c.Workers, c.Resign = 4, 2 },
			pool: []spec{ranked(300), ranked(200), ranked(100), trial(500)}, target: 2, want: true,
		},
		{
			// ranked > Resign holds, ranked*2 >= Workers does not.
			name: "fewer than half ranked",
			cfg:  func(c *Config) { c.Workers = 6 },
			pool: []spec{ranked(300), ranked(100), trial(500), trial(500), trial(500), trial(500)}, target: 1, want: false,
		},
		{
			name: "half ranked",
			cfg:  func(c *Config) { c.Workers = 6 },
			pool: []spec{ranked(300), ranked(200), ranked(100), trial(500), trial(500), trial(500)}, target: 2, want: true,
		},
		{
			// What a worker on trial has shown so far counts in the
			// ranking, though it cannot resign itself.
			name: "a slower worker on trial is below",
			pool: []spec{ranked(300), ranked(100), trial(5)}, target: 1, want: false,
		},
	}
	// Each case also runs with a peer in the pool: a peer counts in no
	// rule about mirrors, so it changes nothing.
	for _, tt := range tests {
		for _, withPeer := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/peer=%v", tt.name, withPeer), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					cfg := rankCfg()
					if tt.cfg != nil {
						tt.cfg(&cfg)
					}
					var urls []string
					for i := range tt.pool {
						urls = append(urls, mirrorURL(fmt.Sprint("m", i)))
					}
					p := startBubblePool(t, cfg, urls...)
					for i, s := range tt.pool {
						setSamples(t, p, urls[i], s.samples...)
					}
					if withPeer {
						p.SetPeers([]Peer{{URL: "http://peer.lan/repo/"}})
					}
					w := workerOf(t, p, urls[tt.target])
					p.mu.Lock()
					sts := p.standings()
					got := shouldResign(sts, slices.IndexFunc(sts, func(s standing) bool { return s.w == w }), p.resignRule())
					p.mu.Unlock()
					if got != tt.want {
						t.Fatalf("shouldResign(%s) = %v, want %v", urls[tt.target], got, tt.want)
					}
				})
			})
		}
	}
}

// A worker that the sample of its own transfer puts at the bottom resigns
// when it is released; until it is ranked it stays, however bad. The
// recruiter replaces it.
func TestResignOnRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c, d := mirrorURL("a"), mirrorURL("b"), mirrorURL("c"), mirrorURL("d")
		obs := &recorder{}
		cfg := rankCfg()
		cfg.Observer = obs
		p := startBubblePool(t, cfg, a, b, c, d)
		if got := members(p); !slices.Equal(got, []string{a, b, c}) {
			t.Fatalf("members %v", got)
		}
		setSamples(t, p, a, 300, 300)
		setSamples(t, p, b, 200, 200)
		finish(t, p, c, transferAt(10))
		if !inPool(p, c) {
			t.Fatal("a worker on trial resigned")
		}
		finish(t, p, c, transferAt(10))
		if inPool(p, c) {
			t.Fatal("the bottom ranked worker did not resign on release")
		}
		st := p.Status()
		if len(st.Rotations) != 1 || st.Rotations[0].Mirror != c || st.Rotations[0].Reason != ReasonResigned {
			t.Fatalf("rotations %+v, want %s resigned", st.Rotations, c)
		}
		if st.Rotations[0].Score != 10 {
			t.Fatalf("rotation score %v, want 10", st.Rotations[0].Score)
		}
		synctest.Wait()
		if got := members(p); !slices.Equal(got, []string{a, b, d}) {
			t.Fatalf("members after the replacement %v, want [a b d]", got)
		}
		if left := obs.events(&obs.left); len(left) != 1 || left[0].mirror != c || left[0].reason != ReasonResigned {
			t.Fatalf("observer told %+v", left)
		}
	})
}

// A slow worker that is never picked still resigns: when another worker is
// released, an idle bottom worker leaves.
func TestResignIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c := mirrorURL("a"), mirrorURL("b"), mirrorURL("c")
		p := startBubblePool(t, rankCfg(), a, b, c)
		setSamples(t, p, a, 300, 300)
		setSamples(t, p, b, 200, 200)
		setSamples(t, p, c, 10, 10)
		finish(t, p, a, transferAt(300))
		if inPool(p, c) {
			t.Fatal("the idle bottom worker did not resign when another worker was released")
		}
		if !inPool(p, a) || !inPool(p, b) {
			t.Fatalf("members %v", members(p))
		}
	})
}

// A busy bottom worker is not made to resign by another's release; it
// resigns at its own release.
func TestResignIdleSkipsBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c := mirrorURL("a"), mirrorURL("b"), mirrorURL("c")
		p := startBubblePool(t, rankCfg(), a, b, c)
		setSamples(t, p, a, 300, 300)
		setSamples(t, p, b, 200, 200)
		setSamples(t, p, c, 10, 10)
		wc := workerOf(t, p, c)
		p.mu.Lock()
		p.claim(wc)
		p.mu.Unlock()
		finish(t, p, a, transferAt(300))
		if !inPool(p, c) {
			t.Fatal("a busy worker was removed")
		}
		p.release(wc, transferAt(10))
		if inPool(p, c) {
			t.Fatal("the bottom worker did not resign at its release")
		}
	})
}

// A mirror at or above GoodThroughput never resigns, even at the bottom.
func TestGoodThroughputExemption(t *testing.T) {
	for _, good := range []float64{1000, 2000} {
		t.Run(fmt.Sprint("good=", good), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a, b, c := mirrorURL("a"), mirrorURL("b"), mirrorURL("c")
				cfg := rankCfg()
				cfg.GoodThroughput = good
				p := startBubblePool(t, cfg, a, b, c)
				setSamples(t, p, a, 5000, 5000)
				setSamples(t, p, b, 4000, 4000)
				setSamples(t, p, c, 1500)
				finish(t, p, c, transferAt(1500))
				stays := good <= 1500
				if inPool(p, c) != stays {
					t.Fatalf("bottom worker at 1500 B/s with GoodThroughput %v: in pool %v, want %v",
						good, inPool(p, c), stays)
				}
			})
		})
	}
}

func TestResignDisabled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c := mirrorURL("a"), mirrorURL("b"), mirrorURL("c")
		cfg := rankCfg()
		cfg.Resign = -1
		p := startBubblePool(t, cfg, a, b, c)
		setSamples(t, p, a, 300, 300)
		setSamples(t, p, b, 200, 200)
		for range 10 {
			finish(t, p, c, transferAt(1))
		}
		if !inPool(p, c) || len(p.Status().Rotations) != 0 {
			t.Fatalf("a worker resigned with Resign -1: %+v", p.Status().Rotations)
		}
	})
}

// A mirror that never finishes a transfer still gets ranked (failures are
// samples) and resigns.
func TestFailingMirrorGetsRankedAndResigns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c := mirrorURL("a"), mirrorURL("b"), mirrorURL("c")
		p := startBubblePool(t, rankCfg(), a, b, c)
		setSamples(t, p, a, 300, 300)
		setSamples(t, p, b, 200, 200)
		finish(t, p, c, failedTransfer)
		finish(t, p, c, failedTransfer)
		if inPool(p, c) {
			t.Fatal("a mirror ranked by its failures did not resign")
		}
	})
}

// A LAN mirror whose transfers are all small and fast still gets ranked,
// with its real throughput, thanks to coalescing.
func TestSmallTransfersGetRanked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := mirrorURL("a")
		cfg := rankCfg()
		cfg.Workers = 1
		cfg.MinSampleBytes = 128 << 10
		p := startBubblePool(t, cfg, a)
		for range 64 { // 64 transfers of 4 KiB in 100 µs each: 2 samples
			finish(t, p, a, outcome{success: true, bytes: 4 << 10, elapsed: 100 * time.Microsecond})
		}
		ws := p.Status().Workers[0]
		if !ws.Ranked || ws.Samples != 2 {
			t.Fatalf("after 256 KiB of small transfers: ranked %v with %d samples, want ranked with 2", ws.Ranked, ws.Samples)
		}
		if want := float64(4<<10) / 100e-6; !near(ws.Score, want) {
			t.Fatalf("score %v, want %v", ws.Score, want)
		}
	})
}

// EvictAfter consecutive failures evict a mirror however fast it is; fewer,
// or interrupted by a success, do not.
func TestEvictAfterConsecutiveFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		cfg := rankCfg()
		cfg.Workers = 2
		cfg.EvictAfter = 3
		cfg.GoodThroughput = 1 << 20
		cfg.Window = 20
		p := startBubblePool(t, cfg, a, b)
		setSamples(t, p, a, slices.Repeat([]float64{1e9}, 15)...)
		setSamples(t, p, b, 1e9, 1e9)
		finish(t, p, a, failedTransfer)
		finish(t, p, a, failedTransfer)
		finish(t, p, a, transferAt(1e9))
		finish(t, p, a, failedTransfer)
		finish(t, p, a, failedTransfer)
		if !inPool(p, a) {
			t.Fatal("evicted after failures that were not consecutive")
		}
		if s := statsOf(t, p, a); s.failStreak != 2 || s.score < cfg.GoodThroughput {
			t.Fatalf("stats %+v", s)
		}
		finish(t, p, a, failedTransfer)
		if inPool(p, a) {
			t.Fatal("not evicted after 3 consecutive failures")
		}
		rot := p.Status().Rotations
		if len(rot) != 1 || rot[0].Mirror != a || rot[0].Reason != ReasonEvicted {
			t.Fatalf("rotations %+v, want %s evicted", rot, a)
		}
	})
}

// penalise counts a failure against the mirrors that said 404 for a file
// another mirror had, and evicts a mirror whose streak that completes.
func TestPenalise(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		cfg := rankCfg()
		cfg.Workers = 2
		cfg.Resign = -1
		cfg.EvictAfter = 2
		p := startBubblePool(t, cfg, a, b)
		setSamples(t, p, a, 1000)
		p.penalise([]string{a, mirrorURL("gone")})
		s := statsOf(t, p, a)
		if s.failures != 1 || s.failStreak != 1 || !slices.Equal(s.samples, []float64{1000, 0}) {
			t.Fatalf("after a penalty: %+v, want a zero sample and a failure", s)
		}
		p.penalise([]string{a})
		if inPool(p, a) {
			t.Fatal("not evicted after EvictAfter penalties")
		}
		if rot := p.Status().Rotations; len(rot) != 1 || rot[0].Reason != ReasonEvicted {
			t.Fatalf("rotations %+v", rot)
		}
	})
}

// A penalty that puts a mirror at the bottom makes it leave; the reason
// recorded should be the one leaveReason gives (resigned), not "evicted".
func TestPenaliseReportsTheRealReason(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c := mirrorURL("a"), mirrorURL("b"), mirrorURL("c")
		p := startBubblePool(t, rankCfg(), a, b, c)
		setSamples(t, p, a, 300, 300)
		setSamples(t, p, b, 200, 200)
		setSamples(t, p, c, 250)
		p.penalise([]string{c}) // (250+0)/2: now ranked and at the bottom
		if inPool(p, c) {
			t.Fatal("the penalised bottom worker stayed")
		}
		rot := p.Status().Rotations
		if len(rot) != 1 || rot[0].Reason != ReasonResigned {
			t.Fatalf("rotations %+v, want %s resigned (failStreak 1 < EvictAfter)", rot, c)
		}
	})
}

// A penalty is one failure, not one more request.
func TestPenaliseDoesNotCountARequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		cfg := rankCfg()
		cfg.Workers = 2
		p := startBubblePool(t, cfg, a, b)
		finish(t, p, a, outcome{}) // the 404
		p.penalise([]string{a})
		if s := statsOf(t, p, a); s.requests != 1 {
			t.Fatalf("requests = %d after one request, want 1", s.requests)
		}
	})
}

// An evicted mirror stays out for Cooldown, however often the provider
// proposes it, then comes back with fresh stats.
func TestCooldown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		obs := &recorder{}
		cfg := rankCfg()
		cfg.Workers = 2
		cfg.EvictAfter = 1
		cfg.Cooldown = 10 * time.Minute
		cfg.Observer = obs
		var calls atomic.Int32
		cfg.Provider = ProviderFunc(func(context.Context) ([]Candidate, error) {
			calls.Add(1)
			return []Candidate{{URL: a}, {URL: b}}, nil
		})
		p := startBubblePool(t, cfg)
		setSamples(t, p, a, 1e6)
		finish(t, p, a, failedTransfer)
		evicted := time.Now()
		if inPool(p, a) {
			t.Fatal("not evicted")
		}
		time.Sleep(cfg.Cooldown - time.Second)
		if inPool(p, a) {
			t.Fatalf("back %v after its eviction, before its cool-down of %v", time.Since(evicted), cfg.Cooldown)
		}
		if n := calls.Load(); n < 5 {
			t.Fatalf("the provider was asked %d times during the cool-down", n)
		}
		time.Sleep(time.Second + maxBackoff)
		if !inPool(p, a) {
			t.Fatalf("not back %v after its eviction", time.Since(evicted))
		}
		joined := obs.events(&obs.joined)
		back := joined[len(joined)-1]
		if back.mirror != a || back.at.Sub(evicted) < cfg.Cooldown {
			t.Fatalf("%s joined again %v after its eviction", back.mirror, back.at.Sub(evicted))
		}
		if s := statsOf(t, p, a); s.count != 0 || s.failures != 0 || s.failStreak != 0 {
			t.Fatalf("back with old stats %+v, want a fresh trial", s)
		}
	})
}

// A resigned mirror cools down too, while the provider has fresher
// mirrors to offer.
func TestCooldownAfterResignation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c, d := mirrorURL("a"), mirrorURL("b"), mirrorURL("c"), mirrorURL("d")
		cfg := rankCfg()
		cfg.Cooldown = time.Hour
		var offerD atomic.Bool
		cfg.Provider = ProviderFunc(func(context.Context) ([]Candidate, error) {
			if offerD.Load() {
				return []Candidate{{URL: a}, {URL: b}, {URL: c}, {URL: d}}, nil
			}
			return []Candidate{{URL: a}, {URL: b}, {URL: c}}, nil
		})
		p := startBubblePool(t, cfg)
		setSamples(t, p, a, 300, 300)
		setSamples(t, p, b, 200, 200)
		setSamples(t, p, c, 10)
		offerD.Store(true)
		finish(t, p, c, transferAt(10))
		synctest.Wait()
		if inPool(p, c) || !inPool(p, d) {
			t.Fatalf("members %v, want d in c's place", members(p))
		}
		time.Sleep(30 * time.Minute)
		if inPool(p, c) {
			t.Fatalf("members %v half-way through c's cool-down", members(p))
		}
		// After its cool-down c is a fresh candidate again, with a fresh
		// trial, when the pool has room.
		time.Sleep(30 * time.Minute)
		setSamples(t, p, d, 5, 5)
		finish(t, p, d, transferAt(5))
		synctest.Wait()
		if !inPool(p, c) {
			t.Fatalf("members %v after c's cool-down and d's resignation", members(p))
		}
		if s := statsOf(t, p, c); s.count != 0 {
			t.Fatalf("c back with %d old samples, want a fresh trial", s.count)
		}
	})
}

// A pool the provider cannot fill takes back the mirror that resigned
// longest ago, with what it knew of it, and that mirror may not resign
// again before it has shown a trial's worth of new samples.
func TestResignedMirrorReadmittedWhenNothingFresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c := mirrorURL("a"), mirrorURL("b"), mirrorURL("c")
		cfg := rankCfg()
		cfg.Cooldown = time.Hour
		p := startBubblePool(t, cfg, a, b, c)
		setSamples(t, p, a, 300, 300)
		setSamples(t, p, b, 200, 200)
		setSamples(t, p, c, 10)
		finish(t, p, c, transferAt(10))
		synctest.Wait()
		if !inPool(p, c) {
			t.Fatalf("members %v: c was not taken back into a pool short of workers", members(p))
		}
		s := statsOf(t, p, c)
		if s.count != 2 || !near(s.score, 10) {
			t.Fatalf("c came back with %+v, want its two samples of 10 B/s", s)
		}
		finish(t, p, c, transferAt(10)) // one new sample: still on probation
		if !inPool(p, c) {
			t.Fatal("c resigned again before a trial's worth of new samples")
		}
		finish(t, p, c, transferAt(10)) // two: slow still, it goes
		synctest.Wait()
		rot := p.Status().Rotations
		if n := len(rot); n != 2 || rot[1].Mirror != c || rot[1].Reason != ReasonResigned {
			t.Fatalf("rotations %+v, want c resigning twice", rot)
		}
	})
}

// The peek deadline is the configured floor until the pool has measured
// its mirrors, then long enough for a mirror a third as fast as the best.
func TestPeekDeadline(t *testing.T) {
	ranked := func(scores ...float64) []standing {
		var sts []standing
		for _, s := range scores {
			sts = append(sts, standing{score: s, samples: 3})
		}
		return sts
	}
	for _, tc := range []struct {
		name string
		sts  []standing
		n    int64
		want time.Duration
	}{
		{"nothing ranked", []standing{{score: 1 << 10, samples: 1}}, 1 << 20, time.Second},
		{"fast mirrors", ranked(10<<20, 1<<20), 1 << 20, time.Second},
		{"all slow", ranked(256<<10, 128<<10), 1 << 20, 12 * time.Second},
		{"small file", ranked(256 << 10), 64 << 10, time.Second},
	} {
		if got := peekDeadline(tc.sts, 3, tc.n, time.Second); got != tc.want {
			t.Errorf("%s: peekDeadline = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A peek past its deadline fails only if another mirror is known to be
// much faster than this one is being.
func TestFasterThan(t *testing.T) {
	sts := []standing{
		{key: "self", score: 50e6, samples: 5},
		{key: "fast", score: 10e6, samples: 1},
		{key: "new", score: 0, samples: 0},
	}
	for _, tc := range []struct {
		rate float64
		want bool
	}{
		{1e6, true},  // "fast" has shown ten times that
		{7e6, false}, // within 1.5x of "fast"; its own score does not count
		{100e3, true},
	} {
		if got := fasterThan(sts, "self", tc.rate); got != tc.want {
			t.Errorf("fasterThan(rate %.0f) = %v, want %v", tc.rate, got, tc.want)
		}
	}
}

// A worker's trial ends after a bounded number of transfers whatever they
// were: one that only ever answers tiny bodies (which make no sample) is
// ranked, at its score, and no longer first in line for new requests.
func TestTrialEndsAfterBoundedTransfers(t *testing.T) {
	const trial = 3
	tiny := standing{key: "tiny", samples: 0, served: trial*trialRequests - 1}
	if tiny.ranked(trial) {
		t.Fatal("ranked before its trial's transfers are up")
	}
	tiny.served++
	if !tiny.ranked(trial) {
		t.Fatalf("still on trial after %d transfers", tiny.served)
	}
	good := standing{key: "good", samples: trial, score: 1 << 20}
	tiny.w, good.w = &worker{key: "tiny"}, &worker{key: "good"}
	if got := pick([]standing{tiny, good}, want{}, trial); got != good.w {
		t.Fatalf("picked %s, want the ranked good mirror over a finished trial of nothing", got.key)
	}
}

// A pool beyond its size (a surge) sheds a ranked mirror only when a full
// pool of measured mirrors beat it: mirrors that joined and have shown
// nothing yet are unknown, not faster, and good mirrors do not leave for
// them (the first surge rule made the fastest resign after a split that
// ended before the new mirrors made a sample).
func TestShouldResignShedsOnlyWhatAFullPoolBeats(t *testing.T) {
	r := resignRule{workers: 4, resign: 2, trial: 1, good: 10 << 20}
	mk := func(scores ...float64) []standing {
		var sts []standing
		for i, sc := range scores {
			s := standing{w: &worker{key: fmt.Sprint("m", i)}, key: fmt.Sprint("m", i), score: sc}
			if sc >= 0 {
				s.samples = 1
			} else { // joined in the surge, not measured yet
				s.score = 0
			}
			sts = append(sts, s)
		}
		return sts
	}
	for _, tc := range []struct {
		name   string
		sts    []standing
		target int
		want   bool
	}{
		{"the fastest, next to unmeasured newcomers", mk(40<<20, 30<<20, 20<<20, 1<<20, -1, -1, -1, -1), 0, false},
		{"a slow one, next to unmeasured newcomers: the usual rule", mk(40<<20, 30<<20, 20<<20, 1<<20, -1, -1, -1, -1), 3, true},
		{"a good one that four measured mirrors beat", mk(40<<20, 30<<20, 20<<20, 15<<20, 12<<20, -1), 4, true},
		{"a good one that three measured mirrors beat", mk(40<<20, 30<<20, 20<<20, 12<<20, -1, -1), 3, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := shouldResign(tc.sts, tc.target, r); got != tc.want {
				t.Fatalf("shouldResign = %v, want %v", got, tc.want)
			}
		})
	}
}
