package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// MirrorHeader is the response header that names the mirror that served
// (the first bytes of) a response.
const MirrorHeader = "Refractor-Mirror"

// ErrAborted is returned by Serve when the response was already committed to
// the client and could not be completed correctly. The caller must abort the
// client connection (panic with http.ErrAbortHandler) so the client sees a
// failed transfer rather than a short file.
var ErrAborted = errors.New("response aborted after it was committed")

// Error is a failure that happened before anything was sent to the client.
type Error struct {
	// Status is the HTTP status to answer with.
	Status int
	// RetryAfter, when positive, is the Retry-After to advertise.
	RetryAfter time.Duration
	// Err says why.
	Err error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

var (
	errPeekTimeout  = errors.New("peek timeout")
	errStalled      = errors.New("transfer stalled")
	errTrickle      = errors.New("transfer far slower than the pool's median")
	errContinuation = errors.New("continuation")
	errClientGone   = errors.New("client went away")
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

// statusClientClosedRequest is reported (not sent) when the client went
// away, as Caddy's reverse proxy does.
const statusClientClosedRequest = 499

// copyBufferSize is the size of the buffer that streams a body after the
// peek.
const copyBufferSize = 32 << 10

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// Serve answers r with the file at rel (a path relative to the mirrors'
// base, already checked with CleanPath) from the pool's mirrors. On success
// it returns nil. A failure before the response was committed is an *Error
// for the caller to send; ErrAborted means the connection must be aborted;
// a context error means the client went away.
func (p *Pool) Serve(w http.ResponseWriter, r *http.Request, rel string) error {
	t := &transfer{
		p:        p,
		w:        w,
		r:        r,
		rel:      rel,
		changing: p.isChanging(rel),
		tried:    make(map[string]bool),
		start:    time.Now(),
	}
	return t.run()
}

// isChanging reports whether rel names a file that changes in place.
func (p *Pool) isChanging(rel string) bool {
	base := path.Base(rel)
	for _, pattern := range p.cfg.ChangingPaths {
		if ok, _ := path.Match(pattern, base); ok {
			return true
		}
	}
	return false
}

// transfer is one client request on its way through the pool.
type transfer struct {
	p        *Pool
	w        http.ResponseWriter
	r        *http.Request
	rel      string
	changing bool
	start    time.Time

	tried    map[string]bool
	attempts int
	failures []string // "mirror: reason", for the 502 body
	notFound []string // mirrors that answered 404 or 410

	// Set once the response is committed to the client.
	committed bool
	status    int
	mirror    string // the mirror that committed the response
	written   int64  // body bytes sent to the client
	first     int64  // offset in the file of the first body byte
	last      int64  // offset of the last body byte, or -1 if unknown
	size      int64  // the file's size, or -1 if unknown
	modified  string // Last-Modified of the committed response
}

func (t *transfer) run() error {
	p := t.p
	var w *worker
	for {
		if w == nil {
			var err error
			if w, err = p.acquire(t.r.Context(), t.tried, t.changing); err != nil {
				return t.giveUp(err)
			}
			t.attempts++
		}
		t.tried[w.key] = true
		// The last chance is not held to the peek timeout: better a slow
		// download than none.
		lastChance := t.attempts > p.cfg.Retries || p.untriedLeft(t.tried) == 0
		o, err := t.attempt(w, lastChance)
		p.release(w, o)
		if err == nil {
			t.finish(w.key)
			return nil
		}
		var up *upgrade
		if errors.As(err, &up) {
			// Faster workers take over the rest; not a failure.
			return t.splitOver(w.key, up)
		}
		failed := w
		w = nil
		if errors.Is(err, errClientGone) || t.r.Context().Err() != nil {
			t.report(statusClientClosedRequest)
			return context.Cause(t.r.Context())
		}
		t.failures = append(t.failures, failed.key+": "+err.Error())
		reason := failureReason(err)
		p.obs.AttemptFailed(failed.key, reason)
		level := zap.WarnLevel
		if reason == "not_found" { // routine: unsigned databases' .sig, stale mirrors
			level = zap.DebugLevel
		}
		if ce := p.log.Check(level, "mirror failed"); ce != nil {
			ce.Write(zap.String("mirror", failed.key), zap.String("path", t.rel),
				zap.Int("attempt", t.attempts), zap.Bool("committed", t.committed),
				zap.Int64("offset", t.first+t.written), zap.Error(err))
		}
		if t.committed && !t.resumable() {
			return t.abort()
		}
		if lastChance {
			return t.giveUp(errNoUntried)
		}
		if t.committed {
			p.log.Info("continuing the transfer from another mirror",
				zap.String("path", t.rel), zap.String("failed_mirror", failed.key), zap.Int64("offset", t.first+t.written))
		}
	}
}

// giveUp turns the reason the transfer cannot go on into the error Serve
// returns.
func (t *transfer) giveUp(err error) error {
	if t.committed {
		return t.abort()
	}
	var status int
	var retryAfter time.Duration
	switch {
	case errors.Is(err, errQueueFull), errors.Is(err, errQueueTimeout), errors.Is(err, errClosed):
		status, retryAfter = http.StatusServiceUnavailable, 5*time.Second
		err = fmt.Errorf("no mirror available: %w", err)
	case errors.Is(err, errNoUntried) && len(t.notFound) > 0:
		// Every mirror that answered said the file is not there; the
		// others did not answer at all.
		status = http.StatusNotFound
		err = fmt.Errorf("%s: not found on %d mirrors (%s)", t.rel, len(t.notFound), strings.Join(t.notFound, ", "))
	case errors.Is(err, errNoUntried):
		status = http.StatusBadGateway
		err = fmt.Errorf("%s: all %d attempts failed:\n%s", t.rel, t.attempts, strings.Join(t.failures, "\n"))
	default: // the client went away while waiting
		t.report(statusClientClosedRequest)
		return err
	}
	t.report(status)
	return &Error{Status: status, RetryAfter: retryAfter, Err: err}
}

func (t *transfer) abort() error {
	t.report(0)
	return fmt.Errorf("%w: %s after %d of its bytes, %d attempts:\n%s",
		ErrAborted, t.rel, t.written, t.attempts, strings.Join(t.failures, "\n"))
}

// splitOver hands the rest of the transfer, which mirror was streaming, to
// up's helpers and whatever fast workers join them.
func (t *transfer) splitOver(mirror string, up *upgrade) error {
	p := t.p
	if ce := p.log.Check(zap.DebugLevel, "splitting the transfer over faster mirrors"); ce != nil {
		keys := make([]string, len(up.helpers))
		for i, h := range up.helpers {
			keys[i] = h.key
		}
		ce.Write(zap.String("path", t.rel), zap.String("from", mirror), zap.Strings("to", keys),
			zap.Int64("offset", t.first+t.written), zap.Float64("rate_bps", up.rate))
	}
	exclude := maps.Clone(t.tried)
	delete(exclude, mirror) // it may help, if it is fast enough
	err := t.split(up.helpers, exclude)
	switch {
	case err == nil:
		t.finish(t.mirror)
		return nil
	case errors.Is(err, errClientGone) || t.r.Context().Err() != nil:
		t.report(statusClientClosedRequest)
		return context.Cause(t.r.Context())
	}
	t.failures = append(t.failures, "split: "+err.Error())
	return t.abort()
}

// finish reports a completed response and penalises the mirrors that
// claimed not to have a file another mirror had: they are stale.
func (t *transfer) finish(mirror string) {
	if len(t.notFound) > 0 && t.status < 300 {
		t.p.penalise(t.notFound)
	}
	t.report(t.status)
}

func (t *transfer) report(status int) {
	d := time.Since(t.start)
	t.p.obs.RequestDone(t.mirror, status, t.attempts, t.written, d)
	if ce := t.p.log.Check(zap.InfoLevel, "request done"); ce != nil {
		ce.Write(zap.String("path", t.rel), zap.String("mirror", t.mirror), zap.Int("status", status),
			zap.Int("attempts", t.attempts), zap.Int64("bytes", t.written), zap.Duration("duration", d),
			zap.Float64("throughput_bps", float64(t.written)/max(d.Seconds(), 1e-9)))
	}
}

// resumable reports whether a committed response may be completed from
// another mirror with a range request.
func (t *transfer) resumable() bool {
	return !t.changing && t.r.Method == http.MethodGet && t.size >= 0 && t.last >= 0 &&
		(t.status == http.StatusOK || t.status == http.StatusPartialContent)
}

// attempt fetches the file from w's mirror and streams it to the client. It
// returns what the attempt taught about the mirror and nil, or why it
// failed.
func (t *transfer) attempt(w *worker, lastChance bool) (outcome, error) {
	p := t.p
	ctx, cancel := context.WithCancelCause(t.r.Context())
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, t.r.Method, fileURL(w.mirror, t.rel), nil)
	if err != nil {
		return outcome{}, fmt.Errorf("building request: %w", err)
	}
	t.setRequestHeaders(req)

	began := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return t.failed(ctx, fmt.Errorf("request: %w", err))
	}
	defer resp.Body.Close()
	mirrorTime := time.Since(began)

	if isMirrorFailure(resp.StatusCode) {
		err := &statusError{resp.Status}
		if isNotFound(resp.StatusCode) {
			// Not a failure yet: only stale if another mirror has it.
			t.notFound = append(t.notFound, w.key)
			return outcome{}, &notFoundError{err}
		}
		return outcome{failed: true}, err
	}
	if t.committed {
		if err := t.checkContinuation(resp); err != nil {
			return outcome{failed: true}, err
		}
	}

	body := &meter{r: resp.Body, stall: p.cfg.StallTimeout, cancel: cancel, minRate: p.trickleRate()}
	defer body.stop()
	if !t.committed {
		var peeked []byte
		release := func() {}
		if t.r.Method != http.MethodHead {
			peeked, release, err = t.peek(body, resp.ContentLength, cancel, lastChance)
			if err != nil {
				release()
				return t.failed(ctx, fmt.Errorf("peek: %w", err))
			}
		}
		t.commit(w.key, resp)
		err := t.send(peeked)
		release() // the peek buffer is not held for the rest of the transfer
		if err != nil {
			return outcome{}, err
		}
	}
	if err := t.stream(w, body); err != nil {
		var up *upgrade
		switch {
		case errors.Is(err, errClientGone):
			return outcome{}, err
		case errors.As(err, &up):
			return outcome{success: true, bytes: body.n, elapsed: transferTime(body.n, mirrorTime, body.busy, p.cfg.MinSampleBytes)}, err
		}
		return t.failed(ctx, err)
	}
	data := t.r.Method == http.MethodGet && resp.StatusCode < 300
	if !data {
		return outcome{success: true}, nil
	}
	return outcome{success: true, bytes: body.n, elapsed: transferTime(body.n, mirrorTime, body.busy, p.cfg.MinSampleBytes)}, nil
}

