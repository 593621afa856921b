package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Splitting: the rest of a committed response fetched in chunks, by range
// requests, by several workers at once (see move.go for when). The client
// still gets one response, in order: the chunk at the head is written as
// its bytes arrive, the ones after it wait in memory, and no fetcher runs
// further ahead than the buffer allows. Every chunk must come from the same
// file: a 206 for exactly the asked range, of the same total size, with the
// same Last-Modified when both mirrors send one.
const (
	// chunkTime: a worker's chunk is what its mirror sends in about this
	// long, within minChunk and maxChunk.
	chunkTime = 250 * time.Millisecond
	minChunk  = 1 << 20
	maxChunk  = 4 << 20
	// splitMinRemaining: a transfer with less than this left is not split
	// (one faster worker may still take it over).
	splitMinRemaining = 4 << 20
	// helperShare: a worker less than 1/helperShare as fast as the fastest
	// fetcher of a transfer does not fetch for it: its chunks would hold up
	// the others.
	helperShare = 4
)

// Chunk buffers: maxChunk for the frontier, exploreChunk for the ranges
// explorers fetch at the end of the file (which wait there longest).
var (
	chunkBuffers   = sync.Pool{New: func() any { b := make([]byte, maxChunk); return &b }}
	exploreBuffers = sync.Pool{New: func() any { b := make([]byte, exploreChunk); return &b }}
)

// putBuffer gives a chunk's buffer back to the pool it came from.
func putBuffer(b *[]byte) {
	if cap(*b) == exploreChunk {
		exploreBuffers.Put(b)
		return
	}
	chunkBuffers.Put(b)
}

// splitter is the state of a split transfer.
type splitter struct {
	t      *transfer
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	cond   sync.Cond // on mu: data arrived, room freed, a fetcher left, or ctx done
	next   int64     // first byte not yet in a chunk
	chunks []*chunk  // in file order, not yet all written; chunks[0] is the head
	// Explorers fetch the end of the file, far from the head: end is the
	// first byte of that tail (the file's end+1 when there is none), and
	// tail its chunks, in file order. When next meets end, they join
	// chunks.
	end      int64
	tail     []*chunk
	retry    []*chunk            // chunks a failed fetcher gave back
	fetchers map[*worker]float64 // workers fetching for this transfer, and their scores
	// explorers are the fetchers on trial (move.go): each of their chunks
	// is a sample, their score is what those showed, and the speed rule
	// spares them until they are ranked.
	explorers map[*worker]bool
	left      map[*worker]bool // workers that fetched for it and stopped: they don't come back
	best      float64          // the fastest fetcher's score
	failed    map[string]bool  // mirrors that may not fetch: failed or tried before
	failures  []string         // "mirror: reason"
	speed     float64          // the fetchers' scores added up
	closed    bool             // the transfer is over: no new fetcher

	surging bool // it had an explorer: the pool may surge (explore.go); the writer's alone
}

// chunk is a range of the file and the buffer it is fetched into.
type chunk struct {
	first, last int64
	buf         *[]byte // from chunkBuffers or exploreBuffers
	// Written by its fetcher under splitter.mu:
	mirror   string                  // whose bytes they are
	n        int                     // bytes received
	progress time.Time               // when its fetcher last received a byte, or asked for it
	began    time.Time               // when its fetcher asked for it
	explorer bool                    // its fetcher is an explorer
	cancel   context.CancelCauseFunc // ends its fetcher's request; nil when none is under way
}

func (c *chunk) size() int { return int(c.last - c.first + 1) }

