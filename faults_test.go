package refractor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// failuresOf returns how many failures the live pools have counted against
// mirror.
func failuresOf(mirror string) int64 {
	var n int64
	for _, ps := range poolStatuses() {
		for _, w := range ps.Workers {
			if w.Mirror == mirror {
				n += w.Failures
			}
		}
	}
	return n
}

// TestMirrorFaults crosses the ways public mirrors fail with the kinds of
// request clients make: the client always gets the exact bytes, and the
// faulty mirror's standing drops.
func TestMirrorFaults(t *testing.T) {
	files := testFiles()
	faulty, good := testmirror.New(t, files), testmirror.New(t, files)
	// Both mirrors stay on trial, so the faulty one, listed first, always
	// gets the first attempt; nothing resigns or is evicted mid-table.
	tester := startCaddy(t, fmt.Sprintf(`
			workers 2
			window 1000
			trial 1000
			resign 0
			evict_after 1000
			sync_file off
			retries 2
			peek_timeout 300ms
			header_timeout 500ms
			stall_timeout 500ms
			provider static %s %s`, faulty.Base(), good.Base()))

	small, large := "core/os/x86_64/small-1.0-1-any.pkg.tar.zst", "core/os/x86_64/big-1.0-1-any.pkg.tar.zst"
	kinds := []struct {
		name     string
		method   string
		path     string
		rng      string // Range header
		want     []byte
		faultAt  int // where mid-body faults strike, in body bytes
		hasBody  bool
		wantCode int
	}{
		{"GET small", http.MethodGet, small, "", files[small], 1 << 10, true, http.StatusOK},
		{"GET large", http.MethodGet, large, "", files[large], 2 << 20, true, http.StatusOK},
		{"HEAD", http.MethodHead, large, "", nil, 0, false, http.StatusOK},
		{"Range", http.MethodGet, large, "bytes=1000-", files[large][1000:], 2 << 20, true, http.StatusPartialContent},
	}
	faults := []struct {
		name   string
		fault  testmirror.Fault
		rate   int  // trickle: bandwidth cap in bytes per second
		onBody bool // strikes only while a body is sent
	}{
		{"500", testmirror.Status500, 0, false},
		{"404 stale", testmirror.Status404, 0, false},
		{"reset before headers", testmirror.ResetAtOnce, 0, false},
		{"hang before headers", testmirror.HangHeaders, 0, false},
		{"redirect loop", testmirror.RedirectLoop, 0, false},
		{"redirect to ftp", testmirror.RedirectFTP, 0, false},
		{"huge headers", testmirror.HugeHeader, 0, false},
		{"reset mid-body", testmirror.ResetMidBody, 0, true},
		{"hang mid-body", testmirror.HangMidBody, 0, true},
		{"lying Content-Length", testmirror.ShortBody, 0, true},
		{"trickle", testmirror.NoFault, 4 << 10, true},
	}
	for _, f := range faults {
		for _, k := range kinds {
			t.Run(f.name+"/"+k.name, func(t *testing.T) {
				faulty.SetFault(f.fault, "", k.faultAt)
				faulty.SetRate(f.rate)
				defer faulty.SetFault(testmirror.NoFault, "", 0)
				defer faulty.SetRate(0)
				before, hits := failuresOf(faulty.Base()), faulty.Requests()

				headers := []string{}
				if k.rng != "" {
					headers = append(headers, "Range", k.rng)
				}
				resp, body := get(t, tester, newRequest(t, k.method, k.path, headers...))
				if resp.StatusCode != k.wantCode || !bytes.Equal(body, k.want) {
					t.Fatalf("status %d with %d bytes; want %d with the exact %d bytes", resp.StatusCode, len(body), k.wantCode, len(k.want))
				}
				if k.method == http.MethodHead && resp.ContentLength != int64(len(files[large])) {
					t.Errorf("HEAD Content-Length %d, want %d", resp.ContentLength, len(files[large]))
				}
				if faulty.Requests() == hits {
					t.Fatal("the faulty mirror was not tried first")
				}
				if (!f.onBody || k.hasBody) && failuresOf(faulty.Base()) <= before {
					t.Errorf("the faulty mirror's failures stayed at %d", before)
				}
			})
		}
	}
}

// TestMidTransferRecovery: a 50 MB package whose first mirror resets at 30%
// reaches the client complete, continued from another mirror at the exact
// offset.
func TestMidTransferRecovery(t *testing.T) {
	const name, size = "extra/os/x86_64/huge-1.0-1-x86_64.pkg.tar.zst", 50 << 20
	files := map[string][]byte{name: testmirror.Content(name, size)}
	first, second := testmirror.New(t, files), testmirror.New(t, files)
	first.SetFault(testmirror.ResetMidBody, "", size*3/10)
	tester := startCaddy(t, fmt.Sprintf(`
			workers 2
			provider static %s %s`, first.Base(), second.Base()))

	resp, body := get(t, tester, newRequest(t, http.MethodGet, name))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, files[name]) {
		t.Fatalf("status %d with %d bytes; want 200 with the exact %d bytes", resp.StatusCode, len(body), size)
	}
	if got := resp.Header.Get("Refractor-Mirror"); got != first.Base() {
		t.Fatalf("served by %s, want the first mirror %s", got, first.Base())
	}
	// The reset loses what was in flight, so the continuation starts where
	// the client's bytes stopped: somewhere before 30%, up to the end.
	var from, to int
	got := second.LastHeaders().Get("Range")
	if _, err := fmt.Sscanf(got, "bytes=%d-%d", &from, &to); err != nil || from <= 0 || from > size*3/10 || to != size-1 {
		t.Errorf("the second mirror was asked for %q, want bytes=N-%d with 0 < N <= %d", got, size-1, size*3/10)
	}
}

