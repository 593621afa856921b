package refractor

// End-to-end tests of what refractor lets through from mirrors that answer
// 200 with the wrong bytes: a liar, which serves the right index but flips
// a byte of every package (right status, right length), and a parked
// domain, which answers every path with an HTML page. pacman and apt check
// what they download against their index; refractor must check it first,
// so that the client gets the right bytes from another mirror and the liar
// leaves the pool. With `verify off`, the same scenario shows the liar's
// bytes reaching the client: what the first tests catch is refractor's
// doing, not the scenario's.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/pool"
)

// verifyScenario is a repository, the pool's configuration for its
// mirrors, and the client that downloads its packages through refractor.
type verifyScenario struct {
	prefix string                 // where refractor is mounted, as "/archlinux"
	tree   map[string][]byte      // what a good mirror serves, by path below prefix
	isPkg  func(path string) bool // the package files, which the liar corrupts
	// listLine is a mirror's line in the provider's file; block is the
	// refractor block for that many workers over that file, without verify.
	listLine func(base string) string
	block    func(workers int, listFile string) string
	// syncProbes: the pool reads the mirrors' lastsync, and the client may
	// start only once it knows the good mirrors' and the liar's.
	syncProbes bool
	// want is what the client must download, by file name; fetch runs the
	// client in dir and returns what it downloaded, by the same names.
	want  map[string][]byte
	fetch func(t *testing.T, dir string) clientRun
	// complaint matches what the client says of a package that fails its
	// check.
	complaint *regexp.Regexp
}

// clientRun is what a client's run produced.
type clientRun struct {
	out string
	err error
	got map[string][]byte // the package files it downloaded, by name
}

// flipPackages returns a copy of tree in which every package file has its
// middle byte inverted: same length, wrong content.
func flipPackages(tree map[string][]byte, isPkg func(string) bool) map[string][]byte {
	out := make(map[string][]byte, len(tree))
	for name, b := range tree {
		if isPkg(name) {
			b = bytes.Clone(b)
			b[len(b)/2] ^= 0xff
		}
		out[name] = b
	}
	return out
}

// parkedPage is what a parked domain answers for every path.
var parkedPage = []byte("<!DOCTYPE html>\n<html><head><title>Parked</title></head>" +
	"<body><h1>this domain is parked</h1></body></html>\n")

// newParkedMirror is a mirror whose domain has lapsed and is parked: every
// path, lastsync included, is 200 text/html with the same short page. It is
// a loggedMirror, so logMirrors and served read it as any other.
func newParkedMirror(t *testing.T, prefix string) *loggedMirror {
	t.Helper()
	m := &loggedMirror{}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(parkedPage)))
		w.WriteHeader(http.StatusOK)
		var n int
		if r.Method != http.MethodHead {
			n, _ = w.Write(parkedPage)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		m.log = append(m.log, mirrorRequest{r.Method, strings.TrimPrefix(r.URL.Path, prefix), http.StatusOK, int64(n)})
	}))
	m.base = m.URL + prefix
	t.Cleanup(func() {
		m.CloseClientConnections()
		m.Close()
	})
	return m
}

// mirrorKey is how the pool names the mirror m (its workers' Mirror).
func mirrorKey(t *testing.T, m *loggedMirror) string {
	t.Helper()
	u, err := pool.ParseMirrorURL(m.base)
	if err != nil {
		t.Fatal(err)
	}
	return u.String()
}

// inPool reports whether a live pool has a worker for the mirror key.
func inPool(key string) bool {
	for _, ps := range poolStatuses() {
		for _, w := range ps.Workers {
			if w.Mirror == key {
				return true
			}
		}
	}
	return false
}

// waitForSyncOf is waitForSyncTimes for the given mirrors: it waits until
// the pool knows the sync time of each of them (and not of just as many
// others, such as a parked domain's page taken for one).
func waitForSyncOf(t *testing.T, mirrors ...*loggedMirror) {
	t.Helper()
	want := map[string]bool{}
	for _, m := range mirrors {
		want[mirrorKey(t, m)] = true
	}
	waitFor(t, fmt.Sprintf("the pool to read the sync time of %d mirrors", len(want)), func() bool {
		known := 0
		for _, ps := range poolStatuses() {
			for _, w := range ps.Workers {
				if want[w.Mirror] && !w.LastSync.IsZero() {
					known++
				}
			}
		}
		return known >= len(want)
	})
}

