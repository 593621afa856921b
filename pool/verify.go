package pool

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"slices"
	"time"

	"go.uber.org/zap"
)

// Checking bytes against the catalog as they stream. A file whose hash is
// known is hashed on its way to the client; its last block is held back
// until the hash is checked, and a mismatch aborts the response, so a
// client never gets a wrong file that looks complete. A mirror not yet
// trusted has a known file it serves checked whole before anything is sent
// (within holdBudget), so a liar is caught at no cost to the client. A
// mirror whose bytes failed the check is evicted at once: a lie is not a
// slow answer. A file assembled from several mirrors that fails evicts
// nobody, but none of them is trusted any more.

const (
	// trustAfter: a mirror that has served this many files that verified
	// is trusted: its files are streamed as they come.
	trustAfter = 3
	// holdBudget bounds the bytes a pool holds back at once to check
	// untrusted mirrors' files before they are sent; a file that does not
	// fit is streamed and checked at its end.
	holdBudget = 64 << 20
	// maxHold: a held file that takes longer than this to arrive is
	// streamed from there on (and checked at its end), so that the client
	// does not wait long without a byte (pacman gives up after 10 s).
	maxHold = 3 * time.Second
	// liarCooldown: a mirror that lied stays out this many cool-downs.
	liarCooldown = 6
)

var (
	errLied   = errors.New("the file's bytes do not match the hash its index gives")
	errLength = errors.New("length disagrees")
)

// expecting looks up what the catalog says of the file the transfer
// serves. Files that change in place are not looked up: their index may be
// newer than the catalog's. A pacman package that no index has listed
// (after a restart, or with a client that did not refresh its databases)
// makes the pool fetch its database, and waits for it.
func (t *transfer) expecting() {
	p := t.p
	if p.cfg.SkipVerify || t.changing || t.r.Method != http.MethodGet {
		return
	}
	t.expect, t.known = p.expected(t.r.Context(), t.rel, learnWait)
}

// expected is what the catalog says of the file at rel, waiting for the
// indexes being learned as lookup does; it asks for a package's index
// when no index listed the package, and waits for it.
func (p *Pool) expected(ctx context.Context, rel string, patience time.Duration) (entry, bool) {
	e, known := p.catalog.lookup(ctx, rel, patience)
	if db := databaseOf(rel); !known && db != "" && p.learn(db, "") {
		e, known = p.catalog.lookup(ctx, rel, patience)
	}
	return e, known
}

// expectLate looks up, before the commit, a file the catalog did not know
// when the request came: an index learned meanwhile still checks it. It
// reports whether the file became known.
func (t *transfer) expectLate() bool {
	if !t.known && !t.p.cfg.SkipVerify && !t.changing && t.r.Method == http.MethodGet {
		t.expect, t.known = t.p.catalog.known(t.rel)
		return t.known
	}
	return false
}

// checkLength reports whether resp's announced size disagrees with the
// catalog's.
func (t *transfer) checkLength(resp *http.Response) error {
	if !t.known || t.expect.size < 0 {
		return nil
	}
	size := int64(-1)
	switch resp.StatusCode {
	case http.StatusOK:
		size = resp.ContentLength
	case http.StatusPartialContent:
		_, _, size, _ = parseContentRange(resp.Header.Get("Content-Range"))
	}
	if size >= 0 && size != t.expect.size {
		return fmt.Errorf("%w: %d bytes, the index says %d", errLength, size, t.expect.size)
	}
	return nil
}

// holds reports whether resp, from w, is to be checked whole before
// anything is sent: w is not trusted yet, the file's hash is known and
// the response is all of it.
func (t *transfer) holds(w *worker, resp *http.Response) bool {
	if !t.known || resp.StatusCode != http.StatusOK || resp.ContentLength < 0 || resp.ContentLength > holdBudget {
		return false
	}
	return !t.p.trusted(w, false)
}

// trusted reports whether w's mirror has earned trust: it served
// trustAfter files that verified, or, for a length only, as many whose
// length other mirrors corroborated.
func (p *Pool) trusted(w *worker, lengthOnly bool) bool {
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	return w.stats.verified >= trustAfter || (lengthOnly && w.stats.witnessed >= trustAfter)
}

// checked reports whether the committed response's bytes are checked
// against the file's hash at its end: then the hash, not validators, tells
// whether a continuation is the same file.
func (t *transfer) checked() bool { return t.check != nil }

