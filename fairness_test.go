//go:build linux

package refractor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// Tests of how the pool shares itself out (issue 11): among clients fast
// and slow, between a split download and new requests, across a reload,
// and when it has no mirror at all.

// rawReader is a client of the test Caddy on a raw connection, as a client
// on a slow link, or one that stopped reading, looks to the proxy: it reads
// its response at a fixed pace, or reads the response headers and then
// nothing.
type rawReader struct {
	conn     net.Conn
	received atomic.Int64 // bytes read, headers included
	status   atomic.Int32 // the response status, once the headers are in
	quit     chan struct{}
	done     chan struct{} // closed when the reading goroutine has ended
	stopOnce sync.Once
}

// A rawReader's connection has a small receive buffer and the segment size
// of an Ethernet link, both set before it connects. Over loopback's 64 KiB
// segments Linux would size the proxy's send buffer for the connection up
// to 4 MiB, and a client that stopped reading would still take in
// megabytes; over Ethernet the proxy's writes to it block after some
// 100 KiB, as they would on a LAN. (Hence this file is for Linux only.)
const (
	rawReadBuffer = 8 << 10
	rawSegment    = 1460
)

// startRawReader sends GET /archlinux/<path> on a new connection and reads
// the response in a goroutine: the headers, then perTick bytes every tick,
// or nothing more if perTick is 0. It stops (the connection is closed) by
// stop or at the end of the test.
func startRawReader(t *testing.T, path string, perTick int, tick time.Duration) *rawReader {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rawReadBuffer)
			if err == nil {
				err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, rawSegment)
			}
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	conn, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	c := &rawReader{conn: conn, quit: make(chan struct{}), done: make(chan struct{})}
	go c.read(perTick, tick)
	t.Cleanup(c.stop)
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET /archlinux/%s HTTP/1.1\r\nHost: localhost:%d\r\n\r\n", path, httpPort); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *rawReader) read(perTick int, tick time.Duration) {
	defer close(c.done)
	// The headers, in small pieces so that little of the body comes with
	// them.
	var head []byte
	piece := make([]byte, 1<<10)
	for !bytes.Contains(head, []byte("\r\n\r\n")) {
		if len(head) > 64<<10 {
			return
		}
		n, err := c.conn.Read(piece)
		head = append(head, piece[:n]...)
		c.received.Add(int64(n))
		if err != nil {
			return
		}
	}
	statusLine, _, _ := bytes.Cut(head, []byte("\r\n"))
	if f := strings.Fields(string(statusLine)); len(f) >= 2 {
		if code, err := strconv.Atoi(f[1]); err == nil {
			c.status.Store(int32(code))
		}
	}
	if perTick <= 0 {
		return // stalled: the connection stays open, unread
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	buf := make([]byte, perTick)
	for {
		select {
		case <-ticker.C:
		case <-c.quit:
			return
		}
		n, err := io.ReadFull(c.conn, buf)
		c.received.Add(int64(n))
		if err != nil {
			return
		}
	}
}

// Received is how many bytes the client has read, headers included.
func (c *rawReader) Received() int64 { return c.received.Load() }

// Status is the response status, or 0 until the headers are in.
func (c *rawReader) Status() int { return int(c.status.Load()) }

// stop closes the connection and waits for the reading goroutine to end.
func (c *rawReader) stop() {
	c.stopOnce.Do(func() {
		close(c.quit)
		c.conn.Close()
	})
	<-c.done
}

// fetchResult is the outcome of a download made in a goroutine.
type fetchResult struct {
	name   string
	status int
	body   []byte
	err    error
}

// fetch downloads req and returns the outcome.
func fetch(client *http.Client, name string, req *http.Request) fetchResult {
	r := fetchResult{name: name}
	resp, err := client.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	r.status = resp.StatusCode
	r.body, r.err = io.ReadAll(resp.Body)
	return r
}

// fetchAsync downloads req in a goroutine and sends the outcome on out.
// The request's context bounds it.
func fetchAsync(client *http.Client, name string, req *http.Request, out chan<- fetchResult) {
	go func() { out <- fetch(client, name, req) }()
}

