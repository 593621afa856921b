package pool

// Tests of mirrors that misbehave on purpose: real HTTP servers on
// 127.0.0.1 (httptest servers, or a raw listener where HTTP itself must be
// broken), and what the client must see despite them.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// mbServer is an httptest server that counts its requests. It closes when
// the test ends.
type mbServer struct {
	*httptest.Server
	n atomic.Int64
}

func mbStart(t *testing.T, h http.HandlerFunc) *mbServer {
	t.Helper()
	s := &mbServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.n.Add(1)
		h(w, r)
	}))
	t.Cleanup(func() {
		s.CloseClientConnections()
		s.Close()
	})
	return s
}

// base is the server's base URL as a mirror, in ParseMirrorURL's form.
func (s *mbServer) base() string { return s.URL + "/repo/" }

func (s *mbServer) requests() int64 { return s.n.Load() }

// mbRaw is a TCP server on 127.0.0.1 that reads one HTTP request per
// connection, lets respond write whatever bytes it likes, then ends the
// connection with a FIN (a half-close, then it waits for the client to
// close its end). It closes when the test ends.
type mbRaw struct {
	addr string
	n    atomic.Int64
}

func mbStartRaw(t *testing.T, respond func(c net.Conn, req *http.Request)) *mbRaw {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &mbRaw{addr: l.Addr().String()}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		conns  = make(map[net.Conn]struct{})
		closed bool
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				s.n.Add(1)
				respond(c, req)
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
					_, _ = io.Copy(io.Discard, c)
				}
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

func (s *mbRaw) base() string    { return "http://" + s.addr + "/repo/" }
func (s *mbRaw) requests() int64 { return s.n.Load() }

// mbStartPool starts a pool over the mirror base URLs, in that order, with
// a worker each unless cfg says otherwise, and nobody resigning unless cfg
// says otherwise, and waits until all joined.
func mbStartPool(t *testing.T, cfg Config, bases ...string) *Pool {
	t.Helper()
	if cfg.Workers == 0 {
		cfg.Workers = len(bases)
	}
	if cfg.Resign == 0 {
		cfg.Resign = -1
	}
	p := startPool(t, cfg, bases...)
	waitPoolSize(t, p, len(bases))
	return p
}

// mbWaitSynced polls until each of the pool's n workers has a sync time.
func mbWaitSynced(t *testing.T, p *Pool, n int) {
	t.Helper()
	pollFor(t, 10*time.Second, fmt.Sprintf("the sync times of %d mirrors", n), func() bool {
		st := p.Status()
		return len(st.Workers) == n && !slices.ContainsFunc(st.Workers, func(w WorkerStatus) bool { return w.LastSync.IsZero() })
	})
}

// mbSyncKnown reports whether the pool's worker of mirror key has a sync
// time.
func mbSyncKnown(p *Pool, key string) bool {
	return slices.ContainsFunc(p.Status().Workers, func(w WorkerStatus) bool { return w.Mirror == key && !w.LastSync.IsZero() })
}

// mbPollUntil polls cond every 2 ms until it holds or within has passed,
// and reports whether it held. Unlike pollFor, running out of time is not
// a failure.
func mbPollUntil(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// mbUnix is the content of a lastsync file saying t.
func mbUnix(t time.Time) []byte { return []byte(strconv.FormatInt(t.Unix(), 10) + "\n") }

// mbWantPackage checks that one response is the package, whole, with a
// 200: what pacman needs.
func mbWantPackage(t *testing.T, i int, rec *httptest.ResponseRecorder, err error, content []byte) {
	t.Helper()
	if err != nil || rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), content) {
		t.Fatalf("request %d: status %d, %d body bytes (the file has %d; equal: %v), %s %q, Serve: %v; want the file with a 200",
			i, rec.Code, rec.Body.Len(), len(content), bytes.Equal(rec.Body.Bytes(), content),
			MirrorHeader, rec.Header().Get(MirrorHeader), err)
	}
	if cl := rec.Header().Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(content)) {
		t.Fatalf("request %d: Content-Length %s sent to the client, but the file has %d bytes", i, cl, len(content))
	}
}