// runVerifyScenario serves sc over three good mirrors, the liar (listed
// first and unthrottled, so that it gets its share) and a parked domain,
// runs the client through refractor, and checks, with verify on (the
// default), that the client got exactly the built packages and the liar
// left the pool; with verify off, that the liar's bytes reached the client.
func runVerifyScenario(t *testing.T, sc verifyScenario, verify bool) {
	mprefix := sc.prefix + "/"
	liar := newLoggedMirror(t, mprefix, flipPackages(sc.tree, sc.isPkg), 0)
	parked := newParkedMirror(t, mprefix)
	goods := []*loggedMirror{
		newLoggedMirror(t, mprefix, sc.tree, 0),
		newLoggedMirror(t, mprefix, sc.tree, 8<<20),
		newLoggedMirror(t, mprefix, sc.tree, 4<<20),
	}
	mirrors := append([]*loggedMirror{liar}, append(goods, parked)...)
	t.Logf("liar %s, parked %s", liar.base, parked.base)

	tmp := t.TempDir()
	var list strings.Builder
	for _, m := range mirrors {
		fmt.Fprintln(&list, sc.listLine(m.base))
	}
	listFile := filepath.Join(tmp, "mirrors")
	writeFile(t, listFile, []byte(list.String()))
	block := sc.block(len(mirrors), listFile)
	if !verify {
		block += "\nverify off"
	}
	startRefractor(t, sc.prefix, block)
	t.Cleanup(func() { // before Caddy stops: cleanups run last in, first out
		if t.Failed() {
			b, _ := json.MarshalIndent(poolStatuses(), "", "  ")
			t.Logf("pool status:\n%s", b)
		}
	})
	if sc.syncProbes {
		waitForSyncOf(t, append([]*loggedMirror{liar}, goods...)...)
	}

	start := time.Now()
	run := sc.fetch(t, tmp)
	t.Logf("client run: %v, err %v\n%s", time.Since(start).Round(time.Millisecond), run.err, run.out)
	logMirrors(t, mirrors)

	// What the liar was asked for and what it served whole (a request the
	// client or refractor dropped midway proves nothing).
	var asked, served []string
	for _, r := range liar.Requests() {
		if !sc.isPkg(r.Path) {
			continue
		}
		asked = append(asked, r.Path)
		if r.Method == http.MethodGet && r.Status == http.StatusOK && r.Bytes == int64(len(sc.tree[r.Path])) {
			served = append(served, r.Path)
		}
	}
	if !verify {
		if len(served) == 0 {
			t.Skipf("the liar served no whole package (asked for %d: %v): this run cannot show "+
				"what verification stops; the client's output is above", len(asked), asked)
		}
		// The client must have met the liar's bytes themselves, not only the
		// parked page: a package the liar served is reported corrupted on a
		// line of the client's that names it, or reached the client changed.
		var reached []string
		for _, p := range served {
			name := path.Base(p)
			if got, ok := run.got[name]; ok && !bytes.Equal(got, sc.want[name]) {
				reached = append(reached, fmt.Sprintf("%s downloaded with SHA-256 %s, built %s",
					name, sha256Hex(got), sha256Hex(sc.want[name])))
			}
			for _, line := range strings.Split(run.out, "\n") {
				if strings.Contains(line, name) && sc.complaint.MatchString(line) {
					reached = append(reached, "the client said: "+strings.TrimSpace(line))
				}
			}
		}
		if len(reached) == 0 {
			t.Errorf("verify off: the liar served %d corrupted package(s) %v, yet the client neither "+
				"reported one of them corrupted (%q) nor downloaded one changed: the scenario does "+
				"not show what verification stops", len(served), served, sc.complaint)
		}
		t.Logf("verify off: the liar's corruption reached the client: %v", reached)
		return
	}

	if len(asked) == 0 {
		t.Errorf("test design: the liar was asked for no package, so this run checked nothing " +
			"(make the liar more attractive or the packages more numerous)")
	}
	t.Logf("the liar was asked for %d package(s): %v (%d served whole)", len(asked), asked, len(served))
	if run.err != nil {
		t.Errorf("the client failed: %v (its output is above)", run.err)
	}
	if loc := sc.complaint.FindStringIndex(run.out); loc != nil {
		t.Errorf("the client reported a corrupted package: %q (its output is above)",
			lineAround(run.out, loc[0]))
	}
	for name, want := range sc.want {
		got, ok := run.got[name]
		if !ok {
			t.Errorf("%s: not downloaded", name)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, SHA-256 %s; want the built %d bytes, %s",
				name, len(got), sha256Hex(got), len(want), sha256Hex(want))
		}
	}
	liarKey := mirrorKey(t, liar)
	waitFor(t, "the liar "+liarKey+" to leave the pool", func() bool { return !inPool(liarKey) })
	t.Logf("the parked domain is still in the pool: %v", inPool(mirrorKey(t, parked)))
}

