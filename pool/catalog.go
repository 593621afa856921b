package pool

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-refractor/refractor/repoindex"
	"go.uber.org/zap"
)

// The catalog: the size and SHA-256 of each package, as the repository's
// own indexes say (pacman databases; apt's Release files, which give the
// hashes of the Packages files, which give the packages'; an RPM
// repository's repodata/repomd.xml, which gives the hash of its primary
// metadata, which gives the packages'). An index is evidence, not truth:
// refractor checks no signature, so an index teaches hashes only once two
// mirrors serve the same bytes for it, or once a corroborated Release (or
// repomd.xml) lists its hash. Indexes are learned from what passes through
// to clients and from the pool's own fetches: alongside a client's
// download of an index (to corroborate it), and when a client's copy did
// not pass through (a 304, a by-hash fetch, apt's pdiffs, a package asked
// for without its database, primary metadata that dnf did not fetch again
// or fetched as zchunk).

const (
	// maxIndexBytes bounds an index the pool keeps to learn from.
	maxIndexBytes = 128 << 20
	// maxCatalogEntries bounds the files a catalog knows; beyond it, it
	// forgets everything and learns again from the indexes it sees next.
	maxCatalogEntries = 1_000_000
	// learnWait: a request for a package waits for an index being learned,
	// so that the package can be checked, until this long after the
	// learner began (waitLearners); the index may still be learned before
	// the package's response is committed, and then it checks it too
	// (expectLate). make bench measured every request of the learning
	// window waiting 250 ms at 1.2-1.5x the time of a cold pool's first
	// download, as corroborating a database takes a second copy from a
	// mirror of unknown speed.
	learnWait = 250 * time.Millisecond
	// relearnAfter: the pool fetches an index itself at most this often.
	relearnAfter = time.Minute
	// learnVoters is how many mirrors a learner asks at most for one
	// index before it gives up finding two that agree. It asks another
	// whenever none has answered for hedgeAfter (in a cold pool the first
	// pick may be the slowest mirror). Asking two at once from the start
	// cost the degrade scenario of make bench a fifth of its throughput:
	// the copies took the fast mirrors in the seconds that count.
	learnVoters = 4
	hedgeAfter  = time.Second
	// hedgeHorizon: at each hedgeAfter, another mirror is asked only if
	// no copy under way will be whole within this long at its pace so far.
	// Every hedged copy costs its bytes: make bench's lan/cache scenario
	// measured the mirrors sending 1.12x one machine's bytes when the
	// learner hedged every second while no copy had answered, 1.11x with
	// a 1 s horizon and 1.09x with 3 s (target 1.1x), the machines as
	// fast (0.43x and 0.46x the cache-off time; medians of 3).
	hedgeHorizon = 3 * time.Second
	// learnTimeout bounds one fetch of an index by the pool.
	learnTimeout = time.Minute
)

// entry is what a repository's index says of one file. size is -1 when
// only the hash is known (an apt by-hash name no Release listed).
type entry struct {
	size int64
	sum  [32]byte // SHA-256
}

// version is an index's version the catalog learned from.
type version struct {
	sum      [32]byte
	modified string // its Last-Modified, if known: the pool's fetches are conditional
}

// catalog is a pool's knowledge of its repository's files. Its lock is a
// leaf.
type catalog struct {
	mu       sync.Mutex
	cond     sync.Cond            // on mu: a learner finished
	files    map[string]entry     // package path → what a corroborated index says of it
	indexes  map[string]entry     // index path → what a corroborated Release or repomd.xml says of it
	listed   map[[32]byte]string  // hash → path of a Packages file in indexes
	follow   map[string][]string  // repomd.xml path → the primary metadata its learned version lists
	learned  map[string]version   // index path → the version learned
	votes    tally                // index path → version → mirrors that served it
	tried    map[string]time.Time // index path → when the pool last fetched it
	learning map[string]time.Time // index paths with a learner under way, and when it began
	disputes tally                // file path → hash served against its entry → by whom
}

