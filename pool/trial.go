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
// trial, every idle mirror of the pool that has never served fetches the
// head of the same file alongside, once: each makes a sample, all at once,
// within trialTimeout. The next requests go to the fastest of them (pick
// orders workers on trial by what they showed), and the slowest wait for
// their turn: every mirror is still measured, in parallel rather than in
// series.
const (
	trialBytes   = exploreChunk    // what a parallel trial fetches: a sample at the default min_sample
	trialTimeout = 2 * time.Second // a mirror slower than trialBytes in this long shows it by the bytes it sent
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
	for _, s := range mirrorsOf(sts) {
		if s.w == w || !s.idle() || s.served > 0 || s.samples > 0 {
			continue
		}
		p.claim(s.w)
		p.wg.Add(1)
		go p.trial(s.w, t.rel, t.r.Header["User-Agent"])
	}
}

// trial fetches the head of rel from w's mirror as a sample, then releases
// w. What goes wrong is no failure of the mirror's: no client waited for
// it, and the requests it serves later judge it.
func (p *Pool) trial(w *worker, rel string, userAgent []string) {
	defer p.wg.Done()
	o, err := p.fetchTrial(w, rel, userAgent)
	if err != nil {
		p.log.Debug("parallel trial failed", zap.String("mirror", w.key), zap.String("path", rel), zap.Error(err))
	}
	p.release(w, o)
}

// fetchTrial fetches up to trialBytes of the head of rel from w's mirror,
// for at most trialTimeout, and returns what it showed.
func (p *Pool) fetchTrial(w *worker, rel string, userAgent []string) (outcome, error) {
	ctx, cancel := context.WithTimeout(p.halt, trialTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fileURL(w.mirror, rel), nil)
	if err != nil {
		return outcome{}, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=0-%d", trialBytes-1))
	req.Header["User-Agent"] = userAgent // the client's, or none (not Go's)
	began := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return outcome{}, fmt.Errorf("request: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return outcome{}, &statusError{resp.Status}
	}
	wait := time.Since(began)
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, trialBytes))
	body := time.Since(began) - wait
	if n == 0 {
		return outcome{}, fmt.Errorf("body: %w", err)
	}
	// A slow mirror cut short by the timeout still shows its pace.
	// A small file makes a sample too: the pool has nothing better to go
	// by (its wait for the headers is discounted as for any small one).
	return outcome{success: true, alone: true, bytes: n, elapsed: transferTime(n, wait, body, p.cfg.MinSampleBytes)}, nil
}
