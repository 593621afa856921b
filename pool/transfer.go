package pool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"path"
	"strings"
	"time"

	"go.uber.org/zap"
)

// MirrorHeader is the response header that names the mirror that served
// (the first bytes of) a response.
const MirrorHeader = "Refractor-Mirror"

// statusClientClosedRequest is reported (not sent) when the client went
// away, as Caddy's reverse proxy does.
const statusClientClosedRequest = 499

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
	if !p.cfg.SkipVerify && r.Method == http.MethodGet && r.Header.Get("Range") == "" && p.catalog.isIndex(rel) {
		t.capture = new([]byte)
	}
	p.begin()
	defer p.end()
	t.expecting()
	defer t.closeSink(true) // on every path that did not close it already
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

// transfer is one client request on its way through the pool. It is used
// by the goroutine serving the request, and by a split's fetchers under
// the splitter's lock where split.go says so.
type transfer struct {
	p        *Pool
	w        http.ResponseWriter
	r        *http.Request
	rel      string
	changing bool
	start    time.Time

	tried     map[string]bool // mirrors that may not serve it (again)
	attempts  int             // workers that took it
	nfailed   int             // attempts that failed
	failures  []string        // "mirror: reason", for the 502 body
	notFound  []string        // mirrors that answered 404 or 410
	freshOnly bool            // after a 404: only the freshest mirrors may serve it
	prefer    string          // the mirror to resume from, after parking
	expect    entry           // what the repository's index says of the file, if known
	known     bool            // expect holds

	// Verification (verify.go): the check of the bytes the client gets,
	// the mirrors whose bytes were queued for it, and the copy of an index
	// kept to learn from (catalog.go).
	check        *checker
	contributors map[string]bool
	source       string // whose bytes are being queued
	witnessed    string // the mirror whose length other mirrors corroborated
	capture      *[]byte

	// Set once the response is committed to the client.
	committed bool
	status    int
	mirror    string // the mirror that committed the response
	out       *sink  // writes the body to the client
	next      int64  // offset in the file of the next byte to fetch
	first     int64  // offset in the file of the first body byte
	last      int64  // offset of the last body byte, or -1 if unknown
	size      int64  // the file's size, or -1 if unknown
	modified  string // Last-Modified of the committed response
	refetch   int64  // bytes dropped unsent while parked, to be fetched again
}

// step is how an attempt ended, and what the transfer does next.
type step int

const (
	stepFailed step = iota // the mirror failed, or the client went away: err says which
	stepDone               // the response is complete (its tail may still be on its way to the client)
	stepSplit              // helpers take over the rest (split.go)
	stepParked             // the client holds the transfer back: it gave up its worker
)

// result is what an attempt reports.
type result struct {
	step    step
	o       outcome    // what it taught about the mirror
	err     error      // stepFailed: why
	helpers []standing // stepSplit: reserved for the transfer
	rate    float64    // stepSplit: the transfer's rate, if measured
}

