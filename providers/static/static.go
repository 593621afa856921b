// Package static provides a refractor mirror provider with a fixed list of
// mirrors taken from the configuration.
package static

import (
	"context"
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-refractor/refractor/pool"
)

func init() {
	caddy.RegisterModule(Static{})
}

// Static provides a fixed list of mirrors written in the configuration.
// Every mirror is offered to the pool each time it asks for candidates, in
// the order they are configured: earlier mirrors are preferred.
type Static struct {
	// The base URLs of the mirrors, in order of preference. Each must be an
	// absolute http or https URL without user info, query or fragment; a
	// trailing slash is added when missing. At least one is required, and
	// no two may be the same once normalised. There is no default.
	Mirrors []string `json:"mirrors,omitempty"`

	// candidates holds the normalised mirrors, set by Provision.
	candidates []pool.Candidate
}

// CaddyModule returns the Caddy module information.
func (Static) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.refractor.providers.static",
		New: func() caddy.Module { return new(Static) },
	}
}

// Provision checks and normalises the configured mirrors.
func (s *Static) Provision(_ caddy.Context) error {
	if len(s.Mirrors) == 0 {
		return errors.New("static provider: no mirrors configured")
	}
	seen := make(map[string]string, len(s.Mirrors))
	candidates := make([]pool.Candidate, 0, len(s.Mirrors))
	for _, raw := range s.Mirrors {
		u, err := pool.ParseMirrorURL(raw)
		if err != nil {
			return fmt.Errorf("static provider: %w", err)
		}
		norm := u.String()
		if first, dup := seen[norm]; dup {
			return fmt.Errorf("static provider: mirror URL %q duplicates %q (both are %s)", raw, first, norm)
		}
		seen[norm] = raw
		candidates = append(candidates, pool.Candidate{URL: norm})
	}
	s.candidates = candidates
	return nil
}

// Candidates returns every configured mirror in configuration order. It
// returns an error if the provider has not been provisioned.
func (s *Static) Candidates(_ context.Context) ([]pool.Candidate, error) {
	if len(s.candidates) == 0 {
		return nil, errors.New("static provider: not provisioned")
	}
	// Hand out a copy so that callers cannot modify our list.
	out := make([]pool.Candidate, len(s.candidates))
	copy(out, s.candidates)
	return out, nil
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	static [<url>...] {
//	    mirror <url>...
//	}
//
// Mirrors given inline come first, then those of the block in order. At
// least one mirror is required.
func (s *Static) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume provider name

	for _, raw := range d.RemainingArgs() {
		if err := s.addMirror(d, raw); err != nil {
			return err
		}
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "mirror":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, raw := range args {
				if err := s.addMirror(d, raw); err != nil {
					return err
				}
			}
		default:
			return d.Errf("unrecognized subdirective %s", d.Val())
		}
	}
	if len(s.Mirrors) == 0 {
		return d.Err("static provider: at least one mirror URL is required")
	}
	return nil
}

// addMirror checks raw so that mistakes are reported with their position in
// the Caddyfile, and appends it. Duplicates are reported by Provision.
func (s *Static) addMirror(d *caddyfile.Dispenser, raw string) error {
	if _, err := pool.ParseMirrorURL(raw); err != nil {
		return d.WrapErr(fmt.Errorf("static provider: %w", err))
	}
	s.Mirrors = append(s.Mirrors, raw)
	return nil
}

// Interface guards
var (
	_ pool.Provider         = (*Static)(nil)
	_ caddy.Provisioner     = (*Static)(nil)
	_ caddyfile.Unmarshaler = (*Static)(nil)
)
