// Package pool is refractor's algorithm: a pool of workers, each bound to one
// mirror, that serve requests, rank themselves by the throughput they
// deliver, and resign when they are among the slowest, so that the provider
// can replace them with fresh mirrors. It knows nothing of Caddy.
//
// Files by concern: pool.go (the pool's life), dispatch.go (who serves:
// the hand-off of workers), ranking.go (the rules, pure functions),
// recruit.go (mirrors joining and leaving), transfer.go (one request from
// start to end), attempt.go (one upstream request), meter.go (timing a
// mirror), sink.go (writing to the client), move.go and split.go (faster
// workers taking over a transfer), stats.go (what is learned of a mirror).
package pool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Pool is a self-optimising, rotating set of mirror workers. Create it with
// New and stop it with Close.
//
// Lock order: Pool.mu, then splitter.mu, then State.mu. sink.mu,
// catalog.mu and dialGuard.mu are leaves: nothing else is locked while one
// is held.
type Pool struct {
	cfg     Config
	client  *http.Client
	log     *zap.Logger
	obs     Observer
	state   *State
	guard   *dialGuard // who may be dialled at a non-public address
	catalog *catalog   // what the repository's indexes say of its files

	ctx      context.Context // cancelled when the recruiter must stop (Close)
	cancel   context.CancelFunc
	wake     chan struct{} // asks the recruiter to look for mirrors
	wg       sync.WaitGroup
	halt     context.Context // cancelled when the pool is force-closed: transfers end
	halted   context.CancelFunc
	stop     <-chan struct{} // halt.Done()
	done     chan struct{}   // closed when everything the pool started has ended
	idle     chan struct{}   // closed once a closing pool has nothing in flight
	kill     chan struct{}   // closed by closeNow: end the drain at once
	killed   sync.Once
	nwaiting atomic.Int32 // len(waiters), readable without the lock
	peekHeld atomic.Int64 // bytes the peeks under way hold (peekBudget)

	mu        sync.Mutex // the dispatcher's lock: guards what follows and every worker's load
	closing   bool       // Close was called: no recruiting, drain what is in flight
	stopped   bool       // force-closed: nothing more is served
	idleOnce  bool       // idle was closed
	active    int        // transfers under way (Serve calls)
	workers   []*worker  // in order of joining
	peers     []*worker  // other refractors' caches (peers.go), apart: they are not mirrors
	waiters   []*waiter  // committed work first, then new requests, each FIFO
	rotations []Rotation
	provider  ProviderStatus
	movables  map[*movable]struct{} // transfers a faster worker may finish
	scratch   []standing            // see standings
	trialCtx  context.Context       // the parallel trials under way end with it (trial.go)
	trialStop context.CancelFunc    // ends them: a request waits for a worker
	exploring int                   // explored transfers under way (explore.go)
	surgeDry  bool                  // the provider had nothing new for a surge (explore.go)
}

// worker is one slot of the pool, bound to a mirror.
type worker struct {
	mirror *url.URL
	key    string
	remote bool         // named by a public list: see Candidate.Remote
	stats  *mirrorStats // guarded by State.mu
	joined time.Time
	// load is how many transfers it carries; only claim and free change
	// it. Guarded by Pool.mu.
	load int
	// served is how many transfers it ended (released) since it joined.
	// Guarded by Pool.mu.
	served int
	// lastSync is when the mirror last synchronised, if known (from the
	// provider, the mirror's sync file or its probe). Guarded by Pool.mu.
	lastSync time.Time
	// probe, when set, is how its candidate said to learn lastSync
	// (freshness.go). Guarded by Pool.mu.
	probe *SyncProbe
	// probation is how many new samples a readmitted worker must add
	// before it may resign again. Guarded by Pool.mu.
	probation int
	// overtaken: exploring a large file (split.go), it went at less than
	// half the pace of a faster fetcher, which took its chunk over; that
	// ends its trial. Guarded by Pool.mu.
	overtaken bool
	// trials is how many parallel trials it made (trial.go). Guarded by
	// Pool.mu.
	trials int
	// peer is set for a peer's worker (peers.go).
	peer *peerInfo
}

func (w *worker) idle() bool { return w.load < w.capacity() }

// capacity is how many transfers w carries at once.
func (w *worker) capacity() int {
	if w.peer != nil {
		return w.peer.load
	}
	return workerCapacity
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
		done:  make(chan struct{}),
		idle:  make(chan struct{}),
		kill:  make(chan struct{}),
	}
	p.guard, p.catalog = newDialGuard(), newCatalog()
	if cfg.Transport == nil {
		cfg.Transport = newTransport(cfg.Upstream, p.guard)
		p.cfg.Transport = cfg.Transport
	}
	p.client = &http.Client{Transport: cfg.Transport, CheckRedirect: p.checkRedirect}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.halt, p.halted = context.WithCancel(context.Background())
	p.stop = p.halt.Done()
	p.wg.Add(1)
	go p.recruitLoop()
	return p, nil
}

// maxRedirects is how many upstream redirects are followed.
const maxRedirects = 3

func (p *Pool) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("more than %d redirects", maxRedirects)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to a %q URL", req.URL.Scheme)
	}
	return p.guard.checkRedirect(req)
}

// Close returns at once. The pool stops recruiting and lets the requests
// it holds, waiting or under way, finish in the background; once none is
// left, or after the drain timeout (which ends them), it stops for good
// and Done is closed. A request that arrives meanwhile is still served by
// the workers the pool has.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return nil
	}
	p.closing = true
	p.checkIdle()
	p.mu.Unlock()
	p.cancel() // the recruiter
	go p.drain()
	return nil
}