// mbFirstDiff is the offset of the first byte where a and b differ.
func mbFirstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// Misbehaviour: mirror A redirects every request to an HTTP service on the
// LAN (here an "admin API" on another port of 127.0.0.1, which is no
// mirror). The user must get the package from the good mirror B, and the
// LAN service must never be reached through the pool.
func TestMisbehaveRedirectIntoTheLAN(t *testing.T) {
	admin := mbStart(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"admin":{"listen":"localhost:2019"},"apps":{"secret":"s3cr3t"}}`+"\n")
	})
	a := mbStart(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, admin.URL+"/config/", http.StatusFound)
	})
	files := mirrorFiles(300 << 10)
	b := testmirror.New(t, files)
	// A is first, and both are on trial: A is tried first for a new request.
	p := mbStartPool(t, Config{}, a.base(), b.Base())
	for i := 1; i <= 5; i++ {
		rec, err := serve(t, p, nil, pkgName)
		if n := admin.requests(); n > 0 {
			t.Fatalf("request %d: the LAN service (not a mirror) received %d requests through A's redirect; the client got status %d, %d bytes %q from %q (Serve: %v)",
				i, n, rec.Code, rec.Body.Len(), mbTruncate(rec.Body.String(), 80), rec.Header().Get(MirrorHeader), err)
		}
		wantFile(t, rec, err, b, files[pkgName])
	}
	if a.requests() == 0 {
		t.Fatal("A was never asked: the test proves nothing")
	}
}

func mbTruncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Misbehaviour: one mirror answers 401 to everything, another 451. While a
// good mirror has the file, the user must get the file (200) every time,
// never the 401 or 451; and the 401 mirror must stop getting traffic after
// a few requests (it is failing, not serving).
func TestMisbehaveUnexpected4xx(t *testing.T) {
	files := mirrorFiles(300 << 10)
	unauth := mbStart(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="mirror"`)
		http.Error(w, "401 Unauthorized", http.StatusUnauthorized)
	})
	legal := mbStart(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "451 Unavailable For Legal Reasons", http.StatusUnavailableForLegalReasons)
	})
	good := testmirror.New(t, files)
	p := mbStartPool(t, Config{serialTrials: true}, unauth.base(), legal.base(), good.Base())
	for i := 1; i <= 10; i++ {
		rec, err := serve(t, p, nil, pkgName)
		mbWantPackage(t, i, rec, err, files[pkgName])
	}
	if n := unauth.requests(); n > 4 {
		t.Errorf("the 401 mirror received %d of 10 requests; want at most 4 (its 401s must count as failures)", n)
	}
	if n := legal.requests(); n > 4 {
		t.Errorf("the 451 mirror received %d of 10 requests; want at most 4", n)
	}
}

// Misbehaviour: a parked domain answers every path with 200 and a small
// HTML page. A request for a package must get the package from the good
// mirror, never the HTML, and the parked mirror must stop getting
// requests after a few.
func TestMisbehaveParkedDomain(t *testing.T) {
	files := mirrorFiles(300 << 10)
	const page = "<html>this domain is parked!</html>\n" // 36 bytes
	parked := mbStart(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Length", strconv.Itoa(len(page)))
		io.WriteString(w, page)
	})
	good := testmirror.New(t, files)
	p := mbStartPool(t, Config{}, parked.base(), good.Base())
	for i := 1; i <= 10; i++ {
		rec, err := serve(t, p, nil, pkgName)
		if strings.Contains(rec.Body.String(), "parked") {
			t.Fatalf("request %d for %s: the client got the parked domain's page (status %d, Content-Type %q, %q, Serve: %v)",
				i, pkgName, rec.Code, rec.Header().Get("Content-Type"), rec.Body.String(), err)
		}
		mbWantPackage(t, i, rec, err, files[pkgName])
	}
	if n := parked.requests(); n > 4 {
		t.Errorf("the parked domain received %d of 10 requests; want at most 4", n)
	}
}