func (t *transfer) run() error {
	p := t.p
	for {
		w, err := p.acquire(t.r.Context(), t.want())
		if err != nil {
			return t.giveUp(err)
		}
		t.attempts++
		t.tried[w.key] = true
		if t.attempts == 1 {
			p.parallelTrials(w, t)
		}
		// The last chance is not held to the peek timeout: better a slow
		// download than none.
		lastChance := t.nfailed >= p.cfg.Retries || p.untriedLeft(t.tried) == 0
		res := t.attempt(w, lastChance)
		peerDeclined := declined(w, res.err)
		if peerDeclined {
			res.o = outcome{} // no failure of the peer's
		}
		lied := errors.Is(res.err, errLied)
		if lied { // before the release, which then evicts the liar
			if t.committed {
				t.blame(t.liars(w), res.err)
			} else {
				p.lied(t.rel, t.liars(w), res.err) // checkHeld disputed the entry
			}
		}
		p.release(w, res.o)
		switch res.step {
		case stepDone:
			return t.finish()
		case stepSplit:
			return t.splitOver(w.key, res.helpers, res.rate)
		case stepParked:
			// Not a failure, nor a new attempt: the same mirror may take
			// it up again.
			t.attempts--
			delete(t.tried, w.key)
			t.prefer = w.key
			if ce := p.log.Check(zap.DebugLevel, "client holds the transfer back: worker given up"); ce != nil {
				ce.Write(zap.String("mirror", w.key), zap.String("path", t.rel), zap.Int64("offset", t.next))
			}
			if err := t.waitClient(); errors.Is(err, errClosed) {
				return t.giveUp(err)
			} else if err != nil {
				return t.clientGone()
			}
			if t.fetchedAll() { // it parked with nothing left to fetch
				return t.finish()
			}
			continue
		}
		err = res.err
		switch {
		case peerDeclined && t.r.Context().Err() == nil:
			// A peer without the file, or busy: nor a failure, nor a
			// retry; the mirrors serve it.
			t.attempts--
			continue
		case lied && t.committed:
			t.failures = append(t.failures, err.Error())
			return t.abort()
		case errors.Is(err, errClientGone) || t.r.Context().Err() != nil:
			return t.clientGone()
		case errors.Is(err, errClosed): // the pool was force-closed: not the mirror's fault
			return t.giveUp(err)
		case t.fetchedAll():
			// The mirror failed after its last byte (an HTTP/2 reset, a
			// trickle check): the client has the whole file.
			return t.finish()
		}
		t.failures = append(t.failures, w.key+": "+err.Error())
		notFound := errors.As(err, new(*notFoundError))
		if notFound {
			// A 404 is the truth only from a mirror known to be fresh (or
			// from every mirror); a stale one's does not use up a retry,
			// and the next attempts go to the freshest mirrors.
			if ranked(p, func(sts []standing) bool { return knownFresh(sts, w.key) }) {
				return t.giveUp(errNotFound)
			}
			t.freshOnly = true
		} else {
			t.nfailed++
		}
		reason := failureReason(err)
		p.obs.AttemptFailed(w.key, reason)
		level := zap.WarnLevel
		if reason == "not_found" { // routine: unsigned databases' .sig, stale mirrors
			level = zap.DebugLevel
		}
		if ce := p.log.Check(level, "mirror failed"); ce != nil {
			ce.Write(zap.String("mirror", w.key), zap.String("path", t.rel),
				zap.Int("attempt", t.attempts), zap.Bool("committed", t.committed),
				zap.Int64("offset", t.next), zap.Error(err))
		}
		if t.committed && !t.resumable() {
			return t.abort()
		}
		if lastChance {
			return t.giveUp(errNoUntried)
		}
		if t.committed {
			p.log.Info("continuing the transfer from another mirror",
				zap.String("path", t.rel), zap.String("failed_mirror", w.key), zap.Int64("offset", t.next))
		}
	}
}

// fetchedAll reports whether every byte of a committed response of known
// length has been fetched.
func (t *transfer) fetchedAll() bool { return t.committed && t.last >= 0 && t.next > t.last }

// want is what the next worker of the transfer must be.
func (t *transfer) want() want {
	wt := want{exclude: t.tried, fresh: t.changing || t.freshOnly, prefer: t.prefer, committed: t.committed,
		large: t.known && t.expect.size >= exploreMinRemaining}
	if t.known && !t.changing {
		wt.sum = &t.expect.sum
	}
	return wt
}

// waitClient waits, holding no worker, until the client has taken every
// byte queued for it.
func (t *transfer) waitClient() error {
	for {
		ok, err := t.out.drained()
		if err != nil {
			return clientErr(err)
		}
		if ok {
			return nil
		}
		select {
		case <-t.out.room:
		case <-t.r.Context().Done():
			return errClientGone
		case <-t.p.stop:
			return errClosed
		}
	}
}