// maxDisputes bounds the files whose entries are disputed at once.
const maxDisputes = 1024

func newCatalog() *catalog {
	c := &catalog{learning: make(map[string]time.Time), tried: make(map[string]time.Time)}
	c.cond.L = &c.mu
	c.forget()
	return c
}

// forget starts the catalog over. c.mu must be held, or c new.
func (c *catalog) forget() {
	c.files = make(map[string]entry)
	c.indexes = make(map[string]entry)
	c.listed = make(map[[32]byte]string)
	c.follow = make(map[string][]string)
	c.learned = make(map[string]version)
	c.votes = make(tally)
}

// kindOf is the kind of index rel is, and its path as the repository names
// it (an apt by-hash file is the Packages file a Release lists with its
// hash), or repoindex.None.
func (c *catalog) kindOf(rel string) (repoindex.Kind, string) {
	if sum := byHashSum(rel); sum != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		if listed, ok := c.listed[*sum]; ok {
			return repoindex.AptPackages, listed
		}
		return repoindex.None, ""
	}
	return repoindex.KindOf(rel), rel
}

// isIndex reports whether rel is an index the catalog learns from.
func (c *catalog) isIndex(rel string) bool {
	kind, _ := c.kindOf(rel)
	return kind != repoindex.None
}

// byHashSum is the hash an apt by-hash path names, or nil.
func byHashSum(rel string) *[32]byte {
	dir, name := path.Split(rel)
	if !strings.HasSuffix(dir, "/by-hash/SHA256/") || len(name) != 64 {
		return nil
	}
	var sum [32]byte
	if _, err := hex.Decode(sum[:], []byte(name)); err != nil {
		return nil
	}
	return &sum
}

// lookup returns what is known of the file at rel. A package not known yet
// waits (until patience after the newest learner began, or until ctx
// ends) for the indexes being learned: a client asks for packages right
// after their index.
func (c *catalog) lookup(ctx context.Context, rel string, patience time.Duration) (entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sum := byHashSum(rel); sum != nil {
		if e, ok := c.indexes[c.listed[*sum]]; ok && e.sum == *sum {
			return e, true
		}
		return entry{size: -1, sum: *sum}, true
	}
	if e, ok := c.files[rel]; ok || !listable(rel) {
		return e, ok
	}
	c.waitLearners(ctx, patience, nil)
	e, ok := c.files[rel]
	return e, ok
}

// known returns what is known of the file at rel now, without waiting.
func (c *catalog) known(rel string) (entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.files[rel]
	return e, ok
}

// waitLearners waits for the indexes being learned, until patience after
// the newest learner began, or until ctx ends, or until done (if not nil)
// reports true: a package asked for right after its index waits a moment
// for it (learnWait); later ones, while a slow mirror sends the second
// copy, do not wait at all. c.mu must be held.
func (c *catalog) waitLearners(ctx context.Context, patience time.Duration, done func() bool) {
	var newest time.Time
	for _, began := range c.learning {
		if began.After(newest) {
			newest = began
		}
	}
	deadline := newest.Add(patience)
	wait := time.Until(deadline)
	if len(c.learning) == 0 || wait <= 0 {
		return
	}
	timer := time.AfterFunc(wait, c.broadcast)
	defer timer.Stop()
	stop := context.AfterFunc(ctx, c.broadcast)
	defer stop()
	for len(c.learning) > 0 && ctx.Err() == nil && time.Now().Before(deadline) && (done == nil || !done()) {
		c.cond.Wait()
	}
}

// awaitFile waits until the catalog knows rel, or as waitLearners does.
func (c *catalog) awaitFile(ctx context.Context, rel string, patience time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waitLearners(ctx, patience, func() bool {
		_, ok := c.files[rel]
		return ok
	})
}

func (c *catalog) broadcast() {
	c.mu.Lock()
	c.cond.Broadcast()
	c.mu.Unlock()
}