// Misbehaviour: mirror A serves the package (with a Last-Modified) and
// fails mid-body after the response is committed (testmirror's ShortBody:
// a clean close after 512 KiB of the announced 1 MiB, so that every byte
// it sent arrives and the failure surely comes after the 64 KiB peek, where
// a reset could lose bytes in flight); mirror B has a
// different file of the same name and size, and sends no Last-Modified.
// The client must never get a complete 200 that is not A's file: either
// the transfer is aborted (ErrAborted) or the body is exactly A's.
func TestMisbehaveStitchesTwoFiles(t *testing.T) {
	const size = 1 << 20
	files := mirrorFiles(size)
	want := files[pkgName]
	other := testmirror.Content("another build of "+pkgName, size)
	a := testmirror.New(t, files)
	a.SetFault(testmirror.ShortBody, pkgName, 512<<10) // after the 64 KiB peek
	var ranges atomic.Int64
	b := mbStart(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			ranges.Add(1)
		}
		// The zero time: no Last-Modified. Range requests get a 206.
		http.ServeContent(w, r, path.Base(r.URL.Path), time.Time{}, bytes.NewReader(other))
	})
	p := mbStartPool(t, Config{PeekSize: 64 << 10}, a.Base(), b.base())
	rec, err := serve(t, p, nil, pkgName)
	if from := rec.Header().Get(MirrorHeader); from != a.Base() {
		t.Fatalf("the response was committed by %q, not A: the test proves nothing (Serve: %v)", from, err)
	}
	got := rec.Body.Bytes()
	switch {
	case errors.Is(err, ErrAborted): // the client sees a failed download: fine
	case err != nil:
		t.Fatalf("Serve: %v; want success or ErrAborted", err)
	case !bytes.Equal(got, want):
		at := mbFirstDiff(got, want)
		t.Fatalf("the client got a complete %d response of %d bytes that is not A's file: from byte %d on it is %s's different file (B asked for %d ranges, B sends no Last-Modified)",
			rec.Code, len(got), at, b.base(), ranges.Load())
	}
}

// Misbehaviour: mirror A fails mid-body after the commit (ShortBody, as in
// TestMisbehaveStitchesTwoFiles); mirror B, asked
// to continue, answers its range request with a correct 206 and
// Content-Range but a chunked body that ends, cleanly, after half the
// bytes. Mirror C is good. The client must get the whole, correct file (B's
// short answer is a failure, and C continues), and B must be counted a
// failure.
func TestMisbehaveShortPartialContent(t *testing.T) {
	const size = 1 << 20
	files := mirrorFiles(size)
	content := files[pkgName]
	a := testmirror.New(t, files)
	a.SetFault(testmirror.ShortBody, pkgName, 256<<10) // after the 64 KiB peek
	var ranges atomic.Int64
	b := mbChunkedRanges(t, content, &ranges, func(first, last int) []byte {
		return content[first : first+(last-first+1)/2]
	})
	c := testmirror.New(t, files)
	p := mbStartPool(t, Config{serialTrials: true, PeekSize: 64 << 10}, a.Base(), b.base(), c.Base())
	// One sample each: A and B are still on trial, A showed the better
	// pace (it takes the new request), and B ranks above C for committed
	// work, so B continues first.
	setSamples(t, p, a.Base(), 20<<20)
	setSamples(t, p, b.base(), 10<<20)
	rec, err := serve(t, p, nil, pkgName)
	if ranges.Load() == 0 {
		t.Fatalf("B was never asked to continue: the test proves nothing (status %d, %d bytes, Serve: %v)", rec.Code, rec.Body.Len(), err)
	}
	if err != nil || rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), content) {
		t.Fatalf("status %d, %d bytes of the file's %d (first wrong byte at %d), Serve: %v; want the whole file (B's stats %+v, C got %d requests)",
			rec.Code, rec.Body.Len(), len(content), mbFirstDiff(rec.Body.Bytes(), content), err, statsOf(t, p, b.base()), c.Requests())
	}
	if s := statsOf(t, p, b.base()); s.failures == 0 {
		t.Fatalf("B's short 206 was not counted a failure: %+v", s)
	}
}