// giveUp turns the reason the transfer cannot go on into the error Serve
// returns.
func (t *transfer) giveUp(err error) error {
	if t.committed {
		t.failures = append(t.failures, "no worker to continue: "+err.Error())
		return t.abort()
	}
	var status int
	var retryAfter time.Duration
	switch {
	case errors.Is(err, errQueueFull), errors.Is(err, errQueueTimeout), errors.Is(err, errClosed), errors.Is(err, errNoWorkers):
		status, retryAfter = http.StatusServiceUnavailable, 5*time.Second
		err = fmt.Errorf("no mirror available: %w", err)
	case errors.Is(err, errNotFound), errors.Is(err, errNoUntried) && len(t.notFound) == t.attempts:
		// A fresh mirror, or every mirror asked, said the file is not
		// there.
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
	t.closeSink(true)
	t.report(0)
	return fmt.Errorf("%w: %s after %d of its bytes, %d attempts:\n%s",
		ErrAborted, t.rel, t.written(), t.attempts, strings.Join(t.failures, "\n"))
}

// clientGone ends a transfer whose client went away.
func (t *transfer) clientGone() error {
	t.closeSink(true)
	t.report(statusClientClosedRequest)
	if err := context.Cause(t.r.Context()); err != nil {
		return err
	}
	return context.Canceled
}

// splitOver hands the rest of the transfer, which mirror was streaming, to
// helpers and whatever fast workers join them.
func (t *transfer) splitOver(mirror string, helpers []standing, rate float64) error {
	p := t.p
	if ce := p.log.Check(zap.DebugLevel, "splitting the transfer over faster mirrors"); ce != nil {
		keys := make([]string, len(helpers))
		for i, h := range helpers {
			keys[i] = h.key
		}
		ce.Write(zap.String("path", t.rel), zap.String("from", mirror), zap.Strings("to", keys),
			zap.Int64("offset", t.next), zap.Float64("rate_bps", rate))
	}
	exclude := maps.Clone(t.tried)
	delete(exclude, mirror) // it may help, if it is fast enough
	err := t.split(helpers, exclude)
	switch {
	case err == nil:
		return t.finish()
	case errors.Is(err, errClientGone) || t.r.Context().Err() != nil:
		return t.clientGone()
	}
	if errors.Is(err, errLied) {
		return t.mismatch(err)
	}
	t.failures = append(t.failures, "split: "+err.Error())
	return t.abort()
}

// finish waits for the client to take the rest of the response, reports
// it, and penalises the mirrors that claimed not to have a file another
// mirror had: they are stale.
func (t *transfer) finish() error {
	if err := t.closeSink(false); errors.Is(err, errLied) || errors.Is(err, errLength) {
		return t.mismatch(err)
	} else if err != nil {
		return t.clientGone()
	}
	if len(t.notFound) > 0 && t.status < 300 {
		t.p.penalise(t.notFound)
	}
	t.settle()
	t.learn()
	t.report(t.status)
	return nil
}

// closeSink stops the writer to the client, after the queued bytes unless
// abort is set, and returns the client's error if any.
func (t *transfer) closeSink(abort bool) error {
	if t.out == nil {
		return nil
	}
	return t.out.close(abort)
}

// written is how many body bytes reached the client.
func (t *transfer) written() int64 {
	if t.out == nil {
		return 0
	}
	return t.out.written.Load()
}

func (t *transfer) report(status int) {
	d := time.Since(t.start)
	n := t.written()
	t.p.obs.RequestDone(t.mirror, status, t.attempts, n, d)
	if ce := t.p.log.Check(zap.InfoLevel, "request done"); ce != nil {
		ce.Write(zap.String("path", t.rel), zap.String("mirror", t.mirror), zap.Int("status", status),
			zap.Int("attempts", t.attempts), zap.Int64("bytes", n), zap.Duration("duration", d),
			zap.Float64("throughput_bps", float64(n)/max(d.Seconds(), 1e-9)))
	}
}

// resumable reports whether a committed response may be completed from
// another mirror, or later, with range requests: only a file of known size
// whose rest can be told to be the same file's, by its Last-Modified or by
// its hash (see setRange).
func (t *transfer) resumable() bool {
	return !t.changing && t.r.Method == http.MethodGet && t.size >= 0 && t.last >= 0 &&
		(t.status == http.StatusOK || t.status == http.StatusPartialContent) &&
		(t.modified != "" || t.checked())
}