// listable reports whether an index could list the file at rel: a pacman,
// Debian or RPM package (not a signature).
func listable(rel string) bool {
	base := path.Base(rel)
	if strings.HasSuffix(base, ".sig") {
		return false
	}
	return strings.Contains(base, ".pkg.tar.") || strings.HasSuffix(base, ".deb") ||
		strings.HasSuffix(base, ".udeb") || strings.HasSuffix(base, ".ddeb") ||
		strings.HasSuffix(base, ".rpm")
}

// databaseOf is the index that lists the package at rel where the
// repository's layout tells, or "": a pacman package's database in Arch's
// layout (<repo>/os/<arch>/<file>), an RPM package's repodata/repomd.xml
// (rpmRootOf), whose primary metadata the pool then learns too (follow).
// An apt archive's layout does not tell which Release lists a .deb.
func databaseOf(rel string) string {
	segs := strings.Split(rel, "/")
	n := len(segs)
	switch {
	case strings.HasSuffix(segs[n-1], ".rpm"):
		return rpmRootOf(segs[:n-1]) + "repodata/repomd.xml"
	case n < 4 || segs[n-3] != "os" || !strings.Contains(segs[n-1], ".pkg.tar."):
		return ""
	}
	return strings.Join(segs[:n-1], "/") + "/" + segs[n-4] + ".db"
}

// rpmArchDirs are the directories openSUSE's layout keeps packages in
// under the repository root, one per architecture.
var rpmArchDirs = map[string]bool{
	"noarch": true, "src": true, "nosrc": true, "x86_64": true, "i586": true, "i686": true,
	"aarch64": true, "armv7hl": true, "armv6hl": true, "ppc64le": true, "ppc64": true,
	"s390x": true, "riscv64": true,
}

// rpmRootOf is the root, with a trailing slash, of the RPM repository
// whose package is in the directory dir (its path's elements), as the
// common layouts place packages: Fedora's Packages/<letter>/ and
// Packages/ (RHEL and its rebuilds), openSUSE's <arch>/, and else the
// directory itself (createrepo_c run where the packages are).
func rpmRootOf(dir []string) string {
	n := len(dir)
	switch {
	case n >= 2 && dir[n-2] == "Packages" && len(dir[n-1]) == 1:
		n -= 2
	case n >= 1 && (dir[n-1] == "Packages" || rpmArchDirs[dir[n-1]]):
		n--
	}
	if n == 0 {
		return ""
	}
	return strings.Join(dir[:n], "/") + "/"
}

