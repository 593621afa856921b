// Package mirrorsim simulates Linux package mirrors on 127.0.0.1: real HTTP
// servers serving a deterministic tree of files (held in memory or generated
// from (name, offset) as they are read), with Range, HEAD and conditional
// requests, a bandwidth cap shared by all of a mirror's connections, a
// first-byte latency, a schedule of changes (a fast mirror that degrades at
// a given time) and injectable faults.
package mirrorsim

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

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

var faultNames = [...]string{"none", "500", "404", "reset-mid-body", "hang-headers", "hang-mid-body",
	"short-body", "reset-at-once", "redirect-loop", "redirect-ftp", "huge-header"}

func (f Fault) String() string {
	if f >= 0 && int(f) < len(faultNames) {
		return faultNames[f]
	}
	return fmt.Sprintf("fault(%d)", int(f))
}

// FlakyFaults are the faults a flaky mirror picks from.
var FlakyFaults = []Fault{Status500, Status404, ResetAtOnce, ResetMidBody, HangMidBody, ShortBody}

// DefaultPrefix is the path under which a mirror serves its tree.
const DefaultPrefix = "/repo/"

// DefaultChunk is the largest write a capped mirror makes at once.
const DefaultChunk = 16 << 10

// Step is a change in a mirror's schedule: at At after the schedule starts,
// the mirror's rate and latency become Rate and Latency.
type Step struct {
	At      time.Duration
	Rate    int64 // bytes per second; 0: unlimited
	Latency time.Duration
}

// Config describes a mirror.
type Config struct {
	// Tree is what the mirror serves. Required.
	Tree Tree
	// Prefix is the path the tree is served under. Default "/repo/".
	Prefix string
	// Rate caps the mirror's bandwidth, shared by all its connections, in
	// bytes per second; 0 is unlimited.
	Rate int64
	// Latency is the delay before every response (the first byte).
	Latency time.Duration
	// Schedule changes rate and latency over time, from StartSchedule.
	Schedule []Step
	// Flaky is the probability that a request meets a random fault of
	// FlakyFaults, at a random offset within the first 2 MiB.
	Flaky float64
	// Chunk is the largest write under a cap. Default 16 KiB.
	Chunk int
}

// Mirror is a simulated mirror, an http.Handler. Its settings may be changed
// while it serves. Listen puts it on a port.
type Mirror struct {
	prefix string
	tree   Tree
	chunk  int
	cfg    Config

	limiter atomic.Pointer[rate.Limiter] // nil: unlimited
	latency atomic.Int64                 // nanoseconds

	mu        sync.Mutex
	fault     Fault
	faultPath string // the fault applies to paths containing this
	faultAt   int64  // bytes sent before a mid-body fault
	flaky     float64
	timers    []*time.Timer
	hangs     chan struct{} // closed by Release

	requests atomic.Int64
	active   atomic.Int64
	sent     atomic.Int64
	headers  atomic.Value // http.Header of the last request
	perFile  sync.Map     // file name -> *atomic.Int64, body bytes sent of it
}

// New returns a mirror; its schedule starts with StartSchedule.
func New(c Config) *Mirror {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Chunk <= 0 {
		c.Chunk = DefaultChunk
	}
	m := &Mirror{prefix: c.Prefix, tree: c.Tree, chunk: c.Chunk, cfg: c, flaky: c.Flaky, hangs: make(chan struct{})}
	m.SetRate(c.Rate)
	m.SetLatency(c.Latency)
	return m
}

// SetRate caps the mirror's total bandwidth, shared by all connections, in
// bytes per second; 0 removes the cap. Transfers in progress follow the new
// rate from their next write.
func (m *Mirror) SetRate(bytesPerSecond int64) {
	if bytesPerSecond <= 0 {
		m.limiter.Store(nil)
		return
	}
	burst := min(bytesPerSecond/20+1, int64(m.chunk))
	m.limiter.Store(rate.NewLimiter(rate.Limit(bytesPerSecond), int(max(burst, 1))))
}

// Rate is the mirror's current cap in bytes per second, 0 if none.
func (m *Mirror) Rate() int64 {
	if l := m.limiter.Load(); l != nil {
		return int64(l.Limit())
	}
	return 0
}

// SetLatency sets the delay before every response.
func (m *Mirror) SetLatency(d time.Duration) { m.latency.Store(int64(d)) }

// SetFault makes requests for paths containing pathPart fail with f; a
// mid-body fault happens after atByte bytes of the body.
func (m *Mirror) SetFault(f Fault, pathPart string, atByte int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fault, m.faultPath, m.faultAt = f, pathPart, atByte
}

// SetFlaky makes each request meet a random fault, at a random offset,
// with probability p.
func (m *Mirror) SetFlaky(p float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flaky = p
}

// StartSchedule resets the mirror's rate and latency to its Config's and
// starts its schedule from now, cancelling a schedule already running.
func (m *Mirror) StartSchedule() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopTimers()
	m.SetRate(m.cfg.Rate)
	m.SetLatency(m.cfg.Latency)
	for _, s := range m.cfg.Schedule {
		m.timers = append(m.timers, time.AfterFunc(s.At, func() {
			m.SetRate(s.Rate)
			m.SetLatency(s.Latency)
		}))
	}
}

