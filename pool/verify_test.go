package pool

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// Verification against the repository's index, with real mirrors on
// 127.0.0.1 serving a real (gzip-compressed tar) pacman database.

const dbName = "extra/os/x86_64/extra.db"

// pacmanDB builds a sync database listing files (name relative to the
// database's directory → content) with their sizes and SHA-256.
func pacmanDB(_ testing.TB, files map[string][]byte) []byte { return testmirror.PacmanDB(files) }

// repoTree is a mirror's tree: the database listing good, and the packages
// as this mirror serves them (served may differ from good: a liar).
func repoTree(db []byte, served map[string][]byte) map[string][]byte {
	tree := map[string][]byte{dbName: db}
	for name, b := range served {
		tree[dirOf(dbName)+name] = b
	}
	return tree
}

// flipped is b with its middle byte inverted: the right length, the
// wrong file.
func flipped(b []byte) []byte {
	c := bytes.Clone(b)
	c[len(c)/2] ^= 0xff
	return c
}

// lieRecorder counts the files that failed their check.
type lieRecorder struct {
	recorder
	mu   sync.Mutex
	lies [][]string
}

func (r *lieRecorder) VerifyFailed(mirrors []string, _ string) {
	r.mu.Lock()
	r.lies = append(r.lies, mirrors)
	r.mu.Unlock()
}

func (r *lieRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lies)
}

// learnDB serves the database to a client through p and waits until the
// catalog has learned it (corroborated by a second mirror).
func learnDB(t *testing.T, p *Pool) {
	t.Helper()
	if rec, err := serve(t, p, nil, dbName); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("database: status %d, %v", rec.Code, err)
	}
	pollFor(t, 10*time.Second, "the catalog to learn the database", func() bool {
		p.catalog.mu.Lock()
		defer p.catalog.mu.Unlock()
		_, ok := p.catalog.learned[dbName]
		return ok
	})
}

// An untrusted mirror that serves wrong bytes with the right status and
// length is caught before anything is sent: the client gets the file from
// another mirror, and the liar is evicted at once.
func TestVerifyCatchesAnUntrustedLiarBeforeSending(t *testing.T) {
	pkgs := map[string][]byte{"foo-1.0-1-x86_64.pkg.tar.zst": testmirror.Content("foo", 300<<10)}
	db := pacmanDB(t, pkgs)
	liar := testmirror.New(t, repoTree(db, map[string][]byte{"foo-1.0-1-x86_64.pkg.tar.zst": flipped(pkgs["foo-1.0-1-x86_64.pkg.tar.zst"])}))
	good1, good2 := testmirror.New(t, repoTree(db, pkgs)), testmirror.New(t, repoTree(db, pkgs))
	obs := &lieRecorder{}
	p := servePool(t, Config{Observer: obs}, liar, good1, good2)
	learnDB(t, p)
	setSamples(t, p, liar.Base(), 50<<20) // the best: it is asked first
	rel := dirOf(dbName) + "foo-1.0-1-x86_64.pkg.tar.zst"
	before := liar.Requests()
	rec, err := serve(t, p, nil, rel)
	if err != nil || rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), pkgs["foo-1.0-1-x86_64.pkg.tar.zst"]) {
		t.Fatalf("status %d, %d bytes, equal %v, Serve: %v; want the good file", rec.Code, rec.Body.Len(),
			bytes.Equal(rec.Body.Bytes(), pkgs["foo-1.0-1-x86_64.pkg.tar.zst"]), err)
	}
	if liar.Requests() == before {
		t.Fatal("the liar was not asked: the test proves nothing")
	}
	if inPool(p, liar.Base()) {
		t.Fatal("the liar is still in the pool")
	}
	if obs.count() != 1 {
		t.Fatalf("%d verify failures reported, want 1", obs.count())
	}
}

