package pool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// Serve against real mirrors on 127.0.0.1.

const pkgName = "extra/os/x86_64/foo-1.0-1-x86_64.pkg.tar.zst"

// mirrorFiles is a tree with one package of size bytes.
func mirrorFiles(size int) map[string][]byte {
	return map[string][]byte{pkgName: testmirror.Content(pkgName, size)}
}

// servePool starts a pool over the mirrors, in that order, and waits until
// all of them joined. Nobody resigns, unless cfg says otherwise.
func servePool(t *testing.T, cfg Config, mirrors ...*testmirror.Mirror) *Pool {
	t.Helper()
	var bases []string
	for _, m := range mirrors {
		bases = append(bases, m.Base())
	}
	return mbStartPool(t, cfg, bases...)
}

// serve runs Serve for a GET of rel, or of req if given.
func serve(t *testing.T, p *Pool, req *http.Request, rel string) (*httptest.ResponseRecorder, error) {
	t.Helper()
	if req == nil {
		req = httptest.NewRequest(http.MethodGet, "/"+rel, nil)
	}
	rec := httptest.NewRecorder()
	return rec, p.Serve(rec, req, rel)
}

func wantFile(t *testing.T, rec *httptest.ResponseRecorder, err error, from *testmirror.Mirror, content []byte) {
	t.Helper()
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	if !bytes.Equal(rec.Body.Bytes(), content) {
		t.Fatalf("got %d bytes, not the file's %d", rec.Body.Len(), len(content))
	}
	if got := rec.Header().Get(MirrorHeader); got != from.Base() {
		t.Fatalf("%s: %q, want %q", MirrorHeader, got, from.Base())
	}
}

func wantError(t *testing.T, err error, status int) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Status != status {
		t.Fatalf("Serve: %v, want a %d *Error", err, status)
	}
	return e
}

func TestServeFile(t *testing.T) {
	files := mirrorFiles(300 << 10)
	m := testmirror.New(t, files)
	p := servePool(t, Config{}, m)
	rec, err := serve(t, p, nil, pkgName)
	wantFile(t, rec, err, m, files[pkgName])
	if got := rec.Header().Get("Content-Length"); got != strconv.Itoa(300<<10) {
		t.Fatalf("Content-Length %q", got)
	}
	if rec.Header().Get("Last-Modified") == "" {
		t.Fatal("Last-Modified was not passed on")
	}
	// A transfer of at least MinSampleBytes is one sample.
	if s := statsOf(t, p, m.Base()); s.count != 1 || s.score <= 0 || s.failures != 0 {
		t.Fatalf("stats %+v, want one sample", s)
	}
}

func TestServeHEAD(t *testing.T) {
	files := mirrorFiles(300 << 10)
	m := testmirror.New(t, files)
	p := servePool(t, Config{}, m)
	rec, err := serve(t, p, httptest.NewRequest(http.MethodHead, "/"+pkgName, nil), pkgName)
	if err != nil || rec.Code != http.StatusOK {
		t.Fatalf("HEAD: %d, %v", rec.Code, err)
	}
	if rec.Body.Len() != 0 {
		t.Fatalf("HEAD answered with %d body bytes", rec.Body.Len())
	}
	if got := rec.Header().Get("Content-Length"); got != strconv.Itoa(300<<10) {
		t.Fatalf("HEAD Content-Length %q, want the file's", got)
	}
	if rec.Header().Get(MirrorHeader) != m.Base() {
		t.Fatalf("%s missing", MirrorHeader)
	}
	if s := statsOf(t, p, m.Base()); s.count != 0 || s.failures != 0 {
		t.Fatalf("a HEAD made a sample: %+v", s)
	}
}

