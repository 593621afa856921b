package filecache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ErrCached: Begin found the file complete already.
var ErrCached = errors.New("file is cached already")

// errNoRoom: the file does not fit within the store's bounds.
var errNoRoom = errors.New("no room in the cache")

// Fill is one file on its way into the store: its leader writes it aside
// while any number of readers follow it as it grows. Only the leader calls
// Write, Start, Expect and Finish.
//
// A pending fill is begun before its hash and size are known (under a key
// of the caller's, with size -1): Start gives its size, Expect its hash
// once the caller learns it, and only then may it take its place.
type Fill struct {
	s     *Store
	key   Sum   // in Store.fills
	sum   Sum   // the promised hash (key, unless pending)
	size  int64 // -1 until a pending fill starts
	file  File
	hash  hash.Hash // the leader's
	known bool      // sum is promised

	ready chan struct{} // closed at Start or at Finish, whichever comes first

	mu       sync.Mutex // after Store.mu
	cond     sync.Cond  // on mu: more bytes, or the end
	started  bool
	modified time.Time
	written  int64
	done     bool
	err      error // with done: nil if the file is complete and in place
	refs     int   // the leader and open readers; the file closes at 0
}

// Begin returns the fill in flight for the file of hash sum, or starts one
// (leader true) if a file of size bytes fits within the store's bounds,
// evicting what it must (a negative size begins a pending fill: see
// BeginPending). It returns ErrCached if the file is complete
// already, and an error if the file cannot be cached now (no room, or the
// store cannot write). The caller holds a reference to the fill, which
// keeps its file open for readers, until it calls Release; the leader's
// Finish gives back the writer's own.
func (s *Store) Begin(sum Sum, size int64) (f *Fill, leader bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.fills[sum]; f != nil {
		f.ref()
		return f, false, nil
	}
	if _, ok := s.files[sum]; ok {
		return nil, false, ErrCached
	}
	if size >= 0 && !s.evictLocked(size) {
		return nil, false, errNoRoom
	}
	create := s.opts.CreateTemp
	if create == nil {
		create = func(dir, pattern string) (File, error) { return os.CreateTemp(dir, pattern) }
	}
	file, err := create(s.tmpDir(), "fill-*")
	if err != nil {
		s.wfail++
		return nil, false, fmt.Errorf("creating a cache file: %w", err)
	}
	f = &Fill{s: s, key: sum, sum: sum, known: size >= 0, size: size, file: file, hash: sha256.New(), ready: make(chan struct{}), refs: 2}
	f.cond.L = &f.mu
	s.fills[sum] = f
	s.reserved += max(size, 0)
	return f, true, nil
}

// BeginPending is Begin for a file whose hash and size are not known yet,
// under key (which must not be a file's hash). Start gives its size, and
// Expect its hash before Finish.
func (s *Store) BeginPending(key Sum) (f *Fill, leader bool, err error) {
	return s.Begin(key, -1)
}

// Pending reports whether the fill was begun before its hash was known,
// and the hash is still not promised.
func (f *Fill) Pending() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.known
}

// Expect promises a pending fill's hash: Finish keeps the file only if it
// is that.
func (f *Fill) Expect(sum Sum) {
	f.mu.Lock()
	f.sum, f.known = sum, true
	f.mu.Unlock()
}

// Filling returns the fill in flight for the file of hash sum, or nil.
// The caller holds a reference to it until it calls Release.
func (s *Store) Filling(sum Sum) *Fill {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fills[sum]
	if f != nil {
		f.ref()
	}
	return f
}

// Size returns the file's size (-1 for a pending fill not started yet).
func (f *Fill) Size() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.size
}

// Write appends p to the file. An error is the store's (a full disk): the
// fill has failed, and the leader stops feeding it.
func (f *Fill) Write(p []byte) (int, error) {
	if f.written+int64(len(p)) > f.size { // f.size is the leader's once started
		return 0, fmt.Errorf("cache fill: more than the %d bytes expected", f.size)
	}
	n, err := f.file.Write(p)
	f.hash.Write(p[:n])
	f.mu.Lock()
	f.written += int64(n)
	f.cond.Broadcast()
	f.mu.Unlock()
	if err != nil {
		f.s.mu.Lock()
		f.s.wfail++
		f.s.mu.Unlock()
		return n, fmt.Errorf("writing to the cache: %w", err)
	}
	return n, nil
}

