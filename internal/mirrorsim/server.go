package mirrorsim

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Server is a Mirror listening on a loopback port.
type Server struct {
	*Mirror
	// URL is the server's root, such as http://127.0.0.1:41234.
	URL string

	srv *http.Server
	ln  net.Listener
}

// Listen serves m on addr, which must be a loopback address such as
// "127.0.0.1:0" (port 0 picks a free port).
func Listen(addr string, m *Mirror) (*Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("mirrorsim: %s is not a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		Mirror: m,
		URL:    "http://" + ln.Addr().String(),
		srv:    &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second},
		ln:     ln,
	}
	go func() { _ = s.srv.Serve(ln) }() // returns when closed
	return s, nil
}

// Base is the mirror's base URL: its root and prefix.
func (s *Server) Base() string { return s.URL + s.prefix }

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server at once, releasing hung requests.
func (s *Server) Close() error {
	s.Release()
	return s.srv.Close()
}

// Shutdown stops the server, waiting for requests in progress until ctx is
// done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Release()
	return s.srv.Shutdown(ctx)
}
