package pool

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// Helpers shared by the pool's tests.

// listProvider always proposes the same mirrors, in order.
func listProvider(urls ...string) ProviderFunc {
	cands := make([]Candidate, len(urls))
	for i, u := range urls {
		cands[i] = Candidate{URL: u}
	}
	return func(context.Context) ([]Candidate, error) { return slices.Clone(cands), nil }
}

// mirrorURL is the base URL of a made-up mirror, already in ParseMirrorURL's
// normal form (so it is also the worker's key). Nothing listens there: the
// tests that use it never send a request.
func mirrorURL(name string) string { return "http://" + name + ".example/repo/" }

// startPool starts a pool with cfg; without a provider it proposes urls. It
// turns sync-file probing off unless cfg asks for it, and closes the pool
// when the test ends.
func startPool(t testing.TB, cfg Config, urls ...string) *Pool {
	t.Helper()
	if cfg.Provider == nil {
		cfg.Provider = listProvider(urls...)
	}
	if cfg.SyncFile == "" {
		cfg.SyncFile = "-"
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.closeNow)
	return p
}

// startBubblePool is startPool inside a synctest bubble: it returns once
// the recruiter has admitted what the provider offered and is idle.
func startBubblePool(t *testing.T, cfg Config, urls ...string) *Pool {
	t.Helper()
	p := startPool(t, cfg, urls...)
	synctest.Wait()
	return p
}

// pollFor polls cond (outside a bubble) every 2 ms until it holds, and
// fails the test if it does not within the bound.
func pollFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// waitPoolSize polls (outside a bubble) until the pool has n workers.
func waitPoolSize(t testing.TB, p *Pool, n int) {
	t.Helper()
	pollFor(t, 10*time.Second, fmt.Sprintf("the pool to have %d workers", n), func() bool { return len(p.Status().Workers) == n })
}

// members returns the mirrors in the pool, in order of joining.
func members(p *Pool) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var keys []string
	for _, w := range p.workers {
		keys = append(keys, w.key)
	}
	return keys
}

func inPool(p *Pool, key string) bool { return slices.Contains(members(p), key) }

// workerOf returns the worker of mirror key.
func workerOf(t testing.TB, p *Pool, key string) *worker {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.workers {
		if w.key == key {
			return w
		}
	}
	t.Fatalf("%s is not in the pool (members %v)", key, p.workers)
	return nil
}

// setSamples puts rates (bytes per second) into the window of key's worker,
// as if it had done one-second transfers at those rates. Nothing else happens: no
// resignation, no hand-over.
func setSamples(t testing.TB, p *Pool, key string, rates ...float64) {
	t.Helper()
	w := workerOf(t, p, key)
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	for _, r := range rates {
		w.stats.push(oneSecondAt(r))
	}
}

// snapshot is a copy of a worker's stats.
type snapshot struct {
	count, failStreak int
	score             float64
	failures          int64
	requests          int64
	samples           []float64
}

func statsOf(t testing.TB, p *Pool, key string) snapshot {
	t.Helper()
	w := workerOf(t, p, key)
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	return snapshot{
		count:      w.stats.count,
		failStreak: w.stats.failStreak,
		score:      w.stats.score(),
		failures:   w.stats.failures,
		requests:   w.stats.requests,
		samples:    rates(w.stats.recent(w.stats.count)),
	}
}

// finish simulates a transfer by key's (idle) worker ending with o: the
// worker is taken, then released through the pool's normal path.
func finish(t testing.TB, p *Pool, key string, o outcome) {
	t.Helper()
	w := workerOf(t, p, key)
	p.mu.Lock()
	if w.load > 0 {
		p.mu.Unlock()
		t.Fatalf("%s is busy", key)
	}
	p.claim(w)
	p.mu.Unlock()
	p.release(w, o)
}

// failedTransfer is a failed transfer; transferAt is a successful transfer of
// one second at a rate (a sample if it moves MinSampleBytes; rankCfg sets 1).
var failedTransfer = outcome{failed: true}

func transferAt(bytesPerSecond float64) outcome {
	return outcome{success: true, bytes: int64(bytesPerSecond), elapsed: time.Second}
}

// recorder is an Observer that remembers what it was told, and when.
type recorder struct {
	mu     sync.Mutex
	joined []event
	left   []event
	failed []event
}

type event struct {
	mirror, reason string
	at             time.Time
}

func (r *recorder) add(l *[]event, e event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.at = time.Now()
	*l = append(*l, e)
}

func (r *recorder) MirrorJoined(m string) { r.add(&r.joined, event{mirror: m}) }
func (r *recorder) MirrorLeft(m, reason string, _ float64) {
	r.add(&r.left, event{mirror: m, reason: reason})
}
func (r *recorder) AttemptFailed(m, reason string) {
	r.add(&r.failed, event{mirror: m, reason: reason})
}
func (r *recorder) RequestDone(string, int, int, int64, time.Duration) {}
func (r *recorder) Scored(string, float64)                             {}
func (r *recorder) Queued(time.Duration)                               {}
func (r *recorder) ProviderFetched(error)                              {}
func (r *recorder) Refetched(int64)                                    {}
func (r *recorder) VerifyFailed([]string, string)                      {}

func (r *recorder) events(l *[]event) []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(*l)
}