// TestBrokenTransfersAbortTheConnection: when a committed response cannot
// be completed correctly (a database, which may differ between mirrors, or
// a package no other mirror can continue), the client sees a failed
// download, never a short file that looks complete.
func TestBrokenTransfersAbortTheConnection(t *testing.T) {
	files := testFiles()
	db := "core/os/x86_64/core.db"
	files[db] = testmirror.Content(db, 3<<20)
	a, b := testmirror.New(t, files), testmirror.New(t, files)
	// Capped, so that a mirror cannot write all it sends into the socket
	// buffers and reset the connection before the peek has read it (a
	// reset discards what the reader has not read yet).
	a.SetRate(32 << 20)
	b.SetRate(32 << 20)
	tester := startCaddy(t, fmt.Sprintf(`
			workers 2
			evict_after 1000
			sync_file off
			peek_timeout 30s # a loaded machine's slow peek would retry before committing
			verify off       # it counts fetches: no second copy of the database to corroborate it
			provider static %s %s`, a.Base(), b.Base()))
	// One download first, during which b makes its parallel trial (a
	// sample: the file is large enough, so b makes no other): what the
	// subtests count is then their own fetches.
	medium := "core/os/x86_64/medium-1.0-1-any.pkg.tar.zst"
	download(t, tester, url(medium), files[medium])
	waitIdle(t)

	for _, tc := range []struct {
		name   string
		path   string
		faulty []*testmirror.Mirror
	}{
		// The database fails on both mirrors too, but must not even be
		// tried on the second: two mirrors' copies may differ.
		{"database", db, []*testmirror.Mirror{a, b}},
		{"package nobody can continue", "core/os/x86_64/big-1.0-1-any.pkg.tar.zst", []*testmirror.Mirror{a, b}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, m := range tc.faulty {
				m.SetFault(testmirror.ResetMidBody, "", 2<<20)
				defer m.SetFault(testmirror.NoFault, "", 0)
			}
			hits := a.Requests() + b.Requests()
			resp, err := tester.Client.Do(newRequest(t, http.MethodGet, tc.path))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil {
				t.Fatalf("the download of %s ended cleanly after %d of %d bytes (status %d)", tc.path, n, len(files[tc.path]), resp.StatusCode)
			}
			if n >= int64(len(files[tc.path])) {
				t.Fatalf("got %d bytes and an error", n)
			}
			if tc.path == db {
				if tried := a.Requests() + b.Requests() - hits; tried != 1 {
					t.Errorf("the database was fetched %d times, want once: never continued from another mirror", tried)
				}
			}
		})
	}
}

// TestClientDisconnectCancelsUpstream: a client that goes away stops the
// mirror's transfer promptly, and it does not count against the mirror.
func TestClientDisconnectCancelsUpstream(t *testing.T) {
	files := testFiles()
	m := testmirror.New(t, files)
	m.SetRate(2 << 20)
	tester := startCaddy(t, "provider static "+m.Base())

	ctx, cancel := context.WithCancel(context.Background())
	req := newRequest(t, http.MethodGet, "core/os/x86_64/big-1.0-1-any.pkg.tar.zst").WithContext(ctx)
	resp, err := tester.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	waitFor(t, "the mirror's transfer to stop", func() bool { return m.Active() == 0 })
	if f := failuresOf(m.Base()); f != 0 {
		t.Errorf("the client's leaving counted %d failures against the mirror", f)
	}
}

// TestQueueLimits: beyond max_queue waiting requests, or after
// queue_timeout, clients get 503 with Retry-After.
func TestQueueLimits(t *testing.T) {
	files := testFiles()
	m := testmirror.New(t, files)
	m.SetFault(testmirror.HangMidBody, "big", 2<<20)
	tester := startCaddy(t, fmt.Sprintf(`
			workers 1
			max_queue 1
			queue_timeout 300ms
			stall_timeout 1m
			provider static %s`, m.Base()))
	waitFor(t, "the mirror to join", func() bool {
		ps := poolStatuses()
		return len(ps) == 1 && len(ps[0].Workers) == 1
	})

	// The only worker is busy with a transfer that hangs.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hung, err := tester.Client.Do(newRequest(t, http.MethodGet, "core/os/x86_64/big-1.0-1-any.pkg.tar.zst").WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Body.Close()

	// One request may wait; it times out. A second, meanwhile, finds the
	// queue full.
	waited := make(chan *http.Response)
	go func() {
		resp, err := tester.Client.Do(newRequest(t, http.MethodGet, "core/os/x86_64/core.db"))
		if err != nil {
			t.Error(err)
		}
		waited <- resp
	}()
	waitFor(t, "a request to queue", func() bool { return poolStatuses()[0].Queued == 1 })
	resp, body := get(t, tester, newRequest(t, http.MethodGet, "core/os/x86_64/small-1.0-1-any.pkg.tar.zst"))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "queue is full") {
		t.Errorf("queue full: status %d, Retry-After %q, body %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	select {
	case resp := <-waited:
		if resp == nil {
			return
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("queue timeout: status %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the queued request was never answered")
	}
}
