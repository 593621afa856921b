// Package archlinux provides a refractor mirror provider that reads the
// Arch Linux mirror status, filtered by country, protocol, completion,
// score and delay.
package archlinux

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-refractor/refractor/pool"
	"github.com/caddy-refractor/refractor/providers/internal/source"
)

func init() {
	caddy.RegisterModule(Archlinux{})
}

// DefaultURL is the Arch Linux mirror status, in JSON.
const DefaultURL = "https://archlinux.org/mirrors/status/json/"

// Archlinux provides the mirrors of the Arch Linux mirror status that pass
// its filters, best Arch score (lower) first, each with the time of its
// last sync so that the pool knows which mirrors are fresh.
//
// The status is fetched when the pool first needs mirrors, not while the
// configuration loads (an offline start loads, and the pool retries), and
// again when it is older than `refresh`. Fetching happens lazily in the
// pool's call for candidates rather than in a background goroutine: the
// pool only asks when it needs mirrors, nothing runs when it does not, and
// nothing can outlive the configuration. One fetch runs at a time; a
// failed one keeps the last good list and is retried with a bounded
// exponential backoff. The last good status is kept in Caddy's storage
// and used when a fetch fails after a restart. A status that fails to
// parse, lists no mirrors, or leaves none after filtering counts as a
// failed fetch; the error names the filter that emptied the list.
//
// Mirrors the status never checked have no score, completion or delay:
// they fail min_completion, max_score and max_delay, and sort last.
type Archlinux struct {
	// Where the status is read: `url` (default: the Arch Linux mirror
	// status) or a local `path`, `refresh` and `timeout`.
	source.Location

	// Country codes (such as DE) or names (Germany) of the mirrors to
	// use, case-insensitive. Default: every country.
	Countries []string `json:"countries,omitempty"`

	// Protocols to use: http, https or both. Default: https and http.
	Protocols []string `json:"protocols,omitempty"`

	// Least fraction, from 0 to 1, of the status checks in which a mirror
	// was found synced. Default: 1 (fully synced).
	MinCompletion *float64 `json:"min_completion,omitempty"`

	// Highest Arch mirror score accepted (lower is better; about the hours
	// a mirror lags, with its speed and reliability). Default: no limit.
	MaxScore float64 `json:"max_score,omitempty"`

	// Longest delay accepted between an update on the master mirror and
	// the mirror having it. Default: no limit.
	MaxDelay caddy.Duration `json:"max_delay,omitempty"`

	// Only mirrors that support IPv4. Default: false.
	IPv4 bool `json:"ipv4,omitempty"`

	// Only mirrors that support IPv6. Default: false.
	IPv6 bool `json:"ipv6,omitempty"`

	// Only mirrors that carry installation ISOs. Default: false.
	ISOs bool `json:"isos,omitempty"`

	// Only mirrors the status marks active; false also takes inactive
	// ones. Default: true.
	Active *bool `json:"active,omitempty"`

	src source.Source
}

// CaddyModule returns the Caddy module information.
func (Archlinux) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.refractor.providers.archlinux",
		New: func() caddy.Module { return new(Archlinux) },
	}
}

// Provision checks the filters and sets up the source of the status. A
// local file is read at once; a URL is not fetched yet.
func (a *Archlinux) Provision(ctx caddy.Context) error {
	if a.URL == "" && a.Path == "" {
		a.URL = DefaultURL
	}
	f, err := a.filters()
	if err != nil {
		return fmt.Errorf("archlinux provider: %w", err)
	}
	a.src, err = a.Open(ctx, "archlinux", "json", f.parse)
	return err
}

// filters checks the filter settings and returns them with defaults.
func (a *Archlinux) filters() (*filters, error) {
	f := &filters{
		protocols:     []string{"https", "http"},
		countries:     a.Countries,
		activeOnly:    a.Active == nil || *a.Active,
		minCompletion: 1,
		maxScore:      a.MaxScore,
		maxDelay:      time.Duration(a.MaxDelay),
		ipv4:          a.IPv4,
		ipv6:          a.IPv6,
		isos:          a.ISOs,
	}
	if len(a.Protocols) > 0 {
		f.protocols = nil
		for _, p := range a.Protocols {
			p = strings.ToLower(p)
			if p != "http" && p != "https" {
				return nil, fmt.Errorf("protocols: %q is not http or https", p)
			}
			if !slices.Contains(f.protocols, p) {
				f.protocols = append(f.protocols, p)
			}
		}
	}
	for _, c := range a.Countries {
		if strings.TrimSpace(c) == "" {
			return nil, errors.New("countries: empty country")
		}
	}
	if a.MinCompletion != nil {
		if c := *a.MinCompletion; math.IsNaN(c) || c < 0 || c > 1 {
			return nil, fmt.Errorf("min_completion: must be between 0 and 1, got %g", c)
		}
		f.minCompletion = *a.MinCompletion
	}
	if math.IsNaN(a.MaxScore) || a.MaxScore < 0 {
		return nil, fmt.Errorf("max_score: must not be negative, got %g", a.MaxScore)
	}
	if a.MaxDelay < 0 {
		return nil, fmt.Errorf("max_delay: must not be negative, got %s", time.Duration(a.MaxDelay))
	}
	return f, nil
}

