package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Request headers passed to mirrors. Everything else (cookies, credentials,
// forwarding headers) stays on the LAN.
var forwardedRequestHeaders = []string{
	"Accept", "Cache-Control", "If-Match", "If-Modified-Since", "If-None-Match",
	"If-Range", "If-Unmodified-Since", "Pragma", "Range", "User-Agent",
}

// Response headers passed to clients; hop-by-hop and cookie headers are not.
var forwardedResponseHeaders = []string{
	"Accept-Ranges", "Age", "Cache-Control", "Content-Disposition", "Content-Encoding",
	"Content-Length", "Content-Range", "Content-Type", "Etag", "Expires", "Last-Modified",
}

// peekBudget bounds the bytes the peeks of one pool hold at once, from the
// mirror until they reach the client. A pool peeks with at most one
// transfer per worker, and what a peek left for a slow client is dropped
// after parkAfter, so at the default of 8 workers and 1 MiB it hardly ever
// binds; it keeps a pool of hundreds of workers whose clients all start at
// once, and read slowly, from holding hundreds of megabytes.
const peekBudget = 16 << 20

// flushAfter: a partly filled block goes to a waiting client once its
// first byte has waited this long.
const flushAfter = time.Millisecond

// A transfer gives up its worker when its client holds it back (room): when
// the client has had bytes waiting for parkAfter all along while a request
// waits for a worker, or when a write to the client has made no progress
// for parkAfter while more waits behind it (memory a stalled client must
// not keep). parkPoll is how often it looks.
const (
	parkAfter = time.Second
	parkPoll  = 100 * time.Millisecond
)

// attempt fetches the file, or the rest of it, from w's mirror and streams
// it to the client.
func (t *transfer) attempt(w *worker, lastChance bool) result {
	p := t.p
	ctx, cancel := context.WithCancelCause(t.r.Context())
	defer cancel(nil)
	stopHalt := context.AfterFunc(p.halt, func() { cancel(errClosed) })
	defer stopHalt()
	req, err := http.NewRequestWithContext(ctx, t.r.Method, fileURL(w.mirror, t.rel), nil)
	if err != nil {
		return result{err: fmt.Errorf("building request: %w", err)}
	}
	t.setRequestHeaders(req)
	t.setPeerHeaders(req, w)

	began := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return t.failed(ctx, fmt.Errorf("request: %w", err))
	}
	defer resp.Body.Close()
	wait := time.Since(began)

	if isNotFound(resp.StatusCode) && !t.committed {
		// Not a failure yet: only stale if another mirror has it. (A
		// peer's says nothing of the mirrors.)
		if w.peer == nil {
			t.notFound = append(t.notFound, w.key)
		}
		return result{err: &notFoundError{&statusError{resp.Status}}}
	}
	if !t.committed {
		if err := t.checkAnswer(resp); err != nil {
			return result{o: outcome{failed: true}, err: err}
		}
		if err := t.checkLength(resp); err != nil {
			return result{o: outcome{failed: true}, err: err}
		}
	} else {
		if err := t.checkContinuation(resp); err != nil {
			return result{o: outcome{failed: true}, err: err}
		}
		if t.refetch > 0 {
			p.obs.Refetched(t.refetch)
			t.refetch = 0
		}
	}

	t.source = w.key
	body := &meter{r: resp.Body, stall: p.cfg.StallTimeout, cancel: cancel,
		minRate: p.trickleRate()}
	defer body.stop()
	sample := func() outcome {
		return outcome{success: true, bytes: body.n, elapsed: transferTime(body.n, wait, body.busy, p.cfg.MinSampleBytes)}
	}
	if !t.committed {
		if t.r.Method == http.MethodHead {
			t.commit(w.key, resp)
			return result{step: stepDone, o: outcome{success: true}}
		}
		witnessed, giveUp := t.askWitness(w, resp, lastChance)
		blocks, eof, blame, err := t.peek(w, body, resp.ContentLength, t.holds(w, resp), cancel, lastChance)
		if err == nil {
			err = witnessed()
		} else {
			giveUp()
		}
		if err != nil {
			releaseBlocks(blocks)
			res := t.failed(ctx, fmt.Errorf("peek: %w", err))
			if res.o.failed && errors.Is(res.err, errPeekTimeout) && !blame {
				res.o = sample() // slow, but none is known to be faster
			}
			return res
		}
		if err := t.checkPeeked(resp, blocks, eof); err != nil {
			releaseBlocks(blocks)
			return result{o: outcome{failed: true}, err: err}
		}
		t.commit(w.key, resp)
		t.startCheck()
		if t.capture != nil && resp.StatusCode == http.StatusOK {
			p.learn(t.rel, w.key) // a second copy, to corroborate the client's
		}
		for i, b := range blocks {
			if err := t.queue(b); err != nil {
				releaseBlocks(blocks[i+1:])
				return result{err: err}
			}
		}
		if eof {
			if resp.StatusCode >= 300 {
				return result{step: stepDone, o: outcome{success: true}}
			}
			return result{step: stepDone, o: sample()}
		}
	}
	res := t.stream(w, body)
	switch res.step {
	case stepFailed:
		if errors.Is(res.err, errClientGone) {
			return res
		}
		return t.failed(ctx, res.err)
	case stepDone:
		if resp.StatusCode >= 300 {
			res.o = outcome{success: true}
			return res
		}
	}
	res.o = sample()
	return res
}

