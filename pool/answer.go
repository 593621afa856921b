package pool

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"
)

// What a correct answer from a mirror looks like. Public mirror lists hold
// parked domains, captive portals and mirrors that answer 401 or 451: an
// answer that is not one a mirror of the file would give is the mirror's
// failure, found before any of its body is used, so that the client gets
// the file from another mirror.

var (
	errUnexpectedStatus = errors.New("unexpected status")
	errHTML             = errors.New("an HTML page instead of the file")
	errUndelimited      = errors.New("a body delimited only by the connection's close, of a length nothing corroborates")
	errShortBody        = errors.New("body shorter than announced")
)

// checkAnswer reports why resp, a mirror's first answer to the client's
// request (not a continuation: see checkRange), cannot be passed on, or
// nil. 404 and 410 are the caller's to handle.
func (t *transfer) checkAnswer(resp *http.Response) error {
	h := t.r.Header
	asked := func(names ...string) bool {
		for _, n := range names {
			if h.Get(n) != "" {
				return true
			}
		}
		return false
	}
	ok := false
	switch resp.StatusCode {
	case http.StatusOK:
		ok = true
	case http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable:
		ok = asked("Range")
	case http.StatusNotModified:
		ok = asked("If-None-Match", "If-Modified-Since")
	case http.StatusPreconditionFailed:
		ok = asked("If-Match", "If-Unmodified-Since")
	}
	if !ok {
		return fmt.Errorf("%w %s", errUnexpectedStatus, resp.Status)
	}
	if resp.StatusCode >= 300 {
		return nil
	}
	if isHTML(resp) && !t.htmlExpected() {
		return errHTML
	}
	if t.r.Method == http.MethodGet && undelimited(resp) && (!t.known || t.expect.size < 0) {
		return errUndelimited
	}
	return nil
}

// isHTML reports whether resp says its body is an HTML page.
func isHTML(resp *http.Response) bool {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt == "text/html" || mt == "application/xhtml+xml"
}

// htmlExpected reports whether the requested path may legitimately be an
// HTML page: a directory listing or an .html file. No package or index is.
func (t *transfer) htmlExpected() bool {
	return t.rel == "" || strings.HasSuffix(t.rel, "/") ||
		strings.HasSuffix(t.rel, ".html") || strings.HasSuffix(t.rel, ".htm")
}

// undelimited reports whether resp's body ends only when the connection
// closes (HTTP/1.x without a length or chunking): a body cut short looks
// complete.
func undelimited(resp *http.Response) bool {
	return resp.ProtoMajor == 1 && resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 &&
		resp.StatusCode != http.StatusNotModified && resp.Request.Method != http.MethodHead
}

// bodyLength is how many body bytes resp announces, or -1 if it does not.
func bodyLength(resp *http.Response) int64 {
	if resp.ContentLength >= 0 {
		return resp.ContentLength
	}
	if resp.StatusCode == http.StatusPartialContent {
		if first, last, _, err := parseContentRange(resp.Header.Get("Content-Range")); err == nil {
			return last - first + 1
		}
	}
	return -1
}

// checkPeeked reports why the peeked start of resp's body (all of it if
// eof) cannot be committed: a length the index, learned during the peek,
// contradicts; a body that ended short of its announced length; or a
// whole file that fails its check (verify.go).
func (t *transfer) checkPeeked(resp *http.Response, blocks []*block, eof bool) error {
	if t.expectLate() { // known only now: its length must agree too
		if err := t.checkLength(resp); err != nil {
			return err
		}
	}
	if !eof {
		return nil
	}
	var n int64
	for _, b := range blocks {
		n += int64(b.n)
	}
	if want := bodyLength(resp); want >= 0 && n < want {
		return fmt.Errorf("%w: %d of %d bytes", errShortBody, n, want)
	}
	if t.known && resp.StatusCode == http.StatusOK {
		return t.checkHeld(blocks)
	}
	return nil
}

// witnessTimeout bounds the wait for another mirror's word on a file's
// length.
const witnessTimeout = 3 * time.Second

// witnesses is how many other mirrors askWitness asks.
const witnesses = 2

// askWitness corroborates the length resp announces, before it is
// committed to the client: a length that is wrong dooms the download, as
// no other mirror can continue a file of another size. Unless the length
// needs no witness (the index gives it; the whole body is peeked, which
// shows where it ends; the file changes in place; w has earned trust; it
// is the last chance), it asks the best two other mirrors with a HEAD, at
// once. wait waits for their answers: an error if one gave a length and
// none gave the same (the liar may be one of them); witnesses that cannot
// tell (an error, no length) do not stop the download. cancel gives up on
// them.
func (t *transfer) askWitness(w *worker, resp *http.Response, lastChance bool) (wait func() error, cancel func()) {
	p := t.p
	none := func() error { return nil }
	if lastChance || t.known || t.changing || resp.StatusCode != http.StatusOK || resp.ContentLength <= p.cfg.PeekSize || p.trusted(w, true) {
		return none, func() {}
	}
	others := ranked(p, func(sts []standing) []*worker { return bestOthers(sts, w.key, witnesses, p.cfg.TrialSamples) })
	if len(others) == 0 {
		return none, func() {}
	}
	ctx, cancel := context.WithTimeout(t.r.Context(), witnessTimeout)
	said := make(chan int64, len(others))
	for _, o := range others {
		go func() { said <- p.headLength(ctx, o, t.rel) }()
	}
	return func() error {
		defer cancel()
		var other int64 = -1
		for range others {
			switch n := <-said; {
			case n == resp.ContentLength:
				t.witnessed = w.key
				return nil
			case n >= 0:
				other = n
			}
		}
		if other >= 0 {
			return fmt.Errorf("%w: %d bytes, other mirrors say %d", errLength, resp.ContentLength, other)
		}
		return nil
	}, cancel
}

// headLength asks w's mirror for the length of the file at rel, or -1 if
// it does not say.
func (p *Pool) headLength(ctx context.Context, w *worker, rel string) int64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, fileURL(w.mirror, rel), nil)
	if err != nil {
		return -1
	}
	req.Header["User-Agent"] = nil
	resp, err := p.client.Do(req)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return -1
	}
	return resp.ContentLength
}