// patched is the Packages file that the apt pdiff index at rel patches, as
// a corroborated Release lists it (the best compressed), if the catalog
// has not learned that version yet; else "". It waits for the indexes
// being learned: apt asks for the pdiffs right after the Release.
func (c *catalog) patched(ctx context.Context, rel string) string {
	base, ok := strings.CutSuffix(rel, "/Packages.diff/Index")
	if !ok {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waitLearners(ctx, learnWait, nil)
	for _, ext := range []string{".xz", ".gz", ".bz2", ".zst", ""} {
		pk := base + "/Packages" + ext
		if e, ok := c.indexes[pk]; ok {
			if c.learned[pk].sum == e.sum {
				return ""
			}
			return pk
		}
	}
	return ""
}

// learn starts a learner of the index at rel, unless one is under way or
// the pool fetched it within relearnAfter: it asks mirrors other than
// exclude (whose copy a client is getting, and votes with) for it, the
// freshest and fastest first, until two agree. It reports whether it
// started one.
func (p *Pool) learn(rel, exclude string) bool {
	c := p.catalog
	c.mu.Lock()
	if _, busy := c.learning[rel]; busy || time.Since(c.tried[rel]) < relearnAfter {
		c.mu.Unlock()
		return false
	}
	p.mu.Lock() // drain waits for p.wg once stopped is set
	if p.stopped {
		p.mu.Unlock()
		c.mu.Unlock()
		return false
	}
	p.wg.Add(1)
	p.mu.Unlock()
	c.tried[rel] = time.Now()
	c.learning[rel] = time.Now()
	if len(c.tried) > maxCatalogEntries/64 {
		clear(c.tried)
	}
	since := c.learned[rel].modified
	c.mu.Unlock()
	go func() {
		defer p.wg.Done()
		defer func() {
			c.mu.Lock()
			delete(c.learning, rel)
			c.cond.Broadcast()
			c.mu.Unlock()
		}()
		p.gather(rel, exclude, since)
		p.follow(rel) // while this learner still counts, so that lookups wait on
	}()
	return true
}

// fetched is one mirror's answer to a learner.
type fetched struct {
	mirror, modified string
	data             []byte
	err              error
}

// gather fetches the index at rel from fresh mirrors other than exclude,
// one at first, another whenever one failed or, every hedgeAfter, when
// none of those under way will have its copy within hedgeHorizon at its
// pace so far, and votes with each copy, until the index is learned or
// learnVoters mirrors were asked. A mirror that answers 304 to
// If-Modified-Since (the learned version's date) ends it: nothing is new.
func (p *Pool) gather(rel, exclude, since string) {
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	asked := map[string]bool{exclude: true}
	answers := make(chan fetched, learnVoters)
	running := map[string]*progress{}
	launched := 0
	launch := func() {
		w := ranked(p, func(sts []standing) *worker { return freshestOther(sts, asked) })
		if w == nil || launched >= learnVoters {
			return
		}
		asked[w.key] = true
		launched++
		pr := &progress{began: time.Now()}
		pr.size.Store(-1)
		running[w.key] = pr
		go func() {
			data, modified, err := p.fetchIndex(ctx, w, rel, since, pr)
			answers <- fetched{w.key, modified, data, err}
		}()
	}
	launch()
	hedge := time.NewTicker(hedgeAfter)
	defer hedge.Stop()
	for len(running) > 0 {
		select {
		case a := <-answers:
			delete(running, a.mirror)
			switch {
			case errors.Is(a.err, errNotModified):
				return
			case a.err != nil:
				p.log.Debug("fetching an index failed", zap.String("mirror", a.mirror), zap.String("path", rel), zap.Error(a.err))
			case p.vote(rel, a.data, a.mirror, a.modified):
				return
			}
			launch()
		case <-hedge.C:
			now := time.Now()
			if !slices.ContainsFunc(slices.Collect(maps.Values(running)), func(pr *progress) bool { return pr.within(hedgeHorizon, now) }) {
				launch()
			}
		case <-ctx.Done():
			return
		}
	}
}

// progress is how far one copy of an index has come.
type progress struct {
	began time.Time
	size  atomic.Int64 // its length, or -1 while unknown
	got   atomic.Int64
}

// within reports whether, at its pace so far, the copy will be whole
// within d of now. (A hedge costs a copy's bytes: the lan/cache scenario
// of make bench found the databases' hedged copies a tenth of what the
// mirrors sent with a cache.)
func (pr *progress) within(d time.Duration, now time.Time) bool {
	size, got, elapsed := pr.size.Load(), pr.got.Load(), now.Sub(pr.began).Seconds()
	if size < 0 || got <= 0 || elapsed <= 0 {
		return false
	}
	return float64(size-got)/(float64(got)/elapsed) <= d.Seconds()
}

// Write counts bytes that arrived.
func (pr *progress) Write(b []byte) (int, error) {
	pr.got.Add(int64(len(b)))
	return len(b), nil
}

// vote records that mirror served data (of the given Last-Modified) for
// the index at rel, and learns from it once it is corroborated. It reports
// whether the catalog knows that version now.
func (p *Pool) vote(rel string, data []byte, mirror, modified string) bool {
	c := p.catalog
	kind, name := c.kindOf(rel)
	if kind == repoindex.None {
		return false
	}
	sum := sha256.Sum256(data)
	c.mu.Lock()
	if c.learned[rel].sum == sum {
		c.mu.Unlock()
		return true
	}
	if named := byHashSum(rel); named != nil && *named != sum {
		c.mu.Unlock()
		return false // not the file its name says
	}
	corroborated := c.indexes[name].sum == sum && listed(kind)
	if !corroborated {
		corroborated = len(c.votes.add(rel, sum, mirror, learnVoters)) >= 2
	}
	c.mu.Unlock()
	if !corroborated {
		return false
	}
	if err := p.learnFrom(kind, name, data); err != nil {
		p.log.Warn("a corroborated index cannot be read", zap.String("path", rel), zap.Error(err))
		return false
	}
	c.mu.Lock()
	c.learned[rel] = version{sum: sum, modified: modified}
	delete(c.votes, rel)
	c.mu.Unlock()
	return true
}

// learnFrom parses the corroborated index of that kind at rel (its path as
// the repository names it) and adds what it says to the catalog: packages
// to files, and the indexes a Release or repomd.xml lists to indexes (they
// change with each Release: they are not checked as they stream, but
// corroborated by it, and an apt index is checked by its by-hash name).
func (p *Pool) learnFrom(kind repoindex.Kind, rel string, data []byte) error {
	c := p.catalog
	found := make(map[string]entry)
	lim := repoindex.DefaultLimits
	add := func(prefix string) func(string, repoindex.Entry) error {
		return func(name string, e repoindex.Entry) error {
			found[prefix+name] = entry{size: e.Size, sum: e.SHA256}
			return nil
		}
	}
	var err error
	switch kind {
	case repoindex.PacmanDB:
		err = repoindex.ParsePacmanDB(bytes.NewReader(data), lim, add(dirOf(rel)))
	case repoindex.AptRelease:
		_, err = repoindex.ParseRelease(bytes.NewReader(data), lim, add(dirOf(rel)))
	case repoindex.AptPackages:
		err = repoindex.ParsePackages(bytes.NewReader(data), lim, add(repoRoot(rel, "dists/")))
	case repoindex.RpmRepomd:
		err = repoindex.ParseRepomd(bytes.NewReader(data), lim, add(repoRoot(rel, "repodata/")))
	case repoindex.RpmPrimary:
		err = repoindex.ParsePrimary(bytes.NewReader(data), lim, add(repoRoot(rel, "repodata/")))
	default:
		err = errors.New("not an index")
	}
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.files)+len(c.indexes)+len(found) > maxCatalogEntries {
		c.forget()
	}
	var follow []string
	for k, v := range found {
		if !lists(kind) {
			c.files[k] = v
			continue
		}
		c.indexes[k] = v
		switch repoindex.KindOf(k) {
		case repoindex.AptPackages:
			c.listed[v.sum] = k
		case repoindex.RpmPrimary:
			if len(follow) < maxFollow {
				follow = append(follow, k)
			}
		}
	}
	if kind == repoindex.RpmRepomd {
		c.follow[rel] = follow
	}
	p.log.Info("learned a repository index", zap.String("path", rel), zap.Int("files", len(found)))
	return nil
}