// startCheck makes the client's sink check the committed response if it
// is the whole of a file whose hash is known.
func (t *transfer) startCheck() {
	if t.known && t.status == http.StatusOK && t.size >= 0 {
		t.check = &checker{h: sha256.New(), size: t.size, want: t.expect.sum}
		t.out.check = t.check.write
	}
}

// checker hashes the bytes written to the client, in the sink's goroutine
// (the only one that uses it until the sink stops): exactly what the
// client gets, whatever was parked, dropped and fetched again on the way.
// The block that completes the file is written only if the hash matches.
type checker struct {
	h    hash.Hash
	n    int64 // bytes hashed
	size int64
	want [32]byte
	got  [32]byte // the file's hash, once whole
	ok   bool     // the whole file matched; read once the sink has stopped
}

// write hashes b, the next bytes for the client, and says whether they
// may be written.
func (c *checker) write(b []byte) error {
	if c.n+int64(len(b)) > c.size {
		return fmt.Errorf("%w: more than the %d bytes of the file", errLength, c.size)
	}
	c.h.Write(b)
	c.n += int64(len(b))
	if c.n < c.size {
		return nil
	}
	c.got = [32]byte(c.h.Sum(nil))
	if c.got != c.want {
		return errLied
	}
	c.ok = true
	return nil
}

// clientErr is an error of the client's sink as the transfer sees it: the
// client went away, or the file failed its check.
func clientErr(err error) error {
	if errors.Is(err, errLied) || errors.Is(err, errLength) {
		return err
	}
	return fmt.Errorf("%w: %w", errClientGone, err)
}

// tap sees every block on its way to the client's sink, in file order, at
// offset at: it refuses bytes past the announced end, and keeps a copy of
// an index (which is never parked, so never sees bytes twice).
func (t *transfer) tap(b []byte, at int64) error {
	if t.last >= 0 && at+int64(len(b)) > t.last+1 {
		return fmt.Errorf("%w: more bytes than the %d announced", errLength, t.last-t.first+1)
	}
	if t.capture != nil {
		if end := at + int64(len(b)); end > int64(len(*t.capture)) && at <= int64(len(*t.capture)) {
			if end > maxIndexBytes {
				t.capture = nil
			} else {
				*t.capture = append(*t.capture, b[int64(len(*t.capture))-at:]...)
			}
		}
	}
	return nil
}

// checkHeld checks the blocks of a whole small or held file before it is
// committed.
func (t *transfer) checkHeld(blocks []*block) error {
	h := sha256.New()
	var n int64
	for _, b := range blocks {
		h.Write(b.buf[:b.n])
		n += int64(b.n)
	}
	if t.expect.size >= 0 && n != t.expect.size {
		return fmt.Errorf("%w: %d bytes, the index says %d", errLength, n, t.expect.size)
	}
	if got := [32]byte(h.Sum(nil)); got != t.expect.sum {
		t.p.dispute(t.rel, got, t.source)
		return errLied
	}
	return nil
}

// contributed records that bytes of t.source went to the client.
func (t *transfer) contributed() {
	if t.contributors == nil {
		t.contributors = make(map[string]bool, 1)
	}
	t.contributors[t.source] = true
}

// settle tells the pool what the check of a finished transfer showed of
// the mirrors whose bytes it holds: each is one file closer to trust.
func (t *transfer) settle() {
	p := t.p
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	if ms := p.state.mirrors[t.witnessed]; ms != nil && len(t.contributors) == 1 && t.contributors[t.witnessed] {
		ms.witnessed++
	}
	if t.check == nil || !t.check.ok {
		return
	}
	for key := range t.contributors {
		if ms := p.state.mirrors[key]; ms != nil {
			ms.verified++
		}
	}
}

// liars are the mirrors to blame for a file that failed its check on w's
// attempt: w alone if nothing was sent yet, else every mirror whose bytes
// the client got.
func (t *transfer) liars(w *worker) []string {
	if !t.committed {
		return []string{w.key}
	}
	keys := make([]string, 0, len(t.contributors))
	for k := range t.contributors {
		keys = append(keys, k)
	}
	return keys
}

// mismatch ends a committed response whose file failed its check after
// its fetchers were released (a split, or the check of its last block).
func (t *transfer) mismatch(err error) error {
	t.blame(t.liars(nil), err)
	t.failures = append(t.failures, err.Error())
	return t.abort()
}