// A trusted mirror's file is streamed as it comes; when it turns out wrong
// the response is aborted before its last bytes, never ended cleanly, and
// the mirror is evicted whatever its speed.
func TestVerifyAbortsATrustedLiarsStream(t *testing.T) {
	name := "big-1.0-1-x86_64.pkg.tar.zst"
	pkgs := map[string][]byte{name: testmirror.Content(name, 2<<20)}
	db := pacmanDB(t, pkgs)
	liar := testmirror.New(t, repoTree(db, map[string][]byte{name: flipped(pkgs[name])}))
	good := testmirror.New(t, repoTree(db, pkgs))
	obs := &lieRecorder{}
	p := servePool(t, Config{Observer: obs, PeekSize: 64 << 10, Split: 1}, liar, good)
	learnDB(t, p)
	setSamples(t, p, liar.Base(), 50<<20)
	w := workerOf(t, p, liar.Base())
	p.state.mu.Lock()
	w.stats.verified = trustAfter
	p.state.mu.Unlock()

	rec, err := serve(t, p, nil, dirOf(dbName)+name)
	if !errors.Is(err, ErrAborted) {
		t.Fatalf("Serve: %v, want ErrAborted", err)
	}
	if rec.Body.Len() >= len(pkgs[name]) {
		t.Fatalf("the client got all %d bytes of a wrong file before the abort", rec.Body.Len())
	}
	if inPool(p, liar.Base()) {
		t.Fatal("the liar is still in the pool")
	}
	// The next request gets the good file.
	rec, err = serve(t, p, nil, dirOf(dbName)+name)
	wantFile(t, rec, err, good, pkgs[name])
}

// A database that only one mirror serves is not believed: it teaches no
// hash, so a forged database cannot make good mirrors look like liars.
func TestVerifyBelievesOnlyACorroboratedIndex(t *testing.T) {
	name := "foo-1.0-1-x86_64.pkg.tar.zst"
	pkgs := map[string][]byte{name: testmirror.Content(name, 100<<10)}
	forged := pacmanDB(t, map[string][]byte{name: flipped(pkgs[name])})
	db := pacmanDB(t, pkgs)
	forger := testmirror.New(t, repoTree(forged, pkgs))
	good1, good2 := testmirror.New(t, repoTree(db, pkgs)), testmirror.New(t, repoTree(db, pkgs))
	obs := &lieRecorder{}
	p := servePool(t, Config{Observer: obs}, forger, good1, good2)
	setSamples(t, p, forger.Base(), 50<<20) // it serves the client's database
	rec, err := serve(t, p, nil, dbName)
	if err != nil || !bytes.Equal(rec.Body.Bytes(), forged) {
		t.Fatalf("the forger did not serve the database (Serve: %v): the test proves nothing", err)
	}
	pollFor(t, 10*time.Second, "the catalog to learn the database the other mirrors agree on", func() bool {
		p.catalog.mu.Lock()
		defer p.catalog.mu.Unlock()
		return p.catalog.learned[dbName].sum == sha256.Sum256(db)
	})
	for i := range 6 { // every mirror serves it, on trial
		rec, err := serve(t, p, nil, dirOf(dbName)+name)
		if err != nil || !bytes.Equal(rec.Body.Bytes(), pkgs[name]) {
			t.Fatalf("request %d: %d bytes from %s, Serve: %v; want the file", i, rec.Body.Len(), rec.Header().Get(MirrorHeader), err)
		}
	}
	if obs.count() != 0 || len(members(p)) != 3 {
		t.Fatalf("%d verify failures, members %v; want none, and every mirror kept", obs.count(), members(p))
	}
}

// A by-hash file (apt) is checked against the hash its name gives, with no
// index at all.
func TestVerifyChecksAByHashName(t *testing.T) {
	content := testmirror.Content("Packages", 10<<10)
	rel := fmt.Sprintf("dists/stable/main/binary-amd64/by-hash/SHA256/%x", sha256.Sum256(content))
	liar := testmirror.New(t, map[string][]byte{rel: flipped(content)})
	good := testmirror.New(t, map[string][]byte{rel: content})
	p := servePool(t, Config{}, liar, good)
	setSamples(t, p, liar.Base(), 50<<20)
	rec, err := serve(t, p, httptest.NewRequest(http.MethodGet, "/"+rel, nil), rel)
	wantFile(t, rec, err, good, content)
	if inPool(p, liar.Base()) {
		t.Fatal("the liar is still in the pool")
	}
}

