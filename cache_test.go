package refractor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-refractor/refractor/filecache"
	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// cacheRepo is a pacman repository whose database lists its packages, so
// that the pool knows their sizes and hashes and the cache keeps them.
type cacheRepo struct {
	files map[string][]byte // the mirrors' tree
	pkgs  []string          // the packages' paths, biggest first
}

const cacheDB = "extra/os/x86_64/extra.db"

func newCacheRepo(sizes ...int) *cacheRepo {
	r := &cacheRepo{files: map[string][]byte{}}
	listed := map[string][]byte{}
	for i, n := range sizes {
		name := fmt.Sprintf("cpkg%d-1.0-1-any.pkg.tar.zst", i)
		listed[name] = testmirror.Content(name, n)
		r.files["extra/os/x86_64/"+name] = listed[name]
		r.pkgs = append(r.pkgs, "extra/os/x86_64/"+name)
	}
	r.files[cacheDB] = testmirror.PacmanDB(listed)
	return r
}

// mirrors starts n mirrors of the repository.
func (r *cacheRepo) mirrors(t *testing.T, n int) []*testmirror.Mirror {
	var ms []*testmirror.Mirror
	for range n {
		ms = append(ms, testmirror.New(t, r.files))
	}
	return ms
}

func bases(ms []*testmirror.Mirror) string {
	var b []string
	for _, m := range ms {
		b = append(b, m.Base())
	}
	return strings.Join(b, " ")
}

func sent(ms []*testmirror.Mirror) (n int64) {
	for _, m := range ms {
		n += m.BytesSent()
	}
	return n
}

// cacheBlock is a refractor block with a cache in dir and the mirrors ms.
func cacheBlock(dir, cacheOpts string, ms []*testmirror.Mirror) string {
	return fmt.Sprintf(`
			workers %d
			sync_file off
			cache %s {
				min_free 1MiB
				%s
			}
			provider static %s`, len(ms), dir, cacheOpts, bases(ms))
}

// learn fetches the database, and waits until the pool has learned it (a
// package is then cacheable: the first GET of one is its fill).
func (r *cacheRepo) learn(t *testing.T, tester *caddytest.Tester) {
	t.Helper()
	resp, body := get(t, tester, newRequest(t, http.MethodGet, cacheDB))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("database: %d %s", resp.StatusCode, body)
	}
	waitFor(t, "the pool to learn the database", func() bool {
		for _, np := range livePoolsNow() {
			if _, _, ok := np.pool.Expect(t.Context(), r.pkgs[0]); ok {
				return true
			}
		}
		return false
	})
}

func livePoolsNow() []*namedPool {
	livePools.Lock()
	defer livePools.Unlock()
	return append([]*namedPool(nil), livePools.pools...)
}

// fetchAll has n clients GET rel at once, checks each gets want from the
// cache, and waits for the fills to end.
func fetchAll(t *testing.T, tester *caddytest.Tester, n int, rel string, want []byte) {
	t.Helper()
	fetchAllNoWait(t, tester, n, rel, want)
	waitFills(t)
}

