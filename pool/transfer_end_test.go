package pool

// Tests of how a transfer ends: after its last byte, and when the pool is force-closed.

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// resetAtEnd delivers the whole body, then fails instead of
// returning io.EOF: as an HTTP/2 stream reset after its last DATA frame, or
// the meter failing the final read (errTrickle is returned with the last
// bytes when the underlying read had no error, which is how HTTP/2 bodies
// end: the transport attempts HTTP/2).
type resetAtEnd struct {
	io.ReadCloser
	done bool
}

var errResetAtEnd = errors.New("stream reset after the last byte")

func (b *resetAtEnd) Read(p []byte) (int, error) {
	if b.done {
		return 0, errResetAtEnd
	}
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.done = true
		if n > 0 {
			return n, nil
		}
		return 0, errResetAtEnd
	}
	return n, err
}

type resetTransport struct{ http.RoundTripper }

func (t resetTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.RoundTripper.RoundTrip(r)
	if err == nil {
		resp.Body = &resetAtEnd{ReadCloser: resp.Body}
	}
	return resp, err
}

// A committed transfer whose mirror fails after the file's last byte was
// queued (t.next == t.last+1) is "continued" from another mirror with
// Range "bytes=N-(N-1)": 416, a continuation failure against that mirror
// too, and the response is aborted although the client got every byte.
// (A transfer that parks in that state, in the window between queueing
// the last block and reading io.EOF, does the same on resuming.)
func TestFailureAfterTheLastByte(t *testing.T) {
	files := mirrorFiles(3 << 20)
	m1, m2 := testmirror.New(t, files), testmirror.New(t, files)
	p := servePool(t, Config{Transport: resetTransport{http.DefaultTransport}}, m1, m2)
	client := httptest.NewRecorder()
	err := p.Serve(client, httptest.NewRequest(http.MethodGet, "/"+pkgName, nil), pkgName)
	got := client.Body.Bytes()
	if !bytes.Equal(got, files[pkgName]) {
		t.Fatalf("got %d bytes, not the file's %d (Serve: %v)", len(got), len(files[pkgName]), err)
	}
	if err != nil {
		t.Fatalf("the client has every byte, but Serve: %v", err)
	}
}

// blockedClient never finishes a write until its write deadline is
// set (as net/http's ResponseController would), or the test ends.
type blockedClient struct {
	*httptest.ResponseRecorder
	unblock chan struct{}
	once    atomic.Bool
}

func (c *blockedClient) Write(b []byte) (int, error) {
	<-c.unblock
	return 0, os.ErrDeadlineExceeded
}

func (c *blockedClient) SetWriteDeadline(time.Time) error {
	if c.once.CompareAndSwap(false, true) {
		close(c.unblock)
	}
	return nil
}

// A parked transfer whose client never reads is ended by a force-close
// (waitClient sees p.stop), but abort's sink.close waits for the write
// under way, which never returns: Serve outlives the pool.
func TestForceCloseEndsAParkedTransfer(t *testing.T) {
	files := mirrorFiles(3 << 20)
	m := testmirror.New(t, files)
	p := servePool(t, Config{}, m)
	client := &blockedClient{ResponseRecorder: httptest.NewRecorder(), unblock: make(chan struct{})}
	t.Cleanup(func() { _ = client.SetWriteDeadline(time.Now()) })
	served := make(chan error, 1)
	go func() {
		served <- p.Serve(client, httptest.NewRequest(http.MethodGet, "/"+pkgName, nil), pkgName)
	}()
	time.Sleep(2 * parkAfter) // the write stalls with the peek queued behind it: it parks
	p.closeNow()
	select {
	case err := <-served:
		if !errors.Is(err, ErrAborted) {
			t.Fatalf("Serve: %v, want ErrAborted", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve still blocked 3s after the pool was force-closed (sink.close waits for a write that never ends)")
	}
}

// A transfer under way when the pool is force-closed (drain timeout, or
// closeNow) fails with errClosed as its cause, and t.failed counts that
// against the mirror: a failure sample and a fail streak in the State the
// next pool inherits.
func TestForceCloseDoesNotBlameTheMirror(t *testing.T) {
	files := mirrorFiles(8 << 20)
	m := testmirror.New(t, files)
	m.SetRate(2 << 20)
	p := servePool(t, Config{}, m)
	served := make(chan error, 1)
	go func() {
		served <- p.Serve(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/"+pkgName, nil), pkgName)
	}()
	time.Sleep(time.Second) // committed, streaming
	p.closeNow()
	if err := <-served; !errors.Is(err, ErrAborted) {
		t.Fatalf("Serve: %v, want ErrAborted", err)
	}
	if s := statsOf(t, p, m.Base()); s.failures != 0 || s.failStreak != 0 {
		t.Fatalf("the mirror was blamed for the pool's shutdown: %+v", s)
	}
}
