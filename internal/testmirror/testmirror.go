// Package testmirror runs package mirrors on 127.0.0.1 for tests: real HTTP
// servers serving a tree of deterministic files with Range, HEAD and
// conditional requests, a bandwidth cap shared by all connections, and
// injectable faults.
package testmirror

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// ModTime is the modification time of every file a mirror serves.
var ModTime = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

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
type Fault int

// The faults a mirror can inject.
const (
	NoFault      Fault = iota
	Status500          // answer 500
	Status404          // answer 404, as a mirror that has not synced the file
	ResetMidBody       // send headers and part of the body, then reset the connection
	HangHeaders        // accept the request and never answer
	HangMidBody        // send part of the body, then stop sending
	ShortBody          // declare the full length, send less, close cleanly
	ResetAtOnce        // reset the connection before any response
	RedirectLoop       // redirect to the same URL, forever
	RedirectFTP        // redirect to an ftp:// URL
	HugeHeader         // answer with 128 KiB of response headers
)

// Mirror is a test mirror. Its fields may be changed while it runs.
type Mirror struct {
	*httptest.Server
	files map[string][]byte

	mu        sync.Mutex
	limiter   *rate.Limiter // nil: unlimited
	fault     Fault
	faultPath string // the fault applies to paths containing this
	faultAt   int    // bytes sent before a mid-body fault

	flaky    float64 // probability that a request meets a random fault
	requests atomic.Int64
	active   atomic.Int64
	hangs    chan struct{} // closed when the mirror closes, to release hangs
	headers  atomic.Value  // last request headers
}

// New starts a mirror serving files (path relative to the base, no leading
// slash). Its base URL is m.URL + "/repo/". It stops when the test ends.
func New(t testing.TB, files map[string][]byte) *Mirror {
	t.Helper()
	m := &Mirror{files: files, hangs: make(chan struct{})}
	m.Server = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.Close)
	return m
}

// Base is the mirror's base URL.
func (m *Mirror) Base() string { return m.URL + "/repo/" }

// Close stops the mirror, releasing any hung request.
func (m *Mirror) Close() {
	m.mu.Lock()
	select {
	case <-m.hangs:
	default:
		close(m.hangs)
	}
	m.mu.Unlock()
	m.Server.CloseClientConnections()
	m.Server.Close()
}

// SetRate caps the mirror's total bandwidth, shared by all connections, in
// bytes per second; 0 removes the cap.
func (m *Mirror) SetRate(bytesPerSecond int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if bytesPerSecond <= 0 {
		m.limiter = nil
		return
	}
	burst := min(bytesPerSecond/20+1, chunk)
	m.limiter = rate.NewLimiter(rate.Limit(bytesPerSecond), max(burst, 1))
}

// SetFault makes requests for paths containing pathPart fail with f; a
// mid-body fault happens after atByte bytes of the body.
func (m *Mirror) SetFault(f Fault, pathPart string, atByte int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fault, m.faultPath, m.faultAt = f, pathPart, atByte
}

// flakyFaults are the faults a flaky mirror picks from.
var flakyFaults = []Fault{Status500, Status404, ResetAtOnce, ResetMidBody, HangMidBody, ShortBody}

// SetFlaky makes each request meet a random fault, at a random offset,
// with probability p.
func (m *Mirror) SetFlaky(p float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flaky = p
}

// Requests is how many requests the mirror has received.
func (m *Mirror) Requests() int64 { return m.requests.Load() }

// Active is how many requests the mirror is serving now.
func (m *Mirror) Active() int64 { return m.active.Load() }

// LastHeaders returns the headers of the last request the mirror received.
func (m *Mirror) LastHeaders() http.Header {
	h, _ := m.headers.Load().(http.Header)
	return h
}

const chunk = 16 << 10

func (m *Mirror) serve(w http.ResponseWriter, r *http.Request) {
	m.requests.Add(1)
	m.active.Add(1)
	defer m.active.Add(-1)
	m.headers.Store(r.Header.Clone())
	m.mu.Lock()
	limiter, fault, faultAt := m.limiter, m.fault, m.faultAt
	if !strings.Contains(r.URL.Path, m.faultPath) {
		fault = NoFault
	}
	if m.flaky > 0 && rand.Float64() < m.flaky {
		fault = flakyFaults[rand.IntN(len(flakyFaults))]
		faultAt = rand.IntN(2 << 20)
	}
	m.mu.Unlock()

	name, ok := strings.CutPrefix(r.URL.Path, "/repo/")
	data, found := m.files[name]
	switch {
	case !ok || !found || fault == Status404:
		http.NotFound(w, r)
		return
	case fault == Status500:
		http.Error(w, "boom", http.StatusInternalServerError)
		return
	case fault == ResetAtOnce:
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = conn.Close()
		}
		return
	case fault == HugeHeader:
		w.Header().Set("X-Padding", strings.Repeat("x", 128<<10))
		w.WriteHeader(http.StatusOK)
		return
	case fault == RedirectLoop:
		http.Redirect(w, r, r.URL.Path, http.StatusFound)
		return
	case fault == RedirectFTP:
		http.Redirect(w, r, "ftp://127.0.0.1/"+name, http.StatusFound)
		return
	case fault == HangHeaders:
		select {
		case <-r.Context().Done():
		case <-m.hangs:
		}
		return
	}
	var out io.Writer = w
	if limiter != nil {
		out = &throttled{w: w, l: limiter, ctx: r.Context()}
	}
	switch fault {
	case ResetMidBody, HangMidBody, ShortBody:
		out = &faulty{w: out, left: faultAt, fault: fault, rw: w, hangs: m.hangs, ctx: r.Context()}
	}
	w.Header().Set("Accept-Ranges", "bytes")
	http.ServeContent(&writerOverride{ResponseWriter: w, out: out}, r, name, ModTime, bytes.NewReader(data))
}

// writerOverride sends the body through another writer.
type writerOverride struct {
	http.ResponseWriter
	out io.Writer
}

func (w *writerOverride) Write(b []byte) (int, error) { return w.out.Write(b) }

// throttled writes through a shared token bucket.
type throttled struct {
	w   io.Writer
	l   *rate.Limiter
	ctx context.Context
}

func (t *throttled) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n := min(len(b), t.l.Burst())
		if err := t.l.WaitN(t.ctx, n); err != nil {
			return written, err
		}
		m, err := t.w.Write(b[:n])
		written += m
		if err != nil {
			return written, err
		}
		if f, ok := t.w.(http.Flusher); ok {
			f.Flush()
		}
		b = b[n:]
	}
	return written, nil
}

// faulty lets left bytes through, then breaks the response.
type faulty struct {
	w     io.Writer
	rw    http.ResponseWriter
	left  int
	fault Fault
	hangs chan struct{}
	ctx   context.Context
}

func (f *faulty) Write(b []byte) (int, error) {
	if len(b) <= f.left {
		f.left -= len(b)
		return f.w.Write(b)
	}
	n, _ := f.w.Write(b[:f.left])
	f.left = 0
	_ = http.NewResponseController(f.rw).Flush()
	switch f.fault {
	case HangMidBody:
		select {
		case <-f.ctx.Done():
		case <-f.hangs:
		}
	case ResetMidBody:
		if conn, _, err := http.NewResponseController(f.rw).Hijack(); err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // RST, not FIN
			}
			_ = conn.Close()
		}
	case ShortBody:
		if conn, _, err := http.NewResponseController(f.rw).Hijack(); err == nil {
			_ = conn.Close()
		}
	}
	return n, fmt.Errorf("injected fault")
}

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