func TestServeRange(t *testing.T) {
	files := mirrorFiles(300 << 10)
	m := testmirror.New(t, files)
	p := servePool(t, Config{}, m)
	req := httptest.NewRequest(http.MethodGet, "/"+pkgName, nil)
	req.Header.Set("Range", "bytes=1000-1999")
	rec, err := serve(t, p, req, pkgName)
	if err != nil || rec.Code != http.StatusPartialContent {
		t.Fatalf("Range: %d, %v", rec.Code, err)
	}
	if !bytes.Equal(rec.Body.Bytes(), files[pkgName][1000:2000]) {
		t.Fatal("wrong bytes for the range")
	}
	if got, want := rec.Header().Get("Content-Range"), "bytes 1000-1999/"+strconv.Itoa(300<<10); got != want {
		t.Fatalf("Content-Range %q, want %q", got, want)
	}
	if got := m.LastHeaders().Get("Range"); got != "bytes=1000-1999" {
		t.Fatalf("the mirror was asked for Range %q", got)
	}
}

// Conditional requests reach the mirror, and its 304 reaches the client.
func TestServeNotModified(t *testing.T) {
	m := testmirror.New(t, mirrorFiles(1000))
	p := servePool(t, Config{}, m)
	req := httptest.NewRequest(http.MethodGet, "/"+pkgName, nil)
	req.Header.Set("If-Modified-Since", testmirror.ModTime.UTC().Format(http.TimeFormat))
	rec, err := serve(t, p, req, pkgName)
	if err != nil || rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Fatalf("conditional GET: %d with %d bytes, %v; want 304", rec.Code, rec.Body.Len(), err)
	}
	if s := statsOf(t, p, m.Base()); s.failures != 0 {
		t.Fatalf("a 304 counted as a failure: %+v", s)
	}
}

// Cookies, credentials and forwarding headers stay on the LAN; the
// User-Agent goes through, and without one Go's own is not sent.
func TestServeNeverForwardsCredentials(t *testing.T) {
	m := testmirror.New(t, mirrorFiles(1000))
	p := servePool(t, Config{}, m)
	req := httptest.NewRequest(http.MethodGet, "/"+pkgName, nil)
	private := map[string]string{
		"Cookie":              "session=secret",
		"Authorization":       "Basic c2VjcmV0OnNlY3JldA==",
		"Proxy-Authorization": "Bearer secret",
		"X-Forwarded-For":     "192.168.1.20",
		"Forwarded":           "for=192.168.1.20",
		"X-Real-Ip":           "192.168.1.20",
		"Referer":             "http://intranet.lan/",
		"X-Api-Key":           "secret",
	}
	for k, v := range private {
		req.Header.Set(k, v)
	}
	req.Header.Set("User-Agent", "pacman/7.0.0 (Linux x86_64) libalpm/15.0.0")
	if _, err := serve(t, p, req, pkgName); err != nil {
		t.Fatal(err)
	}
	got := m.LastHeaders()
	for k := range private {
		if v := got.Get(k); v != "" {
			t.Errorf("the mirror received %s: %q", k, v)
		}
	}
	if ua := got.Get("User-Agent"); ua != req.Header.Get("User-Agent") {
		t.Errorf("the mirror received User-Agent %q", ua)
	}
	if _, err := serve(t, p, nil, pkgName); err != nil {
		t.Fatal(err)
	}
	if ua := m.LastHeaders().Get("User-Agent"); ua != "" {
		t.Errorf("without a client User-Agent, the mirror received %q", ua)
	}
}

// A mirror's cookies and hop-by-hop headers do not reach the client.
func TestServeDropsMirrorCookies(t *testing.T) {
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "track", Value: "me"})
		w.Header().Set("Alt-Svc", `h3=":443"`)
		w.Header().Set("Content-Type", "application/octet-stream")
		io.WriteString(w, "data")
	}))
	t.Cleanup(mirror.Close)
	p := startPool(t, Config{Workers: 1}, mirror.URL+"/")
	waitPoolSize(t, p, 1)
	rec, err := serve(t, p, nil, "f")
	if err != nil || rec.Body.String() != "data" {
		t.Fatalf("%v, %q", err, rec.Body.String())
	}
	if rec.Header().Get("Set-Cookie") != "" || rec.Header().Get("Alt-Svc") != "" {
		t.Fatalf("mirror headers reached the client: %v", rec.Header())
	}
	if rec.Header().Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("Content-Type not passed on: %v", rec.Header())
	}
}