// closeNow closes the pool, ends what it holds at once, and waits until
// it has stopped.
func (p *Pool) closeNow() {
	p.Close()
	p.killed.Do(func() { close(p.kill) })
	<-p.done
}

// Done is closed when a closed pool has stopped everything it started.
func (p *Pool) Done() <-chan struct{} { return p.done }

// drain waits for the requests in flight, then stops the pool.
func (p *Pool) drain() {
	timer := time.NewTimer(p.cfg.DrainTimeout)
	select {
	case <-p.idle:
	case <-p.kill:
	case <-timer.C:
		p.log.Warn("pool drain timed out: ending its transfers", zap.Duration("after", p.cfg.DrainTimeout))
	}
	timer.Stop()
	p.mu.Lock()
	p.stopped = true
	p.halted()
	p.mu.Unlock()
	p.wg.Wait()
	if t, ok := p.cfg.Transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	close(p.done)
}

// checkIdle closes p.idle once a closing pool has nothing in flight.
// p.mu must be held.
func (p *Pool) checkIdle() {
	if !p.closing || p.idleOnce || p.active > 0 || len(p.waiters) > 0 {
		return
	}
	for _, w := range slices.Concat(p.workers, p.peers) {
		if w.load > 0 {
			return
		}
	}
	p.idleOnce = true
	close(p.idle)
}

// begin and end count the transfers under way, for the drain.
func (p *Pool) begin() {
	p.mu.Lock()
	p.active++
	p.mu.Unlock()
}

func (p *Pool) end() {
	p.mu.Lock()
	p.active--
	p.checkIdle()
	p.mu.Unlock()
}

// remove takes w out of the pool, puts its mirror in cool-down and asks for
// a replacement. p.mu must be held.
func (p *Pool) remove(w *worker, reason string) {
	list := &p.workers
	if w.peer != nil {
		list = &p.peers
	}
	i := slices.Index(*list, w)
	if i < 0 {
		return
	}
	*list = slices.Delete(*list, i, i+1)
	now := time.Now()
	p.state.mu.Lock()
	score := w.stats.score()
	p.state.coolDown(w.key, reason, now, p.cfg.Cooldown)
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

// publishMembers saves the pool's mirrors in the State, for the next pool
// with its MembersKey.
// A closing pool leaves that to its successor. p.mu and p.state.mu must
// be held.
func (p *Pool) publishMembers() {
	if p.closing {
		return
	}
	keys := p.state.members[p.cfg.MembersKey][:0]
	for _, w := range p.workers {
		keys = append(keys, member{Candidate{URL: w.key, LastSync: w.lastSync, Remote: w.remote, Probe: w.probe}, w.probation})
	}
	p.state.members[p.cfg.MembersKey] = keys
}

func (p *Pool) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// WorkerStatus describes one worker of the pool.
type WorkerStatus struct {
	Mirror string `json:"mirror"`
	Peer   bool   `json:"peer,omitempty"` // another refractor's cache, not a mirror
	// PeerFiles is how many files a peer advertises (0: it does not say).
	PeerFiles int       `json:"peer_files,omitempty"`
	Score     float64   `json:"score"` // bytes per second
	Samples   int       `json:"samples"`
	Ranked    bool      `json:"ranked"`
	Busy      bool      `json:"busy"`
	Requests  int64     `json:"requests"`
	Bytes     int64     `json:"bytes"`
	Failures  int64     `json:"failures"`
	Joined    time.Time `json:"joined"`
	LastSync  time.Time `json:"last_sync,omitzero"`
	// From says where the samples of its score come from: "local" (this
	// process measured them), "restored" (an earlier process did, read
	// back from storage) and "shared" (other instances of its share
	// group), each with how many count and when the newest was taken.
	From map[string]SampleSource `json:"from,omitempty"`
}

// SampleSource is how many of a mirror's samples came from one source, and
// when the newest of them was taken.
type SampleSource struct {
	Samples int       `json:"samples"`
	Newest  time.Time `json:"newest"`
}

// Status is a snapshot of a pool, for the status view.
type Status struct {
	Workers   []WorkerStatus `json:"workers"`
	Queued    int            `json:"queued"`
	Rotations []Rotation     `json:"rotations"`
	Provider  ProviderStatus `json:"provider"`
}

// peerFiles is how many files w's peer advertises, 0 for a mirror.
func peerFiles(w *worker) int {
	if w.peer == nil {
		return 0
	}
	return w.peer.files
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
	now := time.Now()
	for _, w := range slices.Concat(p.workers, p.peers) {
		bytes, secs, known := w.stats.totals(now)
		st.Workers = append(st.Workers, WorkerStatus{
			Peer:      w.peer != nil,
			PeerFiles: peerFiles(w),
			Mirror:    w.key,
			Score:     rate(bytes, secs),
			Samples:   known,
			Ranked:    known >= p.cfg.TrialSamples,
			From:      w.stats.sources(now),
			Busy:      w.load > 0,
			Requests:  w.stats.requests,
			Bytes:     w.stats.bytes,
			Failures:  w.stats.failures,
			Joined:    w.joined,
			LastSync:  w.lastSync,
		})
	}
	slices.SortStableFunc(st.Workers, func(a, b WorkerStatus) int { return compareDesc(a.Score, b.Score) })
	return st
}
