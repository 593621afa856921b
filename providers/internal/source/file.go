package source

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-refractor/refractor/pool"
)

// FileConfig configures a File.
type FileConfig struct {
	Provider string      // the provider's name, which prefixes errors
	Path     string      // the file
	Parse    Parser      // turns the file into candidates
	Logger   *zap.Logger // may be nil
}

// File is a list of candidates read from a local file, and read again
// whenever the file changes. Each call to Candidates looks at the file's
// identity, size and modification time (one open and fstat, cheap enough
// for the pool's rare calls) and parses it only when one of them changed,
// so an edit in place and an atomic replacement (rename) are both seen.
// A file that becomes unreadable or unusable keeps the last good list,
// with a warning logged once per change.
type File struct {
	cfg    FileConfig
	logger *zap.Logger

	mu      sync.Mutex
	list    []pool.Candidate
	seen    os.FileInfo // the version last parsed, good or bad
	lastErr error       // why the current version is unusable
}

// NewFile returns a File. It reads nothing until asked.
func NewFile(cfg FileConfig) *File {
	f := &File{cfg: cfg, logger: cfg.Logger}
	if f.logger == nil {
		f.logger = zap.NewNop()
	}
	f.logger = f.logger.With(zap.String("path", cfg.Path))
	return f
}

// Load reads the file now and fails if it yields no candidate; it is for
// Provision, so that a wrong path fails the configuration.
func (f *File) Load() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.update()
	if f.list == nil {
		return f.lastErr
	}
	return nil
}

// Candidates returns the list from the file, reading it again first if it
// changed. It fails only when the file has never given a good list.
func (f *File) Candidates(_ context.Context) ([]pool.Candidate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.update()
	if f.list == nil {
		return nil, f.lastErr
	}
	return clone(f.list), nil
}

// update reads and parses the file if it changed since last time. It runs
// with mu held.
func (f *File) update() {
	fh, err := os.Open(f.cfg.Path)
	if err != nil {
		f.fail(nil, err)
		return
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		f.fail(nil, err)
		return
	}
	if f.seen != nil && os.SameFile(f.seen, fi) && fi.Size() == f.seen.Size() && fi.ModTime().Equal(f.seen.ModTime()) {
		return
	}
	if fi.IsDir() {
		f.fail(fi, fmt.Errorf("%s is a directory", f.cfg.Path))
		return
	}
	data, err := readAll(fh)
	if err != nil {
		f.fail(fi, fmt.Errorf("reading %s: %w", f.cfg.Path, err))
		return
	}
	res, err := f.cfg.Parse(data)
	if err != nil {
		f.fail(fi, fmt.Errorf("%s: %w", f.cfg.Path, err))
		return
	}
	for _, w := range res.Warnings {
		f.logger.Warn("mirror list entry", zap.String("warning", w))
	}
	f.logger.Info("mirror list read",
		zap.Int("entries", res.Entries),
		zap.Int("candidates", len(res.Candidates)),
		zap.Int("skipped", len(res.Warnings)),
		zap.Time("modified", fi.ModTime().Truncate(time.Second)))
	f.list, f.seen, f.lastErr = res.Candidates, fi, nil
}

// fail records why the file is unusable now, and says so once per change.
// fi is the version that failed, nil when it could not be opened.
func (f *File) fail(fi os.FileInfo, err error) {
	err = fmt.Errorf("%s provider: %w", f.cfg.Provider, err)
	if f.lastErr == nil || f.lastErr.Error() != err.Error() {
		f.logger.Warn("reading the mirror list failed",
			zap.Error(err),
			zap.Int("keeping", len(f.list)))
	}
	f.lastErr = err
	f.seen = fi
}

// Close does nothing: a File holds nothing open between calls.
func (f *File) Close() {}

// Interface guard
var _ Source = (*File)(nil)