// A 5xx is retried on another mirror, and counts against the first.
func TestServeRetries5xx(t *testing.T) {
	files := mirrorFiles(1000)
	bad, good := testmirror.New(t, files), testmirror.New(t, files)
	bad.SetFault(testmirror.Status500, pkgName, 0)
	// It counts every request: the pool must not also fetch extra.db to
	// check the package (verify.go).
	p := servePool(t, Config{SkipVerify: true}, bad, good)
	rec, err := serve(t, p, nil, pkgName)
	wantFile(t, rec, err, good, files[pkgName])
	if bad.Requests() != 1 {
		t.Fatalf("the failing mirror got %d requests, want 1 (it is tried first)", bad.Requests())
	}
	if s := statsOf(t, p, bad.Base()); s.failures != 1 || s.count != 1 || s.score != 0 {
		t.Fatalf("failing mirror's stats %+v, want one zero sample", s)
	}
}

// A mirror nobody listens on is retried elsewhere too.
func TestServeRetriesDeadMirror(t *testing.T) {
	files := mirrorFiles(1000)
	good := testmirror.New(t, files)
	dead := testmirror.Dead(t)
	p := startPool(t, Config{Workers: 2, Resign: -1}, dead, good.Base())
	waitPoolSize(t, p, 2)
	rec, err := serve(t, p, nil, pkgName)
	wantFile(t, rec, err, good, files[pkgName])
	if s := statsOf(t, p, dead); s.failures != 1 {
		t.Fatalf("dead mirror's stats %+v", s)
	}
}

