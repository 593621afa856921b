package pool

import (
	"time"
)

// Moving and splitting a transfer. A file that cannot change in place may
// be finished by other mirrors with range requests (as when a mirror fails
// mid-way). Big files stuck on one mirror are what make the last seconds of
// a download set drag on, so when fast workers are free and the client
// keeps up, the rest of a long transfer is handed to them, split in chunks
// (split.go): the file then comes as fast as all of them together. A free
// worker much faster than a transfer's own is offered to it as it frees up,
// and each such transfer also looks for free fast workers now and then.
//
// How often a transfer measures its rate and looks (in time spent waiting
// for the mirror), how much faster a lone helper must be, and how much time
// a split must save (new requests cost a round trip or two).
const (
	upgradeCheckEvery = 250 * time.Millisecond
	upgradeFactor     = 1.5
	upgradeMinSaving  = 500 * time.Millisecond
)

// movable is a transfer that other mirrors may finish: one streaming from
// a single mirror, or a split one with room for more fetchers. Its fields
// are guarded by Pool.mu.
type movable struct {
	want      want          // who may help: its exclude is not changed while it streams
	rate      float64       // bytes per second lately; 0 until measured, or if the client is the bottleneck
	remaining int64         // bytes left to send
	offer     chan standing // buffered: a worker the pool reserved for it
	split     *splitter     // set for a split transfer, which takes offers itself
}

// addMovable registers a transfer that may be moved.
func (p *Pool) addMovable(wt want) *movable {
	mv := &movable{want: wt, offer: make(chan standing, 1)}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.movables == nil {
		p.movables = make(map[*movable]struct{})
	}
	p.movables[mv] = struct{}{}
	return mv
}

// removeMovable unregisters mv, and releases a worker offered to it too
// late to be used.
func (p *Pool) removeMovable(mv *movable) {
	p.mu.Lock()
	delete(p.movables, mv)
	p.mu.Unlock()
	select {
	case h := <-mv.offer:
		p.release(h.w, outcome{})
	default:
	}
}

// releaseAll gives back workers reserved for a transfer that could not use
// them.
func (p *Pool) releaseAll(helpers []standing) {
	for _, h := range helpers {
		p.release(h.w, outcome{})
	}
}

// spare is the pool's standings when its idle workers may go to a
// transfer they would help (as helpers or explorers), nil when requests
// wait for workers (they come first) or the pool is closing. It is valid
// as standings' is. p.mu must be held.
func (p *Pool) spare() []standing {
	if len(p.waiters) > 0 || p.closing {
		return nil
	}
	return p.standings()
}

// measured records mv's latest rate (0 if the client, not the mirror, is
// the bottleneck) and what it has left, and reserves idle workers that
// would finish it much sooner, if no request is waiting for them. It
// returns the reserved workers, or nil.
func (p *Pool) measured(mv *movable, rate float64, remaining int64) []standing {
	p.mu.Lock()
	defer p.mu.Unlock()
	mv.rate, mv.remaining = rate, remaining
	if _, ok := p.movables[mv]; !ok || rate <= 0 {
		return nil // already offered a worker, or the client is slow
	}
	sts := p.spare()
	helpers := idleHelpers(sts, mv.want, p.cfg.Split, rate/helperShare, p.cfg.TrialSamples)
	// The mirror streaming now keeps a place among the split's fetchers if
	// it is faster than the last helper: it would be left out otherwise,
	// the fastest of them all, as soon as a pool has ranked enough mirrors.
	if len(helpers) == p.cfg.Split && p.cfg.Split > 1 && rate > helpers[len(helpers)-1].score {
		helpers = helpers[:len(helpers)-1]
	}
	scores := make([]float64, len(helpers))
	for i, h := range helpers {
		scores[i] = h.score
	}
	// The best helpers that are worth it.
	for n := len(helpers); n > 0; n-- {
		if _, ok := p.splitSaving(rate, remaining, scores[:n]); ok {
			return p.reserve(mv, helpers[:n])
		}
	}
	// Or workers on trial, to explore.
	if remaining >= exploreMinRemaining && p.cfg.Split > 1 {
		if explorers := idleExplorers(sts, mv.want, p.cfg.Workers, p.cfg.TrialSamples); len(explorers) > 0 {
			return p.reserve(mv, explorers)
		}
	}
	return nil
}

// reserve claims helpers for mv, which no longer takes offers. p.mu must be
// held.
func (p *Pool) reserve(mv *movable, helpers []standing) []standing {
	for _, h := range helpers {
		p.claim(h.w)
	}
	delete(p.movables, mv)
	return helpers
}

// trickleRate is the rate below which a transfer now is a trickle.
func (p *Pool) trickleRate() float64 {
	return ranked(p, func(sts []standing) float64 { return trickleRate(sts, p.cfg.TrialSamples) })
}

// trialOf is w's score now, counting what its trial showed, and whether
// it is ranked.
func (p *Pool) trialOf(w *worker) (float64, bool) {
	type st struct {
		score  float64
		ranked bool
	}
	r := ranked(p, func(sts []standing) st {
		if i := find(sts, w); i >= 0 {
			return st{sts[i].score, sts[i].ranked(p.cfg.TrialSamples)}
		}
		return st{}
	})
	return r.score, r.ranked
}

// offerFaster gives w, just freed and wanted by no waiting request, to the
// transfer it would speed up most, if that is worth it for any. It reports
// whether w was taken. p.mu must be held.
func (p *Pool) offerFaster(w *worker) bool {
	if len(p.movables) == 0 {
		return false
	}
	sts := p.standings()
	i := find(sts, w)
	if i < 0 || !sts[i].ranked(p.cfg.TrialSamples) {
		return false
	}
	me := sts[i]
	var best *movable
	var bestSaving float64
	for mv := range p.movables {
		if !mv.want.allows(me, time.Time{}) {
			continue
		}
		var saving float64
		var ok bool
		if mv.split != nil {
			saving, ok = mv.split.savingWith(w, me.score)
		} else if me.score >= upgradeFactor*mv.rate {
			saving, ok = p.splitSaving(mv.rate, mv.remaining, []float64{me.score})
		}
		if ok && saving > bestSaving {
			best, bestSaving = mv, saving
		}
	}
	if best == nil {
		return false
	}
	if best.split != nil {
		if !best.split.join(w, me.score) {
			return false
		}
		p.claim(w) // its fetcher frees it only once p.mu is unlocked
		return true
	}
	p.claim(w)
	delete(p.movables, best)
	best.offer <- me
	return true
}

// splitSaving is how many seconds handing the rest of a transfer (now at
// rate, with remaining bytes) to helpers of the given scores, best first,
// would save, and whether that is worth it. The current mirror goes on
// helping if it is fast enough and there is room for it.
func (p *Pool) splitSaving(rate float64, remaining int64, scores []float64) (float64, bool) {
	if rate <= 0 || len(scores) == 0 {
		return 0, false
	}
	if len(scores) > 1 && remaining < splitMinRemaining {
		return 0, false
	}
	together := 0.0
	for _, s := range scores {
		together += s
	}
	if len(scores) < p.cfg.Split && rate*helperShare >= scores[0] {
		together += rate
	}
	r := float64(remaining)
	saving := r/rate - r/together
	return saving, saving >= upgradeMinSaving.Seconds()
}