// split serves the rest of the committed response with helpers (reserved
// for it) and the fast workers that become free meanwhile. exclude lists the
// mirrors that may not fetch for it.
func (t *transfer) split(helpers []standing, exclude map[string]bool) error {
	ctx, cancel := context.WithCancelCause(t.r.Context())
	defer cancel(nil)
	s := &splitter{
		t: t, ctx: ctx, cancel: cancel,
		next:      t.next,
		end:       t.last + 1,
		fetchers:  make(map[*worker]float64),
		explorers: make(map[*worker]bool),
		left:      make(map[*worker]bool),
		failed:    maps.Clone(exclude),
	}
	s.cond.L = &s.mu
	stop := context.AfterFunc(ctx, s.broadcast)
	defer stop()
	stopHalt := context.AfterFunc(t.p.halt, func() { cancel(errClosed) })
	defer stopHalt()
	// Now and then the writer looks whether the head chunk stalls, and
	// fetchers waiting for room whether a request waits for their worker.
	tick := time.NewTicker(parkPoll)
	defer tick.Stop()
	s.wg.Go(func() {
		for {
			select {
			case <-tick.C:
				s.judgeFetchers()
				s.broadcast()
			case <-ctx.Done():
				return
			}
		}
	})
	s.mu.Lock()
	for _, h := range helpers {
		s.start(h.w, h.score, !h.ranked(t.p.cfg.TrialSamples))
	}
	s.mu.Unlock()
	s.surge(helpers)
	defer func() {
		if s.surging {
			t.p.endExplore()
		}
	}()
	// Workers that free up while it runs are offered to it.
	mv := t.p.addMovable(want{sum: t.want().sum}) // savingWith checks the rest
	t.p.mu.Lock()
	mv.split = s
	t.p.mu.Unlock()
	s.recruit() // the mirror that was streaming, if it may help

	err := s.write()
	t.p.removeMovable(mv)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	cancel(err)
	s.wg.Wait()
	for _, c := range append(s.chunks, s.tail...) {
		putBuffer(c.buf)
	}
	t.failures = append(t.failures, s.failures...)
	return err
}

func (s *splitter) broadcast() {
	s.mu.Lock()
	s.cond.Broadcast()
	s.mu.Unlock()
}

// start makes w, of the given score, a fetcher, an explorer if it is on
// trial. s.mu must be held.
func (s *splitter) start(w *worker, score float64, explorer bool) {
	s.fetchers[w] = score
	if explorer {
		s.explorers[w] = true
	}
	s.best = max(s.best, score)
	s.speed += score
	s.wg.Add(1)
	go s.fetch(w)
}

// savingWith is how many seconds w, of the given score, would save by
// joining the fetchers, and whether that is worth it. Pool.mu is held.
func (s *splitter) savingWith(w *worker, score float64) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	left := float64(s.end - s.next)
	if _, fetching := s.fetchers[w]; fetching || s.left[w] || s.closed || s.ranked() >= s.t.p.cfg.Split || s.failed[w.key] ||
		score*helperShare < s.best || left <= 0 || s.speed <= 0 {
		return 0, false
	}
	saving := left/s.speed - left/(s.speed+score)
	return saving, saving >= upgradeMinSaving.Seconds()
}

// join makes w, which the pool is handing over, a fetcher, unless the
// transfer is over, and reports whether it did. Pool.mu is held.
func (s *splitter) join(w *worker, score float64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.start(w, score, false)
	return true
}

// ranked is how many fetchers are not explorers. s.mu must be held.
func (s *splitter) ranked() int { return len(s.fetchers) - len(s.explorers) }

// explored updates the score of the explorer w after one of its chunks,
// and ends its exemption once it is ranked.
func (s *splitter) explored(w *worker) {
	score, ranked := s.t.p.trialOf(w)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.fetchers[w]; ok {
		s.fetchers[w] = score
		s.speed = max(s.speed+score-old, 0)
		s.best = max(s.best, score)
	}
	if ranked {
		delete(s.explorers, w)
	}
}

// write sends the chunks to the client in order, until the end of the
// response.
func (s *splitter) write() error {
	t := s.t
	for {
		pos := t.next
		s.mu.Lock()
		for {
			if s.ctx.Err() != nil {
				s.mu.Unlock()
				return context.Cause(s.ctx)
			}
			s.meet()
			if len(s.chunks) > 0 && int64(s.chunks[0].n) > pos-s.chunks[0].first {
				break // bytes to send
			}
			if len(s.chunks) == 0 && s.next > t.last {
				s.mu.Unlock()
				return nil
			}
			if len(s.fetchers) == 0 {
				s.mu.Unlock()
				if err := s.replace(); err != nil {
					return err
				}
				s.mu.Lock()
				continue
			}
			if len(s.chunks) > 0 {
				s.watch(s.chunks[0])
			}
			s.cond.Wait()
		}
		head := s.chunks[0]
		data := (*head.buf)[pos-head.first : head.n]
		t.source = head.mirror
		s.mu.Unlock()

		if err := t.send(data); err != nil {
			return err
		}
		if t.next > head.last {
			s.mu.Lock()
			s.chunks = s.chunks[1:]
			s.cond.Broadcast() // room for the fetchers
			s.mu.Unlock()
			putBuffer(head.buf)
			s.recruit()
		}
	}
}

// headStall: the chunk the client waits for fails when no byte of it has
// arrived for this long (its mirror hangs), so that another fetcher takes
// it up: the client would give up long before the stall timeout (pacman
// after 10 s without a byte).
const headStall = 3 * time.Second

