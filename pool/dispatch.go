package pool

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// The dispatcher: the one owner of the hand-off of workers. Everything in
// this file runs with Pool.mu held, or takes it; it alone changes a
// worker's load (claim and free), the queue of waiters, and the transfers
// that a free worker may speed up (move.go, split.go). A worker goes, in
// this order of preference, to the request that waits for it (committed
// work first, then new requests, each in arrival order), to the transfer it
// would speed up most, or back to idle.

// workerCapacity is how many transfers a mirror's worker carries at once
// (a peer's carries the load the peer accepts: peers.go). The dispatcher
// counts a worker's load rather than assuming one transfer per worker.
const workerCapacity = 1

// emptyWait bounds how long a request waits in a pool that has no worker
// at all before it is answered 503, naming the cause.
const emptyWait = 5 * time.Second

// waiter is a request waiting for a worker.
type waiter struct {
	ready chan *worker // buffered: the worker handed over
	want  want
	since time.Time
}

// acquire waits for a worker that wt allows. A new request waits at most
// the queue timeout, and not at all when the queue is full; committed
// work (a resumed, continued or split response) goes ahead of new requests
// and waits at most the stall timeout. In a pool without any worker, a
// request waits at most emptyWait.
func (p *Pool) acquire(ctx context.Context, wt want) (*worker, error) {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return nil, errClosed
	}
	if w := pick(p.standings(), wt, p.cfg.TrialSamples); w != nil {
		p.claim(w)
		p.mu.Unlock()
		p.obs.Queued(0)
		return w, nil
	}
	if len(wt.exclude) > 0 && p.allExcluded(wt.exclude) {
		p.mu.Unlock()
		return nil, errNoUntried
	}
	if !wt.committed && len(p.waiters) >= p.cfg.MaxQueue {
		p.mu.Unlock()
		return nil, errQueueFull
	}
	wtr := &waiter{ready: make(chan *worker, 1), want: wt, since: time.Now()}
	p.enqueue(wtr)
	p.mu.Unlock()

	limit := p.cfg.QueueTimeout
	if wt.committed {
		limit = p.cfg.StallTimeout
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	empty := time.NewTicker(min(emptyWait, limit))
	defer empty.Stop()
	var err error
wait:
	for {
		select {
		case w := <-wtr.ready:
			p.obs.Queued(time.Since(wtr.since))
			return w, nil
		case <-ctx.Done():
			err = context.Cause(ctx)
			break wait
		case <-deadline.C:
			err = errQueueTimeout
			break wait
		case <-empty.C:
			if err = p.emptyCause(); err != nil {
				break wait
			}
		case <-p.stop:
			err = errClosed
			break wait
		}
	}
	p.mu.Lock()
	queued := p.dequeue(wtr)
	p.checkIdle()
	p.mu.Unlock()
	if !queued { // a worker was handed over as we gave up: pass it on
		p.release(<-wtr.ready, outcome{})
	}
	return nil, err
}

// enqueue adds wtr behind the waiters of its rank: committed work before
// new requests. p.mu must be held.
func (p *Pool) enqueue(wtr *waiter) {
	i := len(p.waiters)
	if wtr.want.committed {
		i = slices.IndexFunc(p.waiters, func(o *waiter) bool { return !o.want.committed })
		if i < 0 {
			i = len(p.waiters)
		}
	}
	p.waiters = slices.Insert(p.waiters, i, wtr)
	p.nwaiting.Store(int32(len(p.waiters)))
	p.stopTrials() // requests come first: the trials give their workers up
}

// dequeue removes wtr from the queue and reports whether it was there.
// p.mu must be held.
func (p *Pool) dequeue(wtr *waiter) bool {
	i := slices.Index(p.waiters, wtr)
	if i < 0 {
		return false
	}
	p.waiters = slices.Delete(p.waiters, i, i+1)
	p.nwaiting.Store(int32(len(p.waiters)))
	return true
}

// waiting reports whether requests are waiting for a worker. It takes no
// lock, so that a split's fetchers may ask while holding theirs.
func (p *Pool) waiting() bool { return p.nwaiting.Load() > 0 }