// failed classifies an attempt's error: the client's going away is not the
// mirror's fault.
func (t *transfer) failed(ctx context.Context, err error) (outcome, error) {
	if t.r.Context().Err() != nil {
		return outcome{}, errClientGone
	}
	if cause := context.Cause(ctx); cause != nil && cause != context.Canceled && !errors.Is(err, cause) {
		err = fmt.Errorf("%w (%w)", cause, err)
	}
	return outcome{failed: true}, err
}

func isNotFound(status int) bool {
	return status == http.StatusNotFound || status == http.StatusGone
}

// notFoundError is a mirror's 404 or 410.
type notFoundError struct{ *statusError }

func (e *notFoundError) Unwrap() error { return e.statusError }

// isMirrorFailure reports whether a status means this mirror cannot serve
// the request while another might.
func isMirrorFailure(status int) bool {
	switch status {
	case http.StatusForbidden, http.StatusNotFound, http.StatusRequestTimeout,
		http.StatusGone, http.StatusTooManyRequests:
		return true
	}
	return status >= 500
}

func (t *transfer) setRequestHeaders(req *http.Request) {
	if t.committed {
		// Continue the committed response from where it stopped.
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", t.first+t.written, t.last))
		if ua := t.r.Header.Get("User-Agent"); ua != "" {
			req.Header.Set("User-Agent", ua)
		}
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

// peek reads the start of the body before anything is committed, so that a
// slow or broken mirror can still be replaced: up to the peek size, or the
// whole body if it says it is smaller.
func (t *transfer) peek(body *meter, size int64, cancel context.CancelCauseFunc, lastChance bool) ([]byte, func(), error) {
	buf := t.p.peekBuffer(size)
	release := func() { t.p.releasePeekBuffer(buf) }
	if !lastChance { // the last chance streams whatever it gets
		timer := time.AfterFunc(t.p.cfg.PeekTimeout, func() { cancel(errPeekTimeout) })
		defer timer.Stop()
	}
	n := 0
	for n < len(*buf) {
		m, err := body.Read((*buf)[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, release, err
		}
	}
	return (*buf)[:n], release, nil
}

// Peek buffers come in size classes, powers of two from minPeekBuffer up to
// the peek size (the last class), so that the many small files of a
// package set (signatures, small packages) do not each hold a whole peek
// buffer while the client reads them.
const (
	minPeekBuffer = 16 << 10
	peekClasses   = 8 // minPeekBuffer<<0 .. <<6 (1 MiB) below the peek size, then the peek size
)

// peekClass is the smallest class that holds size bytes (size < 0: unknown,
// the peek size), and that class's buffer length.
func (p *Pool) peekClass(size int64) (class int, length int64) {
	peek := p.cfg.PeekSize
	if size < 0 || size > peek {
		size = peek
	}
	for class, length = 0, minPeekBuffer; class < peekClasses-1 && length < peek; class, length = class+1, length*2 {
		if length >= size {
			return class, length
		}
	}
	return peekClasses - 1, peek
}

// peekBuffer returns a buffer for peeking at a body of size bytes (-1:
// unknown), from the pool of its class if there is one.
func (p *Pool) peekBuffer(size int64) *[]byte {
	class, length := p.peekClass(size)
	if b, ok := p.peekBuffers[class].Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, length)
	return &b
}

// releasePeekBuffer gives b back to the pool of its class.
func (p *Pool) releasePeekBuffer(b *[]byte) {
	class, _ := p.peekClass(int64(len(*b)))
	p.peekBuffers[class].Put(b)
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
		}
	case http.StatusPartialContent:
		t.first, t.last, t.size, _ = parseContentRange(resp.Header.Get("Content-Range"))
	}
	t.w.WriteHeader(resp.StatusCode)
}

