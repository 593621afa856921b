package pool

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"maps"
	"net/http"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// Verification against an RPM repository's metadata: repodata/repomd.xml
// (the Release) gives the hash of the primary metadata, which gives the
// packages'.

// rpmRepo is the repository, under root (such as "fedora/40/x86_64/os/"),
// that lists good (package path under root → content) in its primary
// metadata, and a mirror's tree of it that serves served instead (a liar).
// It returns the tree and the path of the primary metadata.
func rpmRepo(t *testing.T, root string, good, served map[string][]byte) (tree map[string][]byte, primary string) {
	t.Helper()
	var x strings.Builder
	fmt.Fprintf(&x, `<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="%d">
`, len(good))
	for _, href := range slices.Sorted(maps.Keys(good)) {
		fmt.Fprintf(&x, `<package type="rpm">
  <name>%s</name>
  <arch>noarch</arch>
  <version epoch="0" ver="1.0" rel="1"/>
  <checksum type="sha256" pkgid="YES">%x</checksum>
  <summary>a test package</summary>
  <size package="%d" installed="4096" archive="4400"/>
  <location href="%s"/>
  <format><rpm:license>MIT</rpm:license></format>
</package>
`, path.Base(href), sha256.Sum256(good[href]), len(good[href]), href)
	}
	x.WriteString("</metadata>\n")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(x.String()))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(gz.Bytes())
	primary = fmt.Sprintf("repodata/%x-primary.xml.gz", sum)
	repomd := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1700000000</revision>
  <data type="primary">
    <checksum type="sha256">%x</checksum>
    <location href="%s"/>
    <timestamp>1700000000</timestamp>
    <size>%d</size>
  </data>
