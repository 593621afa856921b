package refractor

// End-to-end tests with real clients: pacman and apt download from
// repositories they would accept from a real mirror network, through Caddy
// with refractor, over local mirrors of different speeds. The repositories
// are built by the test with the distributions' own tools (repo-add,
// dpkg-deb, apt-ftparchive), so what is checked is what the package
// managers themselves make of refractor's answers.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/klauspost/compress/zstd"

	"github.com/caddy-refractor/refractor/internal/mirrorsim"
	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// toolTimeout bounds every external command of the end-to-end tests.
const toolTimeout = 60 * time.Second

// A tool is an external program a test runs (or, given as an absolute
// path, a file one needs) and the Debian package that provides it.
type tool struct{ bin, deb string }

func (tl tool) present() bool {
	if filepath.IsAbs(tl.bin) {
		_, err := os.Stat(tl.bin)
		return err == nil
	}
	_, err := exec.LookPath(tl.bin)
	return err == nil
}

// requireTools skips the test when a tool is missing, naming the Debian
// packages to install; under CI (the CI environment variable set) it fails
// instead: CI must never skip these tests silently.
func requireTools(t *testing.T, tools ...tool) {
	t.Helper()
	var missing, debs []string
	for _, tl := range tools {
		if !tl.present() {
			missing = append(missing, tl.bin)
			if !slices.Contains(debs, tl.deb) {
				debs = append(debs, tl.deb)
			}
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("%s not found: install the Debian package(s) %s (apt-get install %s)",
		strings.Join(missing, ", "), strings.Join(debs, ", "), strings.Join(debs, " "))
	if os.Getenv("CI") != "" {
		t.Fatal(msg + "; CI is set, so this test may not skip")
	}
	t.Skip(msg)
}

// runTool runs a command in dir with a timeout and returns its combined
// output; a failure or a timeout fails the test with that output.
func runTool(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runToolErr(dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runToolErr(dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = toolEnv(env)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", toolTimeout, err)
	}
	return out.String(), err
}

// toolEnv is the environment of external commands: this process's without
// proxy settings (the clients must talk to the local Caddy directly), in
// the C locale (messages the tests can read), plus extra.
func toolEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasSuffix(strings.ToLower(name), "_proxy") || name == "LANG" || strings.HasPrefix(name, "LC_") {
			continue
		}
		env = append(env, kv)
	}
	return append(append(env, "LC_ALL=C"), extra...)
}

// loggedMirror is a simulated mirror (internal/mirrorsim) that keeps a log
// of every request it answered.
type loggedMirror struct {
	*httptest.Server
	base string

	mu  sync.Mutex
	log []mirrorRequest
}

// mirrorRequest is one request a mirror answered: the path below the
// mirror's base, the status sent and the body bytes written.
type mirrorRequest struct {
	Method string
	Path   string
	Status int
	Bytes  int64
}

// newLoggedMirror serves files under prefix (such as "/archlinux/"),
// capped at rate bytes per second (0: no cap), until the test ends.
func newLoggedMirror(t *testing.T, prefix string, files map[string][]byte, rate int64) *loggedMirror {
	t.Helper()
	sim := mirrorsim.New(mirrorsim.Config{Tree: mirrorsim.Files(files), Prefix: prefix, Rate: rate})
	m := &loggedMirror{}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &countingWriter{ResponseWriter: w} // the handler's (cache.go)
		sim.ServeHTTP(rw, r)
		if rw.status == 0 {
			rw.status = http.StatusOK
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		m.log = append(m.log, mirrorRequest{r.Method, strings.TrimPrefix(r.URL.Path, prefix), rw.status, rw.n})
	}))
	m.base = m.URL + prefix
	t.Cleanup(func() {
		sim.Release()
		m.CloseClientConnections()
		m.Close()
	})
	return m
}

// Requests returns the mirror's log so far.
func (m *loggedMirror) Requests() []mirrorRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.log)
}

