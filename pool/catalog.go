package pool

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/caddy-refractor/refractor/repoindex"
	"go.uber.org/zap"
)

// The catalog: the size and SHA-256 of each file, as the repository's own
// indexes say (pacman databases; apt's Release files, which give the hashes
// of the Packages files, which give the packages'). An index is evidence,
// not truth: refractor checks no signature, so an index teaches hashes only
// once two mirrors serve the same bytes for it, or once a corroborated
// Release lists its hash. Indexes are learned from what passes through to
// clients, and fetched by the pool itself when a client's copy did not
// pass through (a 304, a by-hash fetch).

const (
	// maxIndexBytes bounds an index the pool keeps to learn from.
	maxIndexBytes = 128 << 20
	// maxCatalogEntries bounds the files a catalog knows; beyond it, it
	// starts again from the indexes it sees next.
	maxCatalogEntries = 2_000_000
	// learnWait is how long a request for a file waits for an index being
	// learned, so that the file can be checked.
	learnWait = 10 * time.Second
	// relearnAfter: an index whose copy did not pass through is fetched
	// again by the pool at most this often.
	relearnAfter = time.Minute
	// learnVoters is how many mirrors a learner asks at most for one
	// index before it gives up finding two that agree.
	learnVoters = 4
	// learnTimeout bounds one fetch of an index by the pool.
	learnTimeout = time.Minute
)

// entry is what a repository's index says of one file. size is -1 when
// only the hash is known (an apt by-hash name).
type entry struct {
	size int64
	sum  [32]byte // SHA-256
}

// catalog is a pool's knowledge of its repository's files. Its lock is a
// leaf.
type catalog struct {
	mu      sync.Mutex
	cond    sync.Cond                        // on mu: a learner finished
	files   map[string]entry                 // file path → what a corroborated index says of it
	listed  map[[32]byte]string              // hash → path of an index a corroborated Release lists
	learned map[string][32]byte              // index path → the version learned from
	tried   map[string]time.Time             // index path → when the pool last fetched it
	votes   map[string]map[[32]byte][]string // index path → version → mirrors that served it
	pending int                              // learners under way
}

func newCatalog() *catalog {
	c := &catalog{
		files:   make(map[string]entry),
		listed:  make(map[[32]byte]string),
		learned: make(map[string][32]byte),
		tried:   make(map[string]time.Time),
		votes:   make(map[string]map[[32]byte][]string),
	}
	c.cond.L = &c.mu
	return c
}