// overtakeAfter: the fetcher of the chunk the client waits for is given
// this long before a faster fetcher may take the rest of it over.
const overtakeAfter = 500 * time.Millisecond

// watch fails the fetch of the head chunk if it has stalled, and ends it
// if the fastest fetcher would bring the rest of it far sooner (its
// fetcher then leaves: the rest goes to the others). s.mu must be held.
func (s *splitter) watch(head *chunk) {
	if head.cancel == nil {
		return
	}
	if time.Since(head.progress) >= headStall {
		head.cancel(errStalled)
		head.cancel = nil
		return
	}
	if s.lags(head, time.Now()) {
		head.cancel(errOvertaken)
		head.cancel = nil
	}
}

// judgeFetchers ends the chunks that lag far behind the fastest fetcher,
// wherever they are in the file: the fetcher has shown what it is (and
// leaves), and the rest of its chunk goes to a faster fetcher. An explorer
// shows that it is slow; a ranked fetcher, that its mirror has turned
// slow since its score was made, and its chunk, sized for that score,
// would hold the client at the new pace. Waiting until the chunk is the
// one the client waits for would keep a slow mirror in the pool, and a
// faster one out, for as long. (A chunk sized for its fetcher's score
// lags only when that score no longer holds, or when it was clamped to
// minChunk for a fetcher far slower than the best: it would hold the
// client longer than the best would take for it.)
func (s *splitter) judgeFetchers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for _, c := range slices.Concat(s.chunks, s.tail) {
		if c.cancel != nil && s.lags(c, now) {
			c.cancel(errOvertaken)
			c.cancel = nil
		}
	}
}

// lags reports whether the fetch of c, at the pace it has gone since it
// began, would end more than twice as late as the fastest fetcher would
// end it (counting a round trip for its request). A fetch that has
// stopped moving is not slow but stalled: that is a failure (watch).
// s.mu must be held.
func (s *splitter) lags(c *chunk, now time.Time) bool {
	elapsed := now.Sub(c.began)
	if elapsed < overtakeAfter || s.best <= 0 || now.Sub(c.progress) >= overtakeAfter/4 {
		return false
	}
	left := float64(c.size() - c.n)
	pace := float64(c.n) / elapsed.Seconds()
	faster := left/s.best + chunkTime.Seconds()
	return pace*2*faster < left
}

// recruit adds the idle fast workers the split has room for, unless
// requests wait for workers.
func (s *splitter) recruit() {
	p := s.t.p
	s.mu.Lock()
	room, minScore, exclude := p.cfg.Split-s.ranked(), s.best/helperShare, maps.Clone(s.failed)
	wt := want{exclude: exclude, sum: s.t.want().sum}
	left := s.end - s.next
	for w := range s.fetchers {
		exclude[w.key] = true
	}
	for w := range s.left {
		exclude[w.key] = true
	}
	s.mu.Unlock()
	if left <= 0 {
		return
	}
	p.mu.Lock()
	sts := p.spare()
	helpers := idleHelpers(sts, wt, room, minScore, p.cfg.TrialSamples)
	if left >= exploreMinRemaining {
		helpers = append(helpers, idleExplorers(sts, wt, p.cfg.Workers, p.cfg.TrialSamples)...)
	}
	for _, h := range helpers {
		p.claim(h.w)
	}
	p.mu.Unlock()
	s.mu.Lock()
	for _, h := range helpers {
		s.start(h.w, h.score, !h.ranked(p.cfg.TrialSamples))
	}
	s.mu.Unlock()
	s.surge(helpers)
}

// surge lets the pool surge (explore.go) from the split's first explorer
// to its end. Only the split's writer goroutine calls it (by split and
// recruit), so s.surging needs no lock.
func (s *splitter) surge(helpers []standing) {
	trial := s.t.p.cfg.TrialSamples
	if s.surging || !slices.ContainsFunc(helpers, func(h standing) bool { return !h.ranked(trial) }) {
		return
	}
	s.surging = true
	s.t.p.beginExplore()
}

// replace finds a fetcher when none is left and bytes are missing: an idle
// fast worker, or else the next free worker that has not failed, as long as
// the retries allow.
func (s *splitter) replace() error {
	p := s.t.p
	s.mu.Lock()
	failures, exclude := len(s.failures), maps.Clone(s.failed)
	s.mu.Unlock()
	if failures > p.cfg.Retries {
		return errNoUntried
	}
	s.recruit()
	s.mu.Lock()
	found := len(s.fetchers) > 0
	s.mu.Unlock()
	if found {
		return nil
	}
	w, err := p.acquire(s.ctx, want{exclude: exclude, committed: true, sum: s.t.want().sum})
	if err != nil {
		return err
	}
	s.t.attempts++
	score, ranked := p.trialOf(w)
	s.mu.Lock()
	s.start(w, score, !ranked)
	s.mu.Unlock()
	return nil
}

