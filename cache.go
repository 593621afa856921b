package refractor

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-refractor/refractor/filecache"
	"github.com/caddy-refractor/refractor/pool"
)

// Cache is refractor's LAN cache: packages kept on disk once they are
// complete and their SHA-256 matched the repository's corroborated index,
// so that each crosses the Internet once however many machines want it.
// Only files that cannot change in place and whose size and hash an index
// gives are cached; indexes never are. Concurrent requests for a file on
// its way in read it as it arrives, from one upstream transfer.
type Cache struct {
	// Dir is the cache's directory; the blocks of one Caddy instance that
	// name the same directory share its files. Required.
	Dir string `json:"dir,omitempty"`
	// MaxSize bounds the cache's bytes: least recently used files are
	// evicted to stay under it. Default: no bound but min_free's.
	MaxSize int64 `json:"max_size,omitempty"`
	// MinFree is the space the cache leaves free on its file system: it
	// evicts files, or does not cache one, rather than go below it.
	// Default: 1GiB.
	MinFree int64 `json:"min_free,omitempty"`
}

// defaultMinFree is Cache.MinFree's default.
const defaultMinFree = 1 << 30

// cacheMirror is the Refractor-Mirror header of a response from the cache.
const cacheMirror = "cache"

// conditionalHeaders are the request headers of a conditional request.
var conditionalHeaders = []string{"If-Modified-Since", "If-None-Match", "If-Range", "If-Match", "If-Unmodified-Since"}

// parseSum reads a SHA-256 in hex.
func parseSum(s string) (sum [32]byte, ok bool) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(sum) {
		return sum, false
	}
	return [32]byte(b), true
}

// caches holds the open stores, by directory, across reloads.
var caches = caddy.NewUsagePool()

// cacheStore is a store in the caches pool, with what it saved, for the
// admin API (the metrics have them per pool).
type cacheStore struct {
	*filecache.Store
	hits, misses, served, saved atomic.Int64
	peerCounters
}

// Destruct lets the store go: it holds no goroutine; fills in flight end
// with their pools.
func (*cacheStore) Destruct() error { return nil }

// CacheStatus is the state of one cache directory, as the admin API's
// GET /refractor/cache returns it.
type CacheStatus struct {
	filecache.Stats
	// Hits are requests answered from a complete file, or from one another
	// request is bringing in; Misses, requests for a file the cache keeps
	// that it did not have.
	Hits   int64 `json:"hits"`
	Misses int64 `json:"misses"`
	// ServedBytes are body bytes sent from the cache's files; SavedBytes,
	// those that did not cross the Internet for the request they answered.
	ServedBytes int64 `json:"served_bytes"`
	SavedBytes  int64 `json:"saved_bytes"`
	// PeerServedBytes are bytes sent to other instances (peers) from the
	// cache.
	PeerServedBytes int64 `json:"peer_served_bytes,omitempty"`
}

// hit, miss and sent count for both the store and the pool's metrics.
func (h *Handler) cacheHit() {
	h.cache.hits.Add(1)
	h.obs.metrics.cacheHits.Inc()
}

func (h *Handler) cacheMiss() {
	h.cache.misses.Add(1)
	h.obs.metrics.cacheMisses.Inc()
}

func (h *Handler) cacheSent(n int64, saved bool) {
	h.cache.served.Add(n)
	h.obs.metrics.cacheServed.Add(float64(n))
	if saved {
		h.cache.saved.Add(n)
		h.obs.metrics.cacheSaved.Add(float64(n))
	}
}

// cacheCreateTemp, when set (by tests), creates the files fills write to.
var cacheCreateTemp func(dir, pattern string) (filecache.File, error)

