package pool

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"
)

// acquired is what a queued acquire got.
type acquired struct {
	id  int
	w   *worker
	err error
	at  time.Time
}

// enqueue starts a request that waits for a worker, and returns once it is
// in the queue.
func enqueue(p *Pool, ctx context.Context, id int, exclude map[string]bool, out chan<- acquired) {
	if exclude == nil {
		exclude = map[string]bool{}
	}
	enqueueWant(p, ctx, id, want{exclude: exclude}, out)
}

// enqueueWant is enqueue with a whole want.
func enqueueWant(p *Pool, ctx context.Context, id int, wt want, out chan<- acquired) {
	go func() {
		w, err := p.acquire(ctx, wt)
		out <- acquired{id, w, err, time.Now()}
	}()
	synctest.Wait()
}

func queued(p *Pool) int { return p.Status().Queued }

// Waiting requests get workers in the order they came.
func TestQueueIsFIFO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := mirrorURL("a")
		p := startBubblePool(t, Config{Workers: 1, Resign: -1}, a)
		w := workerOf(t, p, a)
		if w0 := pickMirror(t, p); w0 != a {
			t.Fatal(w0)
		}
		out := make(chan acquired, 4)
		for id := range 4 {
			enqueue(p, t.Context(), id, nil, out)
		}
		if queued(p) != 4 {
			t.Fatalf("queued %d", queued(p))
		}
		for want := range 4 {
			p.release(w, outcome{})
			g := <-out
			if g.id != want || g.err != nil || g.w != w {
				t.Fatalf("hand-over %d went to request %d (%v)", want, g.id, g.err)
			}
		}
	})
}

// A waiter that already tried a mirror is skipped for that mirror's worker,
// and gets the next one it may use.
func TestQueueSkipsWaiterThatExcludesTheWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		p := startBubblePool(t, Config{Workers: 2, Resign: -1}, a, b)
		wa, wb := workerOf(t, p, a), workerOf(t, p, b)
		pickMirror(t, p)
		pickMirror(t, p)
		out := make(chan acquired, 2)
		enqueue(p, t.Context(), 1, map[string]bool{a: true}, out)
		enqueue(p, t.Context(), 2, nil, out)
		p.release(wa, outcome{})
		if g := <-out; g.id != 2 || g.w != wa {
			t.Fatalf("a went to request %d, want 2 (request 1 already tried a)", g.id)
		}
		p.release(wb, outcome{})
		if g := <-out; g.id != 1 || g.w != wb {
			t.Fatalf("b went to request %d, want 1", g.id)
		}
	})
}

// A request that has tried every mirror in the pool does not wait.
func TestAcquireAllExcluded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		p := startBubblePool(t, Config{Workers: 2}, a, b)
		pickMirror(t, p) // busy, and still excluded
		_, err := p.acquire(t.Context(), want{exclude: map[string]bool{a: true, b: true}})
		if !errors.Is(err, errNoUntried) {
			t.Fatalf("err %v, want errNoUntried", err)
		}
	})
}

// At most MaxQueue requests wait; more are refused at once.
func TestQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := mirrorURL("a")
		p := startBubblePool(t, Config{Workers: 1, MaxQueue: 2}, a)
		pickMirror(t, p)
		out := make(chan acquired, 2)
		enqueue(p, t.Context(), 1, nil, out)
		enqueue(p, t.Context(), 2, nil, out)
		start := time.Now()
		_, err := p.acquire(t.Context(), want{exclude: map[string]bool{}})
		if !errors.Is(err, errQueueFull) || time.Since(start) != 0 {
			t.Fatalf("third waiter: %v after %v, want errQueueFull at once", err, time.Since(start))
		}
		// Serve answers 503 with a Retry-After.
		rec := httptest.NewRecorder()
		err = p.Serve(rec, httptest.NewRequest(http.MethodGet, "/f", nil), "f")
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusServiceUnavailable || e.RetryAfter <= 0 {
			t.Fatalf("Serve with a full queue: %v, want a 503 *Error with RetryAfter", err)
		}
		if rec.Code != http.StatusOK || rec.Body.Len() != 0 || len(rec.Header()) != 0 {
			t.Fatalf("Serve wrote to the client before failing: %d %v", rec.Code, rec.Header())
		}
		p.release(workerOf(t, p, a), outcome{})
		p.release((<-out).w, outcome{})
		<-out
	})
}

