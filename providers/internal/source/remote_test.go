package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/pool"
)

// clock is a fake clock that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 22, 18, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// server is a list server on 127.0.0.1 whose answer the test changes.
type server struct {
	*httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	handler  http.HandlerFunc
	agents   []string
}

func newServer(t *testing.T, body string) *server {
	t.Helper()
	s := &server{}
	s.serve(body)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		h := s.handler
		s.agents = append(s.agents, r.UserAgent())
		s.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// serve makes the server answer 200 with body.
func (s *server) serve(body string) {
	s.set(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, body) })
}

func (s *server) set(h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = h
}

// parseLines is a parser for tests: one mirror URL a line.
func parseLines(data []byte) (Result, error) {
	var b Builder
	n := 0
	for line := range strings.Lines(string(data)) {
		if line = strings.TrimSpace(line); line != "" {
			n++
			b.Add(fmt.Sprintf("line %d", n), line, time.Time{})
		}
	}
	res := b.Result(n)
	if len(res.Candidates) == 0 {
		return res, errors.New("no mirrors")
	}
	return res, nil
}

func urls(cands []pool.Candidate) string {
	var s []string
	for _, c := range cands {
		s = append(s, c.URL)
	}
	return strings.Join(s, " ")
}

// memStorage is an in-memory Storage.
type memStorage struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memStorage) Load(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if !ok {
		return nil, errors.New("not found")
	}
	return v, nil
}

func (s *memStorage) Store(_ context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[key] = bytes.Clone(value)
	return nil
}

func newRemote(t *testing.T, url string, clk *clock, st Storage) *Remote {
	t.Helper()
	r := NewRemote(RemoteConfig{
		Provider: "test",
		URL:      url,
		Parse:    parseLines,
		Refresh:  time.Hour,
		Timeout:  10 * time.Second,
		Storage:  st,
		Ext:      "txt",
		Now:      clk.now,
	})
	t.Cleanup(r.Close)
	return r
}

func mustCandidates(t *testing.T, r *Remote) string {
	t.Helper()
	cands, err := r.Candidates(context.Background())
	if err != nil {
		t.Fatalf("Candidates: %v", err)
	}
	return urls(cands)
}

const (
	listA = "https://a.example/\nhttps://b.example/\n"
	listB = "https://c.example/\n"
	wantA = "https://a.example/ https://b.example/"
	wantB = "https://c.example/"
)

func TestRemoteFetchesLazilyAndRefreshes(t *testing.T) {
	srv := newServer(t, listA)
	clk := newClock()
	r := newRemote(t, srv.URL+"/mirrors.txt", clk, nil)
	if n := srv.requests.Load(); n != 0 {
		t.Fatalf("%d requests before the first call; want none", n)
	}
	if got := mustCandidates(t, r); got != wantA {
		t.Fatalf("got %q, want %q", got, wantA)
	}
	clk.advance(59 * time.Minute)
	srv.serve(listB)
	if got := mustCandidates(t, r); got != wantA {
		t.Fatalf("within refresh: got %q, want the cached %q", got, wantA)
	}
	if n := srv.requests.Load(); n != 1 {
		t.Fatalf("%d requests within the refresh interval; want 1", n)
	}
	clk.advance(time.Minute)
	if got := mustCandidates(t, r); got != wantB {
		t.Fatalf("after refresh: got %q, want %q", got, wantB)
	}
	if n := srv.requests.Load(); n != 2 {
		t.Fatalf("%d requests; want 2", n)
	}
	if ua := srv.agents[0]; !strings.Contains(ua, "refractor") {
		t.Errorf("User-Agent %q does not name refractor", ua)
	}
}

// TestRemoteOutages: whatever goes wrong with the list server, the last
// good list stays, and the server is not asked again before the backoff.
func TestRemoteOutages(t *testing.T) {
	srv := newServer(t, listA)
	clk := newClock()
	r := newRemote(t, srv.URL+"/mirrors.txt", clk, nil)
	mustCandidates(t, r)

	outages := []struct {
		name string
		set  func()
	}{
		{"500", func() {
			srv.set(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusInternalServerError) })
		}},
		{"404", func() { srv.set(http.NotFound) }},
		{"garbage", func() { srv.serve("<html>maintenance</html>\n") }},
		{"empty", func() { srv.serve("") }},
		{"too large", func() { srv.serve(strings.Repeat("x", MaxBytes+1)) }},
		{"reset", func() {
			srv.set(func(w http.ResponseWriter, _ *http.Request) {
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					conn.Close()
				}
			})
		}},
	}
	clk.advance(time.Hour) // stale: the next call fetches
	for _, o := range outages {
		o.set()
		before := srv.requests.Load()
		if got := mustCandidates(t, r); got != wantA {
			t.Fatalf("%s: got %q, want the last good %q", o.name, got, wantA)
		}
		if n := srv.requests.Load() - before; n != 1 {
			t.Fatalf("%s: %d requests; want 1", o.name, n)
		}
		// Asked again at once: the backoff holds, no request.
		if got := mustCandidates(t, r); got != wantA {
			t.Fatalf("%s, again: got %q", o.name, got)
		}
		if n := srv.requests.Load() - before; n != 1 {
			t.Fatalf("%s: %d requests within the backoff; want 1", o.name, n)
		}
		clk.advance(maxBackoff)
	}

	// Connection refused: the server is gone.
	srv.Close()
	if got := mustCandidates(t, r); got != wantA {
		t.Fatalf("connection refused: got %q, want the last good %q", got, wantA)
	}
}

