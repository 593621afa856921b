// Package mirrorlist provides a refractor mirror provider that reads a
// pacman mirrorlist file, such as /etc/pacman.d/mirrorlist.
package mirrorlist

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
	caddy.RegisterModule(Mirrorlist{})
}

// DefaultPath is pacman's mirrorlist.
const DefaultPath = "/etc/pacman.d/mirrorlist"

// Mirrorlist provides the servers of a pacman mirrorlist file, in the
// order they are listed. Only `Server = <url>` lines count; comments
// (from `#` to the end of the line, so commented-out servers too) and blank
// lines are ignored, as pacman does. pacman appends nothing to a server
// URL but substitutes `$repo` and `$arch` in it; refractor is mounted at
// the repository root instead, so each URL is cut before its first path
// segment holding a variable: `https://host/archlinux/$repo/os/$arch`
// becomes `https://host/archlinux/`, and clients keep their usual
// `Server = http://caddy/archlinux/$repo/os/$arch` line.
//
// The file is read while the configuration loads (a missing file or one
// without a usable server fails the load) and read again whenever it
// changes; if it becomes unusable, the last good list is kept. Invalid
// URLs and repeated servers are skipped with a warning.
type Mirrorlist struct {
	// The mirrorlist file. Default: /etc/pacman.d/mirrorlist.
	Path string `json:"path,omitempty"`

	src source.Source
}

// CaddyModule returns the Caddy module information.
func (Mirrorlist) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.refractor.providers.mirrorlist",
		New: func() caddy.Module { return new(Mirrorlist) },
	}
}

// Provision reads the mirrorlist.
func (m *Mirrorlist) Provision(ctx caddy.Context) error {
	if m.Path == "" {
		m.Path = DefaultPath
	}
	f := source.NewFile(source.FileConfig{
		Provider: "mirrorlist",
		Path:     m.Path,
		Parse:    parseMirrorlist,
		Logger:   ctx.Logger(),
	})
	if err := f.Load(); err != nil {
		return err
	}
	m.src = f
	return nil
}

// Candidates returns the servers of the mirrorlist, reading it again first
// if it changed.
func (m *Mirrorlist) Candidates(ctx context.Context) ([]pool.Candidate, error) {
	if m.src == nil {
		return nil, errors.New("mirrorlist provider: not provisioned")
	}
	return m.src.Candidates(ctx)
}

// parseMirrorlist reads the Server lines of a pacman mirrorlist.
func parseMirrorlist(data []byte) (source.Result, error) {
	var b source.Builder
	servers, n := 0, 0
	for line := range strings.Lines(string(data)) {
		n++
		where := fmt.Sprintf("line %d", n)
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(key) != "Server" {
			b.Skip(where, fmt.Sprintf("not a Server line: %q", line))
			continue
		}
		servers++
		root, err := repoRoot(strings.TrimSpace(value))
		if err != nil {
			b.Skip(where, err.Error())
			continue
		}
		b.Add(where, root, time.Time{})
	}
	res := b.Result(servers)
	if len(res.Candidates) == 0 {
		if servers == 0 {
			return res, errors.New("no Server line (commented-out servers do not count)")
		}
		return res, fmt.Errorf("none of the %d servers has a valid http(s) URL", servers)
	}
	return res, nil
}

// repoRoot cuts a server URL before its first path segment that holds a
// pacman variable ($repo, $arch), leaving the repository root with its
// trailing slash. A URL without variables is returned as it is; one with a
// variable before its path cannot be used.
func repoRoot(server string) (string, error) {
	i := strings.IndexByte(server, '$')
	if i < 0 {
		return server, nil
	}
	j := strings.LastIndexByte(server[:i], '/')
	scheme, rest, ok := strings.Cut(server, "://")
	if j < 0 || !ok || j < len(scheme)+3+strings.IndexByte(rest+"/", '/') {
		return "", fmt.Errorf("server %q: a variable before the path", server)
	}
	return server[:j+1], nil
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	mirrorlist [<path>] {
//	    path <path>
//	}
//
// Without a path, /etc/pacman.d/mirrorlist is read.
func (m *Mirrorlist) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume provider name

	switch args := d.RemainingArgs(); len(args) {
	case 0:
	case 1:
		m.Path = args[0]
	default:
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "path":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if m.Path != "" {
				return d.Err("mirrorlist provider: path already specified")
			}
			m.Path = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized subdirective %s", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ pool.Provider         = (*Mirrorlist)(nil)
	_ caddy.Provisioner     = (*Mirrorlist)(nil)
	_ caddyfile.Unmarshaler = (*Mirrorlist)(nil)
)
