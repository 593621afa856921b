// Package pool is refractor's algorithm: a pool of workers, each bound to one
// mirror, that serve requests one at a time, rank themselves by the
// throughput they deliver, and resign when they are among the slowest, so
// that the provider can replace them with fresh mirrors. It knows nothing of
// Caddy.
package pool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Pool is a self-optimising, rotating set of mirror workers. Create it with
// New and stop it with Close.
type Pool struct {
	cfg    Config
	client *http.Client
	log    *zap.Logger
	obs    Observer
	state  *State

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wake   chan struct{} // asks the recruiter to look for mirrors
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	workers   []*worker // in order of joining
	waiters   []*waiter // FIFO
	rotations []Rotation
	provider  ProviderStatus
	movables  map[*movable]struct{} // transfers a faster worker may finish

	peekBuffers [peekClasses]sync.Pool // of *[]byte, by size class (peekClass)
}

// worker is one slot of the pool, bound to a mirror. It serves one transfer
// at a time.
type worker struct {
	mirror *url.URL
	key    string
	stats  *mirrorStats // guarded by State.mu
	joined time.Time
	busy   bool
	// lastSync is when the mirror last synchronised, if known (from the
	// provider or the mirror's sync file). Guarded by Pool.mu.
	lastSync time.Time
	// probation is how many new samples a readmitted worker must add
	// before it may resign again. Guarded by Pool.mu.
	probation int
}

// waiter is a request waiting for a worker.
type waiter struct {
	ready   chan *worker // buffered: the worker handed over
	exclude map[string]bool
	fresh   bool // only the freshest mirrors may serve it
	since   time.Time
}

// Rotation records a mirror leaving the pool.
type Rotation struct {
	Mirror string    `json:"mirror"`
	Reason string    `json:"reason"`
	Score  float64   `json:"score"`
	Time   time.Time `json:"time"`
}

