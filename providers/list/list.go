// Package list provides a refractor mirror provider that reads a plain
// list of mirror URLs, one a line, from a URL or a file.
package list

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-refractor/refractor/pool"
	"github.com/caddy-refractor/refractor/providers/internal/source"
)

func init() {
	caddy.RegisterModule(List{})
}

// List provides the mirrors of a plain list, in the order they are
// listed: one base URL a line, as Ubuntu's mirrors.txt
// (http://mirrors.ubuntu.com/mirrors.txt), Debian's mirror lists, and the
// files of apt's mirror method (`mirror+file:`), whose lines may carry
// tab-separated metadata after the URL (ignored). Blank lines and lines
// starting with `#` are ignored; invalid URLs and repeats are skipped
// with a warning.
//
// A URL is fetched when the pool first needs mirrors, then again when
// older than `refresh`; a failed fetch keeps the last good list, is
// retried with a bounded backoff, and after a restart without network the
// copy kept in Caddy's storage is used. A file is read while the
// configuration loads and again whenever it changes. The archlinux
// provider's documentation explains why fetching is lazy.
type List struct {
	// Where the list is read: a `url` or a local `path` (one is
	// required), `refresh` and `timeout`.
	source.Location

	src source.Source
}

// CaddyModule returns the Caddy module information.
func (List) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.refractor.providers.list",
		New: func() caddy.Module { return new(List) },
	}
}

// Provision sets up the source of the list. A local file is read at once;
// a URL is not fetched yet.
func (l *List) Provision(ctx caddy.Context) error {
	var err error
	l.src, err = l.Open(ctx, "list", "txt", parseList)
	return err
}

// Candidates returns the mirrors of the list, fetching or reading it again
// first when it is stale or changed.
func (l *List) Candidates(ctx context.Context) ([]pool.Candidate, error) {
	if l.src == nil {
		return nil, errors.New("list provider: not provisioned")
	}
	return l.src.Candidates(ctx)
}

// Cleanup stops a fetch under way.
func (l *List) Cleanup() error {
	if l.src != nil {
		l.src.Close()
	}
	return nil
}

// parseList reads a list of mirror URLs: the first field of each line that
// is neither blank nor a comment.
func parseList(data []byte) (source.Result, error) {
	var b source.Builder
	entries, n := 0, 0
	for line := range strings.Lines(string(data)) {
		n++
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		entries++
		b.Add(fmt.Sprintf("line %d", n), fields[0], time.Time{})
	}
	res := b.Result(entries)
	if len(res.Candidates) == 0 {
		if entries == 0 {
			return res, errors.New("the list has no mirror")
		}
		return res, fmt.Errorf("none of the %d lines has a valid http(s) mirror URL", entries)
	}
	return res, nil
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	list [<url>|<path>] {
//	    url     <url>
//	    path    <path>
//	    refresh <duration>
//	    timeout <duration>
//	}
//
// An inline argument with a scheme is the url, otherwise a path. A url or
// a path is required.
func (l *List) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume provider name

	switch args := d.RemainingArgs(); len(args) {
	case 0:
	case 1:
		l.SetInline(args[0])
	default:
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		ok, err := l.UnmarshalOption(d, "list")
		if err != nil {
			return err
		}
		if !ok {
			return d.Errf("unrecognized subdirective %s", d.Val())
		}
	}
	if err := l.Check("list"); err != nil {
		return d.WrapErr(err)
	}
	return nil
}

// Interface guards
var (
	_ pool.Provider         = (*List)(nil)
	_ caddy.Provisioner     = (*List)(nil)
	_ caddy.CleanerUpper    = (*List)(nil)
	_ caddyfile.Unmarshaler = (*List)(nil)
)
