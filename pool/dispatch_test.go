package pool

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// Committed work (a response the client already has part of) gets a free
// worker before new requests that came earlier.
func TestCommittedWorkGoesFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := mirrorURL("a")
		p := startBubblePool(t, Config{Workers: 1, Resign: -1}, a)
		w := workerOf(t, p, a)
		pickMirror(t, p)
		out := make(chan acquired, 3)
		enqueueWant(p, t.Context(), 1, want{exclude: map[string]bool{}}, out)
		enqueueWant(p, t.Context(), 2, want{exclude: map[string]bool{}, committed: true}, out)
		enqueueWant(p, t.Context(), 3, want{exclude: map[string]bool{}}, out)
		for _, id := range []int{2, 1, 3} {
			p.release(w, outcome{})
			if g := <-out; g.id != id || g.err != nil {
				t.Fatalf("the worker went to request %d (%v), want %d", g.id, g.err, id)
			}
		}
	})
}

// Committed work is never refused for a full queue, and waits the stall
// timeout, not the queue timeout.
func TestCommittedWorkIsBoundByTheStallTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := mirrorURL("a")
		p := startBubblePool(t, Config{Workers: 1, MaxQueue: 1, QueueTimeout: time.Hour, StallTimeout: time.Minute}, a)
		pickMirror(t, p)
		out := make(chan acquired, 2)
		enqueueWant(p, t.Context(), 1, want{exclude: map[string]bool{}}, out)
		if _, err := p.acquire(t.Context(), want{exclude: map[string]bool{}}); !errors.Is(err, errQueueFull) {
			t.Fatalf("a new request beyond max_queue: %v, want errQueueFull", err)
		}
		start := time.Now()
		enqueueWant(p, t.Context(), 2, want{exclude: map[string]bool{}, committed: true}, out)
		g := <-out
		if g.id != 2 || !errors.Is(g.err, errQueueTimeout) || g.at.Sub(start) != time.Minute {
			t.Fatalf("request %d ended with %v after %v, want the committed one to time out after the stall timeout", g.id, g.err, g.at.Sub(start))
		}
	})
}

// A freed worker goes to the waiter that prefers its mirror (a parked
// transfer resuming), ahead of waiters of the same rank.
func TestPreferredMirrorGoesToItsWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		p := startBubblePool(t, Config{Workers: 2, Resign: -1}, a, b)
		wa, wb := workerOf(t, p, a), workerOf(t, p, b)
		pickMirror(t, p)
		pickMirror(t, p)
		out := make(chan acquired, 2)
		enqueueWant(p, t.Context(), 1, want{exclude: map[string]bool{}, committed: true, prefer: a}, out)
		enqueueWant(p, t.Context(), 2, want{exclude: map[string]bool{}, committed: true, prefer: b}, out)
		p.release(wb, outcome{})
		if g := <-out; g.id != 2 || g.w != wb {
			t.Fatalf("b went to request %d, want 2, which prefers it", g.id)
		}
		p.release(wa, outcome{})
		if g := <-out; g.id != 1 || g.w != wa {
			t.Fatalf("a went to request %d, want 1", g.id)
		}
	})
}

// A pool that has no worker, with a provider that fails, answers within
// emptyWait, naming the provider's error, instead of holding the request
// for the whole queue timeout.
func TestEmptyPoolFailsFastNamingTheCause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := startBubblePool(t, Config{QueueTimeout: time.Hour, Provider: ProviderFunc(func(context.Context) ([]Candidate, error) {
			return nil, errors.New("mirror status unreachable")
		})})
		start := time.Now()
		_, err := p.acquire(t.Context(), want{exclude: map[string]bool{}})
		if !errors.Is(err, errNoWorkers) || !strings.Contains(err.Error(), "mirror status unreachable") || time.Since(start) != emptyWait {
			t.Fatalf("acquire in an empty pool: %v after %v, want errNoWorkers naming the provider's error after %v", err, time.Since(start), emptyWait)
		}
	})
}

// refetchRecorder counts what a pool reports as fetched again.
type refetchRecorder struct {
	recorder
	refetched atomic.Int64
}

func (r *refetchRecorder) Refetched(n int64) { r.refetched.Add(n) }

// stallingClient blocks its first write, as a client that stopped reading
// for a while.
type stallingClient struct {
	*httptest.ResponseRecorder
	stall   time.Duration
	writes  atomic.Int32
	onStall func() // if set, called as the stall begins
}

func (c *stallingClient) Write(b []byte) (int, error) {
	if c.writes.Add(1) == 1 {
		if c.onStall != nil {
			c.onStall()
		}
		time.Sleep(c.stall)
	}
	return c.ResponseRecorder.Write(b)
}

// A client that stalls with the peek waiting for it makes the transfer
// give up its worker and drop what it held; when the client reads on, the
// rest comes from the same mirror with a Range request, the dropped bytes
// are counted as fetched again, and the client gets the file intact.
func TestStalledClientParksAndResumes(t *testing.T) {
	t.Parallel()
	files := mirrorFiles(3 << 20)
	m := testmirror.New(t, files)
	obs := &refetchRecorder{}
	p := servePool(t, Config{Observer: obs, SkipVerify: true}, m) // it counts every request
	client := &stallingClient{ResponseRecorder: httptest.NewRecorder(), stall: 2 * parkAfter}
	if err := p.Serve(client, httptest.NewRequest(http.MethodGet, "/"+pkgName, nil), pkgName); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(client.Body.Bytes(), files[pkgName]) {
		t.Fatalf("got %d bytes, not the file's %d", client.Body.Len(), len(files[pkgName]))
	}
	if m.Requests() != 2 || !strings.HasPrefix(m.LastHeaders().Get("Range"), "bytes=") {
		t.Fatalf("the mirror got %d requests, the last with Range %q; want the rest asked for once", m.Requests(), m.LastHeaders().Get("Range"))
	}
	if obs.refetched.Load() <= 0 {
		t.Fatal("no bytes reported as fetched again")
	}
	if s := statsOf(t, p, m.Base()); s.failures != 0 {
		t.Fatalf("the mirror was blamed for its client: %+v", s)
	}
}
