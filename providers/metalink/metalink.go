// Package metalink provides a refractor mirror provider that reads a
// metalink: RFC 5854 (.meta4, as openSUSE's MirrorCache and MirrorBrain
// answer) or metalink 3.0 with MirrorManager's extensions (as Fedora's
// mirrors.fedoraproject.org/metalink answers).
package metalink

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-refractor/refractor/pool"
	"github.com/caddy-refractor/refractor/providers/internal/source"
)

func init() {
	caddy.RegisterModule(Metalink{})
}

// DefaultStrip is the path, within a mirror's tree, of the file an RPM
// repository's metalink describes.
const DefaultStrip = "repodata/repomd.xml"

// Metalink provides the mirrors a metalink lists for one file, best first
// (highest `preference` in metalink 3.0, lowest `priority` in RFC 5854;
// ties in document order), and tells the pool how to judge their
// freshness by that file.
//
// A metalink names the URL of one file on each mirror, such as
// https://mirror.example/fedora/linux/updates/41/Everything/x86_64/repodata/repomd.xml.
// The mirror's base is that URL without `strip`, the path of the file
// within the tree the refractor block serves: every URL must end with a
// slash and strip, and what precedes strip is the base (URLs that do not
// end so are skipped with a warning). With strip set to
// updates/41/Everything/x86_64/repodata/repomd.xml the base above is
// https://mirror.example/fedora/linux/, and one refractor block serves
// the whole Fedora tree (every release, architecture and repository) from
// the mirrors that carry that one repository. With the default,
// repodata/repomd.xml, the base is the repository's own directory.
// Only the first file of a metalink is read; only http and https URLs
// are used (rsync, ftp and torrents are skipped).
//
// Freshness: RPM mirrors have no sync file, but the metalink gives the
// SHA-256 of the file's current version and, from MirrorManager
// (mm0:alternates), of older ones, each with its time (mm0:timestamp; a
// .meta4 has only its `published` time, taken for the current version).
// Each candidate carries them as a pool.SyncProbe for the file at strip:
// the pool fetches that file from each mirror, and a mirror with the
// current version ranks fresh, one with an older version stale, one with
// a version the metalink does not name unknown (never evicted); files
// that change in place go to the fresh ones. The provider remembers the
// versions it has seen, each with the earliest time it was given for it,
// so that a version keeps its time from one fetch to the next (a .meta4
// is published anew at each request) and a .meta4's earlier versions
// count as older ones. Only this file is probed: it stands for the
// freshness of the whole tree.
//
// The metalink is fetched like the archlinux provider's status: when the
// pool first needs mirrors, again when older than `refresh`, a failed
// fetch keeping the last good list with a bounded backoff, and the last
// good document kept in Caddy's storage. A document larger than 16 MiB,
// one that is not a metalink, or one that leaves no mirror counts as a
// failed fetch; the error names the filter or the strip that emptied the
// list. dnf variables ($releasever, $basearch) are not expanded: write the
// release and architecture out.
type Metalink struct {
	// Where the metalink is read: a `url` or a local `path` (one is
	// required), `refresh` and `timeout`.
	source.Location

	// The path of the metalink's file within the mirrors' tree, which is
	// cut off each URL to leave the mirror's base, and which the pool
	// fetches to judge each mirror's freshness. A relative path without
	// `.` or `..` segments, such as
	// updates/41/Everything/x86_64/repodata/repomd.xml. Default:
	// repodata/repomd.xml.
	Strip string `json:"strip,omitempty"`

	// ISO 3166 country codes (such as DE) of the mirrors to use, matched
	// case-insensitively against each URL's `location`. Default: every
	// mirror, those without a location included.
	Countries []string `json:"countries,omitempty"`

	// Protocols to use: http, https or both. Default: https and http.
	Protocols []string `json:"protocols,omitempty"`

	src source.Source
}

// CaddyModule returns the Caddy module information.
func (Metalink) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.refractor.providers.metalink",
		New: func() caddy.Module { return new(Metalink) },
	}
}

// Provision checks the settings and sets up the source of the metalink. A
// local file is read at once; a URL is not fetched yet.
func (m *Metalink) Provision(ctx caddy.Context) error {
	p, err := m.parser()
	if err != nil {
		return err
	}
	m.src, err = m.Open(ctx, "metalink", "xml", p.parse)
	return err
}