// lists reports whether an index of kind lists other indexes with their
// hashes (apt's Release, RPM's repomd.xml) rather than packages.
func lists(kind repoindex.Kind) bool {
	return kind == repoindex.AptRelease || kind == repoindex.RpmRepomd
}

// listed reports whether an index of kind is one that a Release or a
// repomd.xml lists: once one of those is corroborated, a copy with the
// hash it gives needs no second mirror.
func listed(kind repoindex.Kind) bool {
	return kind == repoindex.AptPackages || kind == repoindex.RpmPrimary
}

// maxFollow bounds the primary metadata files of one repomd.xml that the
// pool fetches itself (a repository has one, in one or two compressions).
const maxFollow = 2

// follow starts learners of the primary metadata that the learned version
// of the repomd.xml at rel lists, unless the catalog has learned it in
// that version: dnf asks for packages without fetching the primary
// metadata it has, and where the repository offers zchunk (Fedora), fetches
// that form, which is not read here; so the client's copy is not waited
// for. When it does pass through, the learner's copy is the second that
// learn would fetch anyway.
func (p *Pool) follow(rel string) {
	c := p.catalog
	c.mu.Lock()
	var stale []string
	for _, pm := range c.follow[rel] {
		if c.learned[pm].sum != c.indexes[pm].sum {
			stale = append(stale, pm)
		}
	}
	c.mu.Unlock()
	for _, pm := range stale {
		p.learn(pm, "")
	}
}