// fetch fetches chunks with w until there is none left for it, then
// releases w.
func (s *splitter) fetch(w *worker) {
	defer s.wg.Done()
	p := s.t.p
	var o outcome
	for {
		c := s.take(w)
		if c == nil {
			break
		}
		n, d, err := s.get(w, c)
		o.bytes += n
		o.elapsed += d
		s.mu.Lock()
		exploring := s.explorers[w]
		s.mu.Unlock()
		if exploring && (err == nil || errors.Is(err, errOvertaken)) && n > 0 {
			// Each chunk of an explorer is a sample: it is ranked by them.
			if p.record(w.key, w.stats, outcome{success: true, bytes: n, elapsed: d}) {
				p.mu.Lock()
				p.sampled(w)
				p.mu.Unlock()
			}
			o = outcome{}
			s.explored(w)
		}
		if err != nil {
			s.mu.Lock()
			offset := c.first + int64(c.n)
			if c.n < c.size() { // what is missing goes to another fetcher
				s.retry = append(s.retry, c)
			}
			gone := s.ctx.Err() != nil || errors.Is(err, errOvertaken)
			peerDeclined := declined(w, err)
			if peerDeclined {
				s.failed[w.key] = true // not asked again for this file
			} else if !gone {
				s.failed[w.key] = true
				s.failures = append(s.failures, w.key+": "+err.Error())
			}
			s.leave(w)
			s.mu.Unlock()
			if gone || peerDeclined { // the transfer ended, a faster mirror took over, or a peer declined: not a failure
				if errors.Is(err, errOvertaken) {
					p.mu.Lock()
					w.overtaken = true // it may resign now, to make room for another
					p.mu.Unlock()
				}
				p.release(w, outcome{success: o.bytes > 0, bytes: o.bytes, elapsed: o.elapsed})
				return
			}
			p.obs.AttemptFailed(w.key, failureReason(err))
			p.log.Warn("mirror failed", zap.String("mirror", w.key), zap.String("path", s.t.rel),
				zap.Bool("committed", true), zap.Int64("offset", offset), zap.Error(err))
			p.release(w, outcome{failed: true})
			return
		}
	}
	p.release(w, outcome{success: o.bytes > 0, bytes: o.bytes, elapsed: o.elapsed})
}

// leave takes w out of the fetchers. s.mu must be held.
func (s *splitter) leave(w *worker) {
	s.speed = max(s.speed-s.fetchers[w], 0)
	delete(s.fetchers, w)
	delete(s.explorers, w)
	s.left[w] = true
	// The best is among those that fetch: one that left does not judge
	// the others (lags) nor bar helpers.
	s.best = 0
	for _, score := range s.fetchers {
		s.best = max(s.best, score)
	}
	s.cond.Broadcast()
}

// take gives w the next chunk to fetch: one a failed fetcher left, or a new
// one sized to w's speed once the buffer has room for it. It returns nil,
// and takes w out of the fetchers, when there is none for w: all is taken,
// the transfer ended, w is too slow to help, or a request waits for a
// worker. Then a split gives back its extra fetchers at once, and its last
// one only while the client, not the mirrors, holds the transfer back (the
// buffer is full): its response is committed, and the last fetcher is
// what keeps it going.
func (s *splitter) take(w *worker) *chunk {
	p := s.t.p
	s.mu.Lock()
	defer s.mu.Unlock()
	score, exploring := s.fetchers[w], s.explorers[w]
	size := int64(min(max(score*chunkTime.Seconds(), minChunk), maxChunk))
	if exploring {
		size = exploreChunk
	}
	for {
		if s.ctx.Err() != nil || (p.waiting() && len(s.fetchers) > 1) {
			s.leave(w)
			return nil
		}
		s.meet()
		// What a failed or overtaken fetcher left goes first, nearest the
		// head first; an explorer leaves it to the ranked fetchers, if
		// there are any.
		if !exploring || s.ranked() == 0 {
			if c := s.takeRetry(); c != nil {
				return c
			}
		}
		// Explorers probe the tail while a ranked fetcher carries the
		// head; until there is one, the head is theirs.
		if exploring && s.ranked() > 0 && s.explore(size) {
			return s.tail[0]
		}
		left := s.end - s.next
		// A fetcher much slower than the best leaves the others to it,
		// unless it is the only one left or still exploring.
		if left <= 0 || (score*helperShare < s.best && len(s.fetchers) > 1 && !exploring) {
			s.leave(w)
			return nil
		}
		n := min(size, left)
		if left-n < minChunk && left <= maxChunk {
			n = left // no small last chunk
		}
		var buffered int64
		for _, c := range s.chunks {
			buffered += int64(c.size())
		}
		if len(s.chunks) > 0 && buffered+n > int64(p.cfg.Split+1)*maxChunk+int64(len(s.explorers))*exploreChunk {
			if p.waiting() { // the client is the bottleneck: free the worker
				s.leave(w)
				return nil
			}
			s.cond.Wait()
			continue
		}
		c := &chunk{first: s.next, last: s.next + n - 1, buf: chunkBuffers.Get().(*[]byte)}
		s.next += n
		s.chunks = append(s.chunks, c)
		return c
	}
}