// emptyCause says why a pool has no worker and none is coming, or nil if
// it has one. p.mu must not be held.
func (p *Pool) emptyCause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.workers) > 0 {
		return nil
	}
	switch {
	case p.closing:
		return fmt.Errorf("%w: the pool is shutting down", errNoWorkers)
	case p.provider.LastError != "" && !p.provider.ErrorTime.Before(p.provider.LastFetch):
		return fmt.Errorf("%w: the provider failed: %s", errNoWorkers, p.provider.LastError)
	case p.provider.LastFetch.IsZero():
		return fmt.Errorf("%w: the provider has not answered yet", errNoWorkers)
	}
	p.state.mu.Lock()
	cooling := 0
	now := time.Now()
	for _, until := range p.state.cooldown {
		if now.Before(until) {
			cooling++
		}
	}
	p.state.mu.Unlock()
	if cooling > 0 {
		return fmt.Errorf("%w: the provider proposed nothing new and %d mirrors are cooling down", errNoWorkers, cooling)
	}
	return fmt.Errorf("%w: the provider proposed no usable mirror", errNoWorkers)
}

// claim gives w one more transfer to carry. p.mu must be held.
func (p *Pool) claim(w *worker) { w.load++ }

// free takes one transfer off w. p.mu must be held.
func (p *Pool) free(w *worker) { w.load-- }

// release records what a transfer taught about w's mirror and gives the
// worker on: to the next waiter, to a transfer it would speed up, or back
// to idle; or it lets the worker resign or be evicted.
func (p *Pool) release(w *worker, o outcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free(w)
	if !o.trial {
		w.served++
	}
	if p.record(w.key, w.stats, o) {
		p.sampled(w)
	}
	if reason := p.leaveReason(w); reason != "" && !p.closing {
		p.remove(w, reason)
		p.handOverIdle()
	} else if w.idle() {
		p.handOver(w)
	}
	if p.resignIdle() {
		p.handOverIdle()
	}
	p.checkIdle()
}

// handOver gives an idle worker to the first waiter that may use it (one
// that prefers it first), or else to a transfer it would speed up.
// p.mu must be held.
func (p *Pool) handOver(w *worker) {
	if !p.toWaiter(w) && !p.closing {
		p.offerFaster(w)
	}
}

// handOverIdle gives idle workers to waiters that may use them now: after a
// worker left, or a sync time changed, a waiter may accept a worker it
// could not before. p.mu must be held.
func (p *Pool) handOverIdle() {
	if len(p.waiters) == 0 {
		return
	}
	// One snapshot serves every hand-off: a hand-off changes only the load
	// of the worker handed over, which is not looked at again.
	sts := p.standings()
	for i, s := range sts {
		if len(p.waiters) == 0 {
			return
		}
		if s.idle() {
			p.giveToWaiter(sts, i)
		}
	}
}

// toWaiter gives an idle worker to the first waiter that may use it, one
// that prefers it first, and reports whether it did. p.mu must be held.
func (p *Pool) toWaiter(w *worker) bool {
	if len(p.waiters) == 0 {
		return false
	}
	sts := p.standings()
	i := find(sts, w)
	if i < 0 {
		return false
	}
	return p.giveToWaiter(sts, i)
}

// giveToWaiter is toWaiter for the worker of sts[i]. p.mu must be held.
func (p *Pool) giveToWaiter(sts []standing, i int) bool {
	w := sts[i].w
	allowed := func(wtr *waiter) bool { return wtr.want.allows(sts[i], wtr.want.newest(sts)) }
	j := slices.IndexFunc(p.waiters, func(wtr *waiter) bool { return wtr.want.prefer == w.key && allowed(wtr) })
	if j < 0 {
		j = slices.IndexFunc(p.waiters, allowed)
	}
	if j < 0 {
		return false
	}
	wtr := p.waiters[j]
	p.dequeue(wtr)
	p.claim(w)
	wtr.ready <- w
	return true
}