// mbChunkedRanges serves content whole, and answers a Range request with a
// 206 of the right Content-Range and Last-Modified whose body, chunked (no
// Content-Length to hold it to), is what body gives for the range; ranges
// counts those.
func mbChunkedRanges(t *testing.T, content []byte, ranges *atomic.Int64, body func(first, last int) []byte) *mbServer {
	return mbStart(t, func(w http.ResponseWriter, r *http.Request) {
		first, last, ok := mbParseRange(r.Header.Get("Range"), len(content))
		if !ok {
			http.ServeContent(w, r, path.Base(r.URL.Path), testmirror.ModTime, bytes.NewReader(content))
			return
		}
		ranges.Add(1)
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Accept-Ranges", "bytes")
		h.Set("Last-Modified", testmirror.ModTime.UTC().Format(http.TimeFormat))
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, len(content)))
		w.WriteHeader(http.StatusPartialContent)
		_ = http.NewResponseController(w).Flush() // chunked: no Content-Length
		w.Write(body(first, last))
	})
}

// mbParseRange parses a request's "bytes=first-last" (last optional) for a
// file of size bytes.
func mbParseRange(v string, size int) (first, last int, ok bool) {
	spec, ok := strings.CutPrefix(v, "bytes=")
	if !ok {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false
	}
	first, err := strconv.Atoi(a)
	if err != nil || first < 0 || first >= size {
		return 0, 0, false
	}
	last = size - 1
	if b != "" {
		if last, err = strconv.Atoi(b); err != nil || last < first {
			return 0, 0, false
		}
		last = min(last, size-1)
	}
	return first, last, true
}

// Misbehaviour: a mirror answers with a close-delimited body (no
// Content-Length) that ends, with a clean close, after half the file. With
// a good mirror in the pool, the user must get the whole file. The file is
// smaller than the peek, so nothing need be committed before the end.
func TestMisbehaveCloseDelimitedShortBody(t *testing.T) {
	const size = 256 << 10 // less than the default 1 MiB peek
	files := mirrorFiles(size)
	content := files[pkgName]
	raw := mbStartRaw(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/octet-stream\r\n\r\n")
		c.Write(content[:size/2])
	})
	good := testmirror.New(t, files)
	// The raw mirror is first and both are on trial: it is tried first.
	p := mbStartPool(t, Config{}, raw.base(), good.Base())
	for i := 1; i <= 3; i++ {
		rec, err := serve(t, p, nil, pkgName)
		mbWantPackage(t, i, rec, err, content)
	}
	if raw.requests() == 0 {
		t.Fatal("the short mirror was never asked: the test proves nothing")
	}
}

// Misbehaviour: mirror A announces a Content-Length 1024 bytes larger than
// the file (2 MiB, more than the 1 MiB peek), sends the real bytes and
// closes. B and C are good. Every request must get the whole, correct file
// with a 200 (and no Content-Length but the file's own).
func TestMisbehaveLyingContentLength(t *testing.T) {
	const size = 2 << 20
	files := mirrorFiles(size)
	content := files[pkgName]
	liar := mbStartRaw(t, func(c net.Conn, req *http.Request) {
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/octet-stream\r\n"+
			"Accept-Ranges: bytes\r\nLast-Modified: %s\r\nContent-Length: %d\r\n\r\n",
			testmirror.ModTime.UTC().Format(http.TimeFormat), size+1024)
		c.Write(content)
	})
	b, c := testmirror.New(t, files), testmirror.New(t, files)
	// The liar is first and all are on trial: it takes the first request.
	p := mbStartPool(t, Config{}, liar.base(), b.Base(), c.Base())
	for i := 1; i <= 6; i++ {
		rec, err := serve(t, p, nil, pkgName)
		mbWantPackage(t, i, rec, err, content)
	}
	if liar.requests() == 0 {
		t.Fatal("the lying mirror was never asked: the test proves nothing")
	}
}