// TestRemoteBackoff checks the retry intervals: exponential from 5s,
// capped at 15m and at the refresh interval.
func TestRemoteBackoff(t *testing.T) {
	for _, tc := range []struct {
		refresh time.Duration
		want    []time.Duration
	}{
		{time.Hour, []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second,
			80 * time.Second, 160 * time.Second, 320 * time.Second, 640 * time.Second, 15 * time.Minute, 15 * time.Minute}},
		{time.Minute, []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}},
	} {
		t.Run(tc.refresh.String(), func(t *testing.T) {
			srv := newServer(t, "")
			srv.set(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusBadGateway) })
			clk := newClock()
			r := newRemote(t, srv.URL, clk, nil)
			r.cfg.Refresh = tc.refresh
			if _, err := r.Candidates(context.Background()); err == nil || !strings.Contains(err.Error(), "502") {
				t.Fatalf("first fetch: error %v, want one saying 502", err)
			}
			for i, wait := range tc.want {
				clk.advance(wait - time.Second)
				_, err := r.Candidates(context.Background())
				if n := srv.requests.Load(); n != int64(i+1) {
					t.Fatalf("retry %d came %s early", i+1, time.Second)
				}
				if err == nil || !strings.Contains(err.Error(), "next attempt in 1s") {
					t.Fatalf("within the backoff: error %v, want one saying when the next attempt is", err)
				}
				clk.advance(time.Second)
				if _, err := r.Candidates(context.Background()); err == nil {
					t.Fatal("no error from a failing server with no list")
				}
				if n := srv.requests.Load(); n != int64(i+2) {
					t.Fatalf("retry %d did not come after %s", i+1, wait)
				}
			}
			// Once the server is back, the backoff starts over.
			srv.serve(listA)
			clk.advance(tc.want[len(tc.want)-1])
			if got := mustCandidates(t, r); got != wantA {
				t.Fatalf("server back: got %q", got)
			}
			if r.failures != 0 {
				t.Fatalf("failures = %d after a good fetch", r.failures)
			}
		})
	}
}

func TestRemoteStorage(t *testing.T) {
	srv := newServer(t, listA)
	st := &memStorage{}
	clk := newClock()
	mustCandidates(t, newRemote(t, srv.URL, clk, st))
	key := StorageKey("test", srv.URL, "txt")
	if !strings.HasPrefix(key, "refractor/test/") || !strings.HasSuffix(key, ".txt") {
		t.Fatalf("storage key %q", key)
	}
	if string(st.m[key]) != listA {
		t.Fatalf("stored %q under %q, want the list", st.m[key], key)
	}

	// A restart without network: the saved list.
	srv.Close()
	r := newRemote(t, srv.URL, clk, st)
	if got := mustCandidates(t, r); got != wantA {
		t.Fatalf("after a restart offline: got %q, want the saved %q", got, wantA)
	}

	// A saved list the parser rejects is not used.
	st.m[key] = []byte("garbage only\n")
	r = newRemote(t, srv.URL, clk, st)
	if _, err := r.Candidates(context.Background()); err == nil {
		t.Fatal("an unusable saved list was used")
	}

	// A bad document is never saved.
	srv2 := newServer(t, "not a url\n")
	st2 := &memStorage{}
	r = newRemote(t, srv2.URL, clk, st2)
	if _, err := r.Candidates(context.Background()); err == nil {
		t.Fatal("no error for a list without mirrors")
	}
	if len(st2.m) != 0 {
		t.Fatalf("a bad list was saved: %q", st2.m)
	}
}

// TestRemoteOneFetchAtATime: callers with no list wait for the one fetch;
// callers with a stale list get it at once while the fetch runs.
func TestRemoteOneFetchAtATime(t *testing.T) {
	srv := newServer(t, "")
	arrived := make(chan struct{}, 10)
	release := make(chan struct{})
	srv.set(func(w http.ResponseWriter, _ *http.Request) {
		arrived <- struct{}{}
		<-release
		fmt.Fprint(w, listA)
	})
	clk := newClock()
	r := newRemote(t, srv.URL, clk, nil)

	const callers = 8
	results := make(chan string, callers)
	for range callers {
		go func() {
			cands, err := r.Candidates(context.Background())
			if err != nil {
				results <- err.Error()
				return
			}
			results <- urls(cands)
		}()
	}
	<-arrived
	close(release)
	for range callers {
		if got := <-results; got != wantA {
			t.Fatalf("caller got %q, want %q", got, wantA)
		}
	}
	if n := srv.requests.Load(); n != 1 {
		t.Fatalf("%d requests for %d concurrent callers; want 1", n, callers)
	}

	// Stale: one caller fetches, slowly; the others are not held up.
	clk.advance(time.Hour)
	release2 := make(chan struct{})
	srv.set(func(w http.ResponseWriter, _ *http.Request) {
		arrived <- struct{}{}
		<-release2
		fmt.Fprint(w, listB)
	})
	done := make(chan string)
	go func() {
		cands, _ := r.Candidates(context.Background())
		done <- urls(cands)
	}()
	<-arrived
	if got := mustCandidates(t, r); got != wantA {
		t.Fatalf("during a refresh: got %q, want the previous %q at once", got, wantA)
	}
	close(release2)
	if got := <-done; got != wantB {
		t.Fatalf("the refreshing caller got %q, want %q", got, wantB)
	}
}

