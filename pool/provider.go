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
