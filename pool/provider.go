package pool

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Candidate is a mirror a Provider proposes for the pool.
type Candidate struct {
	// URL is the mirror's base URL: the request path is appended to it.
	URL string
	// LastSync is when the mirror last synchronised with its upstream, when
	// the provider knows it; the zero value means unknown.
	LastSync time.Time
	// Remote is set when the mirror was named by a list fetched from a
	// public address: it may then not be dialled at a non-public one (a
	// public list naming a LAN host is not to be trusted). Mirrors from
	// local configuration (a static list, a file, a command) leave it
	// unset.
	Remote bool
	// Probe, when set, tells the pool how to learn the mirror's freshness
	// from a file whose versions the provider knows, in place of the
	// pool's sync file (which RPM mirrors, for one, do not have). Several
	// candidates may share one probe; it must not be changed once handed
	// to the pool.
	Probe *SyncProbe
}

// SyncProbe is what a provider knows of the versions of one file that
// changes in place on every mirror, such as an RPM repository's
// repodata/repomd.xml as a metalink describes it.
//
// The pool fetches the file from the mirror when the mirror joins, then
// every sync interval (at most 1 MiB, within the sync file's timeout),
// and when its SHA-256 is one of Times, takes that time as the mirror's
// last sync: a mirror with the current version ranks fresh, one with an
// older version stale, and files that change in place go only to fresh
// mirrors. A version not in Times, or a failed fetch, leaves the sync
// time as it was (unknown, for a new mirror): a probe ranks mirrors, it
// never evicts one. A mirror with a probe is not asked for the pool's sync
// file, and probes run even when the pool's sync file is off: they are
// the provider's knowledge, not a guess at the mirrors' layout.
type SyncProbe struct {
	// Path is the file's path relative to the mirror's base URL, without
	// a leading slash, such as "repodata/repomd.xml".
	Path string
	// Times maps the SHA-256 of each known version of the file to the
	// time that version became current.
	Times map[[32]byte]time.Time
}

// A Provider hands out candidate mirrors. It never benchmarks them: the pool
// does that by using them. Candidates may return mirrors that are already in
// the pool or cooling down; the pool skips those and asks again later.
// Implementations must be safe for concurrent use.
type Provider interface {
	Candidates(ctx context.Context) ([]Candidate, error)
}

// ProviderFunc adapts a function to the Provider interface.
type ProviderFunc func(ctx context.Context) ([]Candidate, error)

// Candidates calls f.
func (f ProviderFunc) Candidates(ctx context.Context) ([]Candidate, error) { return f(ctx) }

// ParseMirrorURL checks that raw is an absolute http(s) URL without user
// info, query or fragment, and returns it normalised with a trailing slash so
// that request paths can be appended to it.
func ParseMirrorURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("mirror URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("mirror URL %q: scheme must be http or https", raw)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("mirror URL %q: missing host", raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("mirror URL %q: user info is not allowed", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return nil, fmt.Errorf("mirror URL %q: query and fragment are not allowed", raw)
	}
	// One mirror, one spelling: hosts are case-insensitive and default
	// ports are implied.
	u.Host = strings.ToLower(u.Host)
	if port := u.Port(); (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		u.Host = u.Hostname()
		if strings.Contains(u.Host, ":") {
			u.Host = "[" + u.Host + "]"
		}
	}
	if u.Path == "" || u.Path[len(u.Path)-1] != '/' {
		u.Path += "/"
		if u.RawPath != "" {
			u.RawPath += "/"
		}
	}
	return u, nil
}