// openCache opens (or takes from the caches pool) the store of h.Cache.
func (h *Handler) openCache() error {
	c := h.Cache
	if c.Dir == "" {
		return errors.New("cache: a directory is required")
	}
	if c.MaxSize < 0 || c.MinFree < 0 {
		return errors.New("cache: max_size and min_free may not be negative")
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	minFree := cmp.Or(c.MinFree, defaultMinFree)
	v, _, err := caches.LoadOrNew(dir, func() (caddy.Destructor, error) {
		s, err := filecache.Open(dir, filecache.Options{MaxSize: c.MaxSize, MinFree: minFree, CreateTemp: cacheCreateTemp})
		if err != nil {
			return nil, err
		}
		return &cacheStore{Store: s}, nil
	})
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	h.cacheDir = dir
	h.cache = v.(*cacheStore)
	h.cache.SetLimits(c.MaxSize, minFree) // the newest configuration's
	return nil
}

// cacheStats returns the state of every open cache, by directory.
func cacheStats() []CacheStatus {
	var out []CacheStatus
	caches.Range(func(_, v any) bool {
		c := v.(*cacheStore)
		out = append(out, CacheStatus{
			Stats: c.Stats(), Hits: c.hits.Load(), Misses: c.misses.Load(),
			ServedBytes: c.served.Load(), SavedBytes: c.saved.Load(), PeerServedBytes: c.peerServed.Load(),
		})
		return true
	})
	slices.SortFunc(out, func(a, b CacheStatus) int { return strings.Compare(a.Dir, b.Dir) })
	return out
}

// purgeCache removes from every open cache the file at rel (as a live
// pool's indexes give its hash), or of hash sumHex, or every file if both
// are empty, and returns how many files went.
func purgeCache(ctx context.Context, rel, sumHex string) (int, error) {
	var sums [][32]byte
	switch {
	case sumHex != "":
		sum, ok := parseSum(sumHex)
		if !ok {
			return 0, caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("sha256: want 64 hex digits, got %q", sumHex)}
		}
		sums = append(sums, sum)
	case rel != "":
		clean, err := pool.CleanPath("/" + strings.TrimPrefix(rel, "/"))
		if err != nil {
			return 0, caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("path: %w", err)}
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		livePools.Lock()
		live := slices.Clone(livePools.pools)
		livePools.Unlock()
		for _, np := range live {
			if _, sum, ok := np.pool.Expect(ctx, clean); ok {
				sums = append(sums, sum)
			}
		}
		if len(sums) == 0 {
			return 0, caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no pool knows the hash of %s", clean)}
		}
	}
	n := 0
	var errs []error
	caches.Range(func(_, v any) bool {
		c := v.(*cacheStore)
		if sums == nil {
			k, err := c.PurgeAll()
			n += k
			errs = append(errs, err)
			return true
		}
		for _, sum := range sums {
			ok, err := c.Purge(sum)
			if ok {
				n++
			}
			errs = append(errs, err)
		}
		return true
	})
	if err := errors.Join(errs...); err != nil {
		return n, caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	return n, nil
}

// closeCache releases the handler's use of its store.
func (h *Handler) closeCache() {
	if h.cache != nil {
		_, _ = caches.Delete(h.cacheDir)
	}
}

// serveCached answers r from the cache if the file is one it keeps: a
// complete file from disk; a file on its way in, from the growing file; a
// plain GET of a file not cached yet starts its fill and reads it as it
// arrives. A package asked for while the pool is still learning the index
// that will give its hash (a cold pool corroborating it) starts a pending
// fill: its hash is asked for again at its end, and it is kept only if
// the index gave it by then and the bytes are that file. handled false
// leaves the request to the pool, as without a cache: a file the cache
// cannot keep, a Range or HEAD of one not cached yet, or one whose fill
// failed before its first byte for a reason of the cache's.
func (h *Handler) serveCached(w http.ResponseWriter, r *http.Request, rel string) (handled bool, err error) {
	size, sum, known := h.pool.Expect(r.Context(), rel)
	plain := r.Method == http.MethodGet && r.Header.Get("Range") == ""
	pkey := pendingKey(h.Name, rel)
	var expect func() ([32]byte, bool)
	if known {
		expect = func() ([32]byte, bool) { return sum, true }
		if f, info, ok := h.cache.Get(sum, size); ok {
			defer f.Close()
			h.cacheHit()
			cw, body := serveFile(w, r, rel, expect, size, info.ModTime(), f)
			defer func() { h.cacheSent(cw.n, true) }()
			return true, h.finishFile(r, rel, body)
		}
	} else {
		expect = func() ([32]byte, bool) {
			_, sum, ok := h.pool.Expect(r.Context(), rel)
			return sum, ok
		}
	}
	// A pending fill of the file comes first: it started before the hash
	// was known, and a second transfer would cross the Internet again.
	if fill := h.cache.Filling(pkey); fill != nil {
		h.cacheHit()
		return h.follow(w, r, rel, fill, expect, true)
	}
	if !plain {
		// Only a plain GET brings a file in; others read one coming.
		if !known {
			return false, nil
		}
		if fill := h.cache.Filling(sum); fill != nil {
			h.cacheHit()
			return h.follow(w, r, rel, fill, expect, true)
		}
		return false, nil
	}
	var fill *filecache.Fill
	var leader bool
	switch {
	case known:
		fill, leader, err = h.cache.Begin(sum, size)
	case h.pool.Learning(rel):
		fill, leader, err = h.cache.BeginPending(pkey)
	default:
		return false, nil
	}
	switch {
	case errors.Is(err, filecache.ErrCached):
		return h.serveCached(w, r, rel) // completed just now
	case err != nil:
		h.cacheMiss()
		h.logger.Debug("not caching", zap.String("path", rel), zap.Error(err))
		return false, nil
	case leader:
		h.cacheMiss()
		go h.fill(context.WithoutCancel(r.Context()), fill, rel)
	default:
		h.cacheHit()
	}
	return h.follow(w, r, rel, fill, expect, !leader)
}

// pendingKey is the key of a pending fill of rel in the pool named name:
// no file's hash (it hashes a string no file is).
func pendingKey(name, rel string) [32]byte {
	return sha256.Sum256([]byte("refractor pending fill\x00" + name + "\x00" + rel))
}

// follow serves r from a fill's growing file. expect gives the file's
// hash, once known; saved tells whether the bytes are ones the Internet
// did not send for this request. A full body is checked whole on its way
// out (checkedBody), as the pool checks its own: a body that does not
// make the file its index gives is aborted; if the fill fails under it, it
// goes on from the mirrors, checked the same way. (A pending fill's body
// whose hash is still unknown at its end is sent unchecked, as the pool
// sends a file no index lists; one that fails under it is aborted.)
func (h *Handler) follow(w http.ResponseWriter, r *http.Request, rel string, fill *filecache.Fill, expect func() ([32]byte, bool), saved bool) (bool, error) {
	defer fill.Release()
	select {
	case <-fill.Ready():
	case <-r.Context().Done():
		return true, r.Context().Err()
	}
	modified, started := fill.Started()
	if !started {
		// The pool's answer (404, 502...) is every reader's; anything
		// else leaves the request to the pool, as without a cache.
		var perr *pool.Error
		if errors.As(fill.Err(), &perr) {
			return true, perr
		}
		return false, nil
	}
	rd := fill.NewReader(r.Context())
	defer rd.Close()
	cw, body := serveFile(w, r, rel, expect, fill.Size(), modified, rd)
	defer func() { h.cacheSent(cw.n, saved) }()
	if r.Context().Err() != nil {
		return true, r.Context().Err()
	}
	ferr := rd.Err()
	if body == nil {
		if ferr != nil {
			return true, fmt.Errorf("%w: cache fill failed: %v", pool.ErrAborted, ferr)
		}
		return true, nil
	}
	if ferr != nil {
		// The fill failed under this reader: go on from the mirrors, if
		// the whole can be checked (a pending fill's hash may be unknown:
		// two mirrors' different files must not be joined unchecked).
		if _, known := expect(); !known {
			return true, fmt.Errorf("%w: cache fill failed, and the file's hash is not known: %v", pool.ErrAborted, ferr)
		}
		h.logger.Warn("cache fill failed; continuing from the mirrors", zap.String("path", rel), zap.Int64("offset", body.n), zap.Error(ferr))
		if err := h.continueFrom(body, r, rel, body.n, fill.Size()); err != nil {
			return true, err
		}
	}
	if err := body.finish(); err != nil {
		return true, fmt.Errorf("%w: %v", pool.ErrAborted, err)
	}
	return true, nil
}

// fill fetches rel through the pool into the cache, paced by the mirrors,
// whoever reads it. A pending fill learns its hash at its end.
func (h *Handler) fill(ctx context.Context, fill *filecache.Fill, rel string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "/"+rel, nil)
	if err != nil {
		_ = fill.Finish(err)
		return
	}
	fw := &fillWriter{fill: fill, header: http.Header{}}
	err = h.pool.Serve(fw, req, rel)
	if err == nil && fw.status != http.StatusOK {
		err = fmt.Errorf("status %d", fw.status)
	}
	if err == nil {
		err = fw.err
	}
	if err != nil {
		err = fmt.Errorf("fetching %s for the cache: %w", rel, err)
	} else if fill.Pending() {
		if _, sum, ok := h.pool.ExpectLearned(ctx, rel); ok {
			fill.Expect(sum) // else Finish keeps nothing: unchecked
		}
	}
	if ferr := fill.Finish(err); ferr != nil {
		h.logger.Debug("cache fill failed", zap.String("path", rel), zap.Error(ferr))
	}
}

