// Package filecache keeps verified files on disk by their SHA-256, for
// refractor's LAN cache. It knows nothing of HTTP or mirrors: a fill
// (fill.go) writes a file aside while readers follow it as it grows, and
// the file takes its place under its hash only once it is complete and its
// hash is the one it was promised. The store bounds itself by size and by
// the free space it leaves on its file system, evicting the least recently
// used files, and finds its files again after a restart by scanning its
// directory.
//
// Layout under the store's directory:
//
//	sha256/ab/ab12…   complete files, named by their hash
//	tmp/              fills in flight; emptied when the store opens
package filecache

import (
	"container/list"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Sum is a file's SHA-256.
type Sum = [32]byte

// File is what a fill writes to: an *os.File unless Options.CreateTemp
// says otherwise.
type File interface {
	io.Writer
	io.ReaderAt
	Sync() error
	Close() error
	Name() string
}

// Options bound a store.
type Options struct {
	// MaxSize bounds the bytes of the complete files and the fills in
	// flight; 0 means no bound but MinFree's.
	MaxSize int64
	// MinFree is how many bytes the store leaves free on its file system:
	// it evicts files, or does not cache, rather than go below it.
	MinFree int64
	// CreateTemp, if set, creates the files fills write to (default:
	// os.CreateTemp). Tests use it to put the store on a full disk.
	CreateTemp func(dir, pattern string) (File, error)
}

// Stats is a store's state.
type Stats struct {
	// Dir is the store's directory.
	Dir string `json:"dir"`
	// Files and Size are the complete files and their bytes.
	Files int   `json:"files"`
	Size  int64 `json:"size"`
	// Filling and Reserved are the fills in flight and the bytes they
	// reserved.
	Filling  int   `json:"filling"`
	Reserved int64 `json:"reserved"`
	// MaxSize and MinFree are the store's bounds.
	MaxSize int64 `json:"max_size"`
	MinFree int64 `json:"min_free"`
	// Evicted counts the files evicted to stay within the bounds.
	Evicted int64 `json:"evicted"`
	// WriteErrors counts fills that failed on the store's side (disk full,
	// I/O error), not the mirror's.
	WriteErrors int64 `json:"write_errors"`
}

// Store is a directory of complete files by hash and the fills in flight.
// Its lock is held only for bookkeeping and the file-system calls that go
// with it (no reads or writes of file contents); it is taken before a
// Fill's lock, never after.
type Store struct {
	dir string

	mu       sync.Mutex
	opts     Options
	files    map[Sum]*item
	lru      list.List // of *item, most recently used first
	size     int64     // bytes of the files
	fills    map[Sum]*Fill
	reserved int64 // bytes the fills reserved
	evicted  int64
	wfail    int64
}

type item struct {
	sum  Sum
	size int64
	elem *list.Element
}

// Open opens (creating it if needed) the store in dir, removes what fills
// left behind when the process last stopped, and indexes the files there.
func Open(dir string, opts Options) (*Store, error) {
	s := &Store{dir: dir, opts: opts, files: map[Sum]*item{}, fills: map[Sum]*Fill{}}
	for _, d := range []string{s.tmpDir(), filepath.Join(dir, "sha256")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("creating cache directory: %w", err)
		}
	}
	leftovers, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("reading cache directory: %w", err)
	}
	for _, e := range leftovers {
		if err := os.RemoveAll(filepath.Join(s.tmpDir(), e.Name())); err != nil {
			return nil, fmt.Errorf("removing a leftover of an earlier process: %w", err)
		}
	}
	if err := s.scan(); err != nil {
		return nil, fmt.Errorf("scanning cache directory: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evictLocked(0)
	return s, nil
}

// scan indexes the complete files, most recently used first.
func (s *Store) scan() error {
	type found struct {
		item
		used time.Time
	}
	var all []found
	err := filepath.WalkDir(filepath.Join(s.dir, "sha256"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		sum, ok := parseName(d.Name())
		if !ok || filepath.Base(filepath.Dir(p)) != d.Name()[:2] {
			return nil // not ours: left alone
		}
		info, err := d.Info()
		if err != nil {
			return nil // gone meanwhile
		}
		all = append(all, found{item{sum: sum, size: info.Size()}, accessTime(info)})
		return nil
	})
	if err != nil {
		return err
	}
	// Oldest use first, each pushed to the front.
	slices.SortFunc(all, func(a, b found) int { return a.used.Compare(b.used) })
	for _, f := range all {
		it := &item{sum: f.sum, size: f.size}
		it.elem = s.lru.PushFront(it)
		s.files[f.sum] = it
		s.size += f.size
	}
	return nil
}

func parseName(name string) (Sum, bool) {
	var sum Sum
	if len(name) != 2*len(sum) {
		return sum, false
	}
	_, err := hex.Decode(sum[:], []byte(name))
	return sum, err == nil && hex.EncodeToString(sum[:]) == name
}

func (s *Store) tmpDir() string { return filepath.Join(s.dir, "tmp") }

func (s *Store) path(sum Sum) string {
	name := hex.EncodeToString(sum[:])
	return filepath.Join(s.dir, "sha256", name[:2], name)
}

// SetLimits replaces the store's bounds (a reload's new configuration) and
// evicts what no longer fits.
func (s *Store) SetLimits(maxSize, minFree int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.MaxSize, s.opts.MinFree = maxSize, minFree
	s.evictLocked(0)
}

// Get opens the complete file of hash sum, which must be size bytes long
// (any, if size is negative: the size it was stored with), and counts it
// as used. A file of another size (damaged on disk) is removed and Get
// reports a miss.
func (s *Store) Get(sum Sum, size int64) (*os.File, fs.FileInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.files[sum]
	if !ok {
		return nil, nil, false
	}
	p := s.path(sum)
	f, err := os.Open(p)
	if err != nil {
		s.dropLocked(it)
		return nil, nil, false
	}
	if size < 0 {
		size = it.size
	}
	info, err := f.Stat()
	if err != nil || info.Size() != size {
		f.Close()
		s.dropLocked(it)
		_ = os.Remove(p)
		return nil, nil, false
	}
	s.lru.MoveToFront(it.elem)
	now := time.Now()
	_ = os.Chtimes(p, now, info.ModTime()) // the use, for the order after a restart
	return f, info, true
}

// Sums returns the hashes of the complete files, in no order.
func (s *Store) Sums() []Sum {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Sum, 0, len(s.files))
	for sum := range s.files {
		out = append(out, sum)
	}
	return out
}