// standings is a snapshot of every worker's standing, the peers' first,
// then the mirrors' in order of joining.
// It lives in the pool's scratch space (a pool may have hundreds of
// workers, and the dispatcher takes a snapshot at every hand-off): it is
// valid until p.mu is unlocked or standings is called again. p.mu must be
// held.
func (p *Pool) standings() []standing {
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	p.scratch = p.scratch[:0]
	for _, w := range p.peers { // first: a peer on trial takes a tie (it spares the Internet)
		score, samples := w.stats.trialScore(p.cfg.TrialSamples)
		p.scratch = append(p.scratch, standing{
			w: w, key: w.key, score: score, samples: samples,
			load: w.load, served: w.served, overtaken: w.overtaken, peer: true, holds: w.peer.holds,
		})
	}
	for _, w := range p.workers {
		score, samples := w.stats.trialScore(p.cfg.TrialSamples)
		p.scratch = append(p.scratch, standing{
			w: w, key: w.key, score: score, samples: samples,
			load: w.load, served: w.served, lastSync: w.lastSync, probation: w.probation, overtaken: w.overtaken,
		})
	}
	return p.scratch
}

// ranked applies a ranking rule to the standings, for callers that do not
// hold p.mu.
func ranked[T any](p *Pool, rule func([]standing) T) T {
	p.mu.Lock()
	defer p.mu.Unlock()
	return rule(p.standings())
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
	trial   bool          // a parallel trial's (trial.go): a sample however small, and no transfer served
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
		minBytes := p.cfg.MinSampleBytes
		if o.trial {
			minBytes = 0
		}
		scored = stats.addTransfer(o.bytes, o.elapsed, minBytes)
	}
	score := stats.score()
	p.state.mu.Unlock()
	if scored {
		p.obs.Scored(mirror, score)
	}
	return scored
}

// sampled counts a new sample of w against its probation. p.mu must be
// held.
func (p *Pool) sampled(w *worker) {
	if w.probation == 0 {
		return
	}
	if w.probation--; w.probation == 0 {
		p.state.mu.Lock()
		p.publishMembers() // it may resign now, after a restart too
		p.state.mu.Unlock()
	}
}

// leaveReason says why w should leave the pool now, or "" if it stays.
// p.mu must be held.
func (p *Pool) leaveReason(w *worker) string {
	sts := p.standings()
	i := find(sts, w)
	if i < 0 {
		return ""
	}
	p.state.mu.Lock()
	streak, lied := w.stats.failStreak, w.stats.lied
	p.state.mu.Unlock()
	if lied {
		return ReasonLied
	}
	if streak >= p.cfg.EvictAfter {
		return ReasonEvicted
	}
	if shouldResign(sts, i, p.resignRule()) {
		return ReasonResigned
	}
	return ""
}

func (p *Pool) resignRule() resignRule {
	return resignRule{workers: p.cfg.Workers, resign: p.cfg.Resign, trial: p.cfg.TrialSamples, good: p.cfg.GoodThroughput}
}

// resignIdle lets the idle workers that rank among the slowest resign, so
// a slow mirror cannot keep its place just by never being picked, and a
// pool beyond its size sheds its excess. It reports whether one did.
// p.mu must be held.
func (p *Pool) resignIdle() bool {
	resigned := false
	for !p.closing && p.resignOneIdle() { // each leaves a smaller pool: bounded by its size
		resigned = true
	}
	return resigned
}

// resignOneIdle lets the first idle worker that should resign do so, and
// reports whether one did. p.mu must be held.
func (p *Pool) resignOneIdle() bool {
	sts := p.standings()
	for i, s := range sts {
		if s.load == 0 && shouldResign(sts, i, p.resignRule()) {
			p.remove(s.w, ReasonResigned)
			return true
		}
	}
	return false
}

// penalise counts a failure against each mirror, for having been wrong
// about a file (it said 404 but another mirror had it).
func (p *Pool) penalise(mirrors []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, key := range mirrors {
		i := slices.IndexFunc(p.workers, func(w *worker) bool { return w.key == key })
		if i < 0 {
			continue
		}
		w := p.workers[i]
		p.state.mu.Lock()
		w.stats.addFailure(p.cfg.PeekTimeout)
		score := w.stats.score()
		p.state.mu.Unlock()
		p.obs.Scored(key, score)
		if reason := p.leaveReason(w); w.load == 0 && reason != "" && !p.closing {
			p.remove(w, reason)
			p.handOverIdle()
		}
	}
}