// Start tells readers that the file's bytes follow, its size (which must
// be the promised one; a pending fill takes it now, if it fits within the
// store's bounds) and its modification time (the mirror's Last-Modified).
func (f *Fill) Start(modified time.Time, size int64) error {
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	// f.size, f.started and f.done change only in the leader's goroutine
	// (here and in Finish); f.mu is taken to publish them (evictLocked
	// takes it too).
	f.mu.Lock()
	done := f.done
	f.mu.Unlock()
	switch {
	case f.started || done:
		return errors.New("cache fill: started or finished already")
	case f.size >= 0 && size != f.size:
		return fmt.Errorf("cache fill: length %d, want %d", size, f.size)
	case f.size < 0 && size < 0:
		return errors.New("cache fill: a pending fill needs the file's length")
	case f.size < 0 && !s.fitsLocked(size):
		// A pending fill may never be kept (its hash may not come):
		// it takes only room there is, and evicts nothing.
		return errNoRoom
	case f.size < 0:
		s.reserved += size
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.size, f.started, f.modified = size, true, modified
	close(f.ready)
	return nil
}

// Finish ends the fill: with cause nil, the file must be complete and of
// the promised hash, and it takes its place in the store; otherwise (or if
// it is not) the fill fails with that reason and readers that are behind
// get it as an error.
func (f *Fill) Finish(cause error) error {
	err := cause
	storeFault := false
	if err == nil {
		storeFault, err = f.commit()
	}
	if err != nil {
		_ = os.Remove(f.file.Name()) // readers keep their descriptor
	}
	s := f.s
	s.mu.Lock()
	delete(s.fills, f.key)
	s.reserved -= max(f.size, 0)
	if err == nil {
		it := &item{sum: f.sum, size: f.size}
		if old := s.files[f.sum]; old != nil { // purged and filled again meanwhile
			s.dropLocked(old)
		}
		it.elem = s.lru.PushFront(it)
		s.files[f.sum] = it
		s.size += f.size
		s.evictLocked(0)
	} else if storeFault {
		s.wfail++
	}
	s.mu.Unlock()

	f.mu.Lock()
	f.done, f.err = true, err
	if !f.started {
		close(f.ready)
	}
	f.cond.Broadcast()
	f.mu.Unlock()
	f.unref()
	return err
}

// commit checks the complete file and moves it into place; storeFault
// tells an error of the store's (the disk) from the file's.
func (f *Fill) commit() (storeFault bool, err error) {
	f.mu.Lock()
	known := f.known
	f.mu.Unlock()
	switch {
	case !known:
		return false, errors.New("cache fill: its hash is not known")
	case f.written != f.size:
		return false, fmt.Errorf("cache fill: %d of %d bytes", f.written, f.size)
	}
	if got := Sum(f.hash.Sum(nil)); got != f.sum {
		return false, fmt.Errorf("cache fill: SHA-256 %x, want %x", got, f.sum)
	}
	if err := f.file.Sync(); err != nil {
		return true, fmt.Errorf("cache fill: syncing: %w", err)
	}
	final := f.s.path(f.sum)
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return true, fmt.Errorf("cache fill: %w", err)
	}
	if !f.modified.IsZero() {
		_ = os.Chtimes(f.file.Name(), time.Now(), f.modified)
	}
	if err := os.Rename(f.file.Name(), final); err != nil {
		return true, fmt.Errorf("cache fill: %w", err)
	}
	return false, nil
}

func (f *Fill) ref() {
	f.mu.Lock()
	f.refs++
	f.mu.Unlock()
}

// Release gives back the reference Begin or Filling gave the caller.
func (f *Fill) Release() { f.unref() }

func (f *Fill) unref() {
	f.mu.Lock()
	f.refs--
	last := f.refs == 0
	f.mu.Unlock()
	if last {
		_ = f.file.Close()
	}
}

// Ready is closed once the fill has started (Started tells) or failed.
func (f *Fill) Ready() <-chan struct{} { return f.ready }

// Started returns the file's modification time, and whether the fill
// started; false means it failed first, and Err says why.
func (f *Fill) Started() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.modified, f.started
}

// Err returns why the fill failed, or nil.
func (f *Fill) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// NewReader returns a reader of the file as it grows, until ctx ends. The
// caller holds a reference to the fill, and closes the reader.
func (f *Fill) NewReader(ctx context.Context) *Reader {
	f.ref()
	r := &Reader{f: f, ctx: ctx}
	r.stop = context.AfterFunc(ctx, func() {
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	})
	return r
}

// Reader reads a fill's file as it grows: a read past the bytes written so
// far waits for more. It is an io.ReadSeeker of the file's full size, for
// http.ServeContent, to be used once the fill has started (Ready, Started):
// before, a pending fill's size is not known.
type Reader struct {
	f      *Fill
	ctx    context.Context
	stop   func() bool
	pos    int64
	err    error // the last read's, other than io.EOF
	closed bool
}

// Err returns the error a Read returned, other than io.EOF: the fill
// failed (or the reader's context ended) before the bytes it wanted.
func (r *Reader) Err() error { return r.err }

// Read reads from the current offset, waiting for the bytes to be written.
// It returns the fill's error once it reaches the bytes a failed fill did
// not write.
func (r *Reader) Read(p []byte) (int, error) {
	f := r.f
	if r.pos >= f.size {
		return 0, io.EOF
	}
	f.mu.Lock()
	for r.pos >= f.written && !f.done && r.ctx.Err() == nil {
		f.cond.Wait()
	}
	avail, err := f.written-r.pos, f.err
	f.mu.Unlock()
	if avail <= 0 {
		if err == nil {
			err = r.ctx.Err()
		}
		if err == nil {
			err = errors.New("cache fill ended short")
		}
		r.err = err
		return 0, err
	}
	if int64(len(p)) > avail {
		p = p[:avail]
	}
	n, rerr := f.file.ReadAt(p, r.pos)
	r.pos += int64(n)
	if rerr == io.EOF && n == len(p) {
		rerr = nil
	}
	if rerr != nil {
		r.err = rerr
	}
	return n, rerr
}

// Seek sets the offset for the next Read.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.f.size
	}
	if offset < 0 {
		return 0, errors.New("seek before the start of the file")
	}
	r.pos = offset
	return offset, nil
}

// Close releases the reader.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.stop()
	r.f.unref()
	return nil
}
