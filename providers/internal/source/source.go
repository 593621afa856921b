// Package source is where the list-reading providers (archlinux, list,
// mirrorlist) get their documents: a URL fetched, cached and refreshed with
// backoff and a copy in Caddy's storage (Remote), or a local file read
// again when it changes (File). Each provider only parses; what to do when
// the network or the file lets it down is decided here, once.
package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-refractor/refractor/pool"
)

const (
	// DefaultRefresh is how long a fetched list is used before it is
	// fetched again.
	DefaultRefresh = time.Hour

	// MinRefresh is the shortest refresh interval allowed, to spare the
	// servers that publish mirror lists.
	MinRefresh = time.Minute

	// DefaultTimeout bounds one fetch, reading the body included.
	DefaultTimeout = 30 * time.Second

	// MaxBytes is the largest document read, from a URL or a file.
	MaxBytes = 16 << 20

	// UserAgent identifies refractor to the servers it fetches lists from.
	UserAgent = "refractor (+https://github.com/caddy-refractor/refractor)"
)

// Result is what a Parser makes of a document.
type Result struct {
	// Candidates are the mirrors that passed, best first. Never empty.
	Candidates []pool.Candidate
	// Entries is how many mirrors the document listed, before filtering.
	Entries int
	// Warnings are the entries that were skipped or taken with a doubt,
	// and why; they are logged each time the document is read.
	Warnings []string
}

// A Parser turns a document into candidate mirrors. It returns an error
// when the document is unusable, and also when it yields no candidate, so
// that an empty or over-filtered list never replaces a good one.
type Parser func(data []byte) (Result, error)

// Source is a pool.Provider backed by a document. Close releases it: it
// cancels a fetch under way; the source must not be used afterwards.
type Source interface {
	pool.Provider
	Close()
}

// Location is the configuration shared by the providers that read a list
// from a URL or a file. Providers embed it, so its fields appear in their
// JSON.
type Location struct {
	// The http or https URL of the document. It is fetched when the pool
	// first needs mirrors, never while the configuration loads, and again
	// once it is older than `refresh`. The last good document is kept in
	// Caddy's storage, so a restart without network still has mirrors.
	// Mutually exclusive with `path`. Default: depends on the provider.
	URL string `json:"url,omitempty"`

	// The path of a local file to read instead of a URL. It is read while
	// the configuration loads (a missing or unusable file fails the load)
	// and read again whenever it changes. Mutually exclusive with `url`.
	Path string `json:"path,omitempty"`

	// How long a fetched document is used before it is fetched again. A
	// failed fetch keeps the last good list and is retried after 5s,
	// then twice as long each time up to 15m (never more than refresh).
	// At least 1m. Default: 1h. Only for `url`.
	Refresh caddy.Duration `json:"refresh,omitempty"`

	// Timeout of one fetch, from connecting to the end of the body.
	// Default: 30s. Only for `url`.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	now func() time.Time
}

// SetClock makes the source opened next use now instead of time.Now, for
// tests of refresh and backoff timing.
func (l *Location) SetClock(now func() time.Time) { l.now = now }

// Check validates the location for the named provider, which prefixes its
// errors.
func (l *Location) Check(provider string) error {
	switch {
	case l.URL != "" && l.Path != "":
		return fmt.Errorf("%s provider: url and path are mutually exclusive", provider)
	case l.URL == "" && l.Path == "":
		return fmt.Errorf("%s provider: a url or a path is required", provider)
	case l.Path != "" && (l.Refresh != 0 || l.Timeout != 0):
		return fmt.Errorf("%s provider: refresh and timeout apply only to a url; a path is read again when it changes", provider)
	case l.Refresh != 0 && time.Duration(l.Refresh) < MinRefresh:
		return fmt.Errorf("%s provider: refresh: must be at least %s, got %s", provider, MinRefresh, time.Duration(l.Refresh))
	case l.Timeout < 0:
		return fmt.Errorf("%s provider: timeout: must be positive, got %s", provider, time.Duration(l.Timeout))
	}
	if l.URL != "" {
		if err := checkHTTPURL(l.URL); err != nil {
			return fmt.Errorf("%s provider: url: %w", provider, err)
		}
	}
	return nil
}

// Open checks the location and returns its source. A file is read at once,
// so that a missing or unusable file fails the configuration; a URL is not
// fetched until the pool asks for mirrors. ext is the extension of the
// document's copy in Caddy's storage.
func (l *Location) Open(ctx caddy.Context, provider, ext string, parse Parser) (Source, error) {
	if err := l.Check(provider); err != nil {
		return nil, err
	}
	logger := ctx.Logger()
	if l.Path != "" {
		f := NewFile(FileConfig{Provider: provider, Path: l.Path, Parse: parse, Logger: logger})
		if err := f.Load(); err != nil {
			return nil, err
		}
		return f, nil
	}
	return NewRemote(RemoteConfig{
		Provider: provider,
		URL:      l.URL,
		Parse:    parse,
		Refresh:  time.Duration(l.Refresh),
		Timeout:  time.Duration(l.Timeout),
		Storage:  storageOf(ctx),
		Ext:      ext,
		Logger:   logger,
		Now:      l.now,
	}), nil
}

