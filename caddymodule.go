// Package refractor is a Caddy HTTP handler that serves Linux package
// downloads from a self-optimising, ever-rotating pool of public mirrors.
package refractor

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/caddy-refractor/refractor/pool"
	"github.com/caddy-refractor/refractor/providers/static"

	// The providers that ship with refractor, so one xcaddy --with brings
	// them all.
	_ "github.com/caddy-refractor/refractor/providers/archlinux"
	_ "github.com/caddy-refractor/refractor/providers/command"
	_ "github.com/caddy-refractor/refractor/providers/list"
	_ "github.com/caddy-refractor/refractor/providers/metalink"
	_ "github.com/caddy-refractor/refractor/providers/mirrorlist"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("refractor", parseCaddyfile)
	// Sit with the other terminal handlers, so users need no `order` line.
	httpcaddyfile.RegisterDirectiveOrder("refractor", httpcaddyfile.Before, "reverse_proxy")
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.refractor",
		New: func() caddy.Module { return new(Handler) },
	}
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	r := new(Handler)
	if err := r.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return r, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	refractor [<mirrors...>] {
//	    name            <name>
//	    workers         <n>
//	    good_throughput <size>      # per second, e.g. 10MiB
//	    window          <n>
//	    resign          <n>
//	    trial           <n>
//	    min_sample      <size>
//	    peek_size       <size>
//	    peek_timeout    <duration>
//	    retries         <n>
//	    max_queue       <n>
//	    queue_timeout   <duration>
//	    dial_timeout    <duration>
//	    header_timeout  <duration>
//	    stall_timeout   <duration>
//	    cooldown        <duration>
//	    evict_after     <n>
//	    split           <n>
//	    changing_paths  <patterns...>
//	    sync_file       <path>|off
//	    sync_interval   <duration>
//	    verify          on|off
//	    storage         <module> [<args...>] [{ ... }]
//	    share           <name>
//	    save_interval   <duration>
//	    cache           <dir> {
//	        max_size <size>
//	        min_free <size>
//	    }
//	    peers           <urls...>
//	    peer_url        <url>
//	    serve_peers     on|off
//	    peer_load       <n>
//	    provider        <name> [<args...>] [{ ... }]
//	}
//
// Mirrors given inline are shorthand for `provider static <mirrors...>`.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if mirrors := d.RemainingArgs(); len(mirrors) > 0 {
		h.ProviderRaw = caddyconfig.JSONModuleObject(static.Static{Mirrors: mirrors}, "source", "static", nil)
	}
	for d.NextBlock(0) {
		name := d.Val()
		var err error
		switch name {
		case "name":
			h.Name, err = oneArg(d)
		case "workers":
			h.Workers, err = positiveInt(d)
		case "window":
			h.Window, err = positiveInt(d)
		case "resign":
			h.Resign, err = nonNegativeIntPtr(d)
		case "trial":
			h.TrialSamples, err = positiveInt(d)
		case "retries":
			h.Retries, err = nonNegativeIntPtr(d)
		case "max_queue":
			h.MaxQueue, err = positiveInt(d)
		case "evict_after":
			h.EvictAfter, err = positiveInt(d)
		case "split":
			h.Split, err = positiveInt(d)
		case "good_throughput":
			h.GoodThroughput, err = size(d)
		case "min_sample":
			h.MinSampleBytes, err = size(d)
		case "peek_size":
			h.PeekSize, err = size(d)
		case "peek_timeout":
			h.PeekTimeout, err = duration(d)
		case "queue_timeout":
			h.QueueTimeout, err = duration(d)
		case "dial_timeout":
			h.DialTimeout, err = duration(d)
		case "header_timeout":
			h.HeaderTimeout, err = duration(d)
		case "stall_timeout":
			h.StallTimeout, err = duration(d)
		case "cooldown":
			h.Cooldown, err = duration(d)
		case "sync_file":
			h.SyncFile, err = oneArg(d)
		case "sync_interval":
			h.SyncInterval, err = duration(d)
		case "verify":
			var v string
			if v, err = oneArg(d); err == nil {
				switch v {
				case "on":
					h.SkipVerify = false
				case "off":
					h.SkipVerify = true
				default:
					return d.Errf("verify: want on or off, got %q", v)
				}
			}
		case "changing_paths":
			h.ChangingPaths = d.RemainingArgs()
			if len(h.ChangingPaths) == 0 {
				return d.ArgErr()
			}
		case "share":
			h.Share, err = oneArg(d)
		case "save_interval":
			h.SaveInterval, err = duration(d)
		case "cache":
			err = h.unmarshalCache(d)
		case "peers":
			h.Peers = append(h.Peers, d.RemainingArgs()...)
			if len(h.Peers) == 0 {
				return d.ArgErr()
			}
		case "peer_url":
			h.PeerURL, err = oneArg(d)
		case "serve_peers":
			var v string
			if v, err = oneArg(d); err == nil {
				if v != "on" && v != "off" {
					return d.Errf("serve_peers: want on or off, got %q", v)
				}
				on := v == "on"
				h.ServePeers = &on
			}
		case "peer_load":
			h.PeerLoad, err = positiveInt(d)
		case "storage":
			err = h.unmarshalStorage(d)
		case "provider":
			err = h.unmarshalProvider(d)
		default:
			return d.Errf("unrecognized subdirective %s", name)
		}
		if err != nil {
			return d.Errf("%s: %v", name, err)
		}
	}
	return nil
}