// Misbehaviour: three stale mirrors (synced 3 h ago, without the package:
// 404) rank above the one fresh mirror that has it. A 404 may reach the
// user only once a fresh mirror said 404: every request must get the file.
//
// With three stale mirrors and the default 3 retries the current code
// already serves every request (the fourth attempt reaches the fresh
// mirror): the 3stale case is kept as a guard for the fix, which must not
// break it. With four stale mirrors the retries run out on 404s from stale
// mirrors and the user gets a 404: that case fails on the current code.
func TestMisbehaveStaleNotFound(t *testing.T) {
	for _, stale := range []int{3, 4} {
		t.Run(strconv.Itoa(stale)+"stale", func(t *testing.T) {
			files := mirrorFiles(300 << 10)
			now := time.Now()
			var bases []string
			var stales []*testmirror.Mirror
			for range stale {
				m := testmirror.New(t, map[string][]byte{"lastsync": mbUnix(now.Add(-3 * time.Hour))})
				stales = append(stales, m)
				bases = append(bases, m.Base())
			}
			fresh := testmirror.New(t, map[string][]byte{pkgName: files[pkgName], "lastsync": mbUnix(now)})
			bases = append(bases, fresh.Base())
			p := mbStartPool(t, Config{SyncFile: "lastsync"}, bases...)
			mbWaitSynced(t, p, len(bases))
			// All ranked, the stale mirrors far above the fresh one.
			for _, m := range stales {
				setSamples(t, p, m.Base(), 10<<20, 10<<20, 10<<20)
			}
			setSamples(t, p, fresh.Base(), 1<<20, 1<<20, 1<<20)
			for i := 1; i <= 10; i++ {
				rec, err := serve(t, p, nil, pkgName)
				if err != nil {
					t.Fatalf("request %d: Serve: %v\nwant the file: the fresh mirror %s (synced now) has it; only stale mirrors (synced 3 h ago) said 404",
						i, err, fresh.Base())
				}
				wantFile(t, rec, err, fresh, files[pkgName])
			}
		})
	}
}

// Misbehaviour: mirror F's lastsync says 2100 (a clock in the future) and
// it serves an old core.db; G and H synced now and serve the new one. A
// request for the database (a file that changes in place) must get the new
// one: F must serve none of them.
func TestMisbehaveSyncTimeInTheFuture(t *testing.T) {
	const db = "core/os/x86_64/core.db"
	oldDB := testmirror.Content("old "+db, 100<<10)
	newDB := testmirror.Content("new "+db, 120<<10)
	now := time.Now()
	f := testmirror.New(t, map[string][]byte{db: oldDB, "lastsync": []byte("4102444800\n")})
	g := testmirror.New(t, map[string][]byte{db: newDB, "lastsync": mbUnix(now)})
	h := testmirror.New(t, map[string][]byte{db: newDB, "lastsync": mbUnix(now)})
	p := mbStartPool(t, Config{SyncFile: "lastsync"}, f.Base(), g.Base(), h.Base())
	pollFor(t, 10*time.Second, "the sync times of G and H", func() bool {
		return mbSyncKnown(p, g.Base()) && mbSyncKnown(p, h.Base())
	})
	// F's time is probed at once with theirs; a pool that rightly
	// disbelieves it may leave it unknown, so its absence is no failure.
	mbPollUntil(time.Second, func() bool { return mbSyncKnown(p, f.Base()) })
	for i := 1; i <= 6; i++ {
		rec, err := serve(t, p, nil, db)
		from := rec.Header().Get(MirrorHeader)
		if from == f.Base() || bytes.Equal(rec.Body.Bytes(), oldDB) {
			t.Fatalf("request %d: the client got core.db from %s, whose lastsync says 2100: the old database (%d bytes, old: %v; Serve: %v)",
				i, from, rec.Body.Len(), bytes.Equal(rec.Body.Bytes(), oldDB), err)
		}
		if err != nil || rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), newDB) {
			t.Fatalf("request %d: status %d, %d bytes from %q, Serve: %v; want the new core.db", i, rec.Code, rec.Body.Len(), from, err)
		}
	}
}