</repomd>
`, sum, primary, gz.Len())
	tree = map[string][]byte{root + "repodata/repomd.xml": []byte(repomd), root + primary: gz.Bytes()}
	for href, b := range served {
		tree[root+href] = b
	}
	return tree, root + primary
}

// rpmLiarScenario serves a package of a repository under root from a
// liar (the best ranked, asked first) and two good mirrors.
func rpmLiarScenario(t *testing.T, root, href string) (p *Pool, liar *testmirror.Mirror, primary string, pkg []byte) {
	pkg = testmirror.Content(href, 300<<10)
	good := map[string][]byte{href: pkg, "Packages/o/other-1.0-1.noarch.rpm": testmirror.Content("other", 10<<10)}
	lies := maps.Clone(good)
	lies[href] = flipped(pkg)
	liarTree, primary := rpmRepo(t, root, good, lies)
	goodTree, _ := rpmRepo(t, root, good, good)
	liar = testmirror.New(t, liarTree)
	p = servePool(t, Config{}, liar, testmirror.New(t, goodTree), testmirror.New(t, goodTree))
	setSamples(t, p, liar.Base(), 50<<20)
	return p, liar, primary, pkg
}

// wantGoodRPM serves the package at rel and checks the client gets pkg
// and the liar is out of the pool.
func wantGoodRPM(t *testing.T, p *Pool, liar *testmirror.Mirror, rel string, pkg []byte) {
	t.Helper()
	before := liar.Requests()
	rec, err := serve(t, p, nil, rel)
	if err != nil || !bytes.Equal(rec.Body.Bytes(), pkg) {
		t.Fatalf("%d bytes from %s, Serve: %v; want the good package", rec.Body.Len(), rec.Header().Get(MirrorHeader), err)
	}
	if liar.Requests() == before {
		t.Fatal("the liar was not asked: the test proves nothing")
	}
	if inPool(p, liar.Base()) {
		t.Fatal("the liar is still in the pool")
	}
}

// learned reports whether the catalog has learned the index at rel.
func learned(p *Pool, rel string) bool {
	p.catalog.mu.Lock()
	defer p.catalog.mu.Unlock()
	_, ok := p.catalog.learned[rel]
	return ok
}

// dnf's way: repomd.xml, then the primary metadata it lists, then the
// packages. repomd.xml is believed once a second mirror serves the same
// bytes; the primary metadata once it has the hash repomd.xml gives.
func TestVerifyLearnsAnRPMRepository(t *testing.T) {
	const root = "fedora/linux/releases/40/Everything/x86_64/os/"
	href := "Packages/f/foo-1.0-1.noarch.rpm"
	p, liar, primary, pkg := rpmLiarScenario(t, root, href)
	for _, rel := range []string{root + "repodata/repomd.xml", primary} {
		if rec, err := serve(t, p, nil, rel); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("%s: status %d, %v", rel, rec.Code, err)
		}
	}
	pollFor(t, 10*time.Second, "the catalog to learn the package", func() bool {
		e, ok := p.catalog.known(root + href)
		return ok && e.sum == sha256.Sum256(pkg) && e.size == int64(len(pkg))
	})
	wantGoodRPM(t, p, liar, root+href, pkg)
}

// A package asked for with no metadata learned (after a restart, or from a
// dnf whose metadata has not expired) makes the pool fetch repomd.xml,
// from two mirrors, and the primary metadata it lists, where the layout
// tells where the repository's root is.
func TestVerifyFetchesTheMetadataOfAnUnknownRPM(t *testing.T) {
	for _, tc := range []struct{ name, root, href string }{
		{"Fedora", "fedora/linux/releases/40/Everything/x86_64/os/", "Packages/f/foo-1.0-1.noarch.rpm"},
		{"RHEL", "9/BaseOS/x86_64/os/", "Packages/foo-1.0-1.el9.noarch.rpm"},
		{"openSUSE", "tumbleweed/repo/oss/", "noarch/foo-1.0-1.1.noarch.rpm"},
		{"flat", "repo/el9/", "foo-1.0-1.el9.noarch.rpm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, liar, primary, pkg := rpmLiarScenario(t, tc.root, tc.href)
			wantGoodRPM(t, p, liar, tc.root+tc.href, pkg)
			if !learned(p, tc.root+"repodata/repomd.xml") || !learned(p, primary) {
				t.Fatal("the package was checked, yet its metadata is not learned")
			}
		})
	}
}

// dnf fetches repomd.xml but not the primary metadata it has already, or
// fetches it as zchunk: the pool fetches the primary metadata itself once
// repomd.xml is learned.
func TestVerifyFollowsRepomdToItsPrimary(t *testing.T) {
	const root = "tumbleweed/repo/oss/"
	href := "x86_64/foo-1.0-1.1.x86_64.rpm"
	p, liar, primary, pkg := rpmLiarScenario(t, root, href)
	if rec, err := serve(t, p, nil, root+"repodata/repomd.xml"); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("repomd.xml: status %d, %v", rec.Code, err)
	}
	pollFor(t, 10*time.Second, "the catalog to learn the primary metadata", func() bool { return learned(p, primary) })
	if _, ok := p.catalog.known(root + href); !ok {
		t.Fatal("the primary metadata is learned, not its package")
	}
	wantGoodRPM(t, p, liar, root+href, pkg)
}

// A repomd.xml that only one mirror serves is not believed, nor the
// primary metadata it lists.
func TestVerifyBelievesOnlyACorroboratedRepomd(t *testing.T) {
	const root = "os/"
	href := "Packages/f/foo-1.0-1.noarch.rpm"
	pkg := testmirror.Content(href, 100<<10)
	good := map[string][]byte{href: pkg}
	forged, forgedPrimary := rpmRepo(t, root, map[string][]byte{href: flipped(pkg)}, good)
	tree, primary := rpmRepo(t, root, good, good)
	forger := testmirror.New(t, forged)
	obs := &lieRecorder{}
	p := servePool(t, Config{Observer: obs}, forger, testmirror.New(t, tree), testmirror.New(t, tree))
	setSamples(t, p, forger.Base(), 50<<20) // it serves the client's metadata
	for _, rel := range []string{root + "repodata/repomd.xml", forgedPrimary} {
		if rec, err := serve(t, p, nil, rel); err != nil || !bytes.Equal(rec.Body.Bytes(), forged[rel]) {
			t.Fatalf("the forger did not serve %s (Serve: %v): the test proves nothing", rel, err)
		}
	}
	pollFor(t, 10*time.Second, "the catalog to learn the metadata the other mirrors agree on", func() bool {
		return learned(p, primary)
	})
	if learned(p, forgedPrimary) {
		t.Fatal("the forged primary metadata was learned")
	}
	for i := range 6 { // every mirror serves it, on trial
		rec, err := serve(t, p, nil, root+href)
		if err != nil || !bytes.Equal(rec.Body.Bytes(), pkg) {
			t.Fatalf("request %d: %d bytes from %s, Serve: %v; want the package", i, rec.Body.Len(), rec.Header().Get(MirrorHeader), err)
		}
	}
	if obs.count() != 0 || len(members(p)) != 3 {
		t.Fatalf("%d verify failures, members %v; want none, and every mirror kept", obs.count(), members(p))
	}
}

func TestDatabaseOf(t *testing.T) {
	for rel, want := range map[string]string{
		"extra/os/x86_64/foo-1.0-1-x86_64.pkg.tar.zst":                       "extra/os/x86_64/extra.db",
		"x86_64/foo-1.0-1-x86_64.pkg.tar.zst":                                "",
		"pool/main/f/foo/foo_1.0_all.deb":                                    "",
		"fedora/linux/releases/40/Everything/x86_64/os/Packages/h/hello.rpm": "fedora/linux/releases/40/Everything/x86_64/os/repodata/repomd.xml",
		"epel/9/Everything/x86_64/Packages/0/0ad-0.0.26-1.el9.x86_64.rpm":    "epel/9/Everything/x86_64/repodata/repomd.xml",
		"9/BaseOS/x86_64/os/Packages/bash-5.1.8-9.el9.x86_64.rpm":            "9/BaseOS/x86_64/os/repodata/repomd.xml",
		"tumbleweed/repo/oss/x86_64/zypper-1.14.73-1.1.x86_64.rpm":           "tumbleweed/repo/oss/repodata/repomd.xml",
		"tumbleweed/repo/src-oss/src/zypper-1.14.73-1.1.src.rpm":             "tumbleweed/repo/src-oss/repodata/repomd.xml",
		"repo/foo-1.0-1.noarch.rpm":                                          "repo/repodata/repomd.xml",
		"foo-1.0-1.noarch.rpm":                                               "repodata/repomd.xml",
		"Packages/f/foo-1.0-1.noarch.rpm":                                    "repodata/repomd.xml",
		"noarch/foo-1.0-1.noarch.rpm":                                        "repodata/repomd.xml",
		"updates/40/Everything/x86_64/drpms/foo-1.0-1_1.1-1.noarch.drpm":     "",
	} {
		if got := databaseOf(rel); got != want {
			t.Errorf("databaseOf(%q) = %q, want %q", rel, got, want)
		}
	}
}

func TestRepoRoot(t *testing.T) {
	for _, tc := range []struct{ rel, dir, want string }{
		{"debian/dists/bookworm/main/binary-amd64/Packages.xz", "dists/", "debian/"},
		{"dists/bookworm/main/binary-amd64/Packages.xz", "dists/", ""},
		{"mydists/bookworm/Packages", "dists/", ""},
		{"os/repodata/abc-primary.xml.gz", "repodata/", "os/"},
		{"repodata/repomd.xml", "repodata/", ""},
		{"a/repodata/b/repodata/repomd.xml", "repodata/", "a/repodata/b/"},
	} {
		if got := repoRoot(tc.rel, tc.dir); got != tc.want {
			t.Errorf("repoRoot(%q, %q) = %q, want %q", tc.rel, tc.dir, got, tc.want)
		}
	}
}