// fetchAllNoWait is fetchAll without waiting for the fills.
func fetchAllNoWait(t *testing.T, tester *caddytest.Tester, n int, rel string, want []byte) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			resp, err := tester.Client.Do(newRequest(t, http.MethodGet, rel))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			switch {
			case err != nil:
				errs <- fmt.Errorf("%s: reading: %w", rel, err)
			case resp.StatusCode != http.StatusOK || !bytes.Equal(body, want):
				errs <- fmt.Errorf("%s: status %d, %d bytes (want %d), intact %v", rel, resp.StatusCode, len(body), len(want), bytes.Equal(body, want))
			case resp.Header.Get("Refractor-Mirror") != cacheMirror:
				errs <- fmt.Errorf("%s: from %q, not the cache", rel, resp.Header.Get("Refractor-Mirror"))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// waitFills waits until no fill is in flight: a client may have read the
// last byte of a fill before its file took its place.
func waitFills(t *testing.T) {
	t.Helper()
	waitFor(t, "the cache's fills to end", func() bool {
		for _, st := range cacheStats() {
			if st.Filling > 0 {
				return false
			}
		}
		return true
	})
}

// cachedFiles lists the complete files under a cache directory.
func cachedFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(filepath.Join(dir, "sha256"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// Clients asking for the same file at once cause one upstream transfer,
// all get intact bytes, and a second round comes from disk without a byte
// from the mirrors.
func TestCacheOneUpstreamTransferForManyClients(t *testing.T) {
	repo := newCacheRepo(6 << 20)
	ms := repo.mirrors(t, 2)
	for _, m := range ms {
		m.SetRate(4 << 20) // the clients overlap for about a second
	}
	dir := t.TempDir()
	tester := startCaddy(t, cacheBlock(dir, "", ms))
	repo.learn(t, tester)

	pkg, want := repo.pkgs[0], repo.files[repo.pkgs[0]]
	before := sent(ms)
	fetchAll(t, tester, 4, pkg, want)
	if up := sent(ms) - before; up > int64(len(want))*11/10 {
		t.Errorf("4 clients: the mirrors sent %d bytes, want at most 1.1x the file's %d", up, len(want))
	}
	if files := cachedFiles(t, dir); len(files) != 1 {
		t.Fatalf("cache holds %v, want the one package", files)
	}

	before = sent(ms)
	fetchAll(t, tester, 3, pkg, want)
	if up := sent(ms) - before; up != 0 {
		t.Errorf("second round: the mirrors sent %d bytes, want 0", up)
	}
	st := cacheStats()
	if len(st) != 1 || st[0].Hits < 6 || st[0].Misses != 1 || st[0].SavedBytes < 6*int64(len(want)) {
		t.Errorf("cache stats %+v: want 6 hits, 1 miss, 6 files' bytes saved", st)
	}
}

// A file in the cache is served with the HTTP semantics of a mirror's:
// Range (single and multiple), HEAD, conditional requests, Last-Modified.
func TestCacheServesRangeHeadAndConditionalRequests(t *testing.T) {
	repo := newCacheRepo(1 << 20)
	ms := repo.mirrors(t, 2)
	tester := startCaddy(t, cacheBlock(t.TempDir(), "", ms))
	repo.learn(t, tester)
	pkg, want := repo.pkgs[0], repo.files[repo.pkgs[0]]
	fetchAll(t, tester, 1, pkg, want)
	before := sent(ms)

	resp, body := get(t, tester, newRequest(t, http.MethodGet, pkg, "Range", "bytes=1000-1999"))
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want[1000:2000]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(want)) {
		t.Errorf("Range: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Range"), len(body))
	}
	resp, body = get(t, tester, newRequest(t, http.MethodGet, pkg, "Range", "bytes=0-9,100-109"))
	if resp.StatusCode != http.StatusPartialContent || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") ||
		!bytes.Contains(body, want[100:110]) {
		t.Errorf("two ranges: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, body = get(t, tester, newRequest(t, http.MethodHead, pkg))
	if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.ContentLength != int64(len(want)) ||
		resp.Header.Get("Refractor-Mirror") != cacheMirror {
		t.Errorf("HEAD: %d, length %d, from %q", resp.StatusCode, resp.ContentLength, resp.Header.Get("Refractor-Mirror"))
	}
	lm := resp.Header.Get("Last-Modified")
	if lm != testmirror.ModTime.UTC().Format(http.TimeFormat) {
		t.Errorf("Last-Modified %q, want the mirror's %q", lm, testmirror.ModTime.UTC().Format(http.TimeFormat))
	}
	resp, _ = get(t, tester, newRequest(t, http.MethodGet, pkg, "If-Modified-Since", lm))
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-Modified-Since: %d, want 304", resp.StatusCode)
	}
	etag := resp.Header.Get("ETag")
	resp, _ = get(t, tester, newRequest(t, http.MethodGet, pkg, "If-None-Match", etag))
	if etag == "" || resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match %q: %d, want 304", etag, resp.StatusCode)
	}
	if up := sent(ms) - before; up != 0 {
		t.Errorf("the mirrors sent %d bytes for requests the cache could answer", up)
	}
}

// A mirror that fails in the middle of a fill with readers attached: the
// pool goes on from another mirror, every reader gets the whole file, and
// it is cached.
func TestCacheFillSurvivesAMirrorFailingMidTransfer(t *testing.T) {
	repo := newCacheRepo(4 << 20)
	ms := repo.mirrors(t, 2)
	for _, m := range ms {
		m.SetRate(4 << 20)
		m.SetFault(testmirror.ResetMidBody, "cpkg0", 1<<20)
	}
	ms[1].SetFault(testmirror.NoFault, "", 0)
	dir := t.TempDir()
	tester := startCaddy(t, cacheBlock(dir, "", ms))
	repo.learn(t, tester)
	fetchAll(t, tester, 3, repo.pkgs[0], repo.files[repo.pkgs[0]])
	if files := cachedFiles(t, dir); len(files) != 1 {
		t.Errorf("cache holds %v, want the package", files)
	}
}

// Mirrors that serve wrong bytes for a package: no client gets them, and
// nothing is cached.
func TestCacheNeverKeepsACorruptFile(t *testing.T) {
	repo := newCacheRepo(1 << 20)
	bad := map[string][]byte{}
	for k, v := range repo.files {
		bad[k] = v
	}
	pkg := repo.pkgs[0]
	flip := bytes.Clone(repo.files[pkg])
	flip[len(flip)/2] ^= 0xff
	bad[pkg] = flip
	ms := []*testmirror.Mirror{testmirror.New(t, bad), testmirror.New(t, bad)}
	dir := t.TempDir()
	tester := startCaddy(t, cacheBlock(dir, "", ms))
	repo.learn(t, tester)

	resp, err := tester.Client.Do(newRequest(t, http.MethodGet, pkg))
	if err == nil {
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil && resp.StatusCode == http.StatusOK && bytes.Equal(body, flip) {
			t.Fatal("the client got the corrupt file")
		}
	}
	waitFills(t)
	if files := cachedFiles(t, dir); len(files) != 0 {
		t.Errorf("the cache kept %v", files)
	}
}

// The cache stays under max_size, evicting the least recently used file.
func TestCacheEvictsToStayUnderMaxSize(t *testing.T) {
	repo := newCacheRepo(3<<20, 3<<20, 3<<20)
	ms := repo.mirrors(t, 2)
	dir := t.TempDir()
	tester := startCaddy(t, cacheBlock(dir, "max_size 7MiB", ms))
	repo.learn(t, tester)
	for _, pkg := range repo.pkgs {
		fetchAll(t, tester, 1, pkg, repo.files[pkg])
	}
	st := cacheStats()
	if len(st) != 1 || st[0].Size > 7<<20 || st[0].Files != 2 || st[0].Evicted != 1 {
		t.Fatalf("cache %+v: want 2 files within 7 MiB, 1 evicted", st)
	}
	// The first package was the least recently used.
	before := sent(ms)
	fetchAll(t, tester, 1, repo.pkgs[2], repo.files[repo.pkgs[2]])
	if up := sent(ms) - before; up != 0 {
		t.Errorf("a kept file: the mirrors sent %d bytes", up)
	}
	before = sent(ms)
	fetchAll(t, tester, 1, repo.pkgs[0], repo.files[repo.pkgs[0]])
	if up := sent(ms) - before; up == 0 {
		t.Error("the evicted file came from nowhere")
	}
}

// fullDisk is a cache file on a disk that fills after room bytes.
type fullDisk struct {
	*os.File
	room int64
}

func (f *fullDisk) Write(p []byte) (int, error) {
	if int64(len(p)) > f.room {
		n, _ := f.File.Write(p[:f.room])
		f.room = 0
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	f.room -= int64(len(p))
	return f.File.Write(p)
}

// fullDiskAfter puts the caches the test opens on a disk that is full
// after room bytes of each fill.
func fullDiskAfter(t *testing.T, room int64) {
	cacheCreateTemp = func(dir, pattern string) (filecache.File, error) {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return nil, err
		}
		return &fullDisk{File: f, room: room}, nil
	}
	t.Cleanup(func() { cacheCreateTemp = nil })
}

// A full disk fails the cache's write, not the download: the clients
// reading the fill go on from the mirrors, and nothing is cached.
func TestCacheFullDiskFailsTheWriteNotTheDownload(t *testing.T) {
	fullDiskAfter(t, 1<<20)
	repo := newCacheRepo(4 << 20)
	ms := repo.mirrors(t, 2)
	for _, m := range ms {
		m.SetRate(8 << 20)
	}
	dir := filepath.Join(t.TempDir(), "full") // a store of its own, with the full disk
	tester := startCaddy(t, cacheBlock(dir, "", ms))
	repo.learn(t, tester)

	pkg, want := repo.pkgs[0], repo.files[repo.pkgs[0]]
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			resp, err := tester.Client.Do(newRequest(t, http.MethodGet, pkg))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
				t.Errorf("status %d, %d of %d bytes, intact %v, err %v", resp.StatusCode, len(body), len(want), bytes.Equal(body, want), err)
			}
		})
	}
	wg.Wait()
	waitFills(t)
	if files := cachedFiles(t, dir); len(files) != 0 {
		t.Errorf("a full disk kept %v", files)
	}
	if st := cacheStats(); len(st) != 1 || st[0].WriteErrors == 0 {
		t.Errorf("cache stats %+v: want the failed write counted", st)
	}
}

