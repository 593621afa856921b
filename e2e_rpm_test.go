package refractor

// End-to-end tests with dnf and zypper: an RPM repository built by the test
// with rpmbuild and createrepo_c, in Fedora's layout, served by local
// mirrors through Caddy with refractor, as e2e_test.go does for pacman and
// apt. Both clients are isolated from the host in the test's directories
// (their configuration, caches, databases, logs and locks) and talk only to
// 127.0.0.1.

import (
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// rpmRepoDir is where the test repository lives below a mirror's base, as
// on Fedora's mirrors; the packages are under Packages/<letter>/.
const rpmRepoDir = "releases/40/Everything/x86_64/os/"

// rpmPackage is a package of the test repository.
type rpmPackage struct {
	name, version string // version: <version>-<release>
	size          int    // of its one payload file
}

func (p rpmPackage) file() string { return fmt.Sprintf("%s-%s.noarch.rpm", p.name, p.version) }

// href is the package's path below the repository's root.
func (p rpmPackage) href() string { return path.Join("Packages", p.name[:1], p.file()) }

// rpmBuildTools are the tools that build the test repository.
var rpmBuildTools = []tool{{"rpmbuild", "rpm"}, {"createrepo_c", "createrepo-c"}}

// rpmEnv is the environment of the RPM tools run in tmp: their home (rpm
// reads ~/.rpmmacros, and Debian's rpm keeps its database under it),
// temporary files, and libzypp's configuration, log and lock, all in tmp.
func rpmEnv(t *testing.T, tmp string) []string {
	t.Helper()
	dirs := map[string]string{"HOME": "home", "TMPDIR": "tmp", "ZYPP_LOCKFILE_ROOT": "zypp-lock"}
	var env []string
	for name, dir := range dirs {
		d := filepath.Join(tmp, dir)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		env = append(env, name+"="+d)
	}
	zyppConf := filepath.Join(tmp, "zypp.conf")
	writeFile(t, zyppConf, []byte("## refractor end-to-end test: libzypp's defaults\n[main]\n"))
	return append(env, "ZYPP_CONF="+zyppConf, "ZYPP_LOGFILE="+filepath.Join(tmp, "zypp.log"))
}

// buildRPM builds p with rpmbuild in work and returns the package's bytes.
// Its payload is incompressible (real transfer sizes) and compressed
// fast; rpm's post-install scripts (stripping, byte-compiling) are off.
func buildRPM(t *testing.T, work string, env []string, p rpmPackage) []byte {
	t.Helper()
	version, release, ok := strings.Cut(p.version, "-")
	if !ok {
		t.Fatalf("%s: version %q is not <version>-<release>", p.name, p.version)
	}
	payload := filepath.Join(work, p.name+"-"+p.version+".data")
	writeFile(t, payload, testmirror.Content(p.name+"-"+p.version, p.size))
	spec := filepath.Join(work, p.name+"-"+p.version+".spec")
	writeFile(t, spec, fmt.Appendf(nil, `Name: %[1]s
Version: %[2]s
Release: %[3]s
Summary: refractor end-to-end test package %[1]s
License: MIT
URL: https://github.com/caddy-refractor/refractor
BuildArch: noarch

%%description
A payload of %[4]d bytes.

%%install
install -D -m 0644 %[5]s %%{buildroot}/usr/share/%[1]s/data

%%files
/usr/share/%[1]s/data
`, p.name, version, release, p.size, payload))
	top := filepath.Join(work, "rpmbuild")
	runTool(t, work, env, "rpmbuild", "--quiet", "-bb",
		"--define", "_topdir "+top,
		"--define", "_build_id_links none",
		"--define", "__os_install_post %{nil}",
		"--define", "_binary_payload w1.gzdio",
		spec)
	return readFile(t, filepath.Join(top, "RPMS", "noarch", p.file()))
}

// buildRPMRepo builds the packages into a repository in dir (Fedora's
// layout, metadata by createrepo_c) and returns its files by path below
// the repository's root, and the packages by file name.
func buildRPMRepo(t *testing.T, dir string, env []string, pkgs []rpmPackage) (files, rpms map[string][]byte) {
	t.Helper()
	files, rpms = map[string][]byte{}, map[string][]byte{}
	repo := filepath.Join(dir, "repo")
	for _, p := range pkgs {
		b := buildRPM(t, filepath.Join(dir, "build"), env, p)
		writeFile(t, filepath.Join(repo, p.href()), b)
		rpms[p.file()] = b
	}
	runTool(t, dir, env, "createrepo_c", "--quiet", "--no-database", repo)
	err := filepath.WalkDir(repo, func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(repo, name)
		if err == nil {
			files[filepath.ToSlash(rel)] = readFile(t, name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files, rpms
}

// rpmMirrorTree is a mirror's tree of the repository files: under
// rpmRepoDir, with a lastsync file (which Fedora's mirrors do not have:
// it gives the pool the sync times its freshness rules read).
func rpmMirrorTree(files map[string][]byte, lastsync string) map[string][]byte {
	tree := map[string][]byte{"lastsync": []byte(lastsync + "\n")}
	for name, b := range files {
		tree[rpmRepoDir+name] = b
	}
	return tree
}

// rpmRepoURL is the repository's URL through refractor, mounted at
// /fedora.
func rpmRepoURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/fedora/%s", httpPort, rpmRepoDir)
}

// rpmClient is dnf or zypper, set up in a directory of its own.
type rpmClient struct {
	name  string
	tools []tool
	// complaint matches what the client says of a package that fails its
	// check.
	complaint *regexp.Regexp
	// setup isolates the client in dir and points it at refractor;
	// refresh fetches the repository's metadata into its cache; download
	// downloads the packages named and returns what it got by file name.
	// With cached set, the client has the metadata in its cache already
	// and asks refractor for the packages only.
	setup    func(t *testing.T, dir string)
	refresh  func(t *testing.T, dir string) (string, error)
	download func(t *testing.T, dir string, names []string, cached bool) clientRun
}

// dnfClient is dnf with an install root of its own: its configuration file
// and repository directory (given on the command line, so the host's
// /etc/dnf and /etc/yum.repos.d are not read), its cache, database and
// logs (inside the install root), no plugins, no GPG check (the test's
// packages are unsigned). Metadata never expires: dnf fetches it when its
// cache is empty only, so that with its cache filled (cached), it asks for
// packages only.
func dnfClient() rpmClient {
	dnf := func(t *testing.T, dir string, more ...string) (string, error) {
		name, args := "dnf", []string{
			"--config", filepath.Join(dir, "dnf.conf"),
			"--installroot", filepath.Join(dir, "root"),
			"--releasever", "40",
			"--setopt=reposdir=" + filepath.Join(dir, "repos.d"),
			"--setopt=varsdir=" + filepath.Join(dir, "vars"),
			"--noplugins", "--assumeyes",
		}
		if os.Geteuid() != 0 {
			// dnf install refuses to run unless it is root; fakeroot lets it
			// believe so (everything it writes is in the test's directories).
			name, args = "fakeroot", append([]string{"--", "dnf"}, args...)
		}
		return runToolErr(dir, rpmEnv(t, dir), name, append(args, more...)...)
	}
	c := rpmClient{
		name:      "dnf",
		tools:     []tool{{"dnf", "dnf"}},
		complaint: regexp.MustCompile(`(?i)checksum doesn't match|does not match intended download|mismatch|corrupt`),
	}
	c.setup = func(t *testing.T, dir string) {
		if os.Geteuid() != 0 {
			requireTools(t, tool{"fakeroot", "fakeroot"})
		}
		for _, d := range []string{"root", "vars", "downloads"} {
			if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		writeFile(t, filepath.Join(dir, "dnf.conf"), []byte(`[main]
# refractor end-to-end test: paths are inside the install root.
cachedir=/var/cache/dnf
logdir=/var/log
persistdir=/var/lib/dnf
gpgcheck=0
repo_gpgcheck=0
install_weak_deps=0
keepcache=1
plugins=0
fastestmirror=0
countme=0
retries=1
timeout=30
`))
		writeFile(t, filepath.Join(dir, "repos.d", "refractor.repo"), fmt.Appendf(nil, `[refractor]
name=refractor end-to-end test
baseurl=%s
enabled=1
gpgcheck=0
repo_gpgcheck=0
metadata_expire=-1
`, rpmRepoURL()))
	}
	c.refresh = func(t *testing.T, dir string) (string, error) {
		return dnf(t, dir, "makecache")
	}
	c.download = func(t *testing.T, dir string, names []string, cached bool) clientRun {
		downloads := filepath.Join(dir, "downloads")
		var run clientRun
		run.out, run.err = dnf(t, dir, append([]string{"install", "--downloadonly", "--destdir", downloads}, names...)...)
		run.got = readRPMs(t, downloads)
		return run
	}
	return c
}

// zypperClient is zypper with a root of its own (its repositories,
// caches, database and history) and libzypp's configuration, log and lock
// in the test's directory (rpmEnv); no GPG checks (the test's packages and
// metadata are unsigned). download refreshes the repository first unless
// cached is set; zypper download --no-refresh then asks for packages only.
func zypperClient() rpmClient {
	args := func(dir string, more ...string) []string {
		return append([]string{"--non-interactive", "--no-color", "--root", filepath.Join(dir, "root"), "--no-gpg-checks"}, more...)
	}
	c := rpmClient{
		name:      "zypper",
		tools:     []tool{{"zypper", "zypper"}},
		complaint: regexp.MustCompile(`(?i)digest verification failed|checksum (mismatch|doesn't match)|corrupt`),
	}
	c.setup = func(t *testing.T, dir string) {
		runTool(t, dir, rpmEnv(t, dir), "zypper", args(dir, "addrepo", "--no-gpgcheck", rpmRepoURL(), "refractor")...)
	}
	c.refresh = func(t *testing.T, dir string) (string, error) {
		return runToolErr(dir, rpmEnv(t, dir), "zypper", args(dir, "refresh")...)
	}
	c.download = func(t *testing.T, dir string, names []string, cached bool) clientRun {
		var run clientRun
		if !cached {
			run.out, run.err = c.refresh(t, dir)
			run.out = "$ zypper refresh\n" + run.out
		}
		more := []string{"download"}
		if cached {
			more = []string{"--no-refresh", "download"}
		}
		out, err := runToolErr(dir, rpmEnv(t, dir), "zypper", args(dir, append(more, names...)...)...)
		run.out += "$ zypper download\n" + out
		if run.err == nil {
			run.err = err
		}
		run.got = readRPMs(t, filepath.Join(dir, "root", "var", "cache", "zypp", "packages"))
		return run
	}
	return c
}

// readRPMs reads the packages under dir, by file name.
func readRPMs(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	err := filepath.WalkDir(dir, func(name string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(name, ".rpm") {
			got[filepath.Base(name)] = readFile(t, name)
		}
		if os.IsNotExist(err) {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// rpmNames are the packages' names, for the client's command line.
func rpmNames(pkgs []rpmPackage) []string {
	var names []string
	for _, p := range pkgs {
		names = append(names, p.name)
	}
	return names
}

// TestDnfThroughRefractor and TestZypperThroughRefractor run the client
// against Caddy with refractor over four mirrors of different speeds, one
// of them stale (older metadata, without the newest package and version):
// the client must succeed with the packages built, see the fresh metadata,
// and the stale mirror must never serve it repomd.xml.
func TestDnfThroughRefractor(t *testing.T)    { runRPMThroughRefractor(t, dnfClient()) }
func TestZypperThroughRefractor(t *testing.T) { runRPMThroughRefractor(t, zypperClient()) }

func runRPMThroughRefractor(t *testing.T, client rpmClient) {
	if testing.Short() {
		t.Skip("end-to-end test: starts Caddy and runs " + client.name)
	}
	requireTools(t, append(slices.Clone(rpmBuildTools), client.tools...)...)
	fresh := []rpmPackage{
		{"refractor-e2e-one", "1.1-1", 160 << 10},
		{"refractor-e2e-two", "2.3-1", 320 << 10},
		{"refractor-e2e-three", "0.1-2", 96 << 10},
		{"refractor-e2e-four", "1.4-1", 512 << 10},
		{"refractor-e2e-five", "5.0-1", 64 << 10},
	}
	stale := []rpmPackage{{"refractor-e2e-one", "1.0-1", 160 << 10}, fresh[1], fresh[3], fresh[4]}
	tmp := t.TempDir()
	env := rpmEnv(t, tmp)
	freshFiles, freshRPMs := buildRPMRepo(t, filepath.Join(tmp, "repo-fresh"), env, fresh)
	staleFiles, _ := buildRPMRepo(t, filepath.Join(tmp, "repo-stale"), env, stale)

	// The stale mirror is listed first and is not the slowest, so it is
	// offered its share of the work.
	staleMirror := newLoggedMirror(t, "/fedora/", rpmMirrorTree(staleFiles, "1794990000"), 4<<20)
	mirrors := []*loggedMirror{staleMirror}
	for _, rate := range []int64{0, 8 << 20, 2 << 20} {
		mirrors = append(mirrors, newLoggedMirror(t, "/fedora/", rpmMirrorTree(freshFiles, "1795000000"), rate))
	}
	var list strings.Builder
	for _, m := range mirrors {
		fmt.Fprintln(&list, m.base)
	}
	listFile := filepath.Join(tmp, "mirrors.txt")
	writeFile(t, listFile, []byte(list.String()))
	// dnf fetches three files at a time and zypper one: a short trial
	// (each mirror is tried on one file of at least 64 KiB) spreads even
	// those few files over the mirrors.
	startRefractor(t, "/fedora", fmt.Sprintf("workers %d\ntrial 1\nmin_sample 64KiB\nprovider list %s", len(mirrors), listFile))
	waitForSyncTimes(t, len(mirrors))

	dir := filepath.Join(tmp, client.name)
	client.setup(t, dir)
	start := time.Now()
	run := client.download(t, dir, rpmNames(fresh), false)
	t.Logf("%s: %v, err %v\n%s", client.name, time.Since(start).Round(time.Millisecond), run.err, run.out)
	logMirrors(t, mirrors)
	if run.err != nil {
		t.Fatalf("%s failed: %v (its output is above)", client.name, run.err)
	}
	for _, p := range fresh {
		got, ok := run.got[p.file()]
		switch {
		case !ok:
			t.Errorf("%s: not downloaded", p.file())
		case !bytes.Equal(got, freshRPMs[p.file()]):
			t.Errorf("%s: %d bytes, SHA-256 %s; want the built %d bytes, %s", p.file(),
				len(got), sha256Hex(got), len(freshRPMs[p.file()]), sha256Hex(freshRPMs[p.file()]))
		}
	}
	if _, ok := run.got[stale[0].file()]; ok {
		t.Errorf("%s, of the stale metadata, was downloaded", stale[0].file())
	}
	isRepomd := func(p string) bool { return strings.HasSuffix(p, "/repodata/repomd.xml") }
	for _, r := range staleMirror.Requests() {
		if isRepomd(r.Path) && r.Status/100 == 2 {
			t.Errorf("the stale mirror served repomd.xml: %s %s: %d, %d bytes", r.Method, r.Path, r.Status, r.Bytes)
		}
	}
	if got := spread(mirrors, isRepomd); len(got) == 0 {
		t.Errorf("no mirror served repomd.xml")
	}
	if got := spread(mirrors, func(p string) bool { return strings.HasSuffix(p, ".rpm") }); len(got) < 2 {
		t.Errorf("packages came from %d mirror(s) (%v), want the work spread over more than one", len(got), got)
	}
}

// rpmVerifyPackages are the packages of the verification tests: enough
// that every mirror of the pool, the liar included, is asked for some.
var rpmVerifyPackages = []rpmPackage{
	{"refractor-e2e-one", "1.0-1", 160 << 10},
	{"refractor-e2e-two", "2.3-1", 320 << 10},
	{"refractor-e2e-three", "0.1-2", 96 << 10},
	{"refractor-e2e-four", "1.4-1", 512 << 10},
	{"refractor-e2e-five", "5.0-1", 64 << 10},
	{"refractor-e2e-six", "0.6-1", 256 << 10},
	{"refractor-e2e-seven", "7.1-3", 384 << 10},
	{"refractor-e2e-eight", "0.8-1", 192 << 10},
}

// rpmVerifyScenario is the scenario of e2e_verify_test.go for client: a
// liar serves the right metadata and packages of the right size with a
// byte flipped. dir is the client's directory; a client set up there
// already (with its metadata cached) is reused.
func rpmVerifyScenario(client rpmClient, dir string, tree map[string][]byte, rpms map[string][]byte, cached bool) verifyScenario {
	return verifyScenario{
		prefix:   "/fedora",
		tree:     tree,
		isPkg:    func(p string) bool { return strings.HasSuffix(p, ".rpm") },
		listLine: func(base string) string { return base },
		block: func(workers int, listFile string) string {
			return fmt.Sprintf("workers %d\ntrial 1\nmin_sample 64KiB\nprovider list %s", workers, listFile)
		},
		syncProbes: true,
		want:       rpms,
		complaint:  client.complaint,
		fetch: func(t *testing.T, tmp string) clientRun {
			d := dir
			if d == "" {
				d = filepath.Join(tmp, client.name)
				client.setup(t, d)
			}
			return client.download(t, d, rpmNames(rpmVerifyPackages), cached)
		},
	}
}

// TestDnfVerifiesAgainstTheMetadata and TestZypperVerifiesAgainstTheMetadata
// run the client through refractor over good mirrors, a liar and a parked
// domain: every package must reach the client with the bytes built, the
// client must report no corrupted package, and the liar, which was asked
// for packages, must be out of the pool afterwards. With verify off, the
// client must see the corruption. "after a restart": the client has the
// metadata cached, from a refractor over other mirrors, and asks for the
// packages only; refractor, which knows nothing yet, fetches repomd.xml
// and the primary metadata itself and checks the packages all the same.
func TestDnfVerifiesAgainstTheMetadata(t *testing.T)    { runRPMVerify(t, dnfClient()) }
func TestZypperVerifiesAgainstTheMetadata(t *testing.T) { runRPMVerify(t, zypperClient()) }

func runRPMVerify(t *testing.T, client rpmClient) {
	if testing.Short() {
		t.Skip("end-to-end test: starts Caddy and runs " + client.name)
	}
	requireTools(t, append(slices.Clone(rpmBuildTools), client.tools...)...)
	tmp := t.TempDir()
	files, rpms := buildRPMRepo(t, filepath.Join(tmp, "repo"), rpmEnv(t, tmp), rpmVerifyPackages)
	tree := rpmMirrorTree(files, "1795000000")
	t.Run("verify on", func(t *testing.T) { runVerifyScenario(t, rpmVerifyScenario(client, "", tree, rpms, false), true) })
	t.Run("verify off", func(t *testing.T) { runVerifyScenario(t, rpmVerifyScenario(client, "", tree, rpms, false), false) })
	t.Run("after a restart", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), client.name)
		good := newLoggedMirror(t, "/fedora/", tree, 0)
		listFile := filepath.Join(t.TempDir(), "mirrors.txt")
		writeFile(t, listFile, []byte(good.base+"\n"))
		startRefractor(t, "/fedora", "workers 1\nprovider list "+listFile)
		client.setup(t, dir)
		if out, err := client.refresh(t, dir); err != nil {
			t.Fatalf("%s could not fetch the metadata: %v\n%s", client.name, err, out)
		}
		// The mirrors of the scenario are new: the pool that serves them
		// has learned no index.
		sc := rpmVerifyScenario(client, dir, tree, rpms, true)
		fetch := sc.fetch
		sc.fetch = func(t *testing.T, tmp string) clientRun {
			before := cachedRepomd(t, dir)
			run := fetch(t, tmp)
			if after := cachedRepomd(t, dir); len(before) == 0 || !maps.Equal(after, before) {
				t.Errorf("%s's cached repomd.xml changed (%v, then %v): it fetched the metadata again, "+
					"so this run does not show refractor fetching it itself", client.name, before, after)
			}
			return run
		}
		runVerifyScenario(t, sc, true)
	})
}

// cachedRepomd is the modification time and size of every repomd.xml
// under the client's directory dir: its cached metadata.
func cachedRepomd(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "repomd.xml" {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			out[name] = fmt.Sprintf("%s, %d bytes", fi.ModTime().Format(time.RFC3339Nano), fi.Size())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