// When every allowed attempt failed, the client gets a 502 naming each
// mirror tried, and no more mirrors than Retries+1 are tried.
func TestServeRetriesExhausted(t *testing.T) {
	for _, retries := range []int{1, 2} {
		t.Run("retries="+strconv.Itoa(retries), func(t *testing.T) {
			files := mirrorFiles(1000)
			ms := []*testmirror.Mirror{testmirror.New(t, files), testmirror.New(t, files), testmirror.New(t, files)}
			for _, m := range ms {
				m.SetFault(testmirror.Status500, pkgName, 0)
			}
			p := servePool(t, Config{serialTrials: true, Retries: retries, SkipVerify: true}, ms...) // it counts every request
			rec, err := serve(t, p, nil, pkgName)
			e := wantError(t, err, http.StatusBadGateway)
			for i, m := range ms {
				tried := i <= retries
				if named := strings.Contains(e.Error(), m.Base()); named != tried {
					t.Errorf("mirror %d (tried: %v) named in the error: %v\n%s", i, tried, named, e)
				}
				if got := m.Requests(); got != int64(btoi(tried)) {
					t.Errorf("mirror %d got %d requests", i, got)
				}
			}
			if rec.Body.Len() != 0 || rec.Header().Get(MirrorHeader) != "" {
				t.Fatal("Serve wrote to the client before failing")
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// When every mirror that answered said 404, so does Serve; a 404 by itself
// is not held against a mirror.
func TestServeAllNotFound(t *testing.T) {
	a, b := testmirror.New(t, nil), testmirror.New(t, nil)
	p := servePool(t, Config{serialTrials: true}, a, b)
	_, err := serve(t, p, nil, "core/os/x86_64/core.db.sig")
	wantError(t, err, http.StatusNotFound)
	for _, m := range []*testmirror.Mirror{a, b} {
		if m.Requests() != 1 {
			t.Fatalf("%s was asked %d times", m.Base(), m.Requests())
		}
		if s := statsOf(t, p, m.Base()); s.failures != 0 || s.count != 0 {
			t.Fatalf("%s was held to its 404: %+v", m.Base(), s)
		}
	}
}

// A mirror that said 404 for a file another mirror had is stale: it is
// penalised with a failure sample.
func TestServeNotFoundThenFoundPenalises(t *testing.T) {
	files := mirrorFiles(1000)
	stale, good := testmirror.New(t, nil), testmirror.New(t, files)
	p := servePool(t, Config{}, stale, good)
	rec, err := serve(t, p, nil, pkgName)
	wantFile(t, rec, err, good, files[pkgName])
	if s := statsOf(t, p, stale.Base()); s.failures != 1 || s.count != 1 || s.score != 0 {
		t.Fatalf("stale mirror's stats %+v, want a failure sample", s)
	}
	if s := statsOf(t, p, good.Base()); s.failures != 0 {
		t.Fatalf("good mirror's stats %+v", s)
	}
}

// A mirror too slow to deliver the first PeekSize bytes within PeekTimeout
// loses the request to another worker before anything reaches the client,
// and gets a failure sample.
func TestServePeekTimeoutRequeues(t *testing.T) {
	t.Parallel()
	files := mirrorFiles(512 << 10)
	slow, fast := testmirror.New(t, files), testmirror.New(t, files)
	slow.SetRate(64 << 10) // the peek would take 4 s
	obs := &recorder{}
	// Retries 1: the fast mirror's attempt is the last, so however loaded
	// the machine, it has no peek timeout to miss.
	p := servePool(t, Config{Retries: 1, PeekSize: 256 << 10, PeekTimeout: 200 * time.Millisecond, Observer: obs, SkipVerify: true}, slow, fast)
	setSamples(t, p, fast.Base(), 10<<20, 10<<20, 10<<20) // ranked, known to be faster: the slow one is tried first, and its peek timeout counts
	rec, err := serve(t, p, nil, pkgName)
	wantFile(t, rec, err, fast, files[pkgName])
	if slow.Requests() != 1 {
		t.Fatalf("the slow mirror got %d requests, want 1 (it is tried first)", slow.Requests())
	}
	if s := statsOf(t, p, slow.Base()); s.failures != 1 || s.count != 1 || s.score != 0 {
		t.Fatalf("slow mirror's stats %+v, want one zero sample", s)
	}
	if f := obs.events(&obs.failed); len(f) != 1 || f[0].mirror != slow.Base() || f[0].reason != "peek_timeout" {
		t.Fatalf("failures reported %+v, want one peek_timeout of the slow mirror", f)
	}
}

// On the last allowed attempt the peek timeout does not apply: a slow
// answer is better than none.
func TestServeLastAttemptHasNoPeekTimeout(t *testing.T) {
	t.Parallel()
	files := mirrorFiles(160 << 10)
	first, last := testmirror.New(t, files), testmirror.New(t, files)
	first.SetRate(256 << 10)
	last.SetRate(256 << 10) // the peek needs about 0.5 s
	obs := &recorder{}
	p := servePool(t, Config{Retries: 1, PeekSize: 128 << 10, PeekTimeout: 100 * time.Millisecond, Observer: obs}, first, last)
	setSamples(t, p, last.Base(), 10<<20, 10<<20, 10<<20) // ranked, thought faster: the first is tried first, and its peek timeout counts
	rec, err := serve(t, p, nil, pkgName)
	wantFile(t, rec, err, last, files[pkgName])
	if f := obs.events(&obs.failed); len(f) != 1 || f[0].mirror != first.Base() || f[0].reason != "peek_timeout" {
		t.Fatalf("failures reported %+v, want only the first attempt's peek timeout", f)
	}
	if s := statsOf(t, p, last.Base()); s.failures != 0 {
		t.Fatalf("last mirror's stats %+v", s)
	}
}

// slowClient is a ResponseWriter whose first body Write blocks for delay,
// as a client on a slow link would.
type slowClient struct {
	*httptest.ResponseRecorder
	delay   time.Duration
	writes  int
	blocked time.Duration
}

func (c *slowClient) Write(b []byte) (int, error) {
	c.writes++
	if c.writes == 1 {
		began := time.Now()
		<-time.After(c.delay)
		c.blocked = time.Since(began)
	}
	return c.ResponseRecorder.Write(b)
}

// The time spent writing to a slow client does not count against the
// mirror: its recorded throughput is what it delivered.
func TestServeSlowClientDoesNotCountAgainstMirror(t *testing.T) {
	t.Parallel()
	const size = 2 << 20
	files := mirrorFiles(size)
	m := testmirror.New(t, files)
	p := servePool(t, Config{PeekSize: 256 << 10}, m)
	client := &slowClient{ResponseRecorder: httptest.NewRecorder(), delay: 500 * time.Millisecond}
	start := time.Now()
	if err := p.Serve(client, httptest.NewRequest(http.MethodGet, "/"+pkgName, nil), pkgName); err != nil {
		t.Fatal(err)
	}
	wall := time.Since(start)
	if !bytes.Equal(client.Body.Bytes(), files[pkgName]) {
		t.Fatal("wrong body")
	}
	s := statsOf(t, p, m.Base())
	// One sample, or two: the client held back its peek long enough for
	// the transfer to park and resume.
	if s.count < 1 || s.count > 2 || s.failures != 0 {
		t.Fatalf("stats %+v, want one or two samples and no failure", s)
	}
	// The sample says how long the mirror kept the transfer busy. Whatever
	// the machine's speed, that is at most the whole transfer less the
	// time the client blocked; counting the client's time would make it
	// the whole transfer.
	mirrorTime := time.Duration(float64(size) / s.score * float64(time.Second))
	if mirrorTime > wall-client.blocked/2 {
		t.Fatalf("recorded %.1f MB/s, i.e. %v of mirror time in a transfer of %v where the client alone blocked %v",
			s.score/1e6, mirrorTime, wall, client.blocked)
	}
}

// The same, exactly, with a simulated mirror and clock: a body paced at a
// known rate and a client that takes a second for every write.
func TestServeMeasuresMirrorTimeOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 4 << 20
		const bps = 32768000 // 32 KiB per millisecond
		p := startBubblePool(t, Config{Workers: 1, Transport: pacedTransport{size: size, bps: bps}}, mirrorURL("a"))
		client := &sleepyClient{ResponseRecorder: httptest.NewRecorder(), delay: time.Second}
		start := time.Now()
		if err := p.Serve(client, httptest.NewRequest(http.MethodGet, "/f", nil), "f"); err != nil {
			t.Fatal(err)
		}
		if client.Body.Len() != size {
			t.Fatalf("client got %d bytes", client.Body.Len())
		}
		s := statsOf(t, p, mirrorURL("a"))
		if s.count != 1 || !near(s.score, bps) {
			t.Fatalf("recorded %v B/s, want the mirror's %v (the transfer took %v, mostly the client's)",
				s.score, float64(bps), time.Since(start))
		}
	})
}

// pacedTransport answers every request with a body of size bytes that
// arrives at bps bytes per second of the (fake) clock.
type pacedTransport struct {
	size int
	bps  float64
}

func (pt pacedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Length": {strconv.Itoa(pt.size)}},
		ContentLength: int64(pt.size),
		Body:          &pacedBody{left: pt.size, bps: pt.bps},
		Request:       r,
	}, nil
}

type pacedBody struct {
	left int
	bps  float64
}

func (b *pacedBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), b.left, 64<<10)
	time.Sleep(time.Duration(float64(n) / b.bps * float64(time.Second)))
	clear(p[:n])
	b.left -= n
	return n, nil
}

