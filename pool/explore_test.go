package pool

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// coldPool starts a mirror of files for each rate (MiB/s), in that list
// order, and a cold pool of that many workers (0: one for each), served by
// the returned front server (closed when the test ends), its config
// changed by tweaks. Peeks may take their time: these tests are about
// what comes after.
func coldPool(t *testing.T, files map[string][]byte, rates []float64, workers int, tweaks ...func(*Config)) (*Pool, *httptest.Server, []*testmirror.Mirror) {
	t.Helper()
	var mirrors []*testmirror.Mirror
	var list []Candidate
	for _, r := range rates {
		m := testmirror.New(t, files)
		m.SetRate(int(r * (1 << 20)))
		mirrors = append(mirrors, m)
		list = append(list, Candidate{URL: m.Base()})
	}
	if workers == 0 {
		workers = len(rates)
	}
	cfg := Config{
		Workers: workers, SyncFile: "-", PeekTimeout: 10 * time.Second, EvictAfter: 100,
		Provider: ProviderFunc(func(context.Context) ([]Candidate, error) { return list, nil }),
	}
	for _, tweak := range tweaks {
		tweak(&cfg)
	}
	p := startPool(t, cfg)
	waitForWorkers(t, p, workers)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = p.Serve(w, r, strings.TrimPrefix(r.URL.Path, "/"))
	}))
	t.Cleanup(front.Close)
	return p, front, mirrors
}

// One client, one large file, a cold pool: the first mirror of the list is
// middling, the four fastest sit idle and unranked. Within 3 s of the
// transfer's start, the pool must have found them: from then on they carry
// at least 80% of the bytes the mirrors send. (Before exploration, the
// whole file came from the first mirror.)
func TestColdPoolFindsItsFastMirrorsDuringOneBigDownload(t *testing.T) {
	const name = "extra/os/x86_64/firmware-1.0-1-any.pkg.tar.zst"
	files := map[string][]byte{name: testmirror.Content(name, 48<<20)}
	// In list order: a middling one first, then slow and fast ones mixed.
	rates := []float64{1.2, 0.2, 6, 0.3, 4, 0.4, 3, 2} // MiB/s
	fastest := map[int]bool{2: true, 4: true, 6: true, 7: true}
	_, front, mirrors := coldPool(t, files, rates, 0)
	fastMirrorsCarryTheFile(t, front, mirrors, fastest, name, files[name])
}

// The same when the pool is smaller than the list and the four fastest
// mirrors are its last: they are not in the pool when the transfer starts.
// The pool must explore beyond its size while it learns, rather than
// rotate two slow mirrors at a time through it.
func TestColdPoolFindsFastMirrorsOutsideItDuringOneBigDownload(t *testing.T) {
	const name = "extra/os/x86_64/firmware-1.0-1-any.pkg.tar.zst"
	files := map[string][]byte{name: testmirror.Content(name, 64<<20)}
	rates := []float64{1.5, 1, 0.75, 1.2, 0.5, 1, 0.6, 0.8, 6, 4, 3, 2} // MiB/s
	fastest := map[int]bool{8: true, 9: true, 10: true, 11: true}
	p, front, mirrors := coldPool(t, files, rates, 8)
	fastMirrorsCarryTheFile(t, front, mirrors, fastest, name, files[name])
	// The surge is over: the slowest left, the pool is back to its size
	// and holds the four fastest.
	pollFor(t, 10*time.Second, "the pool back to 8 workers, the four fastest among them", func() bool {
		in := map[string]bool{}
		st := p.Status()
		for _, w := range st.Workers {
			in[w.Mirror] = true
		}
		all := true
		for i := range fastest {
			all = all && in[mirrors[i].Base()]
		}
		return len(st.Workers) == 8 && all
	})
}

// fastMirrorsCarryTheFile downloads the file name (whose bytes are want)
// through front and checks that from 3 s after the transfer's start the
// mirrors marked fastest send at least 80% of what the mirrors send, and
// that the client gets the file whole.
func fastMirrorsCarryTheFile(t *testing.T, front *httptest.Server, mirrors []*testmirror.Mirror, fastest map[int]bool, name string, want []byte) {
	t.Helper()
	sent := func() (fast, all int64) {
		for i, m := range mirrors {
			n := m.BytesSent()
			all += n
			if fastest[i] {
				fast += n
			}
		}
		return fast, all
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, front.URL+"/"+name, nil)
	start := time.Now()
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		body, err := io.ReadAll(resp.Body)
		done <- result{body, err}
	}()

	// What the mirrors send from 3 s to 5 s after the start (or to the
	// end of the transfer, if sooner).
	var got *result
	window := func(until time.Time) bool {
		select {
		case r := <-done:
			got = &r
			return false
		case <-time.After(time.Until(until)):
			return true
		}
	}
	window(start.Add(3 * time.Second))
	fast0, all0 := sent()
	if got == nil {
		window(start.Add(5 * time.Second))
	}
	fast1, all1 := sent()
	if all1 > all0 {
		share := float64(fast1-fast0) / float64(all1-all0)
		t.Logf("from 3 s: the fastest mirrors sent %.0f%% of %d bytes", 100*share, all1-all0)
		if share < 0.8 {
			t.Errorf("from 3 s after the start, the fastest mirrors sent %.0f%% of the bytes, want at least 80%%", 100*share)
		}
	}
	if got == nil {
		r := <-done
		got = &r
	}
	if got.err != nil || !bytes.Equal(got.body, want) {
		t.Fatalf("got %d of %d bytes (err %v), or not the file's", len(got.body), len(want), got.err)
	}
}

