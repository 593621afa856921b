package pool

// Tests of the dispatcher when a waiter becomes able to use an idle worker.

import (
	"testing"
	"testing/synctest"
	"time"
)

// A request for a file that changes in place may use only the freshest
// mirrors. When the freshest one leaves the pool (evicted on release), an
// idle worker becomes allowed, but remove() hands nothing over: the waiter
// waits until its queue timeout (503) while a newer request would be
// served at once by pick().
func TestFreshWaiterGetsAnIdleWorkerWhenTheNewestLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mirrorURL("a"), mirrorURL("b")
		p := startBubblePool(t, Config{Workers: 2, Resign: -1, EvictAfter: 1, QueueTimeout: time.Minute}, a, b)
		wa, wb := workerOf(t, p, a), workerOf(t, p, b)
		now := time.Now()
		p.mu.Lock()
		wa.lastSync, wb.lastSync = now, now.Add(-time.Hour)
		p.claim(wa)
		p.mu.Unlock()
		out := make(chan acquired, 1)
		go func() {
			w, err := p.acquire(t.Context(), want{exclude: map[string]bool{}, fresh: true})
			out <- acquired{1, w, err, time.Now()}
		}()
		synctest.Wait()
		if queued(p) != 1 {
			t.Fatalf("queued %d, want the fresh request waiting for a", queued(p))
		}
		p.release(wa, outcome{failed: true}) // a is evicted; b is now the freshest
		synctest.Wait()
		if inPool(p, a) {
			t.Fatal("a was not evicted: the test proves nothing")
		}
		select {
		case g := <-out:
			if g.err != nil || g.w != wb {
				t.Fatalf("the waiter got %v, %v; want b", g.w, g.err)
			}
		default:
			t.Fatal("the fresh request still waits while b, now the freshest mirror, is idle")
		}
	})
}