func (b *pacedBody) Close() error { return nil }

// sleepyClient takes delay for every Write.
type sleepyClient struct {
	*httptest.ResponseRecorder
	delay time.Duration
}

func (c *sleepyClient) Write(b []byte) (int, error) {
	time.Sleep(c.delay)
	return c.ResponseRecorder.Write(b)
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in                string
		first, last, size int64
		ok                bool
	}{
		{"bytes 0-9/10", 0, 9, 10, true},
		{"bytes 0-0/1", 0, 0, 1, true},
		{"bytes 1000-1999/300000", 1000, 1999, 300000, true},
		{"bytes 5-9/*", 5, 9, -1, true},
		{"bytes 0-9223372036854775806/9223372036854775807", 0, 9223372036854775806, 9223372036854775807, true},
		{"", 0, -1, -1, false},
		{"bytes", 0, -1, -1, false},
		{"bytes ", 0, -1, -1, false},
		{"bytes 0-9", 0, -1, -1, false},                      // no size
		{"bytes 0/10", 0, -1, -1, false},                     // no last
		{"bytes */10", 0, -1, -1, false},                     // unsatisfied-range form
		{"bytes -5/10", 0, -1, -1, false},                    // suffix form is for requests
		{"bytes -1-9/10", 0, -1, -1, false},                  // negative first
		{"bytes 9-0/10", 0, -1, -1, false},                   // last < first
		{"bytes 0-10/10", 0, -1, -1, false},                  // last beyond the size
		{"bytes 0-9/9", 0, -1, -1, false},                    // size too small
		{"bytes 0-9/-1", 0, -1, -1, false},                   // negative size
		{"bytes a-9/10", 0, -1, -1, false},                   // not a number
		{"bytes 0-b/10", 0, -1, -1, false},                   // not a number
		{"bytes 0-9/c", 0, -1, -1, false},                    // not a number
		{"bytes 0-9/10/11", 0, -1, -1, false},                // two sizes
		{"bytes  0-9/10", 0, -1, -1, false},                  // extra space
		{"bytes 0-9/10 ", 0, -1, -1, false},                  // trailing space
		{"items 0-9/10", 0, -1, -1, false},                   // other unit
		{"bytes=0-9/10", 0, -1, -1, false},                   // request syntax
		{"bytes 0-99999999999999999999/1", 0, -1, -1, false}, // overflow
	}
	for _, tt := range tests {
		first, last, size, err := parseContentRange(tt.in)
		if (err == nil) != tt.ok || first != tt.first || last != tt.last || size != tt.size {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d, ok %v",
				tt.in, first, last, size, err, tt.first, tt.last, tt.size, tt.ok)
		}
	}
}