// Candidates returns the mirrors that pass the filters, best first,
// fetching the status first when it is stale. It fails only when no good
// status has been had yet, neither fetched nor saved.
func (a *Archlinux) Candidates(ctx context.Context) ([]pool.Candidate, error) {
	if a.src == nil {
		return nil, errors.New("archlinux provider: not provisioned")
	}
	return a.src.Candidates(ctx)
}

// Cleanup stops a fetch under way.
func (a *Archlinux) Cleanup() error {
	if a.src != nil {
		a.src.Close()
	}
	return nil
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	archlinux [<url>|<path>] {
//	    url            <url>
//	    path           <path>
//	    countries      <code|name>...
//	    protocols      http|https...
//	    min_completion <fraction>
//	    max_score      <score>
//	    max_delay      <duration>
//	    ipv4           [true|false]
//	    ipv6           [true|false]
//	    isos           [true|false]
//	    active         [true|false]
//	    refresh        <duration>
//	    timeout        <duration>
//	}
//
// An inline argument with a scheme is the url, otherwise a path; without
// either, the Arch Linux mirror status is fetched. For example:
//
//	archlinux {
//	    countries DE FR NL
//	    protocols https
//	    max_score 5
//	}
func (a *Archlinux) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume provider name

	switch args := d.RemainingArgs(); len(args) {
	case 0:
	case 1:
		a.SetInline(args[0])
	default:
		return d.ArgErr()
	}

	for d.NextBlock(0) {
		if ok, err := a.UnmarshalOption(d, "archlinux"); ok {
			if err != nil {
				return err
			}
			continue
		}
		opt := d.Val()
		var err error
		switch opt {
		case "countries":
			a.Countries, err = list(d)
		case "protocols":
			a.Protocols, err = list(d)
		case "min_completion":
			var c float64
			c, err = number(d)
			if err == nil && (c < 0 || c > 1) {
				err = fmt.Errorf("must be between 0 and 1, got %g", c)
			}
			a.MinCompletion = &c
		case "max_score":
			a.MaxScore, err = number(d)
		case "max_delay":
			var v string
			if v, err = arg(d); err != nil {
				return err
			}
			var dur time.Duration
			dur, err = caddy.ParseDuration(v)
			if err == nil && dur <= 0 {
				err = fmt.Errorf("must be positive, got %s", dur)
			}
			a.MaxDelay = caddy.Duration(dur)
		case "ipv4":
			a.IPv4, err = flag(d)
		case "ipv6":
			a.IPv6, err = flag(d)
		case "isos":
			a.ISOs, err = flag(d)
		case "active":
			var on bool
			on, err = flag(d)
			a.Active = &on
		default:
			return d.Errf("unrecognized subdirective %s", opt)
		}
		if err != nil {
			return d.Errf("archlinux provider: %s: %v", opt, err)
		}
	}
	if a.URL == "" && a.Path == "" {
		return nil // the default URL, filled in by Provision
	}
	if err := a.Check("archlinux"); err != nil {
		return d.WrapErr(err)
	}
	return nil
}

// list returns the remaining arguments, at least one.
func list(d *caddyfile.Dispenser) ([]string, error) {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return nil, d.ArgErr()
	}
	return args, nil
}

// arg returns the subdirective's single argument.
func arg(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

// number returns the single argument as a non-negative number.
func number(d *caddyfile.Dispenser) (float64, error) {
	v, err := arg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) || n < 0 {
		return 0, fmt.Errorf("want a number of at least 0, got '%s'", v)
	}
	return n, nil
}

// flag returns true for a subdirective without argument, or its single
// boolean argument.
func flag(d *caddyfile.Dispenser) (bool, error) {
	if !d.NextArg() {
		return true, nil
	}
	v := d.Val()
	if d.NextArg() {
		return false, d.ArgErr()
	}
	on, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("want true or false, got '%s'", v)
	}
	return on, nil
}

// Interface guards
var (
	_ pool.Provider         = (*Archlinux)(nil)
	_ caddy.Provisioner     = (*Archlinux)(nil)
	_ caddy.CleanerUpper    = (*Archlinux)(nil)
	_ caddyfile.Unmarshaler = (*Archlinux)(nil)
)
