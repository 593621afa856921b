package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
)

// Outbound safety: a public mirror must not make the proxy reach into the
// LAN or loopback (its admin endpoint, a router), by a redirect, by a name
// that resolves there, or by being named in a public mirror list. A dial to
// a non-public address is allowed only to the host and port of a mirror
// that came from local configuration (Candidate.Remote unset), or to the
// HTTP proxy the environment names. The check is made on the address
// actually dialled, so a name that resolves to a public address when
// checked and to a private one when dialled is caught too.

// errNonPublic is a refused dial.
var errNonPublic = errors.New("refusing to connect to a non-public address")

// Ranges that are not public besides those netip.Addr knows: carrier-grade
// NAT (RFC 6598), IETF protocol assignments, benchmarking, reserved.
var notPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// IPv6 forms that carry an IPv4 address: NAT64 (RFC 6052), 6to4 (RFC
// 3056) and the deprecated IPv4-compatible form.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
	v4compat  = netip.MustParsePrefix("::/96")
)

// IsPublic reports whether a is a public unicast address. IPv6 forms that
// carry an IPv4 address (mapped, NAT64, 6to4, compatible) are judged as
// the IPv4 address they carry.
func IsPublic(a netip.Addr) bool {
	a = a.Unmap()
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64.Contains(a), v4compat.Contains(a) && !a.IsLoopback() && !a.IsUnspecified():
			return IsPublic(netip.AddrFrom4([4]byte(b[12:16])))
		case sixToFour.Contains(a):
			return IsPublic(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	switch {
	case !a.IsValid(), a.IsLoopback(), a.IsPrivate(), a.IsUnspecified(),
		a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast(),
		a.IsMulticast():
		return false
	}
	for _, p := range notPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// dialGuard holds the host:port pairs that may be dialled whatever their
// address. It only grows: its entries come from the configuration, and a
// mirror that left may come back. Its lock is a leaf.
type dialGuard struct {
	mu      sync.RWMutex
	allowed map[string]bool // hostPort form
}

func newDialGuard() *dialGuard { return &dialGuard{allowed: make(map[string]bool)} }

// allow lets u's host and port be dialled at any address.
func (g *dialGuard) allow(u *url.URL) {
	g.mu.Lock()
	g.allowed[hostPort(u)] = true
	g.mu.Unlock()
}

func (g *dialGuard) allows(addr string) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.allowed[strings.ToLower(addr)]
}

// hostPort is u's host and port as the transport dials it: lower case,
// default port spelled out.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// dialContext wraps dial: an address the guard does not allow is dialled
// only if it turns out to be public.
func (g *dialGuard) dialContext(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	guarded := *d
	guarded.Control = func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: %s", errNonPublic, address)
		}
		if !IsPublic(ap.Addr()) {
			return fmt.Errorf("%w: %s", errNonPublic, address)
		}
		return nil
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if g.allows(addr) {
			return d.DialContext(ctx, network, addr)
		}
		return guarded.DialContext(ctx, network, addr)
	}
}

// proxy is http.ProxyFromEnvironment, whose proxies are local
// configuration and so may be dialled.
func (g *dialGuard) proxy(req *http.Request) (*url.URL, error) {
	u, err := http.ProxyFromEnvironment(req)
	if u != nil && err == nil {
		g.allow(u)
	}
	return u, err
}

// checkRedirect refuses a redirect to a non-public address literal that
// the guard does not allow before anything is dialled (when a proxy
// dials, this is the only check refractor can make).
func (g *dialGuard) checkRedirect(req *http.Request) error {
	if a, err := netip.ParseAddr(req.URL.Hostname()); err == nil && !IsPublic(a) && !g.allows(hostPort(req.URL)) {
		return fmt.Errorf("%w: redirect to %s", errNonPublic, req.URL.Host)
	}
	return nil
}
