package pool

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// Parallel trials. A cold pool learns its mirrors from the requests it
// serves, one trial a request. A client that fetches a few small files one
// after the other (its databases first) would wait for each on whichever
// mirror comes first in the provider's order, slow or not, and the pool
// would learn one mirror a file. So when a request goes to a mirror on
// trial, every idle mirror of the pool that has never served and may serve
// that file (only fresh ones for an index) fetches its head alongside:
// each makes a sample, all at once, within trialTimeout. Requests
// that go to the best worker (indexes, large files, retries, committed
// work) then go to the fastest of them; new requests still give the
// workers on trial their turns in the provider's order (its prior), so
// every mirror is measured, in parallel rather than in series. A request
// that has to wait for a worker ends the trials under way (requests come
// first, and a busy pool measures its workers by what they serve: the
// trials end for good); a trial that taught nothing (the file was small,
// or missing) is made again with a later file, at most trialAttempts
// times. A trial fetches min_sample's default: the bytes the pool spends
// to learn, once a worker, on a cold start.
const (
	trialBytes   = DefaultMinSampleBytes // what a parallel trial fetches: a sample at the default min_sample
	trialTimeout = 2 * time.Second       // a mirror slower than trialBytes in this long shows it by the bytes it sent
	// trialMinBytes: a trial that brought less (a tiny file) showed the
	// mirror's latency, not its bandwidth, and makes no sample.
	trialMinBytes = 64 << 10
	trialAttempts = 3
)

// parallelTrials starts the parallel trials for t's file when w, just
// acquired for it, is on trial and no request waits for a worker.
func (p *Pool) parallelTrials(w *worker, t *transfer) {
	if t.r.Method != http.MethodGet || w.peer != nil || p.cfg.serialTrials {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing || len(p.waiters) > 0 {
		return
	}
	sts := p.standings()
	if i := find(sts, w); i < 0 || sts[i].ranked(p.cfg.TrialSamples) {
		return
	}
	wt := t.want()
	newest := wt.newest(sts)
	for _, s := range mirrorsOf(sts) {
		if s.w == w || !s.idle() || s.w.trials >= trialAttempts || s.served > 0 || s.samples > 0 || !wt.allows(s, newest) {
			continue
		}
		if p.trialCtx == nil {
			p.trialCtx, p.trialStop = context.WithCancel(p.halt)
		}
		s.w.trials++
		p.claim(s.w)
		p.wg.Add(1)
		go p.trial(p.trialCtx, s.w, t.rel, t.r.Header["User-Agent"])
	}
}

// stopTrials ends the parallel trials under way. p.mu must be held.
func (p *Pool) stopTrials() {
	if p.trialStop != nil {
		p.trialStop()
		p.trialCtx, p.trialStop = nil, nil
	}
}

// trial fetches the head of rel from w's mirror as a sample, then releases
// w. What goes wrong is no failure of the mirror's: no client waited for
// it, and the requests it serves later judge it.
func (p *Pool) trial(ctx context.Context, w *worker, rel string, userAgent []string) {
	defer p.wg.Done()
	o := outcome{trial: true}
	n, d, err := p.fetchTrial(ctx, w, rel, userAgent)
	switch {
	case n >= trialMinBytes: // a mirror cut short (by the timeout, by a waiting request) still shows its pace
		o.success, o.bytes, o.elapsed = true, n, d
	case err != nil && ctx.Err() == nil:
		p.log.Debug("parallel trial failed", zap.String("mirror", w.key), zap.String("path", rel), zap.Error(err))
	}
	if ctx.Err() != nil { // a request waits: the pool is busy, and what it serves measures w
		p.mu.Lock()
		w.trials = trialAttempts
		p.mu.Unlock()
	}
	p.release(w, o)
}

// fetchTrial fetches up to trialBytes of the head of rel from w's mirror,
// for at most trialTimeout, or until ctx ends. It returns the bytes
// received and the time they count for in a sample (for a file below
// min_sample, part of the wait for the headers, as for any small
// transfer).
func (p *Pool) fetchTrial(ctx context.Context, w *worker, rel string, userAgent []string) (int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, trialTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fileURL(w.mirror, rel), nil)
	if err != nil {
		return 0, 0, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=0-%d", trialBytes-1))
	setUserAgent(req, userAgent)
	began := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("request: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return 0, 0, &statusError{resp.Status}
	}
	if isHTML(resp) {
		return 0, 0, errHTML
	}
	wait := time.Since(began)
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, trialBytes))
	if err != nil {
		err = fmt.Errorf("body: %w", err)
	}
	return n, transferTime(n, wait, time.Since(began)-wait, p.cfg.MinSampleBytes), err
}