// ProviderStatus tells how the provider has been doing.
type ProviderStatus struct {
	LastFetch time.Time `json:"last_fetch,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	ErrorTime time.Time `json:"last_error_time,omitzero"`
}

const maxRotations = 50

var (
	errClosed       = errors.New("pool is shut down")
	errQueueFull    = errors.New("request queue is full")
	errQueueTimeout = errors.New("timed out waiting for a free worker")
	errNoUntried    = errors.New("no untried mirror left in the pool")
)

// New starts a pool: it begins recruiting mirrors from cfg.Provider at once.
func New(cfg Config) (*Pool, error) {
	if cfg.Provider == nil {
		return nil, errors.New("pool needs a provider")
	}
	cfg.setDefaults()
	p := &Pool{
		cfg:   cfg,
		log:   cfg.Logger,
		obs:   cfg.Observer,
		state: cfg.State,
		wake:  make(chan struct{}, 1),
	}
	p.client = &http.Client{Transport: cfg.Transport, CheckRedirect: checkRedirect}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.recruitLoop()
	return p, nil
}

// maxRedirects is how many upstream redirects are followed.
const maxRedirects = 3

func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("more than %d redirects", maxRedirects)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to a %q URL", req.URL.Scheme)
	}
	return nil
}

// Close stops the pool's goroutines and fails every waiting request. It does
// not wait for transfers in progress.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	if t, ok := p.cfg.Transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	return nil
}

// acquire waits for an idle worker whose mirror is not in exclude and, if
// fresh is set, is among the freshest of the untried mirrors.
func (p *Pool) acquire(ctx context.Context, exclude map[string]bool, fresh bool) (*worker, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errClosed
	}
	if w := p.pickIdle(exclude, fresh); w != nil {
		w.busy = true
		p.mu.Unlock()
		p.obs.Queued(0)
		return w, nil
	}
	if len(exclude) > 0 && p.allExcluded(exclude) {
		p.mu.Unlock()
		return nil, errNoUntried
	}
	if len(p.waiters) >= p.cfg.MaxQueue {
		p.mu.Unlock()
		return nil, errQueueFull
	}
	wt := &waiter{ready: make(chan *worker, 1), exclude: exclude, fresh: fresh, since: time.Now()}
	p.waiters = append(p.waiters, wt)
	p.mu.Unlock()

	timer := time.NewTimer(p.cfg.QueueTimeout)
	defer timer.Stop()
	var err error
	select {
	case w := <-wt.ready:
		p.obs.Queued(time.Since(wt.since))
		return w, nil
	case <-ctx.Done():
		err = context.Cause(ctx)
	case <-timer.C:
		err = errQueueTimeout
	case <-p.ctx.Done():
		err = errClosed
	}
	p.mu.Lock()
	i := slices.Index(p.waiters, wt)
	if i >= 0 {
		p.waiters = slices.Delete(p.waiters, i, i+1)
	}
	p.mu.Unlock()
	if i < 0 { // a worker was handed over as we gave up: pass it on
		p.release(<-wt.ready, outcome{})
	}
	return nil, err
}

// pickIdle chooses among idle workers not in exclude: a worker still on
// trial first (it needs samples to be judged), then the best ranked. A
// request that has already failed somewhere (exclude is not empty) goes to
// the best: it has lost time enough.
// p.mu must be held.
func (p *Pool) pickIdle(exclude map[string]bool, fresh bool) *worker {
	var newest time.Time
	if fresh {
		newest = p.newestSync(exclude)
	}
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	var best *worker
	var bestScore float64
	for _, w := range p.workers {
		if w.busy || exclude[w.key] || w.lastSync.Before(newest) {
			continue
		}
		s := w.stats.score()
		if w.stats.count < p.cfg.TrialSamples && len(exclude) == 0 {
			s = inf // on trial: try it first, unless the request has failed once already
		}
		if best == nil || s > bestScore {
			best, bestScore = w, s
		}
	}
	return best
}

const inf = 1e300

// newestSync is the latest known sync time among the mirrors not in
// exclude: only mirrors that synced then may serve files that change in
// place. Mirrors of unknown sync time count as older than any known one.
// p.mu must be held.
func (p *Pool) newestSync(exclude map[string]bool) time.Time {
	var newest time.Time
	for _, w := range p.workers {
		if !exclude[w.key] && w.lastSync.After(newest) {
			newest = w.lastSync
		}
	}
	return newest
}

// allExcluded reports whether every worker in the pool is in exclude.
// p.mu must be held.
func (p *Pool) allExcluded(exclude map[string]bool) bool {
	for _, w := range p.workers {
		if !exclude[w.key] {
			return false
		}
	}
	return true
}

// untriedLeft is how many workers are not in tried.
func (p *Pool) untriedLeft(tried map[string]bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, w := range p.workers {
		if !tried[w.key] {
			n++
		}
	}
	return n
}

// outcome is what a transfer taught about a worker's mirror.
type outcome struct {
	bytes   int64         // body bytes received from the mirror
	elapsed time.Duration // time the mirror was busy, client writes excluded
	success bool          // the transfer completed: a throughput sample
	failed  bool          // the mirror failed: a bad sample
}

// release records what the transfer taught and hands the worker to the next
// waiter, or lets it resign or be evicted.
func (p *Pool) release(w *worker, o outcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.busy = false
	if p.record(w.key, w.stats, o) && w.probation > 0 {
		w.probation--
	}
	if p.closed {
		return
	}
	if reason := p.leaveReason(w); reason != "" {
		p.remove(w, reason)
	} else {
		p.handOver(w)
	}
	p.resignIdle()
}

// record adds o to stats and reports whether it made a sample. p.mu must
// be held.
func (p *Pool) record(mirror string, stats *mirrorStats, o outcome) bool {
	p.state.mu.Lock()
	stats.requests++
	stats.bytes += o.bytes
	scored := false
	switch {
	case o.failed:
		stats.addFailure(p.cfg.PeekTimeout)
		scored = true
	case o.success:
		scored = stats.addTransfer(o.bytes, o.elapsed, p.cfg.MinSampleBytes)
	}
	score := stats.score()
	p.state.mu.Unlock()
	if scored {
		p.obs.Scored(mirror, score)
	}
	return scored
}

// handOver gives an idle worker to the first waiter that may use it, or
// else to a transfer it would speed up.
// p.mu must be held.
func (p *Pool) handOver(w *worker) {
	for i, wt := range p.waiters {
		if wt.exclude[w.key] || (wt.fresh && w.lastSync.Before(p.newestSync(wt.exclude))) {
			continue
		}
		p.waiters = slices.Delete(p.waiters, i, i+1)
		w.busy = true
		wt.ready <- w
		return
	}
	p.offerFaster(w)
}

// leaveReason says why w should leave the pool now, or "" if it stays.
// p.mu must be held.
func (p *Pool) leaveReason(w *worker) string {
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	if w.stats.failStreak >= p.cfg.EvictAfter {
		return ReasonEvicted
	}
	if p.shouldResign(w) {
		return ReasonResigned
	}
	return ""
}

// shouldResign applies the resignation rule: when the pool is at full
// strength and enough of it is ranked, a ranked worker among the bottom
// Resign whose score is below GoodThroughput resigns. p.mu and p.state.mu
// must be held.
func (p *Pool) shouldResign(w *worker) bool {
	if len(p.workers) < p.cfg.Workers || w.stats.count < p.cfg.TrialSamples || w.probation > 0 {
		return false
	}
	score := w.stats.score()
	if score >= p.cfg.GoodThroughput {
		return false
	}
	// Workers still on trial cannot resign, but what they have shown so
	// far counts: slow mirrors take longest to finish their trial, and a
	// ranking of only the finished would put a good mirror at the bottom.
	ranked, below := 0, 0
	for _, o := range p.workers {
		if o.stats.count >= p.cfg.TrialSamples {
			ranked++
		}
		if o != w && o.stats.count > 0 && o.stats.score() < score {
			below++
		}
	}
	// Judge only against enough peers: at least half the pool, and more
	// than the bottom group itself.
	if ranked <= p.cfg.Resign || ranked*2 < p.cfg.Workers {
		return false
	}
	return below < p.cfg.Resign
}

// resignIdle lets an idle worker that ranks among the slowest resign, so a
// slow mirror cannot keep its place just by never being picked.
// p.mu must be held.
func (p *Pool) resignIdle() {
	for _, w := range p.workers {
		if w.busy {
			continue
		}
		p.state.mu.Lock()
		resign := p.shouldResign(w)
		p.state.mu.Unlock()
		if resign {
			p.remove(w, ReasonResigned)
			return // the pool is no longer full: one at a time
		}
	}
}

// remove takes w out of the pool, puts its mirror in cool-down and asks for
// a replacement. p.mu must be held.
func (p *Pool) remove(w *worker, reason string) {
	i := slices.Index(p.workers, w)
	if i < 0 {
		return
	}
	p.workers = slices.Delete(p.workers, i, i+1)
	now := time.Now()
	p.state.mu.Lock()
	score := w.stats.score()
	p.state.cooldown[w.key] = now.Add(p.cfg.Cooldown)
	if reason == ReasonResigned {
		p.state.resigned[w.key] = true // see recruit
	} else {
		delete(p.state.resigned, w.key)
		delete(p.state.mirrors, w.key) // it comes back to a fresh trial
	}
	p.publishMembers()
	p.state.mu.Unlock()
	p.rotations = append(p.rotations, Rotation{Mirror: w.key, Reason: reason, Score: score, Time: now})
	if len(p.rotations) > maxRotations {
		p.rotations = slices.Delete(p.rotations, 0, len(p.rotations)-maxRotations)
	}
	p.log.Info("mirror left the pool",
		zap.String("mirror", w.key), zap.String("reason", reason), zap.Float64("score_bps", score))
	p.obs.MirrorLeft(w.key, reason, score)
	p.signal()
}

// publishMembers saves the pool's mirrors in the State, for the next pool.
// p.mu and p.state.mu must be held.
func (p *Pool) publishMembers() {
	p.state.members = p.state.members[:0]
	for _, w := range p.workers {
		p.state.members = append(p.state.members, w.key)
	}
}

func (p *Pool) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// missing is how many workers the pool lacks.
func (p *Pool) missing() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.Workers - len(p.workers)
}

// Backoff bounds of the recruiter when the provider fails or has nothing new.
const (
	minBackoff = time.Second
	maxBackoff = 2 * time.Minute
)

// recruitLoop keeps the pool at full strength. It first takes back the
// mirrors the previous pool had (after a config reload), then asks the
// provider, backing off while the provider fails or has nothing new.
func (p *Pool) recruitLoop() {
	defer p.wg.Done()
	p.state.mu.Lock()
	previous := make([]Candidate, 0, len(p.state.members))
	for _, m := range p.state.members {
		previous = append(previous, Candidate{URL: m})
	}
	p.state.mu.Unlock()
	p.probeSync(p.admit(previous))

	backoff := minBackoff
	resync := time.NewTicker(p.cfg.SyncInterval)
	defer resync.Stop()
	for {
		if need := p.missing(); need > 0 {
			if joined := p.recruit(need); len(joined) > 0 {
				p.probeSync(joined)
				backoff = minBackoff
				continue
			}
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		select {
		case <-p.wake:
		case <-resync.C:
			p.probeSync(p.workerList())
		case <-p.ctx.Done():
			return
		}
	}
}

func (p *Pool) workerList() []*worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.workers)
}

// providerTimeout bounds one call to the provider.
const providerTimeout = time.Minute

// recruit asks the provider for up to need new mirrors and reports how many
// joined. A provider that proposes one mirror a call is asked a few times.
// When it has nothing new, mirrors that resigned (slow, not broken) and
// that it still proposes come back before their cool-down ends, the one
// that left first first: a pool at full strength serves more at once, and
// a mirror that was slow may be fast now.
func (p *Pool) recruit(need int) []*worker {
	var joined []*worker
	var seen []Candidate
	for calls := 0; calls < need+2 && len(joined) < need; calls++ {
		ctx, cancel := context.WithTimeout(p.ctx, providerTimeout)
		cands, err := p.cfg.Provider.Candidates(ctx)
		cancel()
		p.noteProvider(err)
		if p.ctx.Err() != nil {
			return joined
		}
		if err != nil {
			p.log.Warn("provider failed", zap.Error(err))
			return joined
		}
		seen = append(seen, cands...)
		n := p.admit(cands)
		joined = append(joined, n...)
		if len(n) == 0 && len(cands) != 1 {
			break // a list with nothing new: asking again won't help
		}
	}
	for len(joined) < need {
		w := p.readmit(seen)
		if w == nil {
			break
		}
		joined = append(joined, w)
	}
	return joined
}

// readmit brings back the candidate that resigned longest ago, if any.
func (p *Pool) readmit(cands []Candidate) *worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.workers) >= p.cfg.Workers {
		return nil
	}
	p.state.mu.Lock()
	var best *url.URL
	var bestCand Candidate
	var bestUntil time.Time
	for _, c := range cands {
		u, err := ParseMirrorURL(c.URL)
		if err != nil {
			continue
		}
		key := u.String()
		until, cooling := p.state.cooldown[key]
		if !cooling || !p.state.resigned[key] || p.has(key) {
			continue
		}
		if best == nil || until.Before(bestUntil) {
			best, bestCand, bestUntil = u, c, until
		}
	}
	if best == nil {
		p.state.mu.Unlock()
		return nil
	}
	key := best.String()
	delete(p.state.cooldown, key)
	delete(p.state.resigned, key)
	p.state.mu.Unlock()
	// It keeps what the pool learned of it: ranked at once, it serves when
	// the better workers are busy; it may resign again once it has shown
	// a trial's worth of new samples.
	w := p.join(best, bestCand.LastSync)
	w.probation = p.cfg.TrialSamples
	return w
}

// has reports whether the mirror key has a worker. p.mu must be held.
func (p *Pool) has(key string) bool {
	return slices.ContainsFunc(p.workers, func(w *worker) bool { return w.key == key })
}

func (p *Pool) noteProvider(err error) {
	p.obs.ProviderFetched(err)
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if err != nil {
		p.provider.LastError, p.provider.ErrorTime = err.Error(), now
		return
	}
	p.provider.LastFetch = now
}

// admit adds workers for the candidates that are valid, new and not cooling
// down, while the pool has room, and returns the workers that joined.
func (p *Pool) admit(cands []Candidate) []*worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	var joined []*worker
	now := time.Now()
	for _, c := range cands {
		if p.closed || len(p.workers) >= p.cfg.Workers {
			break
		}
		u, err := ParseMirrorURL(c.URL)
		if err != nil {
			p.log.Warn("provider proposed an invalid mirror", zap.Error(err))
			continue
		}
		key := u.String()
		if p.has(key) {
			continue
		}
		p.state.mu.Lock()
		cooling := p.state.coolingDown(key, now)
		p.state.mu.Unlock()
		if cooling {
			continue
		}
		joined = append(joined, p.join(u, c.LastSync))
	}
	return joined
}

// join adds a worker for the mirror u. p.mu must be held.
func (p *Pool) join(u *url.URL, lastSync time.Time) *worker {
	key := u.String()
	p.state.mu.Lock()
	w := &worker{mirror: u, key: key, stats: p.state.stats(key, p.cfg.Window), joined: time.Now(), lastSync: lastSync}
	p.workers = append(p.workers, w)
	p.publishMembers()
	p.state.mu.Unlock()
	p.log.Info("mirror joined the pool", zap.String("mirror", key))
	p.obs.MirrorJoined(key)
	p.handOver(w)
	return w
}

// WorkerStatus describes one worker of the pool.
type WorkerStatus struct {
	Mirror   string    `json:"mirror"`
	Score    float64   `json:"score"` // bytes per second
	Samples  int       `json:"samples"`
	Ranked   bool      `json:"ranked"`
	Busy     bool      `json:"busy"`
	Requests int64     `json:"requests"`
	Bytes    int64     `json:"bytes"`
	Failures int64     `json:"failures"`
	Joined   time.Time `json:"joined"`
	LastSync time.Time `json:"last_sync,omitzero"`
}

// Status is a snapshot of a pool, for the status view.
type Status struct {
	Workers   []WorkerStatus `json:"workers"`
	Queued    int            `json:"queued"`
	Rotations []Rotation     `json:"rotations"`
	Provider  ProviderStatus `json:"provider"`
}

// Status returns a snapshot of the pool, best workers first.
func (p *Pool) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	st := Status{
		Queued:    len(p.waiters),
		Rotations: slices.Clone(p.rotations),
		Provider:  p.provider,
		Workers:   make([]WorkerStatus, 0, len(p.workers)),
	}
	for _, w := range p.workers {
		st.Workers = append(st.Workers, WorkerStatus{
			Mirror:   w.key,
			Score:    w.stats.score(),
			Samples:  w.stats.count,
			Ranked:   w.stats.count >= p.cfg.TrialSamples,
			Busy:     w.busy,
			Requests: w.stats.requests,
			Bytes:    w.stats.bytes,
			Failures: w.stats.failures,
			Joined:   w.joined,
			LastSync: w.lastSync,
		})
	}
	slices.SortStableFunc(st.Workers, func(a, b WorkerStatus) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return 0
	})
	return st
}