// The admin API purges one path, or everything.
func TestCacheAdminPurge(t *testing.T) {
	repo := newCacheRepo(256<<10, 256<<10)
	ms := repo.mirrors(t, 2)
	dir := t.TempDir()
	tester := startCaddy(t, cacheBlock(dir, "", ms))
	repo.learn(t, tester)
	for _, pkg := range repo.pkgs {
		fetchAll(t, tester, 1, pkg, repo.files[pkg])
	}
	purge := func(query string) int {
		req, _ := http.NewRequest(http.MethodDelete, fmt.Sprintf("http://localhost:%d/refractor/cache%s", adminPort, query), nil)
		resp, body := get(t, tester, req)
		var out struct{ Purged int }
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil {
			t.Fatalf("DELETE /refractor/cache%s: %d %s", query, resp.StatusCode, body)
		}
		return out.Purged
	}
	if n := purge("?path=" + repo.pkgs[0]); n != 1 || len(cachedFiles(t, dir)) != 1 {
		t.Errorf("purging a path removed %d, left %v", n, cachedFiles(t, dir))
	}
	if n := purge(""); n != 1 || len(cachedFiles(t, dir)) != 0 {
		t.Errorf("purging everything removed %d, left %v", n, cachedFiles(t, dir))
	}
	req, _ := http.NewRequest(http.MethodDelete, fmt.Sprintf("http://localhost:%d/refractor/cache?path=nothing/here", adminPort), nil)
	if resp, _ := get(t, tester, req); resp.StatusCode != http.StatusNotFound {
		t.Errorf("purging an unknown path: %d, want 404", resp.StatusCode)
	}
}

