package pool

// Exploration: while one large transfer runs and workers on trial sit idle
// (a cold pool with a single client), they fetch chunks of it as their
// trial (split.go), so the pool finds its fast mirrors within seconds and
// the rest of the file moves to them.
//
// A pool smaller than its provider's list may not hold its fast mirrors at
// all when it starts, and rotating them in two slow mirrors at a time takes
// many trials. So while a large transfer has explorers and the pool has
// ranked fewer than half its size (a cold pool: a warm one, whose rotation
// keeps a few workers on trial, does not surge), it surges: it takes up to
// Workers more mirrors from its provider, which explore at once. The surge
// ends for good, until the next explored transfer, once half the pool is
// ranked or the provider has nothing new. Once ranked, a mirror that at
// least Workers measured mirrors beat leaves (shouldResign), until the pool
// is back to its size.

// exploreMinRemaining: only a transfer with at least this much left is
// explored.
const exploreMinRemaining = 16 << 20

// exploreChunk is the size of an explorer's chunks: each is a sample (at
// least the default min_sample), small enough that a slow mirror shows
// itself, and is overtaken, soon.
const exploreChunk = 512 << 10

// beginExplore registers a large transfer that explorers help, and wakes
// the recruiter: the pool may surge while it runs. The caller must call
// endExplore when the transfer ends.
func (p *Pool) beginExplore() {
	p.mu.Lock()
	p.exploring++
	if p.exploring == 1 {
		p.surgeDry = false // the provider may know new mirrors by now
	}
	p.mu.Unlock()
	p.signal()
}

// endExplore ends what beginExplore began.
func (p *Pool) endExplore() {
	p.mu.Lock()
	p.exploring--
	p.mu.Unlock()
}

// surge is how many workers the pool may have beyond Workers now: Workers
// more while a large transfer has explorers, the pool has ranked fewer
// than half its size, and the provider has had new mirrors to offer; else
// none. A pool that does not rotate (resign 0) does not surge. p.mu must
// be held.
func (p *Pool) surge() int {
	if p.exploring == 0 || p.surgeDry || p.closing || p.cfg.Resign == 0 {
		return 0
	}
	ranked := 0
	for _, s := range mirrorsOf(p.standings()) {
		if s.ranked(p.cfg.TrialSamples) {
			ranked++
		}
	}
	if 2*ranked >= p.cfg.Workers {
		p.surgeDry = true // it knows enough: no new surge while this one's transfers run
		return 0
	}
	return p.cfg.Workers
}

// noteSurgeDry records that the provider had no new mirror for a pool at
// or beyond its size: the surge ends until the next explored transfer.
// p.mu must be held.
func (p *Pool) noteSurgeDry() {
	if len(p.workers) >= p.cfg.Workers {
		p.surgeDry = true
	}
}