// describe says what a download got, for failure messages.
func (r fetchResult) describe(want []byte) string {
	s := fmt.Sprintf("status %d, %d of %d bytes", r.status, len(r.body), len(want))
	if r.status != 0 && r.status != http.StatusOK && len(r.body) < 500 {
		s += fmt.Sprintf(" (%q)", r.body)
	}
	if r.err != nil {
		s += ", error: " + r.err.Error()
	}
	return s
}

// TestSlowClientDoesNotStarveOthers: a client on a slow link downloading a
// big package does not keep the other clients waiting, even when the pool
// has a single worker: they are served meanwhile.
func TestSlowClientDoesNotStarveOthers(t *testing.T) {
	const huge, small = "extra/os/x86_64/huge-1.0-1-x86_64.pkg.tar.zst", "core/os/x86_64/one-1.0-1-any.pkg.tar.zst"
	files := map[string][]byte{
		huge:  testmirror.Content(huge, 48<<20),
		small: testmirror.Content(small, 1<<20),
	}
	m := testmirror.New(t, files)
	tester := startCaddy(t, fmt.Sprintf(`
			workers 1
			queue_timeout 30s
			sync_file off
			provider static %s`, m.Base()))
	waitFor(t, "the mirror to join", func() bool {
		ps := poolStatuses()
		return len(ps) == 1 && len(ps[0].Workers) == 1
	})

	// 5 KiB every 100 ms: 50 KiB/s, a quarter of an hour for the file.
	slow := startRawReader(t, huge, 5<<10, 100*time.Millisecond)
	waitFor(t, "the slow client's transfer to start", func() bool { return m.Active() > 0 && slow.Received() > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	r := fetch(tester.Client, small, newRequest(t, http.MethodGet, small).WithContext(ctx))
	if r.err != nil || r.status != http.StatusOK || !bytes.Equal(r.body, files[small]) {
		t.Fatalf("GET %s while a slow client downloads %s: after %s, %s; want 200 and the file's bytes",
			small, huge, time.Since(start).Round(time.Millisecond), r.describe(files[small]))
	}
	t.Logf("served in %s while the slow client had read %d bytes", time.Since(start).Round(time.Millisecond), slow.Received())
}

// TestSplitSurvivesLoad: a download split over several mirrors completes,
// byte for byte, when more requests arrive while it runs: the split may
// give its mirrors back to them, but not cut the download.
func TestSplitSurvivesLoad(t *testing.T) {
	const (
		large  = "extra/os/x86_64/large-1.0-1-x86_64.pkg.tar.zst"
		warm   = "core/os/x86_64/medium-1.0-1-any.pkg.tar.zst"
		other1 = "extra/os/x86_64/other1-1.0-1-x86_64.pkg.tar.zst"
		other2 = "extra/os/x86_64/other2-1.0-1-x86_64.pkg.tar.zst"
	)
	files := map[string][]byte{}
	for name, size := range map[string]int{large: 10 << 20, warm: 300 << 10, other1: 4 << 20, other2: 4 << 20} {
		files[name] = testmirror.Content(name, size)
	}
	a, b := testmirror.New(t, files), testmirror.New(t, files)
	a.SetRate(2 << 20)
	b.SetRate(2 << 20)
	tester := startCaddy(t, fmt.Sprintf(`
			workers 2
			resign 0
			split 2
			trial 1
			min_sample 64KiB
			queue_timeout 1s
			peek_timeout 5s
			sync_file off
			provider static %s %s`, a.Base(), b.Base()))

	// Only ranked mirrors help a split.
	for range 4 {
		download(t, tester, url(warm), files[warm])
	}
	waitFor(t, "both mirrors to be ranked", func() bool {
		ps := poolStatuses()
		if len(ps) != 1 || len(ps[0].Workers) != 2 {
			return false
		}
		for _, w := range ps[0].Workers {
			if w.State != StateRanked || w.Busy {
				return false
			}
		}
		return true
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	var extras sync.WaitGroup
	t.Cleanup(extras.Wait)
	t.Cleanup(cancel) // runs first: the extra requests end

	out := make(chan fetchResult, 1)
	fetchAsync(tester.Client, large, newRequest(t, http.MethodGet, large).WithContext(ctx), out)
	waitFor(t, "the download to be split over both mirrors", func() bool { return a.Active() > 0 && b.Active() > 0 })

	// Two more requests, for other files, while the split runs. They may
	// be served or told to retry; only the split download is judged.
	for _, name := range []string{other1, other2} {
		req := newRequest(t, http.MethodGet, name).WithContext(ctx)
		extras.Go(func() {
			resp, err := tester.Client.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}

	r := <-out
	if r.err != nil || r.status != http.StatusOK || !bytes.Equal(r.body, files[large]) {
		t.Fatalf("the split download of %s: %s; want 200 and the file's exact bytes", large, r.describe(files[large]))
	}
}

// TestSlowMirrorsAreKeptWhenNoneIsFaster: when every mirror is slow (here
// 300 KiB/s, too slow to deliver a peek within the default peek timeout of
// 1s), downloads work and the pool keeps its mirrors: a mirror is not
// evicted for being no slower than any other.
func TestSlowMirrorsAreKeptWhenNoneIsFaster(t *testing.T) {
	// Downloads one after the other, as pacman makes them by default:
	// each one's first attempt goes to the same mirror (the first on
	// trial), so its failures, if peek timeouts count as such, follow one
	// another, and evict_after (3) is reached on the third. (Two at a time,
	// each mirror's failure is followed by a success, the other download's
	// last chance, which resets its count.) The file is read whole in the
	// peek: half a megabyte takes 1.7 s at 300 KiB/s.
	const name = "extra/os/x86_64/slow-1.0-1-any.pkg.tar.zst"
	files := map[string][]byte{name: testmirror.Content(name, 512<<10)}
	a, b := testmirror.New(t, files), testmirror.New(t, files)
	a.SetRate(300 << 10)
	b.SetRate(300 << 10)
	tester := startCaddy(t, fmt.Sprintf(`
			sync_file off
			provider static %s %s`, a.Base(), b.Base()))
	waitFor(t, "both mirrors to join", func() bool {
		ps := poolStatuses()
		return len(ps) == 1 && len(ps[0].Workers) == 2
	})

	const downloads = 4
	for i := range downloads {
		resp, body := get(t, tester, newRequest(t, http.MethodGet, name))
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, files[name]) {
			t.Fatalf("download %d: status %d, %d of %d bytes; want 200 and the file's bytes", i+1, resp.StatusCode, len(body), len(files[name]))
		}
		ps := poolStatuses()[0]
		for _, rot := range ps.Rotations {
			if rot.Reason == "evicted" {
				t.Fatalf("after download %d of %d, %s was evicted (score %.0f B/s), though no mirror is faster; the pool has %d mirrors left",
					i+1, downloads, rot.Mirror, rot.Score, len(ps.Workers))
			}
		}
	}
	if ps := poolStatuses()[0]; len(ps.Workers) != 2 {
		t.Fatalf("the pool has %d mirrors after %d downloads, want both; rotations %+v", len(ps.Workers), downloads, ps.Rotations)
	}
}

// TestReloadDoesNotDropQueuedRequests: a config reload while requests wait
// for a worker does not fail them: they are served, like the transfer in
// progress.
func TestReloadDoesNotDropQueuedRequests(t *testing.T) {
	files := testFiles()
	const big, medium = "extra/os/x86_64/reload-1.0-1-x86_64.pkg.tar.zst", "core/os/x86_64/medium-1.0-1-any.pkg.tar.zst"
	files[big] = testmirror.Content(big, 3<<20)
	m := testmirror.New(t, files)
	m.SetRate(1 << 20) // the big file takes about 3 s
	// Caddy loads a config only if it differs from the running one: the
	// reload changes max_queue, nothing that matters here.
	config := func(maxQueue int) string {
		return fmt.Sprintf(`
			workers 1
			max_queue %d
			sync_file off
			provider static %s`, maxQueue, m.Base())
	}
	tester := startCaddy(t, config(100))
	waitFor(t, "the mirror to join", func() bool {
		ps := poolStatuses()
		return len(ps) == 1 && len(ps[0].Workers) == 1
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := make(chan fetchResult, 2)
	fetchAsync(tester.Client, big, newRequest(t, http.MethodGet, big).WithContext(ctx), out)
	waitFor(t, "the first transfer to start", func() bool { return m.Active() > 0 })
	fetchAsync(tester.Client, medium, newRequest(t, http.MethodGet, medium).WithContext(ctx), out)
	waitFor(t, "the second request to queue", func() bool {
		ps := poolStatuses()
		return len(ps) == 1 && ps[0].Queued == 1
	})

	startCaddy(t, config(101))

	for range 2 {
		r := <-out
		if r.err != nil || r.status != http.StatusOK || !bytes.Equal(r.body, files[r.name]) {
			t.Errorf("GET %s across a reload: %s; want 200 and the file's bytes", r.name, r.describe(files[r.name]))
		}
	}
}

// TestEmptyPoolAnswersQuickly: when the provider yields no mirror at all,
// a client is told so at once, with a 503 that names the cause and says
// when to retry, rather than kept waiting for a worker that never comes.
func TestEmptyPoolAnswersQuickly(t *testing.T) {
	tester := startCaddy(t, `provider command "exit 1"`)
	waitFor(t, "the provider to fail", func() bool {
		ps := poolStatuses()
		return len(ps) == 1 && ps[0].Provider.LastError != ""
	})

	// The issue asks for an answer within 5 s; 8 s leaves slack for a
	// loaded machine, and the client gives up at 10 s.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	resp, err := tester.Client.Do(newRequest(t, http.MethodGet, "core/os/x86_64/core.db").WithContext(ctx))
	if err != nil {
		t.Fatalf("no answer after %s: %v", time.Since(start).Round(time.Millisecond), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(strings.ToLower(string(body)), "provider") {
		t.Errorf("status %d, Retry-After %q, body %q; want 503 with Retry-After and a body naming the provider's failure",
			resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if elapsed > 8*time.Second {
		t.Errorf("answered after %s; want within about 5 s", elapsed.Round(time.Millisecond))
	}
}

// TestStalledClientsDoNotHoldPeekBuffers: clients that stop reading mid-
// download (a laptop lid closed) cost the proxy little memory each: what it
// read ahead from the mirror to choose it (the peek, 1 MiB by default) is
// not held for them while they stall.
func TestStalledClientsDoNotHoldPeekBuffers(t *testing.T) {
	const name = "extra/os/x86_64/stall-1.0-1-x86_64.pkg.tar.zst"
	const clients = 40
	const maxPerClient = 384 << 10
	files := map[string][]byte{name: testmirror.Content(name, 4<<20)}
	// A worker per client, each with its own mirror (the mirrors share
	// the file's bytes).
	mirrors := make([]string, clients)
	for i := range mirrors {
		mirrors[i] = testmirror.New(t, files).Base()
	}
	startCaddy(t, fmt.Sprintf(`
			workers %d
			sync_file off
			provider static %s`, clients+8, strings.Join(mirrors, " ")))
	waitFor(t, "every mirror to join", func() bool {
		ps := poolStatuses()
		return len(ps) == 1 && len(ps[0].Workers) == clients
	})

	before := heapInUse()
	readers := make([]*rawReader, clients)
	for i := range readers {
		readers[i] = startRawReader(t, name, 0, 0)
	}
	waitFor(t, "every client to get its response headers", func() bool {
		for _, r := range readers {
			if r.Status() == 0 {
				return false
			}
		}
		return true
	})
	for i, r := range readers {
		if r.Status() != http.StatusOK {
			t.Fatalf("client %d: status %d, want 200", i, r.Status())
		}
	}

	// Heap in use is the proxy's and the test's own (the mirrors and the
	// clients, whose buffers are small): it may take a moment to settle.
	const settle = 10 * time.Second
	deadline := time.Now().Add(settle)
	for {
		perClient := (heapInUse() - before) / clients
		if perClient < maxPerClient {
			t.Logf("%d KiB of heap per stalled client", perClient>>10)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d KiB of heap per stalled client after %s; want under %d KiB", perClient>>10, settle, maxPerClient>>10)
		}
		time.Sleep(200 * time.Millisecond) // pacing the poll
	}
}

// heapInUse is the bytes of heap in use after a full collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC() // and what the first one left in sync.Pools
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}