// A request waits at most QueueTimeout, then leaves the queue; the worker
// freed later is not handed to it.
func TestQueueTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := mirrorURL("a")
		p := startBubblePool(t, Config{Workers: 1, QueueTimeout: 7 * time.Second}, a)
		pickMirror(t, p)
		out := make(chan acquired, 1)
		start := time.Now()
		enqueue(p, t.Context(), 1, nil, out)
		g := <-out
		if !errors.Is(g.err, errQueueTimeout) || g.at.Sub(start) != 7*time.Second {
			t.Fatalf("waiter got %v after %v, want errQueueTimeout after 7s", g.err, g.at.Sub(start))
		}
		if queued(p) != 0 {
			t.Fatalf("%d still queued", queued(p))
		}
		p.release(workerOf(t, p, a), outcome{})
		if w, err := p.acquire(t.Context(), want{exclude: map[string]bool{}}); err != nil || w.key != a {
			t.Fatalf("the worker was not idle after the timed-out waiter left: %v", err)
		}

		// Serve answers 503.
		start = time.Now()
		err := p.Serve(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/f", nil), "f")
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusServiceUnavailable || !errors.Is(err, errQueueTimeout) {
			t.Fatalf("Serve with no free worker: %v, want a 503 *Error", err)
		}
		if time.Since(start) != 7*time.Second {
			t.Fatalf("Serve gave up after %v", time.Since(start))
		}
	})
}

// A waiter whose client goes away leaves the queue.
func TestQueueClientGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := mirrorURL("a")
		p := startBubblePool(t, Config{Workers: 1}, a)
		pickMirror(t, p)
		ctx, cancel := context.WithCancel(t.Context())
		out := make(chan acquired, 1)
		enqueue(p, ctx, 1, nil, out)
		cancel()
		if g := <-out; !errors.Is(g.err, context.Canceled) {
			t.Fatalf("err %v", g.err)
		}
		if queued(p) != 0 {
			t.Fatalf("%d still queued", queued(p))
		}
	})
}

// Close returns at once and lets the requests the pool holds finish: a
// waiting request still gets the worker that frees up; once nothing is in
// flight the pool stops, and only then does it refuse requests.
func TestCloseDrainsWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := mirrorURL("a")
		p := startBubblePool(t, Config{Workers: 1}, a)
		pickMirror(t, p)
		out := make(chan acquired, 1)
		enqueue(p, t.Context(), 1, nil, out)
		p.Close()
		synctest.Wait()
		select {
		case g := <-out:
			t.Fatalf("the waiting request ended at Close: %+v", g)
		default:
		}
		p.release(workerOf(t, p, a), outcome{})
		g := <-out
		if g.err != nil || g.w.key != a {
			t.Fatalf("the waiting request got %+v, want the worker of %s", g, a)
		}
		p.release(g.w, outcome{})
		<-p.Done()
		if _, err := p.acquire(t.Context(), want{exclude: map[string]bool{}}); !errors.Is(err, errClosed) {
			t.Fatalf("acquire after the pool stopped: %v", err)
		}
	})
}

// A closed pool that cannot drain (a transfer never ends) is stopped after
// the drain timeout: its waiters are failed then.
func TestDrainTimeoutEndsWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := mirrorURL("a")
		p := startBubblePool(t, Config{Workers: 1, DrainTimeout: time.Minute, QueueTimeout: time.Hour}, a)
		pickMirror(t, p)
		out := make(chan acquired, 1)
		enqueue(p, t.Context(), 1, nil, out)
		start := time.Now()
		p.Close()
		g := <-out
		if !errors.Is(g.err, errClosed) || g.at.Sub(start) != time.Minute {
			t.Fatalf("waiter ended with %v after %v, want errClosed after the drain timeout", g.err, g.at.Sub(start))
		}
	})
}

// A mirror that joins is handed at once to a request waiting for a worker.
func TestNewWorkerTakesAWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		offer := make(chan []Candidate, 1)
		offer <- []Candidate{{URL: a}}
		cfg := Config{Workers: 2, Provider: ProviderFunc(func(context.Context) ([]Candidate, error) {
			select {
			case c := <-offer:
				return c, nil
			default:
				return nil, nil
			}
		})}
		p := startBubblePool(t, cfg)
		pickMirror(t, p)
		out := make(chan acquired, 1)
		enqueue(p, t.Context(), 1, nil, out)
		offer <- []Candidate{{URL: b}}
		g := <-out
		if g.err != nil || g.w.key != b {
			t.Fatalf("the waiter got %v, %v, want %s", g.w, g.err, b)
		}
	})
}