// The fill is paced by the mirrors, not its first client: a client that
// leaves in the middle does not end it, and the file is cached.
func TestCacheFillOutlivesItsFirstClient(t *testing.T) {
	repo := newCacheRepo(4 << 20)
	ms := repo.mirrors(t, 2)
	for _, m := range ms {
		m.SetRate(4 << 20)
	}
	dir := t.TempDir()
	tester := startCaddy(t, cacheBlock(dir, "", ms))
	repo.learn(t, tester)
	pkg, want := repo.pkgs[0], repo.files[repo.pkgs[0]]

	resp, err := tester.Client.Do(newRequest(t, http.MethodGet, pkg))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // the client leaves
	waitFills(t)
	if files := cachedFiles(t, dir); len(files) != 1 {
		t.Fatalf("cache holds %v after its first client left, want the package", files)
	}
	before := sent(ms)
	fetchAll(t, tester, 1, pkg, want)
	if up := sent(ms) - before; up != 0 {
		t.Errorf("the mirrors sent %d bytes for a cached file", up)
	}
}

// A restart keeps the cache: a new Caddy process with the same cache
// directory serves the package from disk (it learns the package's hash
// from the database again, but asks no mirror for the package).
func TestCacheSurvivesARestart(t *testing.T) {
	repo := newCacheRepo(1 << 20)
	ms := repo.mirrors(t, 2)
	dir := t.TempDir()
	block := cacheBlock(dir, "", ms)
	pkg, want := repo.pkgs[0], repo.files[repo.pkgs[0]]
	fetch := func(p *caddyProcess) string {
		resp, err := http.Get(p.url(pkg))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
			t.Fatalf("status %d, %d bytes, err %v", resp.StatusCode, len(body), err)
		}
		return resp.Header.Get("Refractor-Mirror")
	}

	first := startCaddyProcess(t, t.TempDir(), block)
	if resp, err := http.Get(first.url(cacheDB)); err == nil {
		resp.Body.Close()
	}
	// The first GETs may come before the database is corroborated (and
	// then are not cached); one comes from the cache once it is.
	waitFor(t, "the first process to serve the package from its cache", func() bool { return fetch(first) == cacheMirror })
	first.stop(t)

	second := startCaddyProcess(t, t.TempDir(), block)
	before := sent(ms)
	if from := fetch(second); from != cacheMirror {
		t.Errorf("after a restart the package came from %q, not the cache", from)
	}
	if up := sent(ms) - before; up > int64(len(repo.files[cacheDB]))*4 {
		t.Errorf("after a restart the mirrors sent %d bytes: more than the database's copies", up)
	}
}