// unmarshalCache reads `cache <dir> [{ max_size <size>; min_free <size> }]`.
func (h *Handler) unmarshalCache(d *caddyfile.Dispenser) error {
	if h.Cache != nil {
		return errors.New("a cache is already specified")
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	h.Cache = &Cache{Dir: d.Val()}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		var err error
		switch sub {
		case "max_size":
			h.Cache.MaxSize, err = size(d)
		case "min_free":
			h.Cache.MinFree, err = size(d)
		default:
			return d.Errf("unrecognized subdirective %s", sub)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", sub, err)
		}
	}
	return nil
}

func (h *Handler) unmarshalProvider(d *caddyfile.Dispenser) error {
	return unmarshalGuest(d, "http.handlers.refractor.providers.", "source", &h.ProviderRaw, "provider", "refractor provider",
		func(m any) bool { _, ok := m.(pool.Provider); return ok })
}

// unmarshalStorage reads `storage <module> ...` as Caddy's global storage
// option does.
func (h *Handler) unmarshalStorage(d *caddyfile.Dispenser) error {
	return unmarshalGuest(d, "caddy.storage.", "module", &h.StorageRaw, "storage", "storage module",
		func(m any) bool { _, ok := m.(caddy.StorageConverter); return ok })
}

// unmarshalGuest reads `<name> [<args...>] [{ ... }]` as the module
// namespace+name into raw, with its name under inlineKey, for the option
// that takes one kind of module; is checks that the module is one (what).
func unmarshalGuest(d *caddyfile.Dispenser, namespace, inlineKey string, raw *json.RawMessage, kind, what string, is func(any) bool) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	if *raw != nil {
		return fmt.Errorf("a %s is already specified", kind)
	}
	name := d.Val()
	unm, err := caddyfile.UnmarshalModule(d, namespace+name)
	if err != nil {
		return err
	}
	if !is(unm) {
		return fmt.Errorf("module %s%s (%T) is not a %s", namespace, name, unm, what)
	}
	*raw = caddyconfig.JSONModuleObject(unm, inlineKey, name, nil)
	return nil
}

// oneArg returns the directive's single argument.
func oneArg(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

func positiveInt(d *caddyfile.Dispenser) (int, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("want a whole number of at least 1, got %q", v)
	}
	return n, nil
}

func nonNegativeIntPtr(d *caddyfile.Dispenser) (*int, error) {
	v, err := oneArg(d)
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("want a whole number of at least 0, got %q", v)
	}
	return &n, nil
}

func size(d *caddyfile.Dispenser) (int64, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := humanize.ParseBytes(strings.TrimSuffix(v, "/s"))
	if err != nil || n < 1 || n > 1<<50 {
		return 0, fmt.Errorf("want a size such as 512KiB or 10MiB, got %q", v)
	}
	return int64(n), nil
}

func duration(d *caddyfile.Dispenser) (caddy.Duration, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur <= 0 {
		return 0, fmt.Errorf("want a positive duration such as 1s or 500ms, got %q", v)
	}
	return caddy.Duration(dur), nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Handler)(nil)
