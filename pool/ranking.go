package pool

import (
	"slices"
	"time"
)

// The ranking rules. Each is a pure function over a snapshot of the
// workers' standings (taken with the locks held, by Pool.standings), so the
// rules can be read, and tested, without the pool's concurrency.

// standing is one worker's place in the ranking at the time of a snapshot.
type standing struct {
	w         *worker
	key       string
	score     float64 // bytes per second over the window
	samples   int     // samples in the window
	load      int     // transfers it carries
	served    int     // transfers it ended since it joined
	lastSync  time.Time
	probation int
	overtaken bool // its trial ended with a faster mirror taking its chunk over
	// peer: another refractor's cache (peers.go). It serves only files of
	// known hash it may hold, and no rule about mirrors counts it.
	peer  bool
	holds func([32]byte) bool // a peer's advertised files; nil: any
}

// trialRequests: a worker's trial ends after trial×trialRequests transfers,
// whatever they were: a mirror that answers only tiny bodies (an error
// page, a parked domain) never makes a sample, and must not stay on trial,
// first in line for new requests, for ever.
const trialRequests = 4

func (s standing) ranked(trial int) bool {
	return s.samples >= trial || s.served >= trial*trialRequests || s.overtaken
}
func (s standing) idle() bool { return s.load < s.w.capacity() }

// want says which workers may serve a request.
type want struct {
	exclude   map[string]bool // mirrors that may not serve it
	fresh     bool            // only the freshest mirrors may serve it
	prefer    string          // take this mirror when it is free (a parked transfer's own)
	committed bool            // its response is committed: it goes first, bounded by the stall timeout
	large     bool            // a file its index says is large: workers on trial explore it (move.go)
	sum       *[32]byte       // the file's SHA-256, when known: peers may serve it
}

// newestSync is the latest known sync time among the mirrors not in
// exclude: only mirrors that synced then may serve files that change in
// place. Mirrors of unknown sync time count as older than any known one.
func newestSync(sts []standing, exclude map[string]bool) time.Time {
	var newest time.Time
	for _, s := range sts {
		if !exclude[s.key] && s.lastSync.After(newest) {
			newest = s.lastSync
		}
	}
	return newest
}

// syncTolerance: a mirror that synced this long before the newest is as
// fresh as the newest (mirrors of one network sync minutes apart; an index
// request must not queue behind one busy mirror while others as good as it
// are idle).
const syncTolerance = 2 * time.Minute

// isFresh reports whether a mirror that last synced at t counts as fresh
// when the newest known sync is newest: it synced within the tolerance, or
// no sync time is known at all.
func isFresh(t, newest time.Time) bool {
	return !t.Before(newest.Add(-syncTolerance))
}

// newest is the sync time a worker must meet to serve wt in the snapshot
// sts: newestSync for a request that wants the freshest mirrors, else none.
func (wt want) newest(sts []standing) time.Time {
	if !wt.fresh {
		return time.Time{}
	}
	return newestSync(sts, wt.exclude)
}

// allows reports whether the worker of s may serve a request that wants wt.
// newest is wt.newest of the snapshot.
func (wt want) allows(s standing, newest time.Time) bool {
	if s.peer {
		return !wt.exclude[s.key] && wt.sum != nil && (s.holds == nil || s.holds(*wt.sum))
	}
	return !wt.exclude[s.key] && (!wt.fresh || isFresh(s.lastSync, newest))
}

// knownFresh reports whether the mirror key is known to be fresh: it has
// a sync time, within the tolerance of the newest in the pool. Its 404 is
// then to be believed.
func knownFresh(sts []standing, key string) bool {
	i := slices.IndexFunc(sts, func(s standing) bool { return s.key == key })
	return i >= 0 && !sts[i].lastSync.IsZero() && isFresh(sts[i].lastSync, newestSync(sts, nil))
}

