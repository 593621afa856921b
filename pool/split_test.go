package pool

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

const splitFile = "extra/os/x86_64/huge-1.0-1-any.pkg.tar.zst"

// splitSetup is a pool of a slow mirror and two fast ones, which the pool
// knows as fast and slow, with the fast ones busy elsewhere until release
// is called: a request for the big file then starts on the slow mirror.
type splitSetup struct {
	p            *Pool
	slow, fa, fb *testmirror.Mirror
	busy         []*worker
	content      []byte
	front        *httptest.Server
}

func newSplitSetup(t *testing.T, size int, fbFiles map[string][]byte, tweaks ...func(*Config)) *splitSetup {
	t.Helper()
	files := map[string][]byte{splitFile: testmirror.Content(splitFile, size)}
	s := &splitSetup{content: files[splitFile]}
	s.slow, s.fa = testmirror.New(t, files), testmirror.New(t, files)
	if fbFiles == nil {
		fbFiles = files
	}
	s.fb = testmirror.New(t, fbFiles)
	s.slow.SetRate(1 << 20)
	cfg := Config{
		Workers:      3,
		TrialSamples: 1,
		Resign:       -1,
		EvictAfter:   100,
		PeekTimeout:  10 * time.Second,
		SyncFile:     "-",
		Provider: ProviderFunc(func(context.Context) ([]Candidate, error) {
			return []Candidate{{URL: s.slow.Base()}, {URL: s.fa.Base()}, {URL: s.fb.Base()}}, nil
		}),
	}
	for _, tweak := range tweaks {
		tweak(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.closeNow)
	s.p = p
	waitForWorkers(t, p, 3)
	p.mu.Lock()
	for _, w := range p.workers {
		if w.key == s.slow.Base() {
			p.record(w.key, w.stats, outcome{success: true, bytes: 1 << 20, elapsed: time.Second})
			continue
		}
		p.record(w.key, w.stats, outcome{success: true, bytes: 64 << 20, elapsed: time.Second})
		p.claim(w)
		s.busy = append(s.busy, w)
	}
	p.mu.Unlock()
	s.front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = p.Serve(w, r, strings.TrimPrefix(r.URL.Path, "/"))
	}))
	t.Cleanup(s.front.Close)
	return s
}

// get starts the download, reads its first MiB (from the slow mirror),
// frees the fast workers, and returns the response and what was read.
func (s *splitSetup) get(t *testing.T, ctx context.Context) (*http.Response, *bytes.Buffer) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.front.URL+"/"+splitFile, nil)
	resp, err := s.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	var got bytes.Buffer
	if _, err := io.CopyN(&got, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	for _, w := range s.busy {
		s.p.release(w, outcome{})
	}
	return resp, &got
}

// wantFileDespiteHelperB reads the rest of resp into got and checks that
// the client got the file intact although helper B misbehaved, that B was
// asked (else the test proves nothing), and that B was counted a failure.
func (s *splitSetup) wantFileDespiteHelperB(t *testing.T, resp *http.Response, got *bytes.Buffer, helper string) {
	t.Helper()
	if _, err := io.Copy(got, resp.Body); err != nil {
		t.Fatalf("after %d of %d bytes: %v", got.Len(), len(s.content), err)
	}
	if !bytes.Equal(got.Bytes(), s.content) {
		t.Fatalf("got %d bytes, not the file's %d", got.Len(), len(s.content))
	}
	if s.fb.Requests() == 0 {
		t.Fatalf("%s was never asked: the test proves nothing", helper)
	}
	if f := statsOf(t, s.p, s.fb.Base()).failures; f == 0 {
		t.Errorf("%s was not counted a failure", helper)
	}
}

// waitIdle polls until no worker of p is busy.
func waitIdle(t *testing.T, p *Pool) {
	t.Helper()
	pollFor(t, 10*time.Second, "every worker to be free", func() bool {
		return !slices.ContainsFunc(p.Status().Workers, func(w WorkerStatus) bool { return w.Busy })
	})
}

// A big file that starts on a slow mirror is finished by the fast ones,
// which fetch ranges of it at once; the client gets one intact response.
func TestSplitOverFastMirrors(t *testing.T) {
	s := newSplitSetup(t, 24<<20, nil)
	resp, got := s.get(t, t.Context())
	if _, err := io.Copy(got, resp.Body); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), s.content) {
		t.Fatalf("got %d bytes, not the file's %d", got.Len(), len(s.content))
	}
	for name, m := range map[string]*testmirror.Mirror{"fast A": s.fa, "fast B": s.fb} {
		if rng := m.LastHeaders().Get("Range"); !strings.HasPrefix(rng, "bytes=") || strings.HasPrefix(rng, "bytes=0-") {
			t.Errorf("%s was last asked for %q, want a range of the rest of the file", name, rng)
		}
	}
	if resp.Header.Get(MirrorHeader) != s.slow.Base() {
		t.Errorf("%s = %q, want the mirror that started it", MirrorHeader, resp.Header.Get(MirrorHeader))
	}
	waitIdle(t, s.p)
}

