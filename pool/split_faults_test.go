package pool

// Tests of splits that lose their fast fetchers, their client, or their pool.

import (
	"bytes"
	"context"
	"io"
	"math"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// When both fast helpers of a split fail, the split falls back on the
// remaining, slower mirror: a last fetcher stays however slow (it used to
// leave at once, being slower than a third of the best, and the split
// looped on acquiring it again without fetching a byte).
func TestSplitFallsBackOnASlowerMirror(t *testing.T) {
	s := newSplitSetup(t, 24<<20, nil)
	// Both helpers fail near the end of their first 4 MiB chunk.
	s.fa.SetFault(testmirror.ResetMidBody, splitFile, 4<<20-64<<10)
	s.fb.SetFault(testmirror.ResetMidBody, splitFile, 4<<20-64<<10)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	resp, got := s.get(t, ctx)
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(got, resp.Body)
		done <- err
	}()
	// Once the split has begun, the slow mirror gets fast (uncapped); the
	// pool still scores it ~1 MB/s, far below best/3 = ~21 MB/s.
	pollFor(t, 10*time.Second, "both helpers to be asked", func() bool { return s.fa.Requests() > 0 && s.fb.Requests() > 0 })
	s.slow.SetRate(0)
	if err := <-done; err != nil {
		t.Fatalf("the download stopped after %d of %d bytes: %v (slow mirror requests: %d)",
			got.Len(), len(s.content), err, s.slow.Requests())
	}
	if !bytes.Equal(got.Bytes(), s.content) {
		t.Fatalf("got %d bytes, not the file's %d", got.Len(), len(s.content))
	}
}

// A fetcher whose chunk is cut short because the transfer ended (client
// gone) counts the partial chunk's bytes with the time they took, never as
// a sample of ~1 MB in 0 s (an infinite rate).
func TestSplitClientGoneDoesNotInflateScores(t *testing.T) {
	s := newSplitSetup(t, 64<<20, nil)
	s.fa.SetRate(2 << 20)
	s.fb.SetRate(2 << 20)
	ctx, cancel := context.WithCancel(t.Context())
	resp, _ := s.get(t, ctx)
	pollFor(t, 10*time.Second, "both helpers to be asked", func() bool { return s.fa.Requests() > 0 && s.fb.Requests() > 0 })
	// A MiB more for the client is ~1 MB into the helpers' first 4 MiB
	// chunks (they fetch at 2 MB/s each, side by side).
	if _, err := io.CopyN(io.Discard, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	cancel()
	waitIdle(t, s.p)
	for name, m := range map[string]*testmirror.Mirror{"fast A": s.fa, "fast B": s.fb} {
		st := statsOf(t, s.p, m.Base())
		for _, r := range st.samples {
			if math.IsInf(r, 0) || r > 1e9 {
				t.Errorf("%s (capped at 2 MB/s) got a sample of %.3g B/s; samples %v, score %.3g", name, r, st.samples, st.score)
			}
		}
	}
}

// After a force-close (closeNow: Done is closed) a split transfer sends no
// more chunk requests: it ends with the pool, as an attempt does.
func TestForceCloseEndsASplit(t *testing.T) {
	s := newSplitSetup(t, 64<<20, nil)
	s.fa.SetRate(4 << 20)
	s.fb.SetRate(4 << 20)
	resp, _ := s.get(t, t.Context())
	go func() { _, _ = io.Copy(io.Discard, resp.Body) }()
	pollFor(t, 10*time.Second, "both helpers to be asked", func() bool { return s.fa.Requests() > 0 && s.fb.Requests() > 0 })
	s.p.closeNow() // returns once Done is closed
	time.Sleep(200 * time.Millisecond)
	before := s.fa.Requests() + s.fb.Requests()
	time.Sleep(3 * time.Second)
	if after := s.fa.Requests() + s.fb.Requests(); after > before {
		t.Fatalf("the force-closed pool (Done closed) sent %d more chunk requests", after-before)
	}
}