// lineAround returns the line of s that holds the byte at i.
func lineAround(s string, i int) string {
	start := strings.LastIndexByte(s[:i], '\n') + 1
	end := strings.IndexByte(s[i:], '\n')
	if end < 0 {
		return s[start:]
	}
	return s[start : i+end]
}

// TestPacmanVerifiesAgainstTheDatabase runs pacman -Syw through refractor
// over good mirrors, a liar and a parked domain: every package must reach
// pacman's cache with the bytes built, pacman must report no corrupted
// package, and the liar, which was asked for packages, must be out of the
// pool afterwards. With verify off, pacman must see the corruption.
func TestPacmanVerifiesAgainstTheDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: starts Caddy and runs pacman")
	}
	requireTools(t,
		tool{"pacman", "pacman-package-manager"},
		tool{"repo-add", "pacman-package-manager"},
		tool{"bsdtar", "libarchive-tools"},
		tool{"/usr/share/makepkg/util/compress.sh", "makepkg"},
	)
	var asRoot []string // pacman -Sy refuses to run unless it is root
	if os.Geteuid() != 0 {
		requireTools(t, tool{"fakeroot", "fakeroot"})
		asRoot = []string{"fakeroot", "--"}
	}

	// Ten packages, so that every mirror of the pool, the liar included,
	// is asked for some while on trial.
	pkgs := []pacmanPackage{
		{"alpha", "1.0-1", 96 << 10},
		{"beta", "1.1-1", 256 << 10},
		{"gamma", "2.0-1", 384 << 10},
		{"delta", "1.0-1", 192 << 10},
		{"epsilon", "3.2-1", 512 << 10},
		{"zeta", "0.9-1", 128 << 10},
		{"eta", "4.1-2", 64 << 10},
		{"theta", "1.5-1", 320 << 10},
		{"iota", "0.3-3", 448 << 10},
		{"kappa", "2.2-1", 160 << 10},
	}
	db, files := buildPacmanRepo(t, filepath.Join(t.TempDir(), "repo"), pkgs)
	const repoDir = "core/os/x86_64/"
	tree := map[string][]byte{"lastsync": []byte("1795000000\n"), repoDir + "core.db": db}
	for name, b := range files {
		tree[repoDir+name] = b
	}

	sc := verifyScenario{
		prefix: "/archlinux",
		tree:   tree,
		isPkg:  func(p string) bool { return strings.HasSuffix(p, ".pkg.tar.zst") },
		listLine: func(base string) string {
			return "Server = " + base + "$repo/os/$arch"
		},
		block: func(workers int, listFile string) string {
			return fmt.Sprintf("workers %d\nprovider mirrorlist %s", workers, listFile)
		},
		syncProbes: true,
		want:       files,
		complaint:  regexp.MustCompile(`(?i)corrupted`),
		fetch: func(t *testing.T, tmp string) clientRun {
			conf, dirs := pacmanClient(t, tmp)
			args := append(slices.Clone(asRoot), "pacman", "--config", conf, "--noconfirm", "--noprogressbar", "-Syw")
			for _, p := range pkgs {
				args = append(args, p.name)
			}
			var run clientRun
			run.out, run.err = runToolErr(tmp, nil, args[0], args[1:]...)
			run.got = readDownloads(t, dirs["cache"], files)
			return run
		},
	}
	t.Run("verify on", func(t *testing.T) { runVerifyScenario(t, sc, true) })
	t.Run("verify off", func(t *testing.T) { runVerifyScenario(t, sc, false) })
}