// rangeLiar serves files whole as they are, and ranges of them corrupted.
func rangeLiar(t *testing.T, files map[string][]byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Range") != "" {
			b = bytes.Clone(b)
			for i := range b {
				b[i] ^= 0x5a
			}
		}
		http.ServeContent(w, r, "", testmirror.ModTime, bytes.NewReader(b))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A client whose fill failed in the middle goes on from the mirrors; if
// what they send for the rest does not make the file its index gives, the
// response is aborted rather than completed: never a wrong file that looks
// whole.
func TestCacheContinuationIsCheckedWhole(t *testing.T) {
	fullDiskAfter(t, 1<<20)
	repo := newCacheRepo(4 << 20)
	a, b := rangeLiar(t, repo.files), rangeLiar(t, repo.files)
	dir := filepath.Join(t.TempDir(), "full")
	tester := startCaddy(t, fmt.Sprintf(`
			workers 2
			sync_file off
			cache %s {
				min_free 1MiB
			}
			provider static %s/ %s/`, dir, a.URL, b.URL))
	repo.learn(t, tester)

	pkg, want := repo.pkgs[0], repo.files[repo.pkgs[0]]
	resp, err := tester.Client.Do(newRequest(t, http.MethodGet, pkg))
	if err != nil {
		return // aborted before the headers: fine
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && len(body) == len(want) && !bytes.Equal(body, want) {
		t.Fatal("the client got a wrong file of the right length, without an error")
	}
	if err == nil && !bytes.Equal(body, want) {
		t.Errorf("the client got %d bytes without an error, want the file or an aborted response", len(body))
	}
}

// With a cache, machines asking for the same index at once share one
// upstream transfer of it (indexes are never cached): every client gets
// the index whole, and the mirrors send it about once, not once a client.
func TestCacheCoalescesConcurrentIndexRequests(t *testing.T) {
	const db = "core/os/x86_64/core.db"
	files := map[string][]byte{db: testmirror.Content(db, 2<<20)}
	ms := []*testmirror.Mirror{testmirror.New(t, files), testmirror.New(t, files)}
	for _, m := range ms {
		m.SetRate(4 << 20)
	}
	tester := startCaddy(t, cacheBlock(t.TempDir(), "", ms))
	const clients = 6
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			resp, body := get(t, tester, newRequest(t, http.MethodGet, db))
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, files[db]) {
				t.Errorf("status %d, %d bytes, intact %v", resp.StatusCode, len(body), bytes.Equal(body, files[db]))
			}
		})
	}
	wg.Wait()
	// One copy for the clients, and the pool's own copies to learn from
	// the index (a second mirror's, to corroborate it).
	if up := sent(ms); up > 3*int64(len(files[db])) {
		t.Errorf("%d clients: the mirrors sent %d bytes, %.1f copies of the index; want at most 3", clients, up, float64(up)/float64(len(files[db])))
	}
	// A conditional request is the client's own.
	resp, _ := get(t, tester, newRequest(t, http.MethodGet, db, "If-Modified-Since", testmirror.ModTime.UTC().Format(http.TimeFormat)))
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("conditional request: %d, want 304", resp.StatusCode)
	}
}