// blame reports a file that failed its check, served by keys; one mirror
// that served all of it disputes the index's entry with the hash it gave.
func (t *transfer) blame(keys []string, err error) {
	if len(keys) == 1 && t.check != nil && t.check.got != ([32]byte{}) {
		t.p.dispute(t.rel, t.check.got, keys[0])
	}
	t.p.lied(t.rel, keys, err)
}

// dispute records that mirror served, for the file at rel, bytes of hash
// sum that the catalog's entry contradicts. Once two mirrors agree
// against the entry, the entry goes: the index may be what is wrong (a
// file rebuilt under the same name), and the catalog learns the file again
// from the next index that lists it.
func (p *Pool) dispute(rel string, sum [32]byte, mirror string) {
	c := p.catalog
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.disputes == nil || len(c.disputes) > maxDisputes {
		c.disputes = make(tally)
	}
	if by := c.disputes.add(rel, sum, mirror, maxDisputes); len(by) >= 2 {
		delete(c.files, rel)
		delete(c.disputes, rel)
		p.log.Warn("two mirrors agree against the index: its entry is dropped",
			zap.String("path", rel), zap.Strings("mirrors", by))
	}
}

// lied reports a file at rel that failed its check: the one mirror that
// served it lied, and is evicted; of several, none is trusted any more.
func (p *Pool) lied(rel string, keys []string, err error) {
	p.log.Warn("a mirror served bytes that do not match the repository's index",
		zap.String("path", rel), zap.Strings("mirrors", keys), zap.Error(err))
	p.obs.VerifyFailed(keys, rel)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state.mu.Lock()
	for _, k := range keys {
		if ms := p.state.mirrors[k]; ms != nil {
			ms.verified = 0
			ms.lied = ms.lied || len(keys) == 1
		}
	}
	p.state.mu.Unlock()
	if len(keys) == 1 {
		p.evictLiar(keys[0])
	}
}

// evictLiar removes the worker of the mirror key if it is idle; a busy one
// leaves when it is released (leaveReason). A liar that has left already
// (it resigned) stays out for a liar's cool-down. p.mu must be held.
func (p *Pool) evictLiar(key string) {
	for _, w := range slices.Concat(p.workers, p.peers) {
		if w.key == key {
			if w.load == 0 && !p.closing {
				p.remove(w, ReasonLied)
				p.handOverIdle()
			}
			return
		}
	}
	p.state.mu.Lock()
	p.state.coolDown(key, ReasonLied, time.Now(), p.cfg.Cooldown)
	p.state.mu.Unlock()
}

// Expect returns the size and SHA-256 the repository's corroborated
// indexes give for the file at rel, if rel is a file that cannot change in
// place, is not itself an index the pool learns from, and both are known.
// Like a transfer, it waits a moment for an index being learned, and asks
// for a package's index when no index listed it. A LAN cache keeps only
// files it can check this way.
func (p *Pool) Expect(ctx context.Context, rel string) (size int64, sum [32]byte, ok bool) {
	return p.expect(ctx, rel, learnWait)
}

// ExpectLearned is Expect after the indexes being learned are learned (or
// given up, or ctx ends): what a file fetched while they were tells at its
// end.
func (p *Pool) ExpectLearned(ctx context.Context, rel string) (size int64, sum [32]byte, ok bool) {
	p.catalog.awaitFile(ctx, rel, learnTimeout)
	return p.expect(ctx, rel, 0)
}

func (p *Pool) expect(ctx context.Context, rel string, patience time.Duration) (size int64, sum [32]byte, ok bool) {
	if p.cfg.SkipVerify || p.isChanging(rel) || p.catalog.isIndex(rel) {
		return 0, sum, false
	}
	e, known := p.expected(ctx, rel, patience)
	if !known || e.size < 0 {
		return 0, sum, false
	}
	return e.size, e.sum, true
}

// Learning reports whether rel is a package whose index the pool is
// learning: its hash may be known by the end of its transfer (a cold pool
// corroborating its databases), and a LAN cache fills it pending. Where
// the layout names the index (a pacman package's database, an RPM's
// repomd.xml) it must be that one; elsewhere (apt) any.
func (p *Pool) Learning(rel string) bool {
	if p.cfg.SkipVerify || p.isChanging(rel) || !listable(rel) {
		return false
	}
	c := p.catalog
	c.mu.Lock()
	defer c.mu.Unlock()
	if db := databaseOf(rel); db != "" {
		_, ok := c.learning[db]
		return ok
	}
	return len(c.learning) > 0
}
