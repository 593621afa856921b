package refractor

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// globalOptions is the head of every test Caddyfile.
var globalOptions = fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	skip_install_trust
	grace_period 1ns
}
`, adminPort, httpPort, httpsPort)

// startCaddy loads a Caddyfile whose site block serves refractor under
// /archlinux/ with the given refractor block body.
func startCaddy(t *testing.T, refractorBlock string) *caddytest.Tester {
	t.Helper()
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{
		AdminPort:          adminPort,
		TestRequestTimeout: 60 * time.Second,
		LoadRequestTimeout: 10 * time.Second,
	})
	tester.InitServer(globalOptions+fmt.Sprintf(`
http://localhost:%d {
	handle_path /archlinux/* {
		refractor {
%s
		}
	}
	handle_errors {
		respond "handled: {err.message}" {err.status_code}
	}
}
`, httpPort, refractorBlock), "caddyfile")
	return tester
}

func url(path string) string { return fmt.Sprintf("http://localhost:%d/archlinux/%s", httpPort, path) }

// testFiles is a small repository: a database that changes in place and
// packages of several sizes.
func testFiles() map[string][]byte {
	files := map[string][]byte{}
	for name, size := range map[string]int{
		"core/os/x86_64/core.db":                      48 << 10,
		"core/os/x86_64/small-1.0-1-any.pkg.tar.zst":  3 << 10,
		"core/os/x86_64/medium-1.0-1-any.pkg.tar.zst": 300 << 10,
		"core/os/x86_64/big-1.0-1-any.pkg.tar.zst":    5 << 20,
	} {
		files[name] = testmirror.Content(name, size)
	}
	return files
}

func get(t *testing.T, tester *caddytest.Tester, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := tester.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

func newRequest(t *testing.T, method, path string, headers ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return req
}

func TestDownloadsAreByteIdentical(t *testing.T) {
	files := testFiles()
	a, b := testmirror.New(t, files), testmirror.New(t, files)
	dead := testmirror.Dead(t)
	tester := startCaddy(t, fmt.Sprintf(`
			workers 3
			provider static %s %s %s`, dead, a.Base(), b.Base()))

	for name, want := range files {
		for range 3 {
			resp, body := get(t, tester, newRequest(t, http.MethodGet, name, "Cookie", "secret=1", "Authorization", "Basic eDp5"))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: status %d: %s", name, resp.StatusCode, body)
			}
			if !bytes.Equal(body, want) {
				t.Fatalf("GET %s: got %d bytes, not the file's %d bytes", name, len(body), len(want))
			}
			if m := resp.Header.Get("Refractor-Mirror"); m != a.Base() && m != b.Base() {
				t.Fatalf("GET %s: served by %q, want one of the live mirrors", name, m)
			}
		}
	}
	for _, m := range []*testmirror.Mirror{a, b} {
		if h := m.LastHeaders(); h != nil && (h.Get("Cookie") != "" || h.Get("Authorization") != "") {
			t.Errorf("mirror received client credentials: %v", h)
		}
	}
}

func TestRangeHeadAndConditionalRequests(t *testing.T) {
	files := testFiles()
	m := testmirror.New(t, files)
	tester := startCaddy(t, "provider static "+m.Base())
	name := "core/os/x86_64/big-1.0-1-any.pkg.tar.zst"
	want := files[name]

	resp, body := get(t, tester, newRequest(t, http.MethodGet, name, "Range", "bytes=1000-1999"))
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want[1000:2000]) {
		t.Fatalf("Range: status %d, %d bytes; want 206 and bytes 1000-1999", resp.StatusCode, len(body))
	}
	if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes 1000-1999/%d", len(want)) {
		t.Errorf("Content-Range = %q", cr)
	}

	resp, body = get(t, tester, newRequest(t, http.MethodHead, name))
	if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.ContentLength != int64(len(want)) {
		t.Fatalf("HEAD: status %d, body %d bytes, Content-Length %d; want 200, no body, %d",
			resp.StatusCode, len(body), resp.ContentLength, len(want))
	}

	since := testmirror.ModTime.Add(time.Hour).Format(http.TimeFormat)
	resp, body = get(t, tester, newRequest(t, http.MethodGet, "core/os/x86_64/core.db", "If-Modified-Since", since))
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Fatalf("If-Modified-Since: status %d with %d bytes, want 304", resp.StatusCode, len(body))
	}
}

func TestBadRequestsAreRejected(t *testing.T) {
	m := testmirror.New(t, testFiles())
	tester := startCaddy(t, "sync_file off\nprovider static "+m.Base()) // no probes: count only requests
	before := m.Requests()

	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions} {
		resp, _ := get(t, tester, newRequest(t, method, "core/os/x86_64/core.db"))
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: status %d, Allow %q; want 405 with Allow: GET, HEAD", method, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	for _, raw := range []string{
		"core/os/%2e%2e/%2e%2e/etc/passwd",
		"core/os/.%2e/x86_64/core.db",
		"core/..%2fsecret",
		"core%5c..%5csecret",
		"core/os/x86_64/core.db%00",
		strings.Repeat("a/", 3000),
	} {
		req := newRequest(t, http.MethodGet, "")
		req.URL.Opaque = "/archlinux/" + raw // sent exactly as written
		before := m.Requests()
		resp, _ := get(t, tester, req)
		t.Logf("%s -> %d (%d mirror requests)", raw, resp.StatusCode, m.Requests()-before)
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("GET %s: status %d, want a 4xx", raw, resp.StatusCode)
		}
	}
	if got := m.Requests() - before; got != 0 {
		t.Errorf("%d bad requests reached the mirror", got)
	}
}

func TestMissingFileAndDeadMirrors(t *testing.T) {
	files := testFiles()
	a, b := testmirror.New(t, files), testmirror.New(t, files)
	tester := startCaddy(t, fmt.Sprintf(`
			retries 2
			provider static %s %s`, a.Base(), b.Base()))

	// Errors go through Caddy's error handling: the site's handle_errors
	// route answers them, with the message that says why.
	resp, body := get(t, tester, newRequest(t, http.MethodGet, "core/os/x86_64/core.db.sig"))
	if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(string(body), "handled: refractor: ") || !strings.Contains(string(body), "not found on 2 mirrors") {
		t.Fatalf("a file no mirror has: status %d (%s), want 404 from handle_errors", resp.StatusCode, body)
	}

	a.SetFault(testmirror.Status500, "", 0)
	b.SetFault(testmirror.Status500, "", 0)
	resp, body = get(t, tester, newRequest(t, http.MethodGet, "core/os/x86_64/small-1.0-1-any.pkg.tar.zst"))
	if resp.StatusCode != http.StatusBadGateway || !strings.HasPrefix(string(body), "handled: ") || !strings.Contains(string(body), a.Base()) || !strings.Contains(string(body), b.Base()) {
		t.Fatalf("all mirrors failing: status %d, body %q; want 502 from handle_errors naming both mirrors", resp.StatusCode, body)
	}

	a.SetFault(testmirror.NoFault, "", 0)
	b.SetFault(testmirror.NoFault, "", 0)

	// A stale mirror's 404 never reaches the client while another has it.
	a.SetFault(testmirror.Status404, "medium", 0)
	for range 4 {
		resp, body := get(t, tester, newRequest(t, http.MethodGet, "core/os/x86_64/medium-1.0-1-any.pkg.tar.zst"))
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Refractor-Mirror") != b.Base() {
			t.Fatalf("status %d from %q (%s), want 200 from %s", resp.StatusCode, resp.Header.Get("Refractor-Mirror"), body, b.Base())
		}
	}
}

func TestPoolConvergesOnFastMirrors(t *testing.T) {
	files := map[string][]byte{}
	var names []string
	for i := range 8 {
		name := fmt.Sprintf("extra/os/x86_64/pkg%d-1.0-1-any.pkg.tar.zst", i)
		files[name] = testmirror.Content(name, 320<<10)
		names = append(names, name)
	}
	var slow, fast []*testmirror.Mirror
	for range 4 {
		m := testmirror.New(t, files)
		m.SetRate(1 << 20)
		slow = append(slow, m)
	}
	for range 2 {
		fast = append(fast, testmirror.New(t, files))
	}
	var list []string
	for _, m := range append(slow, fast...) { // the slow mirrors come first
		list = append(list, m.Base())
	}
	tester := startCaddy(t, fmt.Sprintf(`
			workers 3
			resign 1
			trial 2
			window 4
			good_throughput 32MiB
			peek_timeout 5s
			provider static %s`, strings.Join(list, " ")))
	isFast := map[string]bool{fast[0].Base(): true, fast[1].Base(): true}

	// Three clients download in parallel until the last 30 responses all
	// came from the fast mirrors, or 400 downloads have not got there.
	type result struct {
		mirror string
		err    error
	}
	const parallel, limit, streak = 3, 400, 30
	results := make(chan result)
	next := make(chan string)
	done := make(chan struct{})
	defer close(done)
	for range parallel {
		go func() {
			for name := range next {
				resp, err := tester.Client.Get(url(name))
				r := result{err: err}
				if err == nil {
					body, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					r.mirror = resp.Header.Get("Refractor-Mirror")
					switch {
					case rerr != nil:
						r.err = rerr
					case resp.StatusCode != http.StatusOK:
						r.err = fmt.Errorf("status %d", resp.StatusCode)
					case !bytes.Equal(body, files[name]):
						r.err = fmt.Errorf("%s: corrupt body from %s", name, r.mirror)
					}
				}
				select {
				case results <- r:
				case <-done:
					return
				}
			}
		}()
	}
	go func() {
		defer close(next)
		for i := range limit {
			select {
			case next <- names[i%len(names)]:
			case <-done:
				return
			}
		}
	}()
	run := 0
	for i := range limit {
		r := <-results
		if r.err != nil {
			t.Fatalf("download %d: %v", i, r.err)
		}
		if !isFast[r.mirror] {
			run = 0
			continue
		}
		if run++; run == streak {
			t.Logf("converged after %d downloads", i+1)
			return
		}
	}
	t.Fatalf("after %d downloads the pool still serves from slow mirrors", limit)
}

func TestStaleMirrorNeverServesTheDatabase(t *testing.T) {
	fresh, stale := testFiles(), testFiles()
	fresh["lastsync"] = []byte("1795000000\n")
	stale["lastsync"] = []byte("1794990000\n")
	stale["core/os/x86_64/core.db"] = testmirror.Content("an older core.db", 40<<10)
	var mirrors []string
	staleMirror := testmirror.New(t, stale)
	freshMirror := testmirror.New(t, fresh)
	mirrors = append(mirrors, staleMirror.Base(), freshMirror.Base())
	tester := startCaddy(t, fmt.Sprintf(`
			workers 2
			provider static %s`, strings.Join(mirrors, " ")))

	// Until the fresh mirror's sync time is known the stale one could be
	// taken for the freshest: wait for both probes (the pool reads each
	// mirror's lastsync as it joins).
	waitFor(t, "the pool to read both mirrors' lastsync", func() bool {
		known := 0
		for _, ps := range poolStatuses() {
			for _, w := range ps.Workers {
				if !w.LastSync.IsZero() {
					known++
				}
			}
		}
		return known == 2
	})
	servedPackages := map[string]int{}
	for range 20 {
		resp, body := get(t, tester, newRequest(t, http.MethodGet, "core/os/x86_64/core.db"))
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, fresh["core/os/x86_64/core.db"]) {
			t.Fatalf("core.db: status %d from %s: not the fresh database", resp.StatusCode, resp.Header.Get("Refractor-Mirror"))
		}
		resp, _ = get(t, tester, newRequest(t, http.MethodGet, "core/os/x86_64/small-1.0-1-any.pkg.tar.zst"))
		servedPackages[resp.Header.Get("Refractor-Mirror")]++
	}
	if servedPackages[staleMirror.Base()] == 0 {
		t.Errorf("packages were served only by %v: the stale mirror should still serve files that do not change", servedPackages)
	}
}

// waitFor polls cond until it holds, failing the test after 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHostileRequestTargets sends request targets a normal client never
// would, over a raw connection: none reaches a mirror.
func TestHostileRequestTargets(t *testing.T) {
	m := testmirror.New(t, testFiles())
	startCaddy(t, "sync_file off\nprovider static "+m.Base()) // no probes: count only requests
	host := fmt.Sprintf("localhost:%d", httpPort)
	for _, tc := range []struct {
		request string
		want    int
	}{
		// absolute-form: the client must not choose what is contacted
		{"GET http://" + host + "/archlinux/core/os/x86_64/core.db HTTP/1.1\r\nHost: " + host + "\r\n\r\n", http.StatusBadRequest},
		{"GET http://127.0.0.1:1/archlinux/core/os/x86_64/core.db HTTP/1.1\r\nHost: " + host + "\r\n\r\n", 0},
		{"CONNECT /archlinux/core/os/x86_64/core.db HTTP/1.1\r\nHost: " + host + "\r\n\r\n", http.StatusMethodNotAllowed},
		{"GET /archlinux/core/os/x86_64/core.db\x01 HTTP/1.1\r\nHost: " + host + "\r\n\r\n", 0},
		{"GET /archlinux/core/os/x86_64/%zz HTTP/1.1\r\nHost: " + host + "\r\n\r\n", http.StatusBadRequest},
		{"GET /archlinux/core/os/%2E%2E/x86_64/core.db HTTP/1.1\r\nHost: " + host + "\r\n\r\n", http.StatusBadRequest},
		// out of the handle_path prefix altogether: Caddy's own routing
		{"GET /archlinux/core/os/%2E%2E/%2E%2E/%2E%2E/etc/passwd HTTP/1.1\r\nHost: " + host + "\r\n\r\n", 0},
	} {
		before := m.Requests()
		status := rawRequest(t, tc.request)
		if tc.want != 0 && status != tc.want {
			t.Errorf("%q: status %d, want %d", tc.request, status, tc.want)
		}
		if tc.want == 0 && status < 400 && status != 200 {
			t.Errorf("%q: status %d, want a 4xx or Caddy's empty answer", tc.request, status)
		}
		if m.Requests() != before {
			t.Errorf("%q reached the mirror", tc.request)
		}
	}
}

// rawRequest writes a request verbatim and returns the response status.
func rawRequest(t *testing.T, request string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", httpPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%q: %v", request, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