// finishFile ends a response from a complete cached file: it sends the
// body's held bytes if the body is the file, and purges a file damaged on
// disk since it was checked.
func (h *Handler) finishFile(r *http.Request, rel string, body *checkedBody) error {
	if err := r.Context().Err(); err != nil {
		return err
	}
	err := body.finish()
	if errors.Is(err, errNotTheFile) {
		_, _ = h.cache.Purge(body.want)
		h.logger.Error("a cached file does not match its hash: purged", zap.String("path", rel), zap.Error(err))
	}
	if err != nil {
		return fmt.Errorf("%w: %v", pool.ErrAborted, err)
	}
	return nil
}

// serveFile answers r with content, a file of size bytes modified then,
// with the HTTP semantics of a mirror's: HEAD, Range, conditional
// requests. expect gives its hash (once known: a pending fill's is not
// yet). A full body goes through a checkedBody, returned for the caller to
// finish (nil when the answer is not a full 200 body).
func serveFile(w http.ResponseWriter, r *http.Request, rel string, expect func() ([32]byte, bool), size int64, modified time.Time, content io.ReadSeeker) (*countingWriter, *checkedBody) {
	cw := &countingWriter{ResponseWriter: w}
	out := http.ResponseWriter(cw)
	var body *checkedBody
	if r.Method == http.MethodGet && r.Header.Get("Range") == "" {
		body = &checkedBody{countingWriter: cw, size: size, expect: expect, hash: sha256.New()}
		out = body
	}
	setCacheHeaders(w, rel, expect)
	http.ServeContent(out, r, "", modified, content)
	if cw.status != http.StatusOK {
		body = nil // a 304, or an error: no body to check
	}
	return cw, body
}

