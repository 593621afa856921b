package pool

import (
	"net"
	"net/http"
	"time"
)

// TransportConfig holds the timeouts and limits of upstream connections.
type TransportConfig struct {
	// DialTimeout bounds connecting to a mirror, TLS handshake included.
	// Default 3s.
	DialTimeout time.Duration
	// HeaderTimeout bounds the wait for a mirror's response headers once
	// the request is sent. Default 10s.
	HeaderTimeout time.Duration
	// MaxHeaderBytes bounds the size of a mirror's response headers.
	// Default 64 KiB.
	MaxHeaderBytes int64
}

// newTransport returns the transport a pool uses to reach mirrors. It asks
// for identity encoding (so lengths and ranges are the file's own), keeps
// connections alive per mirror, honours the proxy environment variables,
// and dials only what g allows (outbound.go).
func newTransport(c TransportConfig, g *dialGuard) *http.Transport {
	setDefault(&c.DialTimeout, 3*time.Second)
	setDefault(&c.HeaderTimeout, 10*time.Second)
	setDefault(&c.MaxHeaderBytes, 64<<10)
	dialer := &net.Dialer{Timeout: c.DialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  g.proxy,
		DialContext:            g.dialContext(dialer),
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    c.DialTimeout,
		ResponseHeaderTimeout:  c.HeaderTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true,
		MaxResponseHeaderBytes: c.MaxHeaderBytes,
	}
}