// m.mu must be held.
func (m *Mirror) stopTimers() {
	for _, t := range m.timers {
		t.Stop()
	}
	m.timers = nil
}

// Release stops the schedule and lets every hung request go. Requests that
// hang after it return at once.
func (m *Mirror) Release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopTimers()
	select {
	case <-m.hangs:
	default:
		close(m.hangs)
	}
}

// Requests is how many requests the mirror has received.
func (m *Mirror) Requests() int64 { return m.requests.Load() }

// Active is how many requests the mirror is serving now.
func (m *Mirror) Active() int64 { return m.active.Load() }

// BytesSent is how many body bytes the mirror has sent.
func (m *Mirror) BytesSent() int64 { return m.sent.Load() }

// BytesSentMatching is how many body bytes the mirror has sent of the
// files whose names (relative to its prefix) match reports true for.
func (m *Mirror) BytesSentMatching(match func(name string) bool) int64 {
	var n int64
	m.perFile.Range(func(k, v any) bool {
		if match(k.(string)) {
			n += v.(*atomic.Int64).Load()
		}
		return true
	})
	return n
}

// fileSent is the counter of the body bytes sent of the file name.
func (m *Mirror) fileSent(name string) *atomic.Int64 {
	if v, ok := m.perFile.Load(name); ok {
		return v.(*atomic.Int64)
	}
	v, _ := m.perFile.LoadOrStore(name, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// LastHeaders returns the headers of the last request the mirror received.
func (m *Mirror) LastHeaders() http.Header {
	h, _ := m.headers.Load().(http.Header)
	return h
}

// ServeHTTP serves the file at the request's path under the prefix.
func (m *Mirror) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.requests.Add(1)
	m.active.Add(1)
	defer m.active.Add(-1)
	m.headers.Store(r.Header.Clone())
	m.mu.Lock()
	fault, faultAt := m.fault, m.faultAt
	if !strings.Contains(r.URL.Path, m.faultPath) {
		fault = NoFault
	}
	if m.flaky > 0 && rand.Float64() < m.flaky {
		fault = FlakyFaults[rand.IntN(len(FlakyFaults))]
		faultAt = rand.Int64N(2 << 20)
	}
	hangs := m.hangs
	m.mu.Unlock()

	if d := time.Duration(m.latency.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}

	name, ok := strings.CutPrefix(r.URL.Path, m.prefix)
	var file File
	if ok {
		file, ok = m.tree.Lookup(name)
	}
	switch {
	case !ok || fault == Status404:
		http.NotFound(w, r)
		return
	case fault == Status500:
		http.Error(w, "boom", http.StatusInternalServerError)
		return
	case fault == ResetAtOnce:
		reset(w)
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
		case <-hangs:
		}
		return
	}
	var out io.Writer = &throttled{w: w, m: m, ctx: r.Context(), file: m.fileSent(name)}
	switch fault {
	case ResetMidBody, HangMidBody, ShortBody:
		out = &faulty{w: out, left: faultAt, fault: fault, rw: w, hangs: hangs, ctx: r.Context()}
	}
	w.Header().Set("Accept-Ranges", "bytes")
	http.ServeContent(&writerOverride{ResponseWriter: w, out: out}, r, name, ModTime, file.Open())
}

// reset closes the connection with a RST, not a FIN.
func reset(w http.ResponseWriter) {
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = conn.Close()
	}
}

// writerOverride sends the body through another writer.
type writerOverride struct {
	http.ResponseWriter
	out io.Writer
}

func (w *writerOverride) Write(b []byte) (int, error) { return w.out.Write(b) }

// throttled writes through the mirror's current token bucket, if any, and
// counts what it sent.
type throttled struct {
	w    http.ResponseWriter
	m    *Mirror
	ctx  context.Context
	file *atomic.Int64 // the file's own count, if any
}

func (t *throttled) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		l := t.m.limiter.Load()
		n := len(b)
		if l != nil {
			n = min(n, l.Burst())
			if err := l.WaitN(t.ctx, n); err != nil {
				return written, err
			}
		}
		k, err := t.w.Write(b[:n])
		written += k
		t.m.sent.Add(int64(k))
		if t.file != nil {
			t.file.Add(int64(k))
		}
		if err != nil {
			return written, err
		}
		if l != nil {
			_ = http.NewResponseController(t.w).Flush()
		}
		b = b[n:]
	}
	return written, nil
}

// faulty lets left bytes through, then breaks the response.
type faulty struct {
	w     io.Writer
	rw    http.ResponseWriter
	left  int64
	fault Fault
	hangs chan struct{}
	ctx   context.Context
}

func (f *faulty) Write(b []byte) (int, error) {
	if int64(len(b)) <= f.left {
		f.left -= int64(len(b))
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
		reset(f.rw)
	case ShortBody:
		if conn, _, err := http.NewResponseController(f.rw).Hijack(); err == nil {
			_ = conn.Close()
		}
	}
	return n, fmt.Errorf("injected fault")
}