// pick chooses among idle workers the one to serve a request: its preferred
// mirror if free; a worker still on trial (it needs samples to be judged),
// unless the request has already failed somewhere, its response is
// committed (it has lost time enough, or its client is waiting), it is
// for an index (every client waits for those, and packages and explored
// ranges give trials enough), for a large file (its explorers will try
// the workers on trial with its ranges), or a ranked peer may serve it (a
// file a peer holds is not the Internet's to carry for a mirror's trial);
// else the best ranked.
func pick(sts []standing, wt want, trial int) *worker {
	newest := wt.newest(sts)
	trials := len(wt.exclude) == 0 && !wt.committed && !wt.fresh && !wt.large &&
		!slices.ContainsFunc(sts, func(s standing) bool { return s.peer && s.idle() && s.ranked(trial) && wt.allows(s, newest) })
	var best *worker
	var bestScore float64
	for _, s := range sts {
		if !s.idle() || !wt.allows(s, newest) {
			continue
		}
		if s.key == wt.prefer {
			return s.w
		}
		score := s.score
		if !s.ranked(trial) && (trials || s.peer) {
			score = inf
		}
		if best == nil || score > bestScore {
			best, bestScore = s.w, score
		}
	}
	return best
}

const inf = 1e300

// resignRule holds the knobs of shouldResign.
type resignRule struct {
	workers int     // full strength
	resign  int     // the bottom group
	trial   int     // samples to be ranked
	good    float64 // bytes per second that never resign
}

// shouldResign applies the resignation rule to sts[i]: when the pool is at
// full strength and enough of it is ranked, a ranked worker among the
// bottom resign whose score is below good resigns. A pool beyond its size
// (a surge: explore.go) also sheds, good or not, a worker with a full
// trial of samples that at least a full pool of measured mirrors beat:
// mirrors not yet measured are unknown, not faster.
func shouldResign(sts []standing, i int, r resignRule) bool {
	s := sts[i]
	sts = mirrorsOf(sts)
	if s.peer || len(sts) < r.workers || !s.ranked(r.trial) || s.probation > 0 {
		return false
	}
	// Workers still on trial cannot resign, but what they have shown so
	// far counts: slow mirrors take longest to finish their trial, and a
	// ranking of only the finished would put a good mirror at the bottom.
	ranked, below, above := 0, 0, 0
	for _, o := range sts { // sts is mirrorsOf's: i indexes the caller's
		if o.ranked(r.trial) {
			ranked++
		}
		if o.w == s.w || o.samples == 0 {
			continue
		}
		if o.score < s.score {
			below++
		} else if o.score > s.score {
			above++
		}
	}
	// Excess: only a mirror measured by a full trial of its own samples
	// (an explorer overtaken early may have been judged against a lucky
	// burst).
	if len(sts) > r.workers && above >= r.workers && s.samples >= r.trial {
		return true
	}
	// Judge only against enough peers: at least half the pool, and more
	// than the bottom group itself.
	if s.score >= r.good || ranked <= r.resign || ranked*2 < r.workers {
		return false
	}
	return below < r.resign
}

// idleHelpers lists, best first, up to n idle ranked workers that wt
// allows, at least minScore fast.
func idleHelpers(sts []standing, wt want, n int, minScore float64, trial int) []standing {
	if n <= 0 {
		return nil
	}
	var out []standing
	for _, s := range sts {
		if s.idle() && wt.allows(s, time.Time{}) && s.ranked(trial) && s.score >= minScore {
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b standing) int { return compareDesc(a.score, b.score) })
	return out[:min(n, len(out))]
}

// idleExplorers lists up to n idle workers still on trial that wt
// allows, in order of joining (the provider's order, or what is known of
// them).
func idleExplorers(sts []standing, wt want, n, trial int) []standing {
	var out []standing
	for _, s := range sts {
		if len(out) < n && s.idle() && wt.allows(s, time.Time{}) && !s.ranked(trial) {
			out = append(out, s)
		}
	}
	return out
}

// freshestOther is the best worker among the freshest not in asked, or
// nil.
func freshestOther(sts []standing, asked map[string]bool) *worker {
	wt := want{exclude: asked, fresh: true}
	newest := newestSync(sts, asked)
	var best *standing
	for i, s := range sts {
		if wt.allows(s, newest) && (best == nil || s.score > best.score) {
			best = &sts[i]
		}
	}
	if best == nil {
		return nil
	}
	return best.w
}