// TestAptVerifiesAgainstTheIndex runs apt-get update and apt-get download
// through refractor over good mirrors, a liar and a parked domain: apt
// must accept the indexes and download .debs identical to the ones built,
// and the liar, which was asked for .debs, must be out of the pool
// afterwards. With verify off, apt must see the corruption.
func TestAptVerifiesAgainstTheIndex(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: starts Caddy and runs apt-get")
	}
	requireTools(t,
		tool{"apt-get", "apt"},
		tool{"apt-ftparchive", "apt-utils"},
		tool{"dpkg-deb", "dpkg"},
	)
	pkgs := []debPackage{
		{"refractor-e2e-one", "1.0-1", 160 << 10},
		{"refractor-e2e-two", "2.3-1", 320 << 10},
		{"refractor-e2e-three", "0.1-2", 96 << 10},
		{"refractor-e2e-four", "1.4-1", 512 << 10},
		{"refractor-e2e-five", "5.0-1", 64 << 10},
		{"refractor-e2e-six", "0.6-1", 256 << 10},
		{"refractor-e2e-seven", "7.1-3", 384 << 10},
		{"refractor-e2e-eight", "0.8-1", 192 << 10},
	}
	tree, debs := buildDebianRepo(t, t.TempDir(), pkgs)
	want := map[string][]byte{}
	for _, p := range pkgs {
		want[p.file()] = debs[p.name]
	}

	sc := verifyScenario{
		prefix:   "/debian",
		tree:     tree,
		isPkg:    func(p string) bool { return strings.HasSuffix(p, ".deb") },
		listLine: func(base string) string { return base },
		// As TestAptThroughRefractor: no lastsync on Debian mirrors. The
		// default trial: the liar, listed first, is asked for packages
		// while the others are still on trial (with trial 1, their
		// parallel trials ranked them at once, and the liar, which had
		// served only tiny indexes, resigned before any package).
		block: func(workers int, listFile string) string {
			return fmt.Sprintf("workers %d\nsync_file off\nprovider list %s", workers, listFile)
		},
		want:      want,
		complaint: regexp.MustCompile(`(?i)hash sum mismatch|hashes of expected file|unexpected size|corrupt`),
		fetch: func(t *testing.T, tmp string) clientRun {
			env, downloads := aptClient(t, filepath.Join(tmp, "apt"))
			var run clientRun
			out, err := runToolErr(tmp, env, "apt-get", "update")
			run.out, run.err = "$ apt-get update\n"+out, err
			if err == nil && (strings.Contains(out, "W:") || strings.Contains(out, "E:")) {
				run.err = fmt.Errorf("apt-get update warned or failed")
			}
			// Download even after a failed update: its output says more.
			args := []string{"download"}
			for _, p := range pkgs {
				args = append(args, p.name)
			}
			out, err = runToolErr(downloads, env, "apt-get", args...)
			run.out += "$ apt-get download\n" + out
			if run.err == nil {
				run.err = err
			}
			run.got = readDownloads(t, downloads, want)
			return run
		},
	}
	t.Run("verify on", func(t *testing.T) { runVerifyScenario(t, sc, true) })
	t.Run("verify off", func(t *testing.T) { runVerifyScenario(t, sc, false) })
}

// readDownloads reads the files of want that are in dir.
func readDownloads(t *testing.T, dir string, want map[string][]byte) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	for name := range want {
		b, err := os.ReadFile(filepath.Join(dir, path.Base(name)))
		if err == nil {
			got[name] = b
		} else if !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	return got
}