// Has reports whether the complete file of hash sum is in the store.
func (s *Store) Has(sum Sum) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.files[sum]
	return ok
}

// Purge removes the file of hash sum, if any; readers that have it open
// keep reading it. A fill in flight is not stopped.
func (s *Store) Purge(sum Sum) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.files[sum]
	if !ok {
		return false, nil
	}
	s.dropLocked(it)
	if err := os.Remove(s.path(sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return true, fmt.Errorf("purging: %w", err)
	}
	return true, nil
}

// PurgeAll removes every complete file and returns how many.
func (s *Store) PurgeAll() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	n := 0
	for _, it := range s.files {
		s.dropLocked(it)
		if err := os.Remove(s.path(it.sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("purging: %w", err)
	}
	return n, nil
}

// Stats returns the store's state.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Dir: s.dir, Files: len(s.files), Size: s.size,
		Filling: len(s.fills), Reserved: s.reserved,
		MaxSize: s.opts.MaxSize, MinFree: s.opts.MinFree,
		Evicted: s.evicted, WriteErrors: s.wfail,
	}
}

// dropLocked forgets it (the caller removes the file).
func (s *Store) dropLocked(it *item) {
	s.lru.Remove(it.elem)
	delete(s.files, it.sum)
	s.size -= it.size
}

// freeLocked is the free space of the store's file system, less what the
// fills in flight will still write, and whether it is known.
func (s *Store) freeLocked() (int64, bool) {
	free, known := freeSpace(s.dir)
	if known {
		for _, f := range s.fills {
			f.mu.Lock()
			free -= max(f.size-f.written, 0) // a pending fill owes nothing yet
			f.mu.Unlock()
		}
	}
	return free, known
}

// fitsLocked reports whether need more bytes fit within the bounds now,
// given free (freeLocked's).
func (s *Store) fitsLocked(need int64) bool {
	free, known := s.freeLocked()
	return s.fitsIn(need, free, known)
}

func (s *Store) fitsIn(need, free int64, freeKnown bool) bool {
	if s.opts.MaxSize > 0 && s.size+s.reserved+need > s.opts.MaxSize {
		return false
	}
	return !freeKnown || free-need >= s.opts.MinFree
}

// evictLocked removes least recently used files until need more bytes fit
// within the bounds, and reports whether they do.
func (s *Store) evictLocked(need int64) bool {
	free, freeKnown := s.freeLocked()
	// Evicting everything would not make room for a new file: evict
	// nothing. (With need 0, the store gives back what it can.)
	if need > 0 && (s.opts.MaxSize > 0 && s.reserved+need > s.opts.MaxSize ||
		freeKnown && free+s.size-need < s.opts.MinFree) {
		return false
	}
	for !s.fitsIn(need, free, freeKnown) {
		back := s.lru.Back()
		if back == nil {
			return false
		}
		it := back.Value.(*item)
		s.dropLocked(it)
		_ = os.Remove(s.path(it.sum))
		s.evicted++
		free += it.size
	}
	return true
}