// A helper that fails mid-chunk gives its chunk back: the others finish it
// and the file is intact; the failure counts against the helper.
func TestSplitHelperFailsMidChunk(t *testing.T) {
	s := newSplitSetup(t, 24<<20, nil)
	s.fb.SetFault(testmirror.ResetMidBody, splitFile, 100<<10)
	resp, got := s.get(t, t.Context())
	s.wantFileDespiteHelperB(t, resp, got, "the faulty helper")
}

// A helper that hangs in the middle of the chunk the client waits for
// loses it after headStall, long before the stall timeout: the client
// would give up first (pacman after 10 s without a byte).
func TestSplitHeadChunkThatHangsMovesOn(t *testing.T) {
	s := newSplitSetup(t, 24<<20, nil, func(c *Config) { c.StallTimeout = 5 * time.Minute })
	s.fb.SetFault(testmirror.HangMidBody, splitFile, 100<<10)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // far below the stall timeout
	defer cancel()
	resp, got := s.get(t, ctx)
	s.wantFileDespiteHelperB(t, resp, got, "the hanging helper")
}

// A helper whose copy of the file differs (another size) is not used for
// it: the response stays one file.
func TestSplitRejectsADifferentFile(t *testing.T) {
	other := map[string][]byte{splitFile: testmirror.Content(splitFile, 25<<20)}
	s := newSplitSetup(t, 24<<20, other)
	resp, got := s.get(t, t.Context())
	s.wantFileDespiteHelperB(t, resp, got, "the helper with the other file")
}

// A client that goes away during a split frees every worker.
func TestSplitClientGoneFreesWorkers(t *testing.T) {
	s := newSplitSetup(t, 64<<20, nil)
	s.fa.SetRate(4 << 20)
	s.fb.SetRate(4 << 20)
	ctx, cancel := context.WithCancel(t.Context())
	resp, _ := s.get(t, ctx)
	if _, err := io.CopyN(io.Discard, resp.Body, 4<<20); err != nil {
		t.Fatal(err)
	}
	if s.fa.Requests()+s.fb.Requests() == 0 {
		t.Fatal("no split happened: the test proves nothing")
	}
	cancel()
	waitIdle(t, s.p)
}

// A transfer that streams from the fastest mirror, with Split ranked
// helpers idle that are slower than it: when it splits, that mirror stays
// among the fetchers (before, the split took Split helpers and left the
// fastest mirror out).
func TestSplitKeepsTheFastestMirror(t *testing.T) {
	files := map[string][]byte{splitFile: testmirror.Content(splitFile, 48<<20)}
	p, _, ms := coldPool(t, files, []float64{8, 3, 3, 3, 3}, 0, func(c *Config) { c.Split, c.TrialSamples, c.Resign = 4, 1, -1 })
	fast, helpers := ms[0], ms[1:]
	setSamples(t, p, fast.Base(), 8<<20)
	for _, m := range helpers {
		setSamples(t, p, m.Base(), 3<<20)
	}
	rec, err := serve(t, p, nil, splitFile)
	if err != nil || !bytes.Equal(rec.Body.Bytes(), files[splitFile]) {
		t.Fatalf("got %d bytes of %d (Serve: %v), or not the file's", rec.Body.Len(), len(files[splitFile]), err)
	}
	all := fast.BytesSent()
	for _, m := range helpers {
		all += m.BytesSent()
	}
	share := float64(fast.BytesSent()) / float64(all)
	t.Logf("the fastest mirror sent %.0f%% of %d bytes", 100*share, all)
	if share < 0.35 {
		t.Errorf("the fastest mirror sent %.0f%% of the bytes, want at least 35%% (8 of the 20 MiB/s the five have)", 100*share)
	}
}

// A ranked fetcher whose mirror turns slow in the middle of its chunk (a
// mirror that degrades) loses the chunk to the faster fetchers, as a slow
// explorer does, and leaves the transfer. Before, it went on at the new
// pace, with chunks sized for the old one (2 MiB, at 1 MiB/s: the client
// held for 2 s at a time), and took chunk after chunk.
func TestSplitFetcherThatTurnsSlowIsOvertaken(t *testing.T) {
	files := map[string][]byte{splitFile: testmirror.Content(splitFile, 64<<20)}
	p, front, ms := coldPool(t, files, []float64{8, 8, 8}, 0, func(c *Config) { c.Split, c.Resign = 3, -1 })
	for i, m := range ms {
		rate := float64(8 << 20)
		if i == 0 {
			rate *= 1.1 // the request starts on it
		}
		setSamples(t, p, m.Base(), rate, rate, rate)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, front.URL+"/"+splitFile, nil)
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Once the third mirror fetches a chunk, it turns slow: an eighth of
	// its score, above the trickle rate.
	slow := ms[2]
	pollFor(t, 30*time.Second, "the third mirror to fetch a chunk", func() bool { return slow.Active() > 0 })
	slow.SetRate(1 << 20)
	asked := slow.Requests()
	body, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(body, files[splitFile]) {
		t.Fatalf("got %d of %d bytes (err %v), or not the file's", len(body), len(files[splitFile]), err)
	}
	// One more may start if the chunk under way ended before it could be
	// judged (it began at the old pace); before, it took three.
	if more := slow.Requests() - asked; more > 1 {
		t.Errorf("the mirror that turned slow was asked for %d more chunks: it kept fetching at its new pace", more)
	}
}