// parser checks the settings and returns the parser they make, with
// defaults filled in. Its errors name the setting.
func (m *Metalink) parser() (*parser, error) {
	p := &parser{
		strip:     DefaultStrip,
		countries: m.Countries,
		protocols: []string{"https", "http"},
		seen:      new(history),
	}
	if m.Strip != "" {
		p.strip = m.Strip
	}
	if err := checkStrip(p.strip); err != nil {
		return nil, fmt.Errorf("metalink provider: strip: %w", err)
	}
	if len(m.Protocols) > 0 {
		p.protocols = nil
		for _, proto := range m.Protocols {
			proto = strings.ToLower(proto)
			if proto != "http" && proto != "https" {
				return nil, fmt.Errorf("metalink provider: protocols: %q is not http or https", proto)
			}
			if !slices.Contains(p.protocols, proto) {
				p.protocols = append(p.protocols, proto)
			}
		}
	}
	for _, c := range m.Countries {
		if len(c) != 2 || !isLetter(c[0]) || !isLetter(c[1]) {
			return nil, fmt.Errorf("metalink provider: countries: %q is not a two-letter country code", c)
		}
	}
	if strings.Contains(m.URL, "$") {
		return nil, fmt.Errorf("metalink provider: url: %q holds a variable: write the release and architecture out ($releasever, $basearch are not expanded)", m.URL)
	}
	return p, nil
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// checkStrip accepts a clean relative path that names a file.
func checkStrip(s string) error {
	switch {
	case strings.HasPrefix(s, "/"):
		return fmt.Errorf("%q must be relative (no leading slash)", s)
	case strings.HasSuffix(s, "/"):
		return fmt.Errorf("%q must name a file (no trailing slash)", s)
	case path.Clean(s) != s || s == "." || s == ".." || strings.HasPrefix(s, "../"):
		return fmt.Errorf("%q is not a clean path (no ., .. or empty segments)", s)
	case strings.ContainsAny(s, "?#\\"):
		return fmt.Errorf("%q holds a query, a fragment or a backslash", s)
	}
	return nil
}

// Candidates returns the mirrors of the metalink, fetching or reading it
// again first when it is stale or changed. It fails only when no good
// metalink has been had yet, neither fetched nor saved.
func (m *Metalink) Candidates(ctx context.Context) ([]pool.Candidate, error) {
	if m.src == nil {
		return nil, errors.New("metalink provider: not provisioned")
	}
	return m.src.Candidates(ctx)
}

// Cleanup stops a fetch under way.
func (m *Metalink) Cleanup() error {
	if m.src != nil {
		m.src.Close()
	}
	return nil
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	metalink [<url>|<path>] {
//	    url       <url>
//	    path      <path>
//	    strip     <path-suffix>
//	    countries <code>...
//	    protocols http|https...
//	    refresh   <duration>
//	    timeout   <duration>
//	}
//
// An inline argument with a scheme is the url, otherwise a path. A url or
// a path is required. For example, the whole Fedora tree from the mirrors
// of one repository:
//
//	metalink https://mirrors.fedoraproject.org/metalink?repo=updates-released-f41&arch=x86_64 {
//	    strip     updates/41/Everything/x86_64/repodata/repomd.xml
//	    countries DE FR NL
//	}
func (m *Metalink) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume provider name

	switch args := d.RemainingArgs(); len(args) {
	case 0:
	case 1:
		m.SetInline(args[0])
	default:
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		if ok, err := m.UnmarshalOption(d, "metalink"); ok {
			if err != nil {
				return err
			}
			continue
		}
		switch d.Val() {
		case "strip":
			if !d.NextArg() {
				return d.ArgErr()
			}
			m.Strip = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "countries", "protocols":
			opt := d.Val()
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			if opt == "countries" {
				m.Countries = args
			} else {
				m.Protocols = args
			}
		default:
			return d.Errf("unrecognized subdirective %s", d.Val())
		}
	}
	if err := m.Check("metalink"); err != nil {
		return d.WrapErr(err)
	}
	if _, err := m.parser(); err != nil {
		return d.WrapErr(err)
	}
	return nil
}

// Interface guards
var (
	_ pool.Provider         = (*Metalink)(nil)
	_ caddy.Provisioner     = (*Metalink)(nil)
	_ caddy.CleanerUpper    = (*Metalink)(nil)
	_ caddyfile.Unmarshaler = (*Metalink)(nil)
)