// A 206 continuation that carries more bytes than its Content-Range
// announced (a chunked body, so nothing stops it) must not pass them on:
// the extra bytes would follow the file's end in the client's copy.
func TestVerifyLongPartialContentIsAFailure(t *testing.T) {
	const size = 1 << 20
	files := mirrorFiles(size)
	content := files[pkgName]
	a := testmirror.New(t, files)
	a.SetFault(testmirror.ShortBody, pkgName, 256<<10) // after the 64 KiB peek
	var ranges atomic.Int64
	b := mbChunkedRanges(t, content, &ranges, func(first, last int) []byte {
		return append(slices.Clone(content[first:last+1]), "trailing garbage"...)
	})
	c := testmirror.New(t, files)
	p := mbStartPool(t, Config{serialTrials: true, PeekSize: 64 << 10}, a.Base(), b.base(), c.Base())
	setSamples(t, p, a.Base(), 20<<20) // A, on trial, shows the best pace: it takes the request
	setSamples(t, p, b.base(), 10<<20) // B continues first
	rec, err := serve(t, p, nil, pkgName)
	if ranges.Load() == 0 {
		t.Fatalf("B was never asked to continue: the test proves nothing (Serve: %v)", err)
	}
	if err != nil || !bytes.Equal(rec.Body.Bytes(), content) {
		t.Fatalf("%d bytes of the file's %d, equal %v, Serve: %v; want the file exactly",
			rec.Body.Len(), len(content), bytes.Equal(rec.Body.Bytes(), content), err)
	}
}

// apt updating its Packages with pdiffs never fetches the whole file:
// the pool fetches it itself, once the client asks for the diff index,
// and learns the packages' hashes from it.
func TestVerifyLearnsPackagesPatchedByPdiffs(t *testing.T) {
	deb := testmirror.Content("foo.deb", 200<<10)
	debPath := "pool/main/f/foo/foo_1.0_all.deb"
	packages := fmt.Sprintf("Package: foo\nVersion: 1.0\nArchitecture: all\nFilename: %s\nSize: %d\nSHA256: %x\nDescription: a test\n second line\n\n",
		debPath, len(deb), sha256.Sum256(deb))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(packages))
	zw.Close()
	release := fmt.Sprintf("Origin: Test\nSuite: stable\nArchitectures: amd64\nComponents: main\nSHA256:\n %x %d main/binary-amd64/Packages.gz\n",
		sha256.Sum256(gz.Bytes()), gz.Len())
	tree := func(deb []byte) map[string][]byte {
		return map[string][]byte{
			"dists/stable/Release":                               []byte(release),
			"dists/stable/main/binary-amd64/Packages.gz":         gz.Bytes(),
			"dists/stable/main/binary-amd64/Packages.diff/Index": []byte("SHA256-Current: x 1\n"),
			debPath: deb,
		}
	}
	liar := testmirror.New(t, tree(flipped(deb)))
	good1, good2 := testmirror.New(t, tree(deb)), testmirror.New(t, tree(deb))
	p := servePool(t, Config{}, liar, good1, good2)
	for _, rel := range []string{"dists/stable/Release", "dists/stable/main/binary-amd64/Packages.diff/Index"} {
		if rec, err := serve(t, p, nil, rel); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("%s: status %d, %v", rel, rec.Code, err)
		}
	}
	pollFor(t, 10*time.Second, "the pool to learn the Packages file", func() bool {
		e, ok := p.catalog.lookup(t.Context(), debPath, learnWait)
		return ok && e.sum == sha256.Sum256(deb)
	})
	setSamples(t, p, liar.Base(), 50<<20)
	rec, err := serve(t, p, nil, debPath)
	if err != nil || !bytes.Equal(rec.Body.Bytes(), deb) {
		t.Fatalf("%d bytes from %s, Serve: %v; want the good .deb", rec.Body.Len(), rec.Header().Get(MirrorHeader), err)
	}
	if inPool(p, liar.Base()) {
		t.Fatal("the liar is still in the pool")
	}
}