// failed classifies an attempt's error: the client's going away is not the
// mirror's fault.
func (t *transfer) failed(ctx context.Context, err error) result {
	if t.r.Context().Err() != nil {
		return result{err: errClientGone}
	}
	if errors.Is(context.Cause(ctx), errClosed) { // the pool was force-closed
		return result{err: errClosed}
	}
	return result{o: outcome{failed: true}, err: withCause(ctx, err)}
}

// withCause adds to err why ctx was cancelled, if it was and err does not
// say so already.
func withCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && cause != context.Canceled && !errors.Is(err, cause) {
		return fmt.Errorf("%w (%w)", cause, err)
	}
	return err
}

func isNotFound(status int) bool {
	return status == http.StatusNotFound || status == http.StatusGone
}

func (t *transfer) setRequestHeaders(req *http.Request) {
	if t.committed {
		// Continue the committed response from where it stopped.
		t.setRange(req, t.next, t.last)
		return
	}
	for _, h := range forwardedRequestHeaders {
		if v, ok := t.r.Header[h]; ok {
			req.Header[h] = v
		}
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = nil // not Go's default
	}
}

// setRange makes req ask for bytes first to last of the committed file.
// Unless the file's hash is known (and will be checked), it asks for them
// only if the mirror's copy has the same Last-Modified as the copy the
// response began with (If-Range): mirrors' ETags differ legitimately, but
// two builds of a file with the same name and size must not be stitched.
func (t *transfer) setRange(req *http.Request, first, last int64) {
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", first, last))
	if !t.checked() && t.modified != "" {
		req.Header.Set("If-Range", t.modified)
	}
	setUserAgent(req, t.r.Header["User-Agent"])
}

// setUserAgent passes the client's User-Agent values on, or none (a key
// with no value: not Go's).
func setUserAgent(req *http.Request, client []string) {
	req.Header["User-Agent"] = client
}