// checkContinuation verifies that a response to a continuation range
// request carries the rest of the very file the client is receiving.
func (t *transfer) checkContinuation(resp *http.Response) error {
	return t.checkRange(resp, t.first+t.written, t.last)
}

// checkRange verifies that resp carries bytes first to last of the very
// file the client is receiving.
func (t *transfer) checkRange(resp *http.Response, first, last int64) error {
	if resp.StatusCode != http.StatusPartialContent {
		return fmt.Errorf("%w: status %s, want 206", errContinuation, resp.Status)
	}
	gotFirst, gotLast, size, err := parseContentRange(resp.Header.Get("Content-Range"))
	if err != nil {
		return fmt.Errorf("%w: %w", errContinuation, err)
	}
	if gotFirst != first || gotLast != last || size != t.size {
		return fmt.Errorf("%w: got bytes %d-%d/%d, want %d-%d/%d", errContinuation,
			gotFirst, gotLast, size, first, last, t.size)
	}
	if lm := resp.Header.Get("Last-Modified"); lm != "" && t.modified != "" && lm != t.modified {
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

// send writes body bytes to the client.
func (t *transfer) send(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := t.w.Write(b)
	t.written += int64(n)
	if err != nil {
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	return nil
}

// stream copies the rest of the body to the client.
// While it streams a file that may be continued elsewhere, it lets the pool
// offer it a much faster worker, and now and then looks for free fast
// workers itself (move.go); it then returns an *upgrade.
func (t *transfer) stream(w *worker, body *meter) error {
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	var mv *movable
	if t.resumable() {
		mv = t.p.addMovable(t.tried)
		defer t.p.removeMovable(mv)
	}
	// The rate since the last check, not since the start: a mirror that
	// has just turned slow is judged by what it does now.
	checkedBytes, checkedBusy, checkedAt := body.n, body.busy, time.Now()
	var rate float64
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if werr := t.send(buf[:n]); werr != nil {
				return werr
			}
		}
		if mv != nil && err == nil {
			select {
			case to := <-mv.offer:
				return &upgrade{helpers: []*worker{to}, rate: rate}
			default:
			}
			if span := body.busy - checkedBusy; span >= upgradeCheckEvery {
				rate = float64(body.n-checkedBytes) / span.Seconds()
				if span < time.Since(checkedAt)/2 {
					rate = 0 // mostly waiting for the client: more mirrors won't help
				}
				checkedBytes, checkedBusy, checkedAt = body.n, body.busy, time.Now()
				if up := t.p.measured(mv, rate, t.last-t.first-t.written+1); up != nil {
					return up
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("body: %w", err)
		}
	}
}

// meter reads a mirror's body, counting its bytes and the time spent
// waiting for them (not the time spent writing to the client). It fails the
// transfer when no byte arrives for the stall timeout, or when, over a
// stall timeout's worth of waiting, bytes arrive slower than minRate.
type meter struct {
	r       io.Reader
	n       int64
	busy    time.Duration
	stall   time.Duration
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	minRate float64 // bytes per second; 0: no check

	// The current trickle check period: bytes and busy time at its start.
	periodBytes int64
	periodBusy  time.Duration
}

func (m *meter) Read(b []byte) (int, error) {
	if m.timer == nil {
		m.timer = time.AfterFunc(m.stall, func() { m.cancel(errStalled) })
	} else {
		m.timer.Reset(m.stall)
	}
	began := time.Now()
	n, err := m.r.Read(b)
	m.busy += time.Since(began)
	m.timer.Stop()
	m.n += int64(n)
	if span := m.busy - m.periodBusy; m.minRate > 0 && span >= m.stall {
		if rate := float64(m.n-m.periodBytes) / span.Seconds(); rate < m.minRate && err == nil {
			m.cancel(errTrickle)
			return n, fmt.Errorf("%w: %.0f B/s", errTrickle, rate)
		}
		m.periodBytes, m.periodBusy = m.n, m.busy
	}
	return n, err
}

func (m *meter) stop() {
	if m.timer != nil {
		m.timer.Stop()
	}
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
		if reason := p.leaveReason(w); !w.busy && reason != "" {
			p.remove(w, reason)
		}
	}
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

// trickleDivisor: a transfer slower than the pool's median score divided by
// this, for a stall timeout's worth of waiting, fails.
const trickleDivisor = 20

// trickleRate is the rate below which a transfer is a trickle, or 0 while
// fewer than three mirrors are ranked.
func (p *Pool) trickleRate() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	var scores []float64
	for _, w := range p.workers {
		if w.stats.count >= p.cfg.TrialSamples {
			scores = append(scores, w.stats.score())
		}
	}
	if len(scores) < 3 {
		return 0
	}
	slices.Sort(scores)
	return scores[len(scores)/2] / trickleDivisor
}

// failureReason is a short label for metrics.
func failureReason(err error) string {
	switch {
	case errors.Is(err, errPeekTimeout):
		return "peek_timeout"
	case errors.Is(err, errStalled):
		return "stalled"
	case errors.Is(err, errTrickle):
		return "trickle"
	case errors.As(err, new(*notFoundError)):
		return "not_found"
	case errors.As(err, new(*statusError)):
		return "status"
	case errors.Is(err, errContinuation):
		return "continuation"
	default:
		return "error"
	}
}