// When no untried mirror is left, the attempt is the last one whatever
// Retries says, so the peek timeout must not apply: a pool of one slow
// mirror (a static list of one, or a slow link) should serve slowly, not
// fail every file larger than PeekTimeout's worth of bytes.
func TestServeLastUntriedMirrorHasNoPeekTimeout(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 2} {
		files := mirrorFiles(160 << 10)
		var ms []*testmirror.Mirror
		for range n {
			m := testmirror.New(t, files)
			m.SetRate(256 << 10) // the peek needs about 0.5 s
			ms = append(ms, m)
		}
		p := servePool(t, Config{Retries: 3, PeekSize: 128 << 10, PeekTimeout: 100 * time.Millisecond}, ms...)
		// The last is ranked and thought faster: the first, on trial, is
		// tried first, and its peek times out.
		setSamples(t, p, ms[n-1].Base(), 10<<20, 10<<20, 10<<20)
		rec, err := serve(t, p, nil, pkgName)
		wantFile(t, rec, err, ms[n-1], files[pkgName])
	}
}

// A client that goes away is not the mirror's fault.
func TestServeClientGoneIsNotAFailure(t *testing.T) {
	m := testmirror.New(t, mirrorFiles(1000))
	m.SetFault(testmirror.HangHeaders, pkgName, 0)
	p := servePool(t, Config{}, m)
	ctx, cancel := context.WithCancel(t.Context())
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/"+pkgName, nil)
	done := make(chan error, 1)
	go func() {
		_, err := serve(t, p, req, pkgName)
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for m.Active() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the mirror")
		}
		<-tick.C
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve: %v, want context.Canceled", err)
	}
	if s := statsOf(t, p, m.Base()); s.failures != 0 || s.count != 0 {
		t.Fatalf("the mirror was blamed for the client: %+v", s)
	}
}

// TestBlockSizes: a body that says it is small travels in a small block,
// not a whole one; unknown or larger bodies take full blocks.
func TestBlockSizes(t *testing.T) {
	for _, tc := range []struct {
		size int64
		want int
	}{
		{0, smallBlockSize},
		{100, smallBlockSize},
		{smallBlockSize, smallBlockSize},
		{smallBlockSize + 1, blockSize},
		{300 << 20, blockSize},
		{-1, blockSize},
	} {
		b := newBlock(tc.size)
		if len(b.buf) != tc.want || b.n != 0 {
			t.Errorf("body of %d bytes: block of %d bytes (%d used), want %d empty", tc.size, len(b.buf), b.n, tc.want)
		}
		b.n = 10
		b.release()
		if again := newBlock(tc.size); len(again.buf) != tc.want || again.n != 0 {
			t.Errorf("body of %d bytes: recycled block of %d bytes (%d used), want %d empty", tc.size, len(again.buf), again.n, tc.want)
		}
	}
}