// peek reads the start of the body, in blocks, before anything is
// committed, so that a slow or broken mirror can still be replaced: up to
// the peek size, or the whole body if it is smaller; eof tells the latter.
// The deadline follows the pool's measurements (peekDeadline). When it
// passes, the peek fails with errPeekTimeout, and blame tells whether
// another mirror is known to be much faster than this one was being: only
// then does the timeout count against the mirror (otherwise what it did
// deliver is a sample like any other). The last chance has no deadline.
func (t *transfer) peek(w *worker, body *meter, size int64, hold bool, cancel context.CancelCauseFunc, lastChance bool) (blocks []*block, eof, blame bool, err error) {
	p := t.p
	limit := p.cfg.PeekSize
	if size >= 0 {
		limit = min(limit, size)
	}
	budget := int64(peekBudget)
	if hold { // the whole file, to be checked before it is sent (verify.go)
		limit, budget = size, holdBudget
	}
	start := time.Now()
	var peeked atomic.Int64
	var blamed atomic.Bool
	endDeadline := func() {}
	if !lastChance {
		timed := min(limit, p.cfg.PeekSize) // a held file's rest is not held to the peek deadline
		deadline := ranked(p, func(sts []standing) time.Duration {
			return peekDeadline(sts, p.cfg.TrialSamples, timed, p.cfg.PeekTimeout)
		})
		began := time.Now()
		var mu sync.Mutex // guards over: the callback must not cancel a peek that ended
		over := false
		timer := time.AfterFunc(deadline, func() {
			rate := float64(peeked.Load()) / time.Since(began).Seconds()
			faster := ranked(p, func(sts []standing) bool { return fasterThan(sts, w.key, rate) })
			mu.Lock()
			defer mu.Unlock()
			if !over {
				blamed.Store(faster)
				cancel(errPeekTimeout)
			}
		})
		endDeadline = func() {
			mu.Lock()
			over = true
			mu.Unlock()
			timer.Stop()
		}
		defer func() {
			endDeadline()
			blame = blamed.Load()
		}()
	}
	// What peeks hold, until it reaches the client, shares a memory
	// budget: beyond it, a peek ends after its first block (the transfer
	// is then watched after the commit: move.go, the meter).
	cur := newBlock(size)
	cur.charge(&p.peekHeld)
	var n int64
	for n < limit {
		if n >= p.cfg.PeekSize {
			endDeadline()
			if hold && time.Since(start) >= maxHold {
				break // the client waits: stream the rest, checked at its end
			}
		}
		if cur.full() {
			if p.peekHeld.Load()+blockSize > budget {
				break
			}
			cur = newBlock(size)
			cur.charge(&p.peekHeld)
		}
		buf := cur.free()
		if rest := limit - n; int64(len(buf)) > rest {
			buf = buf[:rest]
		}
		m, rerr := body.Read(buf)
		cur.n += m
		n += int64(m)
		peeked.Store(n)
		if cur.full() {
			blocks = append(blocks, cur)
		}
		if rerr == io.EOF {
			eof = true
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	if size >= 0 && n >= size {
		eof = true // the rest is only the body's end
	}
	switch {
	case cur.full(): // in blocks already
	case cur.n > 0:
		blocks = append(blocks, cur)
	default:
		cur.release()
	}
	return blocks, eof, false, err
}

// commit sends the response headers to the client.
func (t *transfer) commit(mirror string, resp *http.Response) {
	h := t.w.Header()
	for _, k := range forwardedResponseHeaders {
		if v, ok := resp.Header[k]; ok {
			h[k] = v
		}
	}
	h.Set(MirrorHeader, mirror)
	t.committed, t.status, t.mirror = true, resp.StatusCode, mirror
	t.modified = resp.Header.Get("Last-Modified")
	t.first, t.last, t.size = 0, -1, -1
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength >= 0 {
			t.last, t.size = resp.ContentLength-1, resp.ContentLength
		} else if t.known && t.expect.size >= 0 && t.r.Method == http.MethodGet {
			// No length (chunked, or HTTP/2): the index's, so that a short
			// body is caught, and the client can tell one too.
			t.last, t.size = t.expect.size-1, t.expect.size
			h.Set("Content-Length", strconv.FormatInt(t.size, 10))
		}
	case http.StatusPartialContent:
		t.first, t.last, t.size, _ = parseContentRange(resp.Header.Get("Content-Range"))
	}
	t.next = t.first
	t.out = newSink(t.w)
	t.w.WriteHeader(resp.StatusCode)
}

// checkContinuation verifies that a response to a continuation range
// request carries the rest of the very file the client is receiving.
func (t *transfer) checkContinuation(resp *http.Response) error {
	return t.checkRange(resp, t.next, t.last)
}

// checkRange verifies that resp carries bytes first to last of the very
// file the client is receiving.
func (t *transfer) checkRange(resp *http.Response, first, last int64) error {
	if resp.StatusCode != http.StatusPartialContent {
		return fmt.Errorf("%w: %w, want 206", errContinuation, &statusError{resp.Status})
	}
	gotFirst, gotLast, size, err := parseContentRange(resp.Header.Get("Content-Range"))
	if err != nil {
		return fmt.Errorf("%w: %w", errContinuation, err)
	}
	if gotFirst != first || gotLast != last || size != t.size {
		return fmt.Errorf("%w: got bytes %d-%d/%d, want %d-%d/%d", errContinuation,
			gotFirst, gotLast, size, first, last, t.size)
	}
	if lm := resp.Header.Get("Last-Modified"); !t.checked() && lm != t.modified {
		return fmt.Errorf("%w: Last-Modified %q differs from %q", errContinuation, lm, t.modified)
	}
	return nil
}

// parseContentRange parses "bytes first-last/size"; an unknown size ("*")
// is -1.
func parseContentRange(v string) (first, last, size int64, err error) {
	bad := func() (int64, int64, int64, error) {
		return 0, -1, -1, fmt.Errorf("malformed Content-Range %q", v)
	}
	spec, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return bad()
	}
	rng, total, ok := strings.Cut(spec, "/")
	if !ok {
		return bad()
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad()
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil || first < 0 {
		return bad()
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first {
		return bad()
	}
	size = -1
	if total != "*" {
		if size, err = strconv.ParseInt(total, 10, 64); err != nil || size <= last {
			return bad()
		}
	}
	return first, last, size, nil
}

// stream copies the rest of the body to the client's sink. It reads into a
// block and queues it once it is full, or at once when the client waits
// for bytes. While it streams a file that may be continued elsewhere, it
// lets the pool offer it a much faster worker, and now and then looks for
// free fast workers itself (move.go): it then ends with stepSplit. It ends
// with stepParked when its client holds it back (deliver).
func (t *transfer) stream(w *worker, body *meter) result {
	var mv *movable
	if t.resumable() {
		mv = t.p.addMovable(want{exclude: t.tried, sum: t.want().sum})
		defer t.p.removeMovable(mv)
	}
	// cur is the block being filled; a new one is taken only once the
	// client's queue has room, so that a transfer held back by its client
	// holds no block of its own.
	var cur *block
	defer func() {
		if cur != nil {
			cur.release()
		}
	}()
	// The rate since the last check, not since the start: a mirror that
	// has just turned slow is judged by what it does now.
	checkedBytes, checkedBusy, checkedAt := body.n, body.busy, time.Now()
	var rate float64
	var began time.Time // when cur received its first byte
	for {
		if cur == nil {
			if t.out.slow() { // nothing is read ahead of a slow client
				if parked, err := t.room(true); err != nil {
					return result{err: err}
				} else if parked {
					return result{step: stepParked}
				}
			}
			cur = newBlock(t.remaining())
		}
		n, err := body.Read(cur.free())
		if cur.n == 0 && n > 0 {
			began = time.Now()
		}
		cur.n += n
		// A block goes when full, or when the client waits for bytes that
		// have waited long enough: small writes cost system calls.
		if cur.n > 0 && (cur.full() || err != nil || (time.Since(began) >= flushAfter && t.out.starving())) {
			b := cur
			cur = nil
			if parked, err := t.deliver(b, true); err != nil {
				return result{err: err}
			} else if parked {
				return result{step: stepParked}
			}
		}
		if mv != nil && err == nil {
			var helpers []standing
			select {
			case to := <-mv.offer:
				helpers = []standing{to}
			default:
			}
			if span := body.busy - checkedBusy; helpers == nil && span >= upgradeCheckEvery {
				rate = float64(body.n-checkedBytes) / span.Seconds()
				if span < time.Since(checkedAt)/2 {
					rate = 0 // mostly waiting for the client: more mirrors won't help
				}
				checkedBytes, checkedBusy, checkedAt = body.n, body.busy, time.Now()
				pending := int64(0)
				if cur != nil {
					pending = int64(cur.n)
				}
				helpers = t.p.measured(mv, rate, t.remaining()-pending)
			}
			if helpers != nil {
				if cur != nil && cur.n > 0 { // what this mirror sent goes first
					err := t.queue(cur)
					cur = nil
					if err != nil {
						t.p.releaseAll(helpers)
						return result{err: err}
					}
				}
				return result{step: stepSplit, helpers: helpers, rate: rate}
			}
		}
		if err == io.EOF && t.last >= 0 && t.next <= t.last {
			err = errShortBody
		}
		if err == io.EOF {
			return result{step: stepDone}
		}
		if err != nil {
			return result{err: fmt.Errorf("body: %w", err)}
		}
	}
}

// remaining is how many bytes are left to fetch, or -1 if unknown.
func (t *transfer) remaining() int64 {
	if t.last < 0 {
		return -1
	}
	return t.last - t.next + 1
}

// queue hands b to the client's sink, whatever room it has.
func (t *transfer) queue(b *block) error {
	if err := t.tap(b.buf[:b.n], t.next); err != nil {
		b.release()
		return err
	}
	n := int64(b.n) // b is the sink's once offered
	if _, err := t.out.offer(b, true); err != nil {
		b.release()
		return clientErr(err)
	}
	t.next += n
	t.contributed()
	return nil
}

// deliver hands b to the client's sink, waiting for room (see room); it
// releases b if it parks.
func (t *transfer) deliver(b *block, mayPark bool) (parked bool, err error) {
	if err := t.tap(b.buf[:b.n], t.next); err != nil {
		b.release()
		return false, err
	}
	n := int64(b.n) // b is the sink's once offered
	ok, err := t.out.offer(b, false)
	if err != nil {
		b.release()
		return false, clientErr(err)
	}
	if ok {
		t.next += n
		t.contributed()
		return false, nil
	}
	if parked, err = t.room(mayPark); err != nil || parked {
		b.release()
		return parked, err
	}
	return false, t.queue(b)
}

// room waits until the client's sink has room for another block. If
// mayPark is set and the client holds the transfer back (see parkAfter), a
// transfer that can be resumed instead drops what is queued when the
// write stalled (to be fetched again) and reports that it parked; the
// caller then drops what it holds too.
func (t *transfer) room(mayPark bool) (parked bool, err error) {
	for {
		full, err := t.out.full()
		if err != nil {
			return false, clientErr(err)
		}
		if !full {
			return false, nil
		}
		if !mayPark || !t.resumable() {
		} else if t.out.writeStalled() >= parkAfter && t.out.backlog() > 0 {
			// A stalled client: what waits for it goes, to be fetched
			// again when it reads on.
			dropped := t.out.dropQueued()
			t.next -= dropped
			t.refetch += dropped
			return true, nil
		} else if t.out.clientBound() >= parkAfter && t.p.waiting() {
			return true, nil // what is queued still goes to the client
		}
		timer := time.NewTimer(parkPoll)
		t.out.waitRoom(t.r.Context().Done(), t.p.stop, timer.C)
		timer.Stop()
		if t.r.Context().Err() != nil {
			return false, errClientGone
		}
		if t.p.halt.Err() != nil {
			return false, errClosed
		}
	}
}

// send queues bytes for the client (a split's chunks), copied into blocks,
// waiting for room as long as the client takes them.
func (t *transfer) send(data []byte) error {
	for len(data) > 0 {
		b := newBlock(-1)
		b.n = copy(b.buf, data)
		data = data[b.n:]
		if _, err := t.deliver(b, false); err != nil {
			return err
		}
	}
	return nil
}

// fileURL is the URL of the file at rel (a decoded path, as CleanPath
// returns it) on the mirror at base. rel is escaped exactly once, so a
// "%" in it stays a literal "%" and can never decode into "../" upstream.
func fileURL(base *url.URL, rel string) string {
	u := *base
	u.Path = base.Path + rel
	u.RawPath = ""
	if base.RawPath != "" {
		u.RawPath = base.EscapedPath() + (&url.URL{Path: rel}).EscapedPath()
	}
	return u.String()
}
