// Package testmirror runs package mirrors on 127.0.0.1 for tests: real HTTP
// servers serving a tree of deterministic files with Range, HEAD and
// conditional requests, a bandwidth cap shared by all connections, and
// injectable faults. The mirrors are internal/mirrorsim's, served by
// httptest servers that stop with the test.
package testmirror

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/caddy-refractor/refractor/internal/mirrorsim"
)

// ModTime is the modification time of every file a mirror serves.
var ModTime = mirrorsim.ModTime

// Content returns n deterministic bytes for the file name, so every mirror
// serves the same bytes and clients can check each of them.
func Content(name string, n int) []byte {
	b := make([]byte, n)
	var x uint64 = 14695981039346656037
	for _, c := range []byte(name) {
		x = (x ^ uint64(c)) * 1099511628211
	}
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// Fault makes a mirror misbehave.
type Fault = mirrorsim.Fault

// The faults a mirror can inject.
const (
	NoFault      = mirrorsim.NoFault
	Status500    = mirrorsim.Status500    // answer 500
	Status404    = mirrorsim.Status404    // answer 404, as a mirror that has not synced the file
	ResetMidBody = mirrorsim.ResetMidBody // send headers and part of the body, then reset the connection
	HangHeaders  = mirrorsim.HangHeaders  // accept the request and never answer
	HangMidBody  = mirrorsim.HangMidBody  // send part of the body, then stop sending
	ShortBody    = mirrorsim.ShortBody    // declare the full length, send less, close cleanly
	ResetAtOnce  = mirrorsim.ResetAtOnce  // reset the connection before any response
	RedirectLoop = mirrorsim.RedirectLoop // redirect to the same URL, forever
	RedirectFTP  = mirrorsim.RedirectFTP  // redirect to an ftp:// URL
	HugeHeader   = mirrorsim.HugeHeader   // answer with 128 KiB of response headers
)

// Mirror is a test mirror. Its settings may be changed while it runs.
type Mirror struct {
	*httptest.Server
	sim    *mirrorsim.Mirror
	prefix string
}

// mirrors numbers the mirrors of a test process, so that each has a base
// URL of its own: a mirror on a port an earlier test's mirror had must not
// meet what the process learned of that one (it is kept per base URL).
var mirrors atomic.Int64

// New starts a mirror serving files (path relative to the base, no leading
// slash). Its base URL is m.URL + "/repoN/", N unique in the process. It
// stops when the test ends.
func New(t testing.TB, files map[string][]byte) *Mirror {
	t.Helper()
	prefix := fmt.Sprintf("/repo%d/", mirrors.Add(1))
	sim := mirrorsim.New(mirrorsim.Config{Tree: mirrorsim.Files(files), Prefix: prefix})
	m := &Mirror{Server: httptest.NewServer(sim), sim: sim, prefix: prefix}
	t.Cleanup(m.Close)
	return m
}

// Base is the mirror's base URL.
func (m *Mirror) Base() string { return m.URL + m.prefix }

// Close stops the mirror, releasing any hung request.
func (m *Mirror) Close() {
	m.sim.Release()
	m.Server.CloseClientConnections()
	m.Server.Close()
}

// SetRate caps the mirror's total bandwidth, shared by all connections, in
// bytes per second; 0 removes the cap.
func (m *Mirror) SetRate(bytesPerSecond int) { m.sim.SetRate(int64(bytesPerSecond)) }

// SetFault makes requests for paths containing pathPart fail with f; a
// mid-body fault happens after atByte bytes of the body.
func (m *Mirror) SetFault(f Fault, pathPart string, atByte int) {
	m.sim.SetFault(f, pathPart, int64(atByte))
}

// SetFlaky makes each request meet a random fault, at a random offset,
// with probability p.
func (m *Mirror) SetFlaky(p float64) { m.sim.SetFlaky(p) }

// Requests is how many requests the mirror has received.
func (m *Mirror) Requests() int64 { return m.sim.Requests() }

// BytesSent is how many body bytes the mirror has written.
func (m *Mirror) BytesSent() int64 { return m.sim.BytesSent() }

// Active is how many requests the mirror is serving now.
func (m *Mirror) Active() int64 { return m.sim.Active() }

// LastHeaders returns the headers of the last request the mirror received.
func (m *Mirror) LastHeaders() http.Header { return m.sim.LastHeaders() }

// Dead returns the URL of a port on 127.0.0.1 where nothing listens.
func Dead(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return "http://" + addr + "/repo/"
}