// served counts the GET requests the mirror answered with 200, by path,
// for the paths match accepts.
func (m *loggedMirror) served(match func(string) bool) map[string]int {
	out := map[string]int{}
	for _, r := range m.Requests() {
		if r.Method == http.MethodGet && r.Status == http.StatusOK && match(r.Path) {
			out[r.Path]++
		}
	}
	return out
}

// startRefractor loads a Caddyfile that serves refractor, configured by
// block, under prefix (such as "/archlinux") on 127.0.0.1 and localhost.
func startRefractor(t *testing.T, prefix, block string) {
	t.Helper()
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{
		AdminPort:          adminPort,
		LoadRequestTimeout: 10 * time.Second,
	})
	tester.InitServer(globalOptions+fmt.Sprintf(`
http://127.0.0.1:%[1]d, http://localhost:%[1]d {
	handle_path %[2]s/* {
		refractor {
%[3]s
		}
	}
}
`, httpPort, prefix, block), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
}

// waitForSyncTimes waits until the pool knows the sync time of n mirrors.
// Until it does, files that change in place go to the freshest mirror
// known so far: a stale mirror that answered its probe first is taken for
// the freshest, and a client that asks at once gets its old database.
func waitForSyncTimes(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the pool to read the sync time of %d mirrors", n), func() bool {
		known := 0
		for _, ps := range poolStatuses() {
			for _, w := range ps.Workers {
				if !w.LastSync.IsZero() {
					known++
				}
			}
		}
		return known >= n
	})
}

// countRequests is how many requests for paths that match reached the
// mirrors.
func countRequests(mirrors []*loggedMirror, match func(string) bool) (n int) {
	for _, m := range mirrors {
		for _, r := range m.Requests() {
			if match(r.Path) {
				n++
			}
		}
	}
	return n
}

// spread returns, for each mirror that served any, how many files whose
// path match accepts it served, keyed by the mirror's base URL.
func spread(mirrors []*loggedMirror, match func(string) bool) map[string]int {
	out := map[string]int{}
	for _, m := range mirrors {
		for _, n := range m.served(match) {
			out[m.base] += n
		}
	}
	return out
}