// checkedBody passes a body of a known size on as it is written, hashing
// it, and holds back its last bytes until the hash of the whole is checked
// against the one expect gives (finish).
type checkedBody struct {
	*countingWriter
	size   int64
	expect func() ([32]byte, bool)
	want   [32]byte // the hash it was checked against
	hash   hash.Hash
	n      int64  // bytes written to it
	held   []byte // its last bytes, held back
}

// errNotTheFile: a body's SHA-256 is not the one the index gives.
var errNotTheFile = errors.New("cache: the body's SHA-256 is not the one the index gives")

// checkedTail is how many bytes a checkedBody holds back.
const checkedTail = 32 << 10

func (c *checkedBody) Write(p []byte) (int, error) {
	if c.n+int64(len(p)) > c.size {
		return 0, fmt.Errorf("body longer than the file's %d bytes", c.size)
	}
	c.hash.Write(p)
	pass := len(p)
	if tail := c.size - checkedTail; c.n+int64(len(p)) > tail {
		pass = int(max(tail-c.n, 0))
		c.held = append(c.held, p[pass:]...)
	}
	c.n += int64(len(p))
	if pass > 0 {
		if _, err := c.countingWriter.Write(p[:pass]); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// finish sends the held bytes if the body is the whole file of its hash.
// A body whose hash is still unknown (a pending fill whose index was not
// learned) is sent unchecked, as the pool sends a file no index lists. A
// nil checkedBody (no body to check) finishes at once.
func (c *checkedBody) finish() error {
	if c == nil {
		return nil
	}
	if c.n != c.size {
		return fmt.Errorf("cache: %d of the file's %d bytes", c.n, c.size)
	}
	if want, known := c.expect(); known {
		c.want = want
		if [32]byte(c.hash.Sum(nil)) != want {
			return errNotTheFile
		}
	}
	_, err := c.countingWriter.Write(c.held)
	return err
}

// fillWriter is the response writer of a fill: the pool's response goes to
// the cache file.
type fillWriter struct {
	fill   *filecache.Fill
	header http.Header
	status int
	err    error
}

func (fw *fillWriter) Header() http.Header { return fw.header }

func (fw *fillWriter) WriteHeader(code int) {
	if fw.status != 0 {
		return
	}
	fw.status = code
	if code != http.StatusOK {
		return
	}
	size, err := strconv.ParseInt(fw.header.Get("Content-Length"), 10, 64)
	if err != nil {
		size = fw.fill.Size() // a body of unknown length must be the promised one
	}
	modified, _ := http.ParseTime(fw.header.Get("Last-Modified"))
	if err := fw.fill.Start(modified, size); err != nil {
		fw.err = err
	}
}

func (fw *fillWriter) Write(b []byte) (int, error) {
	if fw.status == 0 {
		fw.WriteHeader(http.StatusOK)
	}
	if fw.status != http.StatusOK || fw.err != nil {
		return 0, errors.New("cache fill: not a complete file")
	}
	n, err := fw.fill.Write(b)
	if err != nil {
		fw.err = err
	}
	return n, err
}

// continueFrom sends the rest of the file, from offset from, through the
// pool, after the response's first from bytes came from a fill that
// failed: a Range request whose answer must start there.
func (h *Handler) continueFrom(w http.ResponseWriter, r *http.Request, rel string, from, size int64) error {
	req := r.Clone(r.Context())
	for _, k := range conditionalHeaders {
		req.Header.Del(k)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", from))
	tw := &tailWriter{w: w, want: fmt.Sprintf("bytes %d-%d/%d", from, size-1, size), header: http.Header{}}
	err := h.pool.Serve(tw, req, rel)
	if err == nil && (!tw.ok || from+tw.n != size) {
		err = fmt.Errorf("continuation answered %d %q with %d bytes", tw.status, tw.header.Get("Content-Range"), tw.n)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: continuing a cache fill that failed: %v", pool.ErrAborted, err)
	}
	return err
}

// tailWriter passes on the body of a continuation whose header matches
// the range it must be.
type tailWriter struct {
	w      http.ResponseWriter
	want   string
	header http.Header
	status int
	ok     bool
	n      int64
}

func (tw *tailWriter) Header() http.Header { return tw.header }

func (tw *tailWriter) WriteHeader(code int) {
	if tw.status == 0 {
		tw.status = code
		tw.ok = code == http.StatusPartialContent && tw.header.Get("Content-Range") == tw.want
	}
}

func (tw *tailWriter) Unwrap() http.ResponseWriter { return tw.w }

func (tw *tailWriter) Write(b []byte) (int, error) {
	if tw.status == 0 {
		tw.WriteHeader(http.StatusOK)
	}
	if !tw.ok {
		return 0, errors.New("continuation: not the range asked for")
	}
	n, err := tw.w.Write(b)
	tw.n += int64(n)
	return n, err
}

// countingWriter counts the body bytes written and keeps the status.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (cw *countingWriter) WriteHeader(code int) {
	if cw.status == 0 {
		cw.status = code
	}
	cw.ResponseWriter.WriteHeader(code)
}

func (cw *countingWriter) Write(b []byte) (int, error) {
	if cw.status == 0 {
		cw.status = http.StatusOK
	}
	n, err := cw.ResponseWriter.Write(b)
	cw.n += int64(n)
	return n, err
}

func (cw *countingWriter) Unwrap() http.ResponseWriter { return cw.ResponseWriter }

// setCacheHeaders sets what a response from the cache says of itself: the
// mirror header, a type from the name, and an entity tag from the hash
// when it is known (strong: the bytes are the hash's).
func setCacheHeaders(w http.ResponseWriter, rel string, expect func() ([32]byte, bool)) {
	h := w.Header()
	h.Set(pool.MirrorHeader, cacheMirror)
	ctype := mime.TypeByExtension(path.Ext(rel))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	h.Set("Content-Type", ctype)
	if sum, ok := expect(); ok {
		h.Set("ETag", `"sha256-`+hex.EncodeToString(sum[:])+`"`)
	}
}