// A client that asks for a package without refreshing its databases (or
// the first after a restart) still gets it checked: the pool fetches the
// database that lists it, from two mirrors, before answering.
func TestVerifyFetchesTheDatabaseOfAnUnknownPackage(t *testing.T) {
	name := "foo-1.0-1-x86_64.pkg.tar.zst"
	pkgs := map[string][]byte{name: testmirror.Content(name, 300<<10)}
	db := pacmanDB(t, pkgs)
	liar := testmirror.New(t, repoTree(db, map[string][]byte{name: flipped(pkgs[name])}))
	good1, good2 := testmirror.New(t, repoTree(db, pkgs)), testmirror.New(t, repoTree(db, pkgs))
	p := servePool(t, Config{}, liar, good1, good2)
	setSamples(t, p, liar.Base(), 50<<20) // asked first
	rec, err := serve(t, p, nil, dirOf(dbName)+name)
	if err != nil || !bytes.Equal(rec.Body.Bytes(), pkgs[name]) {
		t.Fatalf("%d bytes from %s, Serve: %v; want the good file", rec.Body.Len(), rec.Header().Get(MirrorHeader), err)
	}
	if inPool(p, liar.Base()) {
		t.Fatal("the liar is still in the pool")
	}
}

// trust makes key's mirror trusted, as if it had served trustAfter files
// that verified: its files stream as they come.
func trust(t *testing.T, p *Pool, key string) {
	t.Helper()
	w := workerOf(t, p, key)
	p.state.mu.Lock()
	w.stats.verified = trustAfter
	p.state.mu.Unlock()
}