// mbHeaderWriter is a ResponseWriter that discards the body and closes
// committed when the header is written.
type mbHeaderWriter struct {
	h         http.Header
	once      sync.Once
	committed chan struct{}
}

func (w *mbHeaderWriter) Header() http.Header         { return w.h }
func (w *mbHeaderWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *mbHeaderWriter) WriteHeader(int)             { w.once.Do(func() { close(w.committed) }) }

// Misbehaviour (of the pool's freshness rule): two mirrors synced 30 s
// apart, both fresh enough; the newer one is slow and busy with a long
// package download (a worker carries one transfer). A request for core.db
// must not wait behind it: the other mirror serves it at once (within 2 s).
func TestMisbehaveIndexDoesNotWaitForTheNewestMirror(t *testing.T) {
	const db = "core/os/x86_64/core.db"
	dbContent := testmirror.Content(db, 64<<10)
	big := testmirror.Content(pkgName, 8<<20)
	now := time.Now()
	newer := testmirror.New(t, map[string][]byte{pkgName: big, db: dbContent, "lastsync": mbUnix(now)})
	older := testmirror.New(t, map[string][]byte{db: dbContent, "lastsync": mbUnix(now.Add(-30 * time.Second))})
	newer.SetRate(64 << 10) // the package takes two minutes
	// A small peek, and a peek timeout it never meets: the package stays
	// on the newer mirror.
	p := mbStartPool(t, Config{SyncFile: "lastsync", PeekSize: 16 << 10, PeekTimeout: 5 * time.Second}, newer.Base(), older.Base())
	mbWaitSynced(t, p, 2)

	ctx, cancel := context.WithCancel(context.Background())
	client := &mbHeaderWriter{h: http.Header{}, committed: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		done <- p.Serve(client, httptest.NewRequestWithContext(ctx, http.MethodGet, "/"+pkgName, nil), pkgName)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-client.committed:
	case err := <-done:
		done <- err
		t.Fatalf("the package download ended before it was committed: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the package download was not committed within 10 s")
	}
	if from := client.h.Get(MirrorHeader); from != newer.Base() {
		t.Fatalf("the package download went to %q, not the newer mirror: the test proves nothing", from)
	}

	dctx, dcancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer dcancel()
	rec := httptest.NewRecorder()
	began := time.Now()
	err := p.Serve(rec, httptest.NewRequestWithContext(dctx, http.MethodGet, "/"+db, nil), db)
	took := time.Since(began)
	if err != nil {
		t.Fatalf("core.db: Serve: %v after %v; want it served at once by %s (synced 30 s before the busy %s)",
			err, took.Round(time.Millisecond), older.Base(), newer.Base())
	}
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), dbContent) {
		t.Fatalf("core.db: status %d, %d bytes; want the database", rec.Code, rec.Body.Len())
	}
	if from := rec.Header().Get(MirrorHeader); from != older.Base() {
		t.Fatalf("core.db was served by %q after %v; want %s, the idle mirror", from, took, older.Base())
	}
}