// tally counts, per file and per hash, the mirrors that served a file with
// that hash: the votes for an index's versions, the disputes of an entry.
type tally map[string]map[[32]byte][]string

// add records that mirror served the file at path with hash sum, and
// returns the mirrors that did. A path already holding maxSums hashes
// starts over.
func (t tally) add(path string, sum [32]byte, mirror string, maxSums int) []string {
	if t[path] == nil || len(t[path]) > maxSums {
		t[path] = make(map[[32]byte][]string)
	}
	by := t[path][sum]
	if !slices.Contains(by, mirror) {
		by = append(by, mirror)
	}
	t[path][sum] = by
	return by
}

// dirOf is the directory of rel with a trailing slash, or "".
func dirOf(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i+1]
	}
	return ""
}

// repoRoot is the root of the repository whose index is at rel: what
// precedes the last element of rel named dir, such as an apt archive's
// "dists/" (Packages' Filename fields are relative to it) or an RPM
// repository's "repodata/" (hrefs in repomd.xml and primary metadata are).
// Without one, it is the mirror base ("").
func repoRoot(rel, dir string) string {
	if i := strings.LastIndex(rel, dir); i >= 0 && (i == 0 || rel[i-1] == '/') {
		return rel[:i]
	}
	return ""
}

var errNotModified = errors.New("not modified")

// fetchIndex fetches the index at rel from w's mirror, outside the
// dispatcher (one request per index version), if modified since the given
// Last-Modified (errNotModified otherwise). It returns the index and its
// Last-Modified; pr follows its progress.
func (p *Pool) fetchIndex(ctx context.Context, w *worker, rel, since string, pr *progress) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(ctx, learnTimeout)
	defer cancel()
	fail := func(err error) ([]byte, string, error) {
		return nil, "", fmt.Errorf("fetching %s from %s: %w", rel, w.key, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fileURL(w.mirror, rel), nil)
	if err != nil {
		return fail(err)
	}
	req.Header["User-Agent"] = nil
	if since != "" {
		req.Header.Set("If-Modified-Since", since)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && since != "":
		return nil, "", errNotModified
	case resp.StatusCode != http.StatusOK:
		return fail(&statusError{resp.Status})
	case resp.ContentLength > maxIndexBytes:
		return fail(errors.New("index too large"))
	}
	pr.size.Store(resp.ContentLength)
	data, err := io.ReadAll(io.TeeReader(io.LimitReader(resp.Body, maxIndexBytes+1), pr))
	if err != nil {
		return fail(err)
	}
	if len(data) > maxIndexBytes {
		return fail(errors.New("index too large"))
	}
	if resp.ContentLength >= 0 && int64(len(data)) != resp.ContentLength {
		return fail(errShortBody)
	}
	return data, resp.Header.Get("Last-Modified"), nil
}

// learn hands an index the transfer served to the catalog: the copy the
// client got, if whole, is a vote; otherwise the pool fetches the index
// itself (now and then). A pdiff index makes the pool fetch the Packages
// file it patches.
func (t *transfer) learn() {
	p := t.p
	if p.cfg.SkipVerify {
		return
	}
	if pk := p.catalog.patched(t.r.Context(), t.rel); pk != "" {
		p.learn(pk, "")
		return
	}
	if t.capture == nil { // Serve captures only indexes
		return
	}
	if t.status == http.StatusOK && (t.size < 0 || int64(len(*t.capture)) == t.size) {
		if p.vote(t.rel, *t.capture, t.mirror, t.modified) {
			p.follow(t.rel)
		}
		return
	}
	p.learn(t.rel, "")
}