// A request that shares another's transfer of an index is not held by
// that request's client: when the first client stops reading, the second
// is served on its own.
func TestCacheSharedTransferDoesNotWaitForAStalledClient(t *testing.T) {
	const db = "core/os/x86_64/core.db"
	files := map[string][]byte{db: testmirror.Content(db, 32<<20)}
	ms := []*testmirror.Mirror{testmirror.New(t, files), testmirror.New(t, files)}
	for _, m := range ms {
		m.SetRate(16 << 20) // the first client is still on it when the second comes
	}
	tester := startCaddy(t, cacheBlock(t.TempDir(), "", ms))

	stalled, err := tester.Client.Do(newRequest(t, http.MethodGet, db))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Body.Close()
	if _, err := io.ReadFull(stalled.Body, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	// The first client reads no more while the second asks.
	resp, body := get(t, tester, newRequest(t, http.MethodGet, db))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, files[db]) {
		t.Fatalf("the second client: status %d, %d bytes", resp.StatusCode, len(body))
	}
}

// A fill that fails before its first byte (every mirror answers 404) gives
// its readers the pool's answer: the mirrors are asked once, not once for
// the fill and once more for the request.
func TestCacheFillFailureIsTheRequestsAnswer(t *testing.T) {
	repo := newCacheRepo(256 << 10)
	pkg := repo.pkgs[0]
	gone := map[string][]byte{}
	for k, v := range repo.files {
		if k != pkg {
			gone[k] = v
		}
	}
	ms := []*testmirror.Mirror{testmirror.New(t, gone), testmirror.New(t, gone)}
	tester := startCaddy(t, cacheBlock(t.TempDir(), "", ms))
	repo.learn(t, tester)
	before := ms[0].Requests() + ms[1].Requests()
	resp, _ := get(t, tester, newRequest(t, http.MethodGet, pkg))
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("status %d, want 404", resp.StatusCode)
	}
	// One each, and the second mirror's parallel trial of the same file
	// (it has served nothing yet, and the index it fetched was too small
	// to make a sample).
	if n := ms[0].Requests() + ms[1].Requests() - before; n > 3 {
		t.Errorf("the mirrors got %d requests for a file they lack, want one each and a trial", n)
	}
}

// gatedMirror serves files, holding its answers for gated paths until the
// test opens the gate.
func gatedMirror(t *testing.T, files map[string][]byte, gated string) (*httptest.Server, chan struct{}) {
	gate := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rel := strings.TrimPrefix(r.URL.Path, "/")
		b, ok := files[rel]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if rel == gated {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		http.ServeContent(w, r, "", testmirror.ModTime, bytes.NewReader(b))
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	})
	return srv, gate
}

// A package asked for while the pool is still corroborating its index
// (the second copy comes from a slow mirror) is filled pending: clients
// get it at once, and once the index is learned it is kept, so the next
// client's copy crosses no network.
func TestCachePendingFillIsKeptOnceTheIndexIsLearned(t *testing.T) {
	repo := newCacheRepo(1 << 20)
	fast := testmirror.New(t, repo.files)
	slow, gate := gatedMirror(t, repo.files, cacheDB)
	dir := t.TempDir()
	// The fast mirror is listed first: it serves the client's database,
	// and the learner asks the slow one for the second copy.
	tester := startCaddy(t, fmt.Sprintf(`
			workers 2
			sync_file off
			cache %s {
				min_free 1MiB
			}
			provider static %s %s/`, dir, fast.Base(), slow.URL))
	resp, _ := get(t, tester, newRequest(t, http.MethodGet, cacheDB))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Refractor-Mirror") != fast.Base() {
		t.Fatalf("database: %d from %q, want the fast mirror's", resp.StatusCode, resp.Header.Get("Refractor-Mirror"))
	}
	pkg, want := repo.pkgs[0], repo.files[repo.pkgs[0]]
	fetchAllNoWait(t, tester, 2, pkg, want) // while the index is not learned
	close(gate)                             // the second copy arrives: learned
	waitFills(t)
	if files := cachedFiles(t, dir); len(files) != 1 {
		t.Fatalf("cache holds %v, want the package filled while its index was learned", files)
	}
	before := fast.BytesSent()
	fetchAll(t, tester, 1, pkg, want)
	if up := fast.BytesSent() - before; up != 0 {
		t.Errorf("the fast mirror sent %d bytes for a package the cache has", up)
	}
}