// isIndex reports whether rel is an index the catalog learns from.
func isIndex(rel string) bool {
	return repoindex.KindOf(rel) != repoindex.None || byHashSum(rel) != nil
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
// waits (within learnWait, or until ctx ends) for the indexes being
// learned: a client asks for packages right after their index.
func (c *catalog) lookup(ctx context.Context, rel string) (entry, bool) {
	if sum := byHashSum(rel); sum != nil {
		return c.byHash(rel, *sum), true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.files[rel]; ok || !listable(rel) {
		return e, ok
	}
	c.waitLearners(ctx)
	e, ok := c.files[rel]
	return e, ok
}

// waitLearners waits until no index is being learned, within learnWait or
// until ctx ends. c.mu must be held.
func (c *catalog) waitLearners(ctx context.Context) {
	if c.pending == 0 {
		return
	}
	timer := time.AfterFunc(learnWait, c.broadcast)
	defer timer.Stop()
	stop := context.AfterFunc(ctx, c.broadcast)
	defer stop()
	deadline := time.Now().Add(learnWait)
	for c.pending > 0 && ctx.Err() == nil && time.Now().Before(deadline) {
		c.cond.Wait()
	}
}

// listable reports whether an index could list the file at rel: a pacman
// or Debian package (not a signature).
func listable(rel string) bool {
	base := path.Base(rel)
	if strings.HasSuffix(base, ".sig") {
		return false
	}
	return strings.Contains(base, ".pkg.tar.") || strings.HasSuffix(base, ".deb") ||
		strings.HasSuffix(base, ".udeb") || strings.HasSuffix(base, ".ddeb")
}

// databaseOf is the pacman database that lists the package at rel in
// Arch's layout (<repo>/os/<arch>/<file>), or "".
func databaseOf(rel string) string {
	segs := strings.Split(rel, "/")
	n := len(segs)
	if n < 4 || segs[n-3] != "os" || !strings.Contains(segs[n-1], ".pkg.tar.") {
		return ""
	}
	return strings.Join(segs[:n-1], "/") + "/" + segs[n-4] + ".db"
}

// byHash is what is known of the apt by-hash file at rel, whose name is
// its hash: its size too when a Release listed it.
func (c *catalog) byHash(rel string, sum [32]byte) entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if listed, ok := c.listed[sum]; ok {
		if e, ok := c.files[listed]; ok && e.sum == sum {
			return e
		}
	}
	return entry{size: -1, sum: sum}
}

func (c *catalog) broadcast() {
	c.mu.Lock()
	c.cond.Broadcast()
	c.mu.Unlock()
}

// learn learns from the index at rel: from data, which mirror served in
// full to a client (nil when none did), and from the mirrors the pool asks
// itself until two agree. It runs in the background, and reports whether
// it started (it is not asked again within relearnAfter).
func (p *Pool) learn(rel string, data []byte, mirror string) (started bool) {
	c := p.catalog
	c.mu.Lock()
	if data == nil && time.Since(c.tried[rel]) < relearnAfter {
		c.mu.Unlock()
		return false
	}
	c.tried[rel] = time.Now()
	c.mu.Unlock()
	p.mu.Lock() // drain waits for p.wg once stopped is set
	if p.stopped {
		p.mu.Unlock()
		return false
	}
	p.wg.Add(1)
	p.mu.Unlock()
	c.mu.Lock()
	c.pending++
	c.mu.Unlock()
	go func() {
		defer p.wg.Done()
		defer func() {
			c.mu.Lock()
			c.pending--
			c.cond.Broadcast()
			c.mu.Unlock()
		}()
		asked := map[string]bool{}
		if data != nil {
			asked[mirror] = true
			if p.vote(rel, data, mirror) {
				return
			}
		}
		for range learnVoters {
			m := ranked(p, func(sts []standing) *worker { return freshestOther(sts, asked) })
			if m == nil || p.ctx.Err() != nil {
				return
			}
			asked[m.key] = true
			data, err := p.fetchIndex(m, rel)
			if err != nil {
				p.log.Debug("fetching an index failed", zap.String("mirror", m.key), zap.String("path", rel), zap.Error(err))
				continue
			}
			if p.vote(rel, data, m.key) {
				return
			}
		}
	}()
	return true
}

// vote records that mirror served data for the index at rel, and learns
// from it once it is corroborated. It reports whether the index is known
// now.
func (p *Pool) vote(rel string, data []byte, mirror string) bool {
	c := p.catalog
	sum := sha256.Sum256(data)
	c.mu.Lock()
	if c.learned[rel] == sum {
		c.mu.Unlock()
		return true
	}
	listedAs, listed := c.listed[sum]
	if named := byHashSum(rel); named != nil && *named != sum {
		c.mu.Unlock()
		return false // not the file its name says: a mirror's fault
	}
	corroborated := listed
	if !listed {
		if c.votes[rel] == nil || len(c.votes[rel]) > learnVoters {
			c.votes[rel] = make(map[[32]byte][]string)
		}
		voters := c.votes[rel][sum]
		if !containsString(voters, mirror) {
			voters = append(voters, mirror)
		}
		c.votes[rel][sum] = voters
		corroborated = len(voters) >= 2
	}
	c.mu.Unlock()
	if !corroborated {
		return false
	}
	if !listed {
		listedAs = rel
	}
	if err := p.learnFrom(listedAs, data); err != nil {
		p.log.Warn("a corroborated index cannot be read", zap.String("path", rel), zap.Error(err))
		return false
	}
	c.mu.Lock()
	c.learned[rel] = sum
	delete(c.votes, rel)
	c.mu.Unlock()
	return true
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// learnFrom parses the corroborated index at rel (its path as the
// repository names it: an apt by-hash file is learned as the index it
// is) and adds what it says to the catalog.
func (p *Pool) learnFrom(rel string, data []byte) error {
	c := p.catalog
	found := make(map[string]entry)
	listed := make(map[[32]byte]string)
	lim := repoindex.DefaultLimits
	add := func(prefix string) func(string, repoindex.Entry) error {
		return func(name string, e repoindex.Entry) error {
			found[prefix+name] = entry{size: e.Size, sum: e.SHA256}
			return nil
		}
	}
	var err error
	switch repoindex.KindOf(rel) {
	case repoindex.PacmanDB:
		err = repoindex.ParsePacmanDB(bytes.NewReader(data), lim, add(dirOf(rel)))
	case repoindex.AptRelease:
		dir := dirOf(rel)
		_, err = repoindex.ParseRelease(bytes.NewReader(data), lim, func(name string, e repoindex.Entry) error {
			found[dir+name] = entry{size: e.Size, sum: e.SHA256}
			if repoindex.KindOf(name) == repoindex.AptPackages {
				listed[e.SHA256] = dir + name
			}
			return nil
		})
	case repoindex.AptPackages:
		err = repoindex.ParsePackages(bytes.NewReader(data), lim, add(aptRoot(rel)))
	default:
		return fmt.Errorf("%s: not an index", rel)
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.files)+len(found) > maxCatalogEntries {
		clear(c.files)
	}
	if len(c.listed)+len(listed) > maxCatalogEntries/64 {
		clear(c.listed)
	}
	for k, v := range found {
		c.files[k] = v
	}
	for k, v := range listed {
		c.listed[k] = v
	}
	p.log.Info("learned a repository index", zap.String("path", rel), zap.Int("files", len(found)))
	return nil
}

// patched is the Packages file that the apt pdiff index at rel patches, as
// a corroborated Release lists it (the best compressed), or "". It waits
// for the indexes being learned: apt asks for the pdiffs right after the
// Release.
func (c *catalog) patched(ctx context.Context, rel string) string {
	base, ok := strings.CutSuffix(rel, "/Packages.diff/Index")
	if !ok {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waitLearners(ctx)
	for _, ext := range []string{".xz", ".gz", ".bz2", ".zst", ""} {
		if _, ok := c.files[base+"/Packages"+ext]; ok {
			return base + "/Packages" + ext
		}
	}
	return ""
}

// dirOf is the directory of rel with a trailing slash, or "".
func dirOf(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i+1]
	}
	return ""
}

// aptRoot is the archive root of an apt index at rel: what precedes its
// "dists/" (Packages' Filename fields are relative to it).
func aptRoot(rel string) string {
	if i := strings.LastIndex(rel, "dists/"); i >= 0 && (i == 0 || rel[i-1] == '/') {
		return rel[:i]
	}
	return ""
}

// freshestOther is the best worker among the freshest not in asked, or
// nil.
func freshestOther(sts []standing, asked map[string]bool) *worker {
	wt := want{exclude: asked, fresh: true}
	newest := newestSync(sts, asked)
	var best *standing
	for i, s := range sts {
		if wt.allows(s, newest) && (best == nil || s.score > best.score) {
			best = &sts[i]
		}
	}
	if best == nil {
		return nil
	}
	return best.w
}

// fetchIndex fetches the index at rel from w's mirror, outside the
// dispatcher: one request per index version.
func (p *Pool) fetchIndex(w *worker, rel string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(p.ctx, learnTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fileURL(w.mirror, rel), nil)
	if err != nil {
		return nil, err
	}
	req.Header["User-Agent"] = nil
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{resp.Status}
	}
	if resp.ContentLength > maxIndexBytes {
		return nil, errors.New("index too large")
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxIndexBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxIndexBytes {
		return nil, errors.New("index too large")
	}
	if resp.ContentLength >= 0 && int64(len(data)) != resp.ContentLength {
		return nil, errShortBody
	}
	return data, nil
}

// learn hands an index the transfer served to the catalog: the copy the
// client got, if whole, or else only the news that the client fetched it
// (the pool then fetches it itself, now and then).
func (t *transfer) learn() {
	if t.p.cfg.SkipVerify {
		return
	}
	if !isIndex(t.rel) {
		// apt updating Packages with pdiffs: the whole file never passes.
		if pk := t.p.catalog.patched(t.r.Context(), t.rel); pk != "" {
			t.p.learn(pk, nil, "")
		}
		return
	}
	if t.capture != nil && t.status == http.StatusOK && (t.size < 0 || int64(len(*t.capture)) == t.size) {
		t.p.learn(t.rel, *t.capture, t.mirror)
		return
	}
	t.p.learn(t.rel, nil, "")
}