// A mirror that sends a known file without a length (chunked) is not a
// liar: the index gives the length, and the client gets it too.
func TestVerifyAcceptsAKnownFileWithoutLength(t *testing.T) {
	name := "foo-1.0-1-x86_64.pkg.tar.zst"
	pkgs := map[string][]byte{name: testmirror.Content(name, 300<<10)}
	db := pacmanDB(t, pkgs)
	tree := repoTree(db, pkgs)
	chunked := mbStart(t, func(w http.ResponseWriter, r *http.Request) {
		b, ok := tree[strings.TrimPrefix(r.URL.Path, "/repo/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Last-Modified", testmirror.ModTime.UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusOK)
		_ = http.NewResponseController(w).Flush() // chunked: no Content-Length
		w.Write(b)
	})
	good := testmirror.New(t, tree)
	obs := &lieRecorder{}
	p := mbStartPool(t, Config{Observer: obs}, chunked.base(), good.Base())
	learnDB(t, p)
	setSamples(t, p, chunked.base(), 50<<20)
	for _, trusted := range []bool{false, true} {
		if trusted {
			trust(t, p, chunked.base())
		}
		rec, err := serve(t, p, nil, dirOf(dbName)+name)
		if err != nil || !bytes.Equal(rec.Body.Bytes(), pkgs[name]) || rec.Header().Get(MirrorHeader) != chunked.base() {
			t.Fatalf("trusted %v: %d bytes from %s, Serve: %v; want the file from the chunked mirror",
				trusted, rec.Body.Len(), rec.Header().Get(MirrorHeader), err)
		}
		if got := rec.Header().Get("Content-Length"); got != strconv.Itoa(len(pkgs[name])) {
			t.Fatalf("trusted %v: Content-Length %q, want the index's %d", trusted, got, len(pkgs[name]))
		}
	}
	if obs.count() != 0 || !inPool(p, chunked.base()) {
		t.Fatalf("%d verify failures, in pool %v: an honest mirror was taken for a liar", obs.count(), inPool(p, chunked.base()))
	}
}

// A transfer parked by a stalled client and resumed from a mirror that
// lies only in its Range answers is caught: the bytes checked are the
// bytes the client gets, so the response is aborted before its end.
func TestVerifyChecksWhatAResumedTransferSends(t *testing.T) {
	name := "big-1.0-1-x86_64.pkg.tar.zst"
	pkgs := map[string][]byte{name: testmirror.Content(name, 3<<20)}
	db := pacmanDB(t, pkgs)
	first := testmirror.New(t, repoTree(db, pkgs))
	good := pkgs[name]
	rangeLiar := mbStart(t, func(w http.ResponseWriter, r *http.Request) {
		rel := strings.TrimPrefix(r.URL.Path, "/repo/")
		content := good
		if first, _, ok := mbParseRange(r.Header.Get("Range"), len(good)); ok {
			// Honest for whole files; in a range, the first byte is wrong:
			// the bytes a parked transfer dropped, and fetches again.
			content = bytes.Clone(good)
			content[first] ^= 0xff
		}
		if rel == dbName {
			content = db
		} else if rel != dirOf(dbName)+name {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, path.Base(rel), testmirror.ModTime, bytes.NewReader(content))
	})
	p := mbStartPool(t, Config{}, first.Base(), rangeLiar.base())
	learnDB(t, p)
	setSamples(t, p, first.Base(), 50<<20) // the download starts there
	trust(t, p, first.Base())
	trust(t, p, rangeLiar.base())
	client := &stallingClient{ResponseRecorder: httptest.NewRecorder(), stall: 2 * parkAfter}
	client.onStall = func() { first.SetFault(testmirror.Status500, name, 0) } // the resume goes elsewhere
	err := p.Serve(client, httptest.NewRequest(http.MethodGet, "/"+dirOf(dbName)+name, nil), dirOf(dbName)+name)
	if err == nil && !bytes.Equal(client.Body.Bytes(), good) {
		t.Fatalf("the client got a wrong file of %d bytes, ended cleanly", client.Body.Len())
	}
	if err == nil {
		t.Skip("the transfer did not resume on the range liar: the test proves nothing this time")
	}
	if !errors.Is(err, ErrAborted) {
		t.Fatalf("Serve: %v, want ErrAborted", err)
	}
}

// A mirror whose attempt failed before any of its bytes reached the
// client is not one of the file's contributors: when the mirror that did
// serve it turns out to lie, that liar alone is blamed, and evicted.
func TestVerifyBlamesOnlyWhoseBytesWereSent(t *testing.T) {
	name := "big-1.0-1-x86_64.pkg.tar.zst"
	pkgs := map[string][]byte{name: testmirror.Content(name, 2<<20)}
	db := pacmanDB(t, pkgs)
	broken := testmirror.New(t, repoTree(db, pkgs))
	broken.SetFault(testmirror.ShortBody, name, 1000) // fails in its peek
	liar := testmirror.New(t, repoTree(db, map[string][]byte{name: flipped(pkgs[name])}))
	obs := &lieRecorder{}
	p := servePool(t, Config{Observer: obs, PeekSize: 64 << 10}, broken, liar)
	learnDB(t, p)
	setSamples(t, p, broken.Base(), 50<<20) // tried first
	setSamples(t, p, liar.Base(), 10<<20)
	trust(t, p, broken.Base())
	trust(t, p, liar.Base())
	_, err := serve(t, p, nil, dirOf(dbName)+name)
	if !errors.Is(err, ErrAborted) {
		t.Fatalf("Serve: %v, want ErrAborted", err)
	}
	obs.mu.Lock()
	lies := slices.Clone(obs.lies)
	obs.mu.Unlock()
	if len(lies) != 1 || !slices.Equal(lies[0], []string{liar.Base()}) {
		t.Fatalf("blamed %v, want the liar alone", lies)
	}
	if inPool(p, liar.Base()) {
		t.Fatal("the liar is still in the pool")
	}
}

// A mirror whose lengths other mirrors corroborated for trustAfter files
// has earned trust for lengths: its next large files cost no HEADs.
func TestWitnessesStopOnceLengthsAreTrusted(t *testing.T) {
	files := mirrorFiles(2 << 20)
	var heads atomic.Int64
	serveFiles := func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			heads.Add(1)
		}
		b, ok := files[strings.TrimPrefix(r.URL.Path, "/repo/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, path.Base(r.URL.Path), testmirror.ModTime, bytes.NewReader(b))
	}
	a, b, c := mbStart(t, serveFiles), mbStart(t, serveFiles), mbStart(t, serveFiles)
	p := mbStartPool(t, Config{PeekSize: 64 << 10, SkipVerify: true}, a.base(), b.base(), c.base())
	setSamples(t, p, a.base(), 50<<20, 50<<20, 50<<20) // ranked, the best: it serves them all
	setSamples(t, p, b.base(), 1<<20, 1<<20, 1<<20)
	setSamples(t, p, c.base(), 1<<20, 1<<20, 1<<20)
	for i := range trustAfter + 2 {
		before := heads.Load()
		rec, err := serve(t, p, nil, pkgName)
		if err != nil || !bytes.Equal(rec.Body.Bytes(), files[pkgName]) || rec.Header().Get(MirrorHeader) != a.base() {
			t.Fatalf("request %d: %d bytes from %s, Serve: %v", i, rec.Body.Len(), rec.Header().Get(MirrorHeader), err)
		}
		// A witness that agrees ends the wait, and the other's HEAD may be
		// cancelled before it arrives: at least one a file, until trusted.
		asked := heads.Load() - before
		if trusted := i >= trustAfter; trusted && asked != 0 || !trusted && asked == 0 {
			t.Fatalf("request %d: %d HEADs to witnesses; want some for each of the first %d files, then none", i, asked, trustAfter)
		}
	}
}

// When two mirrors agree against the index on a file (a file rebuilt
// under the same name, an index gone wrong), the index's entry for it is
// dropped: it stops condemning every mirror that has the file.
func TestVerifyDropsAnEntryTwoMirrorsDispute(t *testing.T) {
	name := "foo-1.0-1-x86_64.pkg.tar.zst"
	listed := testmirror.Content(name, 100<<10)
	rebuilt := flipped(listed)
	db := pacmanDB(t, map[string][]byte{name: listed})
	a := testmirror.New(t, repoTree(db, map[string][]byte{name: rebuilt}))
	b := testmirror.New(t, repoTree(db, map[string][]byte{name: rebuilt}))
	c := testmirror.New(t, repoTree(db, map[string][]byte{name: rebuilt}))
	p := servePool(t, Config{}, a, b, c)
	learnDB(t, p)
	rel := dirOf(dbName) + name
	if _, ok := p.catalog.known(rel); !ok {
		t.Fatal("the database's entry was not learned")
	}
	serve(t, p, nil, rel) // two of them, at least, are asked and disagree with the index
	if _, ok := p.catalog.known(rel); ok {
		t.Fatal("the entry two mirrors agree against is still in the catalog")
	}
}

// A learner asks a third mirror for an index only when the copy under way
// will not be whole within hedgeHorizon at its pace: a copy that is merely
// more than hedgeAfter long costs no hedged copy.
func TestLearnerHedgesOnlyForASlowCopy(t *testing.T) {
	pkgs := map[string][]byte{}
	for i := range 3000 {
		name := fmt.Sprintf("p%d-1.0-1-x86_64.pkg.tar.zst", i)
		pkgs[name] = []byte(name)
	}
	db := pacmanDB(t, pkgs)
	client := testmirror.New(t, repoTree(db, pkgs))
	second, third := testmirror.New(t, repoTree(db, pkgs)), testmirror.New(t, repoTree(db, pkgs))
	second.SetRate(len(db) * 2 / 3) // about 1.5 s: longer than hedgeAfter, steady
	p := servePool(t, Config{}, client, second, third)
	p.vote(dbName, db, client.Base(), "") // the client's copy: alone, it teaches nothing
	before := third.Requests()
	if !p.learn(dbName, client.Base()) {
		t.Fatal("no learner started")
	}
	pollFor(t, 10*time.Second, "the catalog to learn the database", func() bool {
		p.catalog.mu.Lock()
		defer p.catalog.mu.Unlock()
		_, ok := p.catalog.learned[dbName]
		return ok
	})
	if n := third.Requests() - before; n != 0 {
		t.Errorf("the third mirror was asked %d times though the second's copy was on its way", n)
	}
}

// A package counts as learning only while its own index is (where the
// layout names it): a pending cache fill of a package no learner will
// list would be fetched for nothing.
func TestLearningIsThePackagesOwnIndex(t *testing.T) {
	p := servePool(t, Config{})
	p.catalog.mu.Lock()
	p.catalog.learning["extra/os/x86_64/extra.db"] = time.Now()
	p.catalog.mu.Unlock()
	for rel, want := range map[string]bool{
		"extra/os/x86_64/foo-1.0-1-x86_64.pkg.tar.zst": true,
		"core/os/x86_64/foo-1.0-1-x86_64.pkg.tar.zst":  false,
		"extra/os/x86_64/extra.db":                     false, // an index
		"pool/main/f/foo/foo_1.0_all.deb":              true,  // apt: no index named by the layout
	} {
		if got := p.Learning(rel); got != want {
			t.Errorf("Learning(%s) = %v, want %v", rel, got, want)
		}
	}
	p.catalog.mu.Lock()
	delete(p.catalog.learning, "extra/os/x86_64/extra.db")
	p.catalog.mu.Unlock()
}