// logMirrors logs every request each mirror answered.
func logMirrors(t *testing.T, mirrors []*loggedMirror) {
	t.Helper()
	for _, m := range mirrors {
		var b strings.Builder
		for _, r := range m.Requests() {
			fmt.Fprintf(&b, "\n\t%s %s: %d, %d bytes", r.Method, r.Path, r.Status, r.Bytes)
		}
		t.Logf("mirror %s:%s", m.base, b.String())
	}
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sha256Hex(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// --- pacman ---

// pacmanPackage is a package of the test repository.
type pacmanPackage struct {
	name, version string // version: pkgver-pkgrel
	size          int    // of its one payload file
}

func (p pacmanPackage) file() string {
	return fmt.Sprintf("%s-%s-x86_64.pkg.tar.zst", p.name, p.version)
}

// buildPacmanPackage writes p into dir as pacman would find it on a mirror:
// a zstd-compressed tar holding .PKGINFO and one payload file. It is built
// in Go rather than with makepkg or bsdtar so that the bytes are the
// test's own, reproducible and independent of the tools' versions; pacman
// and repo-add then read it as any other package.
func buildPacmanPackage(t *testing.T, dir string, p pacmanPackage) []byte {
	t.Helper()
	payload := testmirror.Content(p.name+"-"+p.version, p.size) // incompressible: real transfer sizes
	mtime := time.Unix(1795000000, 0)
	pkginfo := fmt.Sprintf(`# Generated by refractor's end-to-end test
pkgname = %[1]s
pkgbase = %[1]s
pkgver = %[2]s
pkgdesc = refractor end-to-end test package %[1]s
url = https://github.com/caddy-refractor/refractor
builddate = %[3]d
packager = refractor e2e <e2e@example.invalid>
size = %[4]d
arch = x86_64
license = MIT
`, p.name, p.version, mtime.Unix(), len(payload))

	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	entry := func(name string, mode int64, data []byte) {
		hdr := &tar.Header{Name: name, Mode: mode, ModTime: mtime, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		if strings.HasSuffix(name, "/") {
			hdr.Typeflag = tar.TypeDir
		} else {
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	entry(".PKGINFO", 0o644, []byte(pkginfo))
	entry("usr/", 0o755, nil)
	entry("usr/share/", 0o755, nil)
	entry("usr/share/"+p.name+"/", 0o755, nil)
	entry("usr/share/"+p.name+"/data", 0o644, payload)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, p.file()), buf.Bytes())
	return buf.Bytes()
}

// buildPacmanRepo builds the repository core in dir from pkgs with
// repo-add and returns the database and the package files, by name.
func buildPacmanRepo(t *testing.T, dir string, pkgs []pacmanPackage) (db []byte, files map[string][]byte) {
	t.Helper()
	files = map[string][]byte{}
	args := []string{"--quiet", "--nocolor", "core.db.tar.gz"}
	for _, p := range pkgs {
		files[p.file()] = buildPacmanPackage(t, dir, p)
		args = append(args, p.file())
	}
	runTool(t, dir, nil, "repo-add", args...)
	return readFile(t, filepath.Join(dir, "core.db.tar.gz")), files
}

// pacmanClient sets up pacman under tmp, isolated from the host: its
// directories, and a pacman.conf with refractor's /archlinux/ as the only
// server of [core]. It returns the configuration file and the directories
// by name (root, db, cache, gnupg, hooks).
func pacmanClient(t *testing.T, tmp string) (conf string, dirs map[string]string) {
	t.Helper()
	return pacmanClientOf(t, tmp, fmt.Sprintf("127.0.0.1:%d", httpPort))
}

// pacmanClientOf is pacmanClient for the refractor at host (host:port).
func pacmanClientOf(t *testing.T, tmp, host string) (conf string, dirs map[string]string) {
	t.Helper()
	dirs = map[string]string{}
	for _, d := range []string{"root", "db", "cache", "gnupg", "hooks"} {
		dirs[d] = filepath.Join(tmp, "pacman", d)
		if err := os.MkdirAll(dirs[d], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf = filepath.Join(tmp, "pacman.conf")
	writeFile(t, conf, fmt.Appendf(nil, `[options]
RootDir = %s
DBPath = %s
CacheDir = %s
LogFile = %s
GPGDir = %s
HookDir = %s
Architecture = x86_64
SigLevel = Never
LocalFileSigLevel = Never
ParallelDownloads = 5

[core]
Server = http://%s/archlinux/$repo/os/$arch
`, dirs["root"], dirs["db"], dirs["cache"], filepath.Join(tmp, "pacman", "pacman.log"),
		dirs["gnupg"], dirs["hooks"], host))
	return conf, dirs
}

// apt reads its configuration from APT_CONFIG before the host's
// apt.conf.d, so pointing Dir::Etc there keeps every host setting
// (proxies, hooks, extra index targets) out of the tests.
// aptClient sets up apt in dir, isolated from the host's configuration as
// with refractor's /debian/ as its only
// source, and returns its environment and its download directory.
func aptClient(t *testing.T, dir string) (env []string, downloads string) {
	t.Helper()
	for _, d := range []string{"etc/apt.conf.d", "etc/sources.list.d", "etc/preferences.d", "etc/trusted.gpg.d",
		"state/lists/partial", "cache/archives/partial", "log", "downloads"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "state", "status"), nil)
	writeFile(t, filepath.Join(dir, "etc", "sources.list.d", "refractor.sources"), fmt.Appendf(nil, `Types: deb
URIs: http://127.0.0.1:%d/debian/
Suites: stable
Components: main
Trusted: yes
`, httpPort))
	conf := fmt.Sprintf(`Dir::Etc "%[1]s/etc";
Dir::Etc::main "apt.conf";
Dir::Etc::Parts "apt.conf.d";
Dir::Etc::SourceList "sources.list";
Dir::Etc::SourceParts "sources.list.d";
Dir::Etc::Preferences "preferences";
Dir::Etc::PreferencesParts "preferences.d";
Dir::Etc::Trusted "trusted.gpg";
Dir::Etc::TrustedParts "trusted.gpg.d";
Dir::State "%[1]s/state";
Dir::State::status "%[1]s/state/status";
Dir::Cache "%[1]s/cache";
Dir::Log "%[1]s/log";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
Acquire::Languages "none";
Acquire::http::Proxy "DIRECT";
Acquire::Retries "0";
Debug::NoLocking "true";
`, dir)
	if os.Geteuid() == 0 {
		conf += "APT::Sandbox::User \"root\";\n" // _apt cannot write the test's directories
	}
	writeFile(t, filepath.Join(dir, "apt.conf"), []byte(conf))
	return []string{"APT_CONFIG=" + filepath.Join(dir, "apt.conf")}, filepath.Join(dir, "downloads")
}

// TestPacmanThroughRefractor runs pacman -Syw against Caddy with refractor
// over four mirrors of different speeds, one of them stale (an older
// database, without the newest package and version). pacman must succeed,
// its integrity check must pass, it must see the fresh database, and the
// stale mirror must never serve it the database.
func TestPacmanThroughRefractor(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: starts Caddy and runs pacman")
	}
	requireTools(t,
		tool{"pacman", "pacman-package-manager"},
		tool{"repo-add", "pacman-package-manager"},
		tool{"bsdtar", "libarchive-tools"},                     // repo-add reads packages with it
		tool{"/usr/share/makepkg/util/compress.sh", "makepkg"}, // and sources makepkg's libraries
	)
	// pacman -Sy refuses to run unless it is root; fakeroot lets it believe
	// so (everything it writes is in the test's directories).
	var asRoot []string
	if os.Geteuid() != 0 {
		requireTools(t, tool{"fakeroot", "fakeroot"})
		asRoot = []string{"fakeroot", "--"}
	}

	// The fresh repository: beta has a new version and gamma is new. The
	// stale mirror has last synced before either, and has exactly the
	// files its database lists.
	fresh := []pacmanPackage{
		{"alpha", "1.0-1", 96 << 10},
		{"beta", "1.1-1", 256 << 10},
		{"gamma", "2.0-1", 384 << 10},
		{"delta", "1.0-1", 192 << 10},
		{"epsilon", "3.2-1", 512 << 10},
		{"zeta", "0.9-1", 128 << 10},
	}
	stale := []pacmanPackage{fresh[0], {"beta", "1.0-1", 256 << 10}, fresh[3], fresh[4], fresh[5]}
	tmp := t.TempDir()
	freshDB, freshFiles := buildPacmanRepo(t, filepath.Join(tmp, "repo-fresh"), fresh)
	staleDB, staleFiles := buildPacmanRepo(t, filepath.Join(tmp, "repo-stale"), stale)

	tree := func(db []byte, pkgs map[string][]byte, lastsync string) map[string][]byte {
		files := map[string][]byte{"lastsync": []byte(lastsync + "\n"), "core/os/x86_64/core.db": db}
		for name, b := range pkgs {
			files["core/os/x86_64/"+name] = b
		}
		return files
	}
	freshTree := tree(freshDB, freshFiles, "1795000000")
	staleTree := tree(staleDB, staleFiles, "1794990000")
	// Different speeds, all fast enough that the test stays short: the
	// stale mirror is listed first and is not the slowest, so it is
	// offered its share of the work.
	staleMirror := newLoggedMirror(t, "/archlinux/", staleTree, 4<<20)
	mirrors := []*loggedMirror{
		staleMirror,
		newLoggedMirror(t, "/archlinux/", freshTree, 0),
		newLoggedMirror(t, "/archlinux/", freshTree, 8<<20),
		newLoggedMirror(t, "/archlinux/", freshTree, 2<<20),
	}

	// The mirrors come from a pacman mirrorlist, as a user's would.
	var mirrorlist strings.Builder
	mirrorlist.WriteString("## refractor end-to-end test mirrors\n\n")
	for _, m := range mirrors {
		fmt.Fprintf(&mirrorlist, "## %s\nServer = %s$repo/os/$arch\n", m.URL, m.base)
	}
	mirrorlistFile := filepath.Join(tmp, "mirrorlist")
	writeFile(t, mirrorlistFile, []byte(mirrorlist.String()))
	// With refractor's LAN cache: a second machine's pacman gets the same
	// packages without a package request to any mirror.
	startRefractor(t, "/archlinux", fmt.Sprintf("workers %d\ncache %s {\nmin_free 1MiB\n}\nprovider mirrorlist %s",
		len(mirrors), filepath.Join(tmp, "lan-cache"), mirrorlistFile))
	waitForSyncTimes(t, len(mirrors))

	// machine runs pacman -Syw for the fresh packages with its own
	// directories under tmp/name, against the refractor at host, and
	// checks what it downloaded.
	machine := func(name, host string) {
		t.Helper()
		conf, dirs := pacmanClientOf(t, filepath.Join(tmp, name), host)
		args := append(asRoot, "pacman", "--config", conf, "--noconfirm", "--noprogressbar", "-Syw")
		for _, p := range fresh {
			args = append(args, p.name)
		}
		start := time.Now()
		out, err := runToolErr(tmp, nil, args[0], args[1:]...)
		t.Logf("%s: pacman -Syw: %v\n%s", name, time.Since(start).Round(time.Millisecond), out)
		if err != nil {
			t.Fatalf("%s: pacman failed: %v (its output is above)", name, err)
		}
		if !strings.Contains(out, "checking package integrity") {
			t.Errorf("%s: pacman did not report its integrity check", name)
		}

		// Every package of the fresh database is in the cache, with the
		// bytes built here (pacman checked them against the database's
		// SHA-256).
		for _, p := range fresh {
			got, err := os.ReadFile(filepath.Join(dirs["cache"], p.file()))
			if err != nil {
				t.Errorf("%s: %s: not downloaded: %v", name, p.file(), err)
				continue
			}
			if sha256Hex(got) != sha256Hex(freshFiles[p.file()]) {
				t.Errorf("%s: %s: SHA-256 %s, want %s", name, p.file(), sha256Hex(got), sha256Hex(freshFiles[p.file()]))
			}
		}
		if _, err := os.Stat(filepath.Join(dirs["cache"], stale[1].file())); err == nil {
			t.Errorf("%s: %s, of the stale database, was downloaded", name, stale[1].file())
		}
		if got := readFile(t, filepath.Join(dirs["db"], "sync", "core.db")); !bytes.Equal(got, freshDB) {
			t.Errorf("%s: pacman's core.db (%d bytes) is not the fresh database (%d bytes)", name, len(got), len(freshDB))
		}
	}
	isDB := func(p string) bool {
		base := path.Base(p)
		return strings.HasPrefix(base, "core.db") || strings.HasPrefix(base, "core.files")
	}
	isPkg := func(p string) bool { return strings.HasSuffix(p, ".pkg.tar.zst") }

	here := fmt.Sprintf("127.0.0.1:%d", httpPort)
	machine("first", here)
	logMirrors(t, mirrors)
	pkgRequests := countRequests(mirrors, isPkg)
	machine("second", here)
	if n := countRequests(mirrors, isPkg) - pkgRequests; n != 0 {
		logMirrors(t, mirrors)
		t.Errorf("the second machine's pacman caused %d package requests to mirrors, want none (the cache has them)", n)
	}

	// A second instance (another Caddy process, with a cache of its own)
	// that has this one as a peer: its machine's packages come from this
	// instance's cache, none from a mirror.
	other := startCaddyProcess(t, t.TempDir(), fmt.Sprintf(`workers %d
			cache %s {
				min_free 1MiB
			}
			peers http://%s/archlinux/
			provider mirrorlist %s`, len(mirrors), filepath.Join(tmp, "other-cache"), here, mirrorlistFile))
	waitFor(t, "the other instance to read the mirrors' sync times", func() bool {
		known := 0
		for _, ps := range other.pools(t) {
			for _, w := range ps.Workers {
				if !w.LastSync.IsZero() {
					known++
				}
			}
		}
		return known == len(mirrors)
	})
	machine("third", other.http)
	if n := countRequests(mirrors, isPkg) - pkgRequests; n != 0 {
		logMirrors(t, mirrors)
		t.Errorf("the other instance's machine caused %d package requests to mirrors, want none (its peer has them)", n)
	}
	if got := peerBytesFrom(t, other, "http://"+here+"/archlinux/"); got == 0 {
		t.Error("the other instance received nothing from its peer")
	}
	for _, r := range staleMirror.Requests() {
		if isDB(r.Path) && r.Status/100 == 2 {
			t.Errorf("the stale mirror served a database: %s %s: %d, %d bytes", r.Method, r.Path, r.Status, r.Bytes)
		}
	}
	if got := spread(mirrors, isDB); len(got) == 0 {
		t.Errorf("no mirror served core.db")
	}
	pkgSpread := spread(mirrors, isPkg)
	if len(pkgSpread) < 2 {
		t.Errorf("packages came from %d mirror(s) (%v), want the work spread over more than one", len(pkgSpread), pkgSpread)
	}
}

// --- apt ---

// debPackage is a package of the test Debian repository.
type debPackage struct {
	name, version string
	size          int // of its one payload file
}

func (p debPackage) file() string { return fmt.Sprintf("%s_%s_all.deb", p.name, p.version) }

// buildDeb builds p with dpkg-deb in work and returns the .deb's bytes.
func buildDeb(t *testing.T, work string, p debPackage) []byte {
	t.Helper()
	root := filepath.Join(work, p.name)
	writeFile(t, filepath.Join(root, "DEBIAN", "control"), fmt.Appendf(nil, `Package: %s
Version: %s
Architecture: all
Maintainer: refractor e2e <e2e@example.invalid>
Section: misc
Priority: optional
Description: refractor end-to-end test package
 A payload of %d bytes.
`, p.name, p.version, p.size))
	writeFile(t, filepath.Join(root, "usr", "share", p.name, "data"), testmirror.Content(p.name, p.size))
	deb := filepath.Join(work, p.file())
	runTool(t, work, nil, "dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, deb)
	return readFile(t, deb)
}

// buildDebianRepo builds a repository with the suite stable, component
// main, and the architectures all and amd64 (the packages are all, the
// index is binary-amd64, as on Debian mirrors), with apt-ftparchive. It
// returns the repository's files by path and the .debs by package name.
func buildDebianRepo(t *testing.T, dir string, pkgs []debPackage) (files, debs map[string][]byte) {
	t.Helper()
	files, debs = map[string][]byte{}, map[string][]byte{}
	for _, p := range pkgs {
		b := buildDeb(t, filepath.Join(dir, "build"), p)
		name := path.Join("pool/main", p.name[:1], p.name, p.file())
		writeFile(t, filepath.Join(dir, "repo", name), b)
		files[name], debs[p.name] = b, b
	}
	repo := filepath.Join(dir, "repo")
	index := "dists/stable/main/binary-amd64/"
	packages := runTool(t, repo, nil, "apt-ftparchive", "packages", "pool")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(packages))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	files[index+"Packages"], files[index+"Packages.gz"] = []byte(packages), gz.Bytes()
	for name, b := range map[string][]byte{"Packages": []byte(packages), "Packages.gz": gz.Bytes()} {
		writeFile(t, filepath.Join(repo, index, name), b)
	}
	release := runTool(t, filepath.Join(repo, "dists", "stable"), nil, "apt-ftparchive",
		"-o", "APT::FTPArchive::Release::Origin=refractor-e2e",
		"-o", "APT::FTPArchive::Release::Suite=stable",
		"-o", "APT::FTPArchive::Release::Codename=stable",
		"-o", "APT::FTPArchive::Release::Architectures=amd64 all",
		"-o", "APT::FTPArchive::Release::Components=main",
		"release", ".")
	files["dists/stable/Release"] = []byte(release)
	return files, debs
}

// TestAptThroughRefractor runs apt-get update and apt-get download against
// Caddy with refractor over three mirrors of different speeds: apt must
// accept the indexes and download .debs identical to the ones built.
func TestAptThroughRefractor(t *testing.T) {
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
	}
	tmp := t.TempDir()
	files, debs := buildDebianRepo(t, tmp, pkgs)
	var mirrors []*loggedMirror
	var list strings.Builder
	for _, rate := range []int64{0, 8 << 20, 2 << 20} {
		m := newLoggedMirror(t, "/debian/", files, rate)
		mirrors = append(mirrors, m)
		fmt.Fprintln(&list, m.base)
	}
	listFile := filepath.Join(tmp, "mirrors.txt")
	writeFile(t, listFile, []byte(list.String()))
	// Debian mirrors have no lastsync file: no sync probes. apt fetches one
	// file at a time; a short trial (each mirror is tried on one file of
	// at least 64 KiB) spreads even those few files over the mirrors, so
	// apt gets its indexes and packages from different mirrors.
	startRefractor(t, "/debian", fmt.Sprintf(`workers %d
			sync_file off
			trial 1
			min_sample 64KiB
			cache %s {
				min_free 1MiB
			}
			provider list %s`, len(mirrors), filepath.Join(tmp, "lan-cache"), listFile))

	// machine runs apt-get update and download with its own directories
	// under tmp/name, and checks what it downloaded.
	machine := func(name string) {
		t.Helper()
		env, downloads := aptClient(t, filepath.Join(tmp, name))
		start := time.Now()
		out := runTool(t, tmp, env, "apt-get", "update")
		t.Logf("%s: apt-get update: %v\n%s", name, time.Since(start).Round(time.Millisecond), out)
		if strings.Contains(out, "W:") || strings.Contains(out, "E:") {
			t.Errorf("%s: apt-get update warned or failed (output above)", name)
		}
		args := []string{"download"}
		for _, p := range pkgs {
			args = append(args, p.name)
		}
		start = time.Now()
		out = runTool(t, downloads, env, "apt-get", args...)
		t.Logf("%s: apt-get download: %v\n%s", name, time.Since(start).Round(time.Millisecond), out)

		for _, p := range pkgs {
			got, err := os.ReadFile(filepath.Join(downloads, p.file()))
			if err != nil {
				t.Errorf("%s: %s: not downloaded: %v", name, p.file(), err)
				continue
			}
			if !bytes.Equal(got, debs[p.name]) {
				t.Errorf("%s: %s: %d bytes, SHA-256 %s; want the built %d bytes, %s",
					name, p.file(), len(got), sha256Hex(got), len(debs[p.name]), sha256Hex(debs[p.name]))
			}
		}
	}
	isDeb := func(p string) bool { return strings.HasSuffix(p, ".deb") }

	// With refractor's LAN cache: a second machine's apt gets the same
	// packages without a package request to any mirror.
	machine("apt")
	logMirrors(t, mirrors)
	debRequests := countRequests(mirrors, isDeb)
	machine("apt-second")
	if n := countRequests(mirrors, isDeb) - debRequests; n != 0 {
		logMirrors(t, mirrors)
		t.Errorf("the second machine's apt caused %d package requests to mirrors, want none (the cache has them)", n)
	}
	isIndex := func(p string) bool { return strings.HasPrefix(p, "dists/") }
	if got := spread(mirrors, isIndex); len(got) == 0 {
		t.Errorf("no mirror served the indexes")
	}
	if got := spread(mirrors, func(string) bool { return true }); len(got) < 2 {
		t.Errorf("apt's files came from %d mirror(s) (%v), want the work spread over more than one", len(got), got)
	}
}
