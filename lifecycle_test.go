package refractor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/goleak"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// TestReloadKeepsRanking: after a config reload with the same provider, the
// new pool starts from the old pool's mirrors and what it learned of them.
func TestReloadKeepsRanking(t *testing.T) {
	files := testFiles()
	a, b := testmirror.New(t, files), testmirror.New(t, files)
	provider := fmt.Sprintf("provider static %s %s", a.Base(), b.Base())
	tester := startCaddy(t, "workers 2\n"+provider)
	for range 10 {
		resp, _ := get(t, tester, newRequest(t, http.MethodGet, "core/os/x86_64/medium-1.0-1-any.pkg.tar.zst"))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	waitIdle(t) // a transfer's sample is recorded just after the client has its body
	learned := samplesByMirror()
	if learned[a.Base()]+learned[b.Base()] == 0 {
		t.Fatal("no samples after 10 downloads")
	}

	startCaddy(t, "workers 3\n"+provider) // a reload: a new pool
	waitFor(t, "the new pool to take back both mirrors", func() bool { return len(samplesByMirror()) == 2 })
	if got := samplesByMirror(); got[a.Base()] != learned[a.Base()] || got[b.Base()] != learned[b.Base()] {
		t.Errorf("samples after the reload %v, want those learned before it %v", got, learned)
	}
}

// TestReloadWithAnEditedProviderKeepsWhatWasLearned: what a pool learns is
// kept per mirror, so a reload that edits the provider (here, one more
// mirror in the list, which renames the pool) keeps what was learned of
// the mirrors that stay.
func TestReloadWithAnEditedProviderKeepsWhatWasLearned(t *testing.T) {
	files := testFiles()
	a, b, c := testmirror.New(t, files), testmirror.New(t, files), testmirror.New(t, files)
	tester := startCaddy(t, fmt.Sprintf("workers 2\nprovider static %s %s", a.Base(), b.Base()))
	for range 10 {
		resp, _ := get(t, tester, newRequest(t, http.MethodGet, "core/os/x86_64/medium-1.0-1-any.pkg.tar.zst"))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	waitIdle(t)
	learned := samplesByMirror()
	if learned[a.Base()]+learned[b.Base()] == 0 {
		t.Fatal("no samples after 10 downloads")
	}

	startCaddy(t, fmt.Sprintf("workers 3\nprovider static %s %s %s", a.Base(), b.Base(), c.Base()))
	waitFor(t, "the new pool to have the three mirrors", func() bool { return len(samplesByMirror()) == 3 })
	got := samplesByMirror()
	if got[a.Base()] != learned[a.Base()] || got[b.Base()] != learned[b.Base()] || got[c.Base()] != 0 {
		t.Errorf("samples after the reload %v, want those learned before it %v (and none for the new mirror)", got, learned)
	}
}

// TestReloadDoesNotBringBackARemovedMirror: a mirror taken out of the
// provider's list does not come back with the reload, even when the pool
// keeps its name.
func TestReloadDoesNotBringBackARemovedMirror(t *testing.T) {
	files := testFiles()
	a, b := testmirror.New(t, files), testmirror.New(t, files)
	startCaddy(t, fmt.Sprintf("name edited\nworkers 2\nprovider static %s %s", a.Base(), b.Base()))
	waitFor(t, "both mirrors to join", func() bool { return len(adminPoolsByName(t)["edited"].Workers) == 2 })

	startCaddy(t, fmt.Sprintf("name edited\nworkers 2\nprovider static %s", b.Base()))
	waitFor(t, "the new pool to have b", func() bool {
		for _, w := range adminPoolsByName(t)["edited"].Workers {
			if w.Mirror == b.Base() {
				return true
			}
		}
		return false
	})
	for _, w := range adminPoolsByName(t)["edited"].Workers {
		if w.Mirror == a.Base() {
			t.Fatalf("%s, removed from the list, is back in the pool", a.Base())
		}
	}
}

// samplesByMirror returns the samples of every worker of every live pool.
func samplesByMirror() map[string]int {
	out := map[string]int{}
	for _, ps := range poolStatuses() {
		for _, w := range ps.Workers {
			out[w.Mirror] += w.Samples
		}
	}
	return out
}

// TestNoGoroutineSurvivesCleanup provisions the handler the way Caddy does,
// serves finished, failed and abandoned requests, cleans up, and checks no
// goroutine it started is left.
func TestNoGoroutineSurvivesCleanup(t *testing.T) {
	files := testFiles()
	a, b := testmirror.New(t, files), testmirror.New(t, files)
	b.SetFault(testmirror.Status500, "medium", 0)
	ignore := goleak.IgnoreCurrent()

	// A context with a configuration, as Caddy provisions handlers.
	dir := t.TempDir()
	ctx, err := caddy.ProvisionContext(&caddy.Config{StorageRaw: json.RawMessage(fmt.Sprintf(`{"module": "file_system", "root": %q}`, dir))})
	if err != nil {
		t.Fatal(err)
	}
	var h Handler
	// Its own storage (Caddy's is one store for every config of the
	// process, and other tests' configs hold it): the last handler using
	// it saves at Cleanup.
	cfg := fmt.Sprintf(`{"workers": 2, "storage": {"module": "file_system", "root": %q}, "provider": {"source": "static", "mirrors": [%q, %q]}}`, dir, a.Base(), b.Base())
	if err := json.Unmarshal([]byte(cfg), &h); err != nil {
		t.Fatal(err)
	}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h.ServeHTTP(w, r, nil)
	}))
	client := front.Client()
	for name, want := range files {
		resp, err := client.Get(front.URL + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(body, want) {
			t.Fatalf("%s: got %d bytes, want %d", name, len(body), len(want))
		}
	}
	// A client that leaves halfway.
	a.SetRate(1 << 20)
	reqCtx, stop := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, front.URL+"/core/os/x86_64/big-1.0-1-any.pkg.tar.zst", nil)
	if resp, err := client.Do(req); err == nil {
		_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
		stop()
		resp.Body.Close()
	}
	stop()

	front.Close()
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	// Cleanup returns at once; the pool, with nothing in flight, stops
	// right after.
	select {
	case <-h.pool.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the pool did not stop after Cleanup")
	}
	// The last handler's Cleanup saved what the pool learned.
	if saved, _ := filepath.Glob(filepath.Join(dir, "refractor", "learned", "own", "*.json")); len(saved) != 1 {
		t.Errorf("records saved at Cleanup: %v, want one", saved)
	}
	client.CloseIdleConnections()
	a.Close()
	b.Close()
	goleak.VerifyNone(t, ignore)
}