// takeRetry takes the chunk left by a failed or overtaken fetcher that is
// nearest the head, or nil. One in the tail waits while the frontier has
// bytes left: the client needs those first. s.mu must be held.
func (s *splitter) takeRetry() *chunk {
	best := -1
	for i, c := range s.retry {
		if (c.first < s.end || s.next >= s.end) && (best < 0 || c.first < s.retry[best].first) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	c := s.retry[best]
	s.retry = slices.Delete(s.retry, best, best+1)
	return c
}

// exploreTail bounds the tail explorers fetch ahead of the head, in
// bytes held until the head reaches them.
const exploreTail = 16 << 20

// explore puts a chunk of the given size at the front of the tail, far
// from the head, if the tail has room and leaves the frontier enough. It
// reports whether it did. s.mu must be held.
func (s *splitter) explore(size int64) bool {
	held := s.t.last + 1 - s.end // the tail runs from end to the file's end
	if held+size > exploreTail || s.end-s.next < size+exploreMinRemaining/2 {
		return false
	}
	c := &chunk{first: s.end - size, last: s.end - 1, buf: exploreBuffers.Get().(*[]byte)}
	s.end -= size
	s.tail = append([]*chunk{c}, s.tail...)
	return true
}

// meet makes the tail part of the chunks once the frontier has reached
// it. s.mu must be held.
func (s *splitter) meet() {
	if s.next < s.end || len(s.tail) == 0 {
		return
	}
	s.chunks = append(s.chunks, s.tail...)
	s.tail = nil
	s.next = s.t.last + 1
	s.end = s.next
}

// get fetches the rest of c from w's mirror. It returns the bytes received
// and the time they count for in a sample.
func (s *splitter) get(w *worker, c *chunk) (int64, time.Duration, error) {
	t, p := s.t, s.t.p
	ctx, cancel := context.WithCancelCause(s.ctx)
	defer cancel(nil)
	s.mu.Lock()
	first := c.first + int64(c.n)
	c.progress, c.began, c.cancel, c.mirror, c.explorer = time.Now(), time.Now(), cancel, w.key, s.explorers[w]
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		c.cancel = nil
		s.mu.Unlock()
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fileURL(w.mirror, t.rel), nil)
	if err != nil {
		return 0, 0, fmt.Errorf("building request: %w", err)
	}
	t.setRange(req, first, c.last)
	t.setPeerHeaders(req, w)
	began := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, 0, withCause(ctx, fmt.Errorf("request: %w", err))
	}
	defer resp.Body.Close()
	wait := time.Since(began)
	if err := t.checkRange(resp, first, c.last); err != nil {
		return 0, 0, err
	}
	body := &meter{r: resp.Body, stall: p.cfg.StallTimeout, cancel: cancel,
		minRate: p.trickleRate()}
	defer body.stop()
	buf := (*c.buf)[:c.size()]
	for n := c.n; n < len(buf); {
		m, err := body.Read(buf[n:])
		if m > 0 {
			n += m
			s.mu.Lock()
			c.n, c.progress = n, time.Now()
			s.cond.Broadcast()
			s.mu.Unlock()
		}
		if err == io.EOF && n < len(buf) {
			err = io.ErrUnexpectedEOF
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return body.n, transferTime(body.n, wait, body.busy, p.cfg.MinSampleBytes), withCause(ctx, fmt.Errorf("body: %w", err))
		}
	}
	return body.n, transferTime(body.n, wait, body.busy, p.cfg.MinSampleBytes), nil
}