// UnmarshalOption handles the subdirectives url, path, refresh and timeout
// for the named provider. It reports whether the current token was one of
// them.
func (l *Location) UnmarshalOption(d *caddyfile.Dispenser, provider string) (bool, error) {
	opt := d.Val()
	switch opt {
	case "url", "path":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		if l.URL != "" || l.Path != "" {
			return true, d.Errf("%s provider: %s: a url or path is already specified", provider, opt)
		}
		if opt == "url" {
			l.URL = d.Val()
		} else {
			l.Path = d.Val()
		}
	case "refresh", "timeout":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		dur, err := caddy.ParseDuration(d.Val())
		if err != nil || dur <= 0 {
			return true, d.Errf("%s provider: %s: want a positive duration such as 30s or 1h, got '%s'", provider, opt, d.Val())
		}
		if opt == "refresh" {
			l.Refresh = caddy.Duration(dur)
		} else {
			l.Timeout = caddy.Duration(dur)
		}
	default:
		return false, nil
	}
	if d.NextArg() {
		return true, d.ArgErr()
	}
	return true, nil
}

// SetInline sets the location from the provider's inline argument: an
// http(s) URL, or else a file path.
func (l *Location) SetInline(arg string) {
	if strings.Contains(arg, "://") {
		l.URL = arg // schemes other than http(s) are rejected by Check
		return
	}
	l.Path = arg
}

func checkHTTPURL(raw string) error {
	if _, err := pool.ParseMirrorURL(raw); err != nil {
		// The same rules as a mirror, but a query is fine here.
		base, _, _ := strings.Cut(raw, "?")
		if _, err2 := pool.ParseMirrorURL(base); err2 != nil {
			return err
		}
	}
	return nil
}

// Storage is the part of Caddy's storage (certmagic.Storage) that a Remote
// uses.
type Storage interface {
	Load(ctx context.Context, key string) ([]byte, error)
	Store(ctx context.Context, key string, value []byte) error
}

// storageOf returns the context's storage, or nil when it has none: a
// context made without a configuration (caddy.NewContext, as unit tests
// do) panics in Storage.
func storageOf(ctx caddy.Context) (s Storage) {
	defer func() {
		if recover() != nil {
			s = nil
		}
	}()
	if st := ctx.Storage(); st != nil {
		return st
	}
	return nil
}

// readAll reads r up to MaxBytes and fails beyond.
func readAll(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxBytes {
		return nil, fmt.Errorf("larger than %d MiB", MaxBytes>>20)
	}
	return data, nil
}

// clone hands out a copy of a list, so callers cannot modify ours.
func clone(list []pool.Candidate) []pool.Candidate {
	if list == nil {
		return nil
	}
	return append([]pool.Candidate(nil), list...)
}

// Builder collects the mirrors of a document in order of preference,
// skipping invalid URLs and repeats with a warning, for parsers.
type Builder struct {
	res  Result
	seen map[string]string // normalised URL: where it was first seen
}

// Add validates raw as a mirror base URL and appends it, unless it repeats
// an earlier mirror once normalised. where locates the entry in warnings,
// such as "line 3".
func (b *Builder) Add(where, raw string, lastSync time.Time) {
	u, err := pool.ParseMirrorURL(raw)
	if err == nil && u.Hostname() == "" {
		// ParseMirrorURL takes "http://:80" and drops the port, leaving
		// no host at all.
		err = fmt.Errorf("mirror URL %q: missing host", raw)
	}
	if err != nil {
		b.Skip(where, err.Error())
		return
	}
	key := u.String()
	if first, dup := b.seen[key]; dup {
		b.Skip(where, fmt.Sprintf("mirror URL %q repeats %s", raw, first))
		return
	}
	if b.seen == nil {
		b.seen = make(map[string]string)
	}
	b.seen[key] = where
	b.res.Candidates = append(b.res.Candidates, pool.Candidate{URL: key, LastSync: lastSync})
}

// Skip records an entry that is not used, and why.
func (b *Builder) Skip(where, reason string) {
	b.res.Warnings = append(b.res.Warnings, where+": "+reason)
}

// Result returns what was collected; entries is how many mirrors the
// document listed. Its Candidates may be empty: the parser says why.
func (b *Builder) Result(entries int) Result {
	b.res.Entries = entries
	return b.res
}

// Check reports whether r keeps the Parser contract: at least one
// candidate, each a normalised mirror URL, none twice. Fuzz tests of the
// parsers use it.
func (r Result) Check() error {
	if len(r.Candidates) == 0 {
		return errors.New("no candidates without an error")
	}
	seen := make(map[string]bool, len(r.Candidates))
	for _, c := range r.Candidates {
		u, err := pool.ParseMirrorURL(c.URL)
		if err != nil {
			return err
		}
		if u.String() != c.URL {
			return fmt.Errorf("candidate %q is not normalised (%q)", c.URL, u)
		}
		if seen[c.URL] {
			return fmt.Errorf("candidate %q twice", c.URL)
		}
		seen[c.URL] = true
	}
	return nil
}
