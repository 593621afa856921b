package pool

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// TestTransferMovesToAFasterMirror: a package streaming from a slow mirror
// moves, mid-way, to a much faster mirror that became idle, and the client
// gets one intact response.
func TestTransferMovesToAFasterMirror(t *testing.T) {
	const name = "extra/os/x86_64/big-1.0-1-any.pkg.tar.zst"
	files := map[string][]byte{name: testmirror.Content(name, 8<<20)}
	slow, fast := testmirror.New(t, files), testmirror.New(t, files)
	slow.SetRate(1 << 20)
	p, err := New(Config{
		Workers:      2,
		TrialSamples: 1,
		Resign:       -1,
		PeekTimeout:  10 * time.Second,
		SyncFile:     "-",
		Provider: ProviderFunc(func(context.Context) ([]Candidate, error) {
			return []Candidate{{URL: slow.Base()}, {URL: fast.Base()}}, nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.closeNow)
	waitForWorkers(t, p, 2)
	// What the pool has learned: the fast mirror is fast, the slow one slow.
	p.mu.Lock()
	var fastWorker *worker
	for _, w := range p.workers {
		if w.key == fast.Base() {
			fastWorker = w
			p.record(w.key, w.stats, outcome{success: true, bytes: 64 << 20, elapsed: time.Second})
		} else {
			p.record(w.key, w.stats, outcome{success: true, bytes: 1 << 20, elapsed: time.Second})
		}
	}
	p.claim(fastWorker) // busy elsewhere: the request goes to the slow mirror
	p.mu.Unlock()

	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := p.Serve(w, r, strings.TrimPrefix(r.URL.Path, "/")); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}))
	t.Cleanup(front.Close)
	resp, err := front.Client().Get(front.URL + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got bytes.Buffer
	if _, err := io.CopyN(&got, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	p.release(fastWorker, outcome{}) // the fast mirror is free now
	if _, err := io.Copy(&got, resp.Body); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), files[name]) {
		t.Fatalf("got %d bytes, not the file's %d", got.Len(), len(files[name]))
	}
	if rng := fast.LastHeaders().Get("Range"); !strings.HasPrefix(rng, "bytes=") || strings.HasPrefix(rng, "bytes=0-") {
		t.Fatalf("the fast mirror was asked for %q, want the rest of the file", rng)
	}
	if resp.Header.Get(MirrorHeader) != slow.Base() {
		t.Errorf("%s = %q, want the mirror that started it", MirrorHeader, resp.Header.Get(MirrorHeader))
	}
}

// waitForWorkers polls until the pool has n workers.
func waitForWorkers(t *testing.T, p *Pool, n int) {
	t.Helper()
	pollFor(t, 5*time.Second, fmt.Sprintf("the pool to have %d workers", n), func() bool { return len(p.Status().Workers) >= n })
}