// bestOthers lists up to n workers other than the mirror key's, whatever
// their load, ranked ones first, best first.
func bestOthers(sts []standing, key string, n, trial int) []*worker {
	var others []standing
	for _, s := range mirrorsOf(sts) {
		if s.key != key {
			others = append(others, s)
		}
	}
	slices.SortStableFunc(others, func(a, b standing) int {
		if a.ranked(trial) != b.ranked(trial) {
			return compareDesc(btof(a.ranked(trial)), btof(b.ranked(trial)))
		}
		return compareDesc(a.score, b.score)
	})
	out := make([]*worker, 0, n)
	for _, s := range others[:min(n, len(others))] {
		out = append(out, s.w)
	}
	return out
}

func btof(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// mirrorsOf is sts without the peers: the rules that judge mirrors
// against each other (resigning, trickles, peek deadlines, witnesses) do
// not count a LAN peer's speed.
func mirrorsOf(sts []standing) []standing {
	isPeer := func(s standing) bool { return s.peer }
	if !slices.ContainsFunc(sts, isPeer) {
		return sts
	}
	return slices.DeleteFunc(slices.Clone(sts), isPeer)
}

// find is the index of w's standing in sts, or -1.
func find(sts []standing, w *worker) int {
	return slices.IndexFunc(sts, func(s standing) bool { return s.w == w })
}

func compareDesc(a, b float64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

// trickleDivisor: a transfer slower than the pool's median score divided by
// this, for a stall timeout's worth of waiting, fails.
const trickleDivisor = 20

// trickleRate is the rate below which a transfer is a trickle, or 0 while
// fewer than three mirrors are ranked.
func trickleRate(sts []standing, trial int) float64 {
	var scores []float64
	for _, s := range mirrorsOf(sts) {
		if s.ranked(trial) {
			scores = append(scores, s.score)
		}
	}
	if len(scores) < 3 {
		return 0
	}
	slices.Sort(scores)
	return scores[len(scores)/2] / trickleDivisor
}

// peekSlack: the peek deadline leaves a mirror this many times as long as
// the best ranked mirror would take for the same bytes.
const peekSlack = 3

// peekDeadline is how long a peek of n bytes may take: the configured
// floor, or longer when even the best mirror the pool has measured would
// need more, so that a pool whose mirrors are all slow keeps them.
func peekDeadline(sts []standing, trial int, n int64, floor time.Duration) time.Duration {
	best := 0.0
	for _, s := range mirrorsOf(sts) {
		if s.ranked(trial) {
			best = max(best, s.score)
		}
	}
	if best <= 0 {
		return floor
	}
	return max(floor, time.Duration(peekSlack*float64(n)/best*float64(time.Second)))
}

// fasterThan reports whether a worker other than the mirror key's has
// shown (in at least one sample) that it is much faster than rate.
func fasterThan(sts []standing, key string, rate float64) bool {
	for _, s := range mirrorsOf(sts) {
		if s.key != key && s.samples > 0 && s.score > upgradeFactor*rate {
			return true
		}
	}
	return false
}

// priorOrder orders candidates for joining a pool by their known scores
// (known holds the ranked ones, by URL): first those known to be fast,
// best first; then those never measured, in the provider's order (its own
// prior); last those known to be slow, below good and below half the best
// known, best first. A known mirror is never left out: the order only
// decides who joins while the pool has room.
func priorOrder(cands []member, known map[string]float64, good float64) []member {
	best := 0.0
	for _, c := range cands {
		best = max(best, known[c.URL])
	}
	class := func(c member) int {
		score, ok := known[c.URL]
		switch {
		case !ok:
			return 1
		case score >= good || score >= best/2:
			return 0
		}
		return 2
	}
	out := slices.Clone(cands)
	slices.SortStableFunc(out, func(a, b member) int {
		if ca, cb := class(a), class(b); ca != cb {
			return ca - cb
		}
		if class(a) == 1 {
			return 0
		}
		return compareDesc(known[a.URL], known[b.URL])
	})
	return out
}