// TestRemoteCloseCancelsFetch: Close ends a fetch under way, so nothing
// outlives the configuration.
func TestRemoteCloseCancelsFetch(t *testing.T) {
	srv := newServer(t, "")
	arrived := make(chan struct{})
	srv.set(func(w http.ResponseWriter, req *http.Request) {
		close(arrived)
		<-req.Context().Done()
	})
	r := newRemote(t, srv.URL, newClock(), nil)
	errc := make(chan error)
	go func() {
		_, err := r.Candidates(context.Background())
		errc <- err
	}()
	<-arrived
	r.Close()
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("error %v, want one saying the provider closed", err)
	}
}

func TestRemoteTimeout(t *testing.T) {
	srv := newServer(t, "")
	srv.set(func(w http.ResponseWriter, req *http.Request) { <-req.Context().Done() })
	r := newRemote(t, srv.URL, newClock(), nil)
	r.cfg.Timeout = 50 * time.Millisecond
	_, err := r.Candidates(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the deadline", err)
	}
}

func TestRemoteCallerCancels(t *testing.T) {
	srv := newServer(t, "")
	arrived := make(chan struct{})
	release := make(chan struct{})
	srv.set(func(w http.ResponseWriter, req *http.Request) {
		close(arrived)
		<-release
		fmt.Fprint(w, listA)
	})
	r := newRemote(t, srv.URL, newClock(), nil)
	fetched := make(chan error)
	go func() {
		_, err := r.Candidates(context.Background())
		fetched <- err
	}()
	<-arrived
	// A second caller, with no list to fall back on, waits until its
	// context ends.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Candidates(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want the caller's cancellation", err)
	}
	close(release)
	if err := <-fetched; err != nil {
		t.Fatalf("the fetching caller: %v", err)
	}
}

func TestLocationCheck(t *testing.T) {
	for _, tc := range []struct {
		loc  Location
		want string // "" for no error
	}{
		{Location{URL: "https://a.example/mirrors.txt"}, ""},
		{Location{URL: "https://a.example/status/json/?x=1"}, ""},
		{Location{Path: "/etc/mirrors"}, ""},
		{Location{}, "a url or a path is required"},
		{Location{URL: "https://a.example/", Path: "/x"}, "mutually exclusive"},
		{Location{URL: "ftp://a.example/list"}, "scheme must be http or https"},
		{Location{URL: "https://user:pw@a.example/"}, "user info"},
		{Location{URL: "https://a.example/", Refresh: 1e9}, "refresh: must be at least 1m0s"},
		{Location{URL: "https://a.example/", Timeout: -1}, "timeout: must be positive"},
		{Location{Path: "/x", Refresh: 6e10}, "only to a url"},
	} {
		err := tc.loc.Check("test")
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.loc, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "test provider: ") {
			t.Errorf("%+v: error %v, want one from the test provider saying %q", tc.loc, err, tc.want)
		}
	}
}

// TestRemoteMarksWhereItsMirrorsCameFrom: a list fetched straight from a
// non-public address (this test's 127.0.0.1) may name LAN mirrors; one
// redirected there, or from storage (where it came from is unknown), may
// not (pool.Candidate.Remote).
func TestRemoteMarksWhereItsMirrorsCameFrom(t *testing.T) {
	remote := func(t *testing.T, r *Remote) []bool {
		t.Helper()
		cands, err := r.Candidates(context.Background())
		if err != nil {
			t.Fatalf("Candidates: %v", err)
		}
		var out []bool
		for _, c := range cands {
			out = append(out, c.Remote)
		}
		return out
	}
	srv := newServer(t, listA)
	st := &memStorage{}
	clk := newClock()
	if got := remote(t, newRemote(t, srv.URL, clk, st)); !slices.Equal(got, []bool{false, false}) {
		t.Fatalf("fetched from 127.0.0.1: Remote %v, want false for each", got)
	}
	redirect := newServer(t, "")
	redirect.set(func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, srv.URL, http.StatusFound) })
	if got := remote(t, newRemote(t, redirect.URL, clk, nil)); !slices.Equal(got, []bool{true, true}) {
		t.Fatalf("after a redirect: Remote %v, want true for each", got)
	}
	srv.Close()
	if got := remote(t, newRemote(t, srv.URL, clk, st)); !slices.Equal(got, []bool{true, true}) {
		t.Fatalf("from storage: Remote %v, want true for each", got)
	}
}