// A chunk lags when, at its pace so far, it would end more than twice as
// late as the fastest fetcher would end it; a fetch that stopped moving
// stalls instead (a failure), and a young one is given its time.
func TestChunkLags(t *testing.T) {
	now := time.Now()
	const mib = 1 << 20
	for _, tc := range []struct {
		name      string
		pace      float64       // bytes per second so far
		elapsed   time.Duration // since it began
		lastByte  time.Duration // since its last byte
		best      float64
		wantsLags bool
	}{
		{"a slow explorer next to a fast fetcher", 0.2 * mib, time.Second, 10 * time.Millisecond, 8 * mib, true},
		{"a fair one", 2 * mib, time.Second, 10 * time.Millisecond, 8 * mib, false},
		{"stopped moving: a stall, not slowness", 0.2 * mib, time.Second, 300 * time.Millisecond, 8 * mib, false},
		{"given its time", 0.1 * mib, 300 * time.Millisecond, 10 * time.Millisecond, 8 * mib, false},
		{"nobody known faster", 0.1 * mib, time.Second, 10 * time.Millisecond, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &chunk{first: 0, last: exploreChunk - 1, n: int(tc.pace * tc.elapsed.Seconds()),
				began: now.Add(-tc.elapsed), progress: now.Add(-tc.lastByte)}
			s := &splitter{best: tc.best}
			if got := s.lags(c, now); got != tc.wantsLags {
				t.Fatalf("lags = %v, want %v", got, tc.wantsLags)
			}
		})
	}
}

// In a cold pool whose mirrors are all slow, every fetcher of the split is
// an explorer: they must carry the head, not probe the end of the file
// while the client waits (it would, for as long as three probes take).
func TestExplorersCarryTheHeadWhileNoneIsRanked(t *testing.T) {
	const name = "extra/os/x86_64/game-1.0-1-any.pkg.tar.zst"
	files := map[string][]byte{name: testmirror.Content(name, 48<<20)}
	_, front, _ := coldPool(t, files, []float64{0.2, 0.2, 0.2, 0.2}, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a bound: 10 s of reading, and the wait for one more byte
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, front.URL+"/"+name, nil)
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Read for 10 s (the peek, the first rate check, the split) and note
	// the longest wait for a byte.
	buf := make([]byte, 32<<10)
	last, longest, got := time.Now(), time.Duration(0), 0
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if !bytes.Equal(buf[:n], files[name][got:got+n]) {
				t.Fatalf("wrong bytes at %d", got)
			}
			got += n
			longest = max(longest, time.Since(last))
			last = time.Now()
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
	}
	t.Logf("%d bytes in 10 s, longest wait for a byte %v", got, longest)
	if longest > 3*time.Second {
		t.Errorf("the client waited %v for a byte: the explorers left the head alone", longest)
	}
}

// What failed or overtaken fetchers left is taken nearest the head first,
// and a range of the tail only once the frontier has reached the tail.
func TestTakeRetryNearestTheHead(t *testing.T) {
	tail := &chunk{first: 100, last: 109}
	head := &chunk{first: 10, last: 19}
	s := &splitter{next: 50, end: 90, retry: []*chunk{tail, head}}
	if c := s.takeRetry(); c != head {
		t.Fatalf("took %+v, want the range nearest the head", c)
	}
	if c := s.takeRetry(); c != nil {
		t.Fatalf("took the tail's %+v while the frontier has bytes left", c)
	}
	s.next = s.end
	if c := s.takeRetry(); c != tail || len(s.retry) != 0 {
		t.Fatalf("took %+v (left %d), want the tail's range once the frontier reached it", c, len(s.retry))
	}
}

// A warm pool does not surge: its rotation keeps a worker or two on trial,
// which explore a large download, but the pool has ranked enough to know
// its fast mirrors, and the provider's other mirrors stay out of it.
func TestWarmPoolDoesNotSurge(t *testing.T) {
	const name = "extra/os/x86_64/firmware-1.0-1-any.pkg.tar.zst"
	files := map[string][]byte{name: testmirror.Content(name, 48<<20)}
	rates := []float64{6, 6, 6, 1, 1, 1, 1, 1} // MiB/s; the pool holds the first four
	p, front, mirrors := coldPool(t, files, rates, 4)
	for _, m := range mirrors[:3] {
		setSamples(t, p, m.Base(), 6<<20, 6<<20, 6<<20) // ranked; the fourth is on trial
	}
	// The pool's size, watched while the file downloads.
	stop, most := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			n = max(n, len(p.Status().Workers))
			select {
			case <-stop:
				most <- n
				return
			case <-tick.C:
			}
		}
	}()
	fastMirrorsCarryTheFile(t, front, mirrors, map[int]bool{0: true, 1: true, 2: true}, name, files[name])
	close(stop)
	if n := <-most; n > 4 {
		t.Errorf("the warm pool of 4 had up to %d workers while the file downloaded: it surged", n)
	}
}
