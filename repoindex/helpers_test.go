package repoindex

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// formats are the compressions the tests run every sample through; "plain"
// is none.
var formats = []string{"plain", "gzip", "zstd", "xz", "bzip2"}

// compress compresses data in format; bzip2 needs the bzip2 command (there is
// no bzip2 writer in Go's standard library), so without it ok is false.
func compress(tb testing.TB, format string, data []byte) (out []byte, ok bool) {
	tb.Helper()
	var buf bytes.Buffer
	switch format {
	case "plain":
		return data, true
	case "gzip":
		w := gzip.NewWriter(&buf)
		w.Write(data)
		must(tb, w.Close())
	case "zstd":
		w, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
		must(tb, err)
		w.Write(data)
		must(tb, w.Close())
	case "xz":
		w, err := xz.NewWriter(&buf)
		must(tb, err)
		w.Write(data)
		must(tb, w.Close())
	case "bzip2":
		return runFilter(tb, data, "bzip2", "-c")
	default:
		tb.Fatalf("unknown format %q", format)
	}
	return buf.Bytes(), true
}

// runFilter pipes data through a command; ok is false if it is not installed.
func runFilter(tb testing.TB, data []byte, name string, args ...string) ([]byte, bool) {
	tb.Helper()
	if _, err := exec.LookPath(name); err != nil {
		return nil, false
	}
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(data)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return out.Bytes(), true
}

// skipWithout skips the test when name is not installed, except under CI
// (the CI environment variable set), where it fails: CI installs the tools
// the tests use (.ci/run) and must not skip them silently.
func skipWithout(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not found; CI is set, so this test may not skip", name)
			}
			t.Skipf("%s not found", name)
		}
	}
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// sum is the SHA-256 of s, for sample hashes.
func sum(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func hexSum(s string) string { h := sum(s); return hex.EncodeToString(h[:]) }

// collect gathers what a parser reports.
func collect(m map[string]Entry) func(string, Entry) error {
	return func(name string, e Entry) error {
		if _, dup := m[name]; dup {
			return fmt.Errorf("%s reported twice", name)
		}
		m[name] = e
		return nil
	}
}

// --- pacman ---

// desc is the desc file of a package as repo-add writes it.
func desc(name, version, filename, csize, sha string) string {
	var b strings.Builder
	section := func(key string, values ...string) {
		if values[0] == "\x00" {
			return // the sample leaves this section out
		}
		fmt.Fprintf(&b, "%%%s%%\n%s\n\n", key, strings.Join(values, "\n"))
	}
	section("FILENAME", filename)
	section("NAME", name)
	section("BASE", name)
	section("VERSION", version)
	section("DESC", "A sample package for "+name)
	section("CSIZE", csize)
	section("ISIZE", "204800")
	section("SHA256SUM", sha)
	section("PGPSIG", "iHUEABYKAB0WIQRzG5mcmzEUTYWPyRlHU7xpb9vzWwUCZRyqXwAKCRBHU7xpb9vzWz5jAP9u")
	section("URL", "https://example.org/"+name)
	section("LICENSE", "GPL-3.0-or-later")
	section("ARCH", "x86_64")
	section("BUILDDATE", "1700000000")
	section("PACKAGER", "Sample Packager <sample@example.org>")
	section("DEPENDS", "glibc", "sh", "zlib>=1.3")
	return b.String()
}

// pacmanSample is a sync database's members, and the entries ParsePacmanDB
// must report from them.
func pacmanSample() (members map[string]string, want map[string]Entry) {
	members = map[string]string{}
	want = map[string]Entry{}
	add := func(dir, filename, csize, sha string, good bool) {
		members[dir+"/desc"] = desc(strings.SplitN(dir, "-", 2)[0], "1.0-1", filename, csize, sha)
		if good {
			var e Entry
			fmt.Sscan(csize, &e.Size)
			hex.Decode(e.SHA256[:], []byte(sha))
			want[filename] = e
		}
	}
	add("hello-2.12.1-2", "hello-2.12.1-2-x86_64.pkg.tar.zst", "57381", hexSum("hello"), true)
	add("zlib-1:1.3.1-2", "zlib-1:1.3.1-2-x86_64.pkg.tar.zst", "92470", strings.ToUpper(hexSum("zlib")), true)
	add("empty-1-1", "empty-1-1-any.pkg.tar.xz", "0", hexSum("empty"), true)
	// Skipped: a section missing, a malformed value, an unsafe file name.
	add("nosize-1-1", "nosize-1-1-any.pkg.tar.zst", "\x00", hexSum("nosize"), false)
	add("nosum-1-1", "nosum-1-1-any.pkg.tar.zst", "100", "\x00", false)
	add("noname-1-1", "\x00", "100", hexSum("noname"), false)
	add("negative-1-1", "negative-1-1-any.pkg.tar.zst", "-1", hexSum("negative"), false)
	add("plus-1-1", "plus-1-1-any.pkg.tar.zst", "+1", hexSum("plus"), false)
	add("hexsize-1-1", "hexsize-1-1-any.pkg.tar.zst", "0x10", hexSum("hexsize"), false)
	add("huge-1-1", "huge-1-1-any.pkg.tar.zst", "99999999999999999999", hexSum("huge"), false)
	add("shortsum-1-1", "shortsum-1-1-any.pkg.tar.zst", "100", hexSum("shortsum")[1:], false)
	add("badsum-1-1", "badsum-1-1-any.pkg.tar.zst", "100", "g"+hexSum("badsum")[1:], false)
	add("slash-1-1", "x86_64/slash-1-1-any.pkg.tar.zst", "100", hexSum("slash"), false)
	add("dotdot-1-1", "..", "100", hexSum("dotdot"), false)
	add("dotdot2-1-1", "..hidden-1-1-any.pkg.tar.zst", "100", hexSum("dotdot2"), false)
	add("ctrl-1-1", "ctrl\r-1-1-any.pkg.tar.zst", "100", hexSum("ctrl"), false)
	// Members that are not desc files: the file list of a .files database
	// (large) and a stray file.
	members["hello-2.12.1-2/files"] = "%FILES%\n" + strings.Repeat("usr/share/hello/some/long/path/name\n", 30000)
	members["README"] = "%FILENAME%\nreadme-1-1-any.pkg.tar.zst\n\n%CSIZE%\n1\n\n%SHA256SUM%\n" + hexSum("readme") + "\n"
	return members, want
}

// buildTar makes a tar archive of members (in sorted order, each
// directory first), as bsdtar does for repo-add.
func buildTar(tb testing.TB, members map[string]string) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	dirs := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(members)) {
		if dir, _, ok := strings.Cut(name, "/"); ok && !dirs[dir] {
			dirs[dir] = true
			must(tb, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: mtime}))
		}
		data := members[name]
		must(tb, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime}))
		_, err := tw.Write([]byte(data))
		must(tb, err)
	}
	must(tb, tw.Close())
	return buf.Bytes()
}

// --- apt ---

// inRelease is a clear-signed InRelease as a Debian mirror serves it
// (shortened), with MD5Sum, SHA1 and SHA256 fields.
const inRelease = `-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA512

Origin: Debian
Label: Debian
Suite: stable
Version: 12.7
Codename: bookworm
Changelogs: https://metadata.ftp-master.debian.org/changelogs/@CHANGEPATH@_changelog
Date: Sat, 31 Aug 2024 10:10:39 UTC
Acquire-By-Hash: yes
No-Support-for-Architecture-all: Packages
Architectures: all amd64 arm64 armel armhf i386 mips64el mipsel ppc64el s390x
Components: main contrib non-free-firmware non-free
Description: Debian 12.7 Released 31 August 2024
MD5Sum:
 0d3a31af2bf9ab78412cbc774364ed6c 45523881 main/binary-amd64/Packages
 de54075fa3c455ebea0f2dd21f23f6b1  9437680 main/binary-amd64/Packages.xz
SHA1:
 368567005d67ed17d008ec246bf7ab54a5534b90 45523881 main/binary-amd64/Packages
 afaf9f1615959863d10eb969c3ba2ed74ab5309c  9437680 main/binary-amd64/Packages.xz
SHA256:
 a5fcac504951e1ad698631619f02a0e9575cdfc64226106c3083986c5bc80b84 45523881 main/binary-amd64/Packages
 cc1bc17965c91fb1034bd334d1ff78b081c4539b986e987d407305a3061b8f2e  9437680 main/binary-amd64/Packages.xz
 65b987a25b0fa24fe635748c3a7c5ad582c04d18c742afadfe8f87944a56e690      117 main/binary-amd64/Release
 9b140da901fc3f71c682f66d633193869ae5f2d1e088ce92f0af4f0d1e7d5dc4    14123 contrib/binary-amd64/Packages.gz
 6088e2068b235c5213fcb06fd7ad7136812ff5c4c8fff4f6ebc88d6e350857e2        0 main/i18n/Translation-en.bz2
 ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb      100 /etc/passwd
 3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d      100 main/../../escape
 2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6      -10 main/negative
 18ac3e7343f016890c510e93f935261169d9e3f565436429830faf0934f4f8e      100 main/shortsum
 18ac3e7343f016890c510e93f935261169d9e3f565436429830faf0934f4f8e4 100 main/extra field
-----BEGIN PGP SIGNATURE-----

iQIzBAEBCgAdFiEEpyNohvPMyq0Uiif4DphATThvodkFAmbS7UkACgkQDphATThv
odmJ0A/+LJmcHbXFDD3VIFnLyj9YOJvmwyN8Q0C7P2mMFD7oNWJ0mkqyxr1kfiu9
SSx0m3DW3eOYa0pdjqDNNWkVI0bROcYSfmyKCsOoFJuAgh8PPmrCNs0q3ki3wdF4
=GNxN
-----END PGP SIGNATURE-----
`

// inReleaseWant is what ParseRelease must report from inRelease.
func inReleaseWant() map[string]Entry {
	e := func(size int64, sum string) Entry {
		var e Entry
		e.Size = size
		hex.Decode(e.SHA256[:], []byte(sum))
		return e
	}
	return map[string]Entry{
		"main/binary-amd64/Packages":       e(45523881, "a5fcac504951e1ad698631619f02a0e9575cdfc64226106c3083986c5bc80b84"),
		"main/binary-amd64/Packages.xz":    e(9437680, "cc1bc17965c91fb1034bd334d1ff78b081c4539b986e987d407305a3061b8f2e"),
		"main/binary-amd64/Release":        e(117, "65b987a25b0fa24fe635748c3a7c5ad582c04d18c742afadfe8f87944a56e690"),
		"contrib/binary-amd64/Packages.gz": e(14123, "9b140da901fc3f71c682f66d633193869ae5f2d1e088ce92f0af4f0d1e7d5dc4"),
		"main/i18n/Translation-en.bz2":     e(0, "6088e2068b235c5213fcb06fd7ad7136812ff5c4c8fff4f6ebc88d6e350857e2"),
	}
}

// packagesSample is a Packages file as apt-ftparchive and dak write it, with
// stanzas ParsePackages must skip.
func packagesSample() (text string, want map[string]Entry) {
	want = map[string]Entry{
		"pool/main/h/hello/hello_2.10-3_amd64.deb":                 {Size: 53356, SHA256: sum("hello")},
		"pool/main/b/base-files/base-files_12.4+deb12u7_amd64.deb": {Size: 70820, SHA256: sum("base-files")},
		"pool/contrib/f/flat/flat_1.0_all.deb":                     {Size: 1024, SHA256: sum("flat")},
		"pool/main/l/last/last_1_all.deb":                          {Size: 0, SHA256: sum("last")},
	}
	stanza := func(pkg, filename string, size, sha string, extra string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "Package: %s\nVersion: 1.0\nInstalled-Size: 100\nMaintainer: Someone <someone@example.org>\nArchitecture: amd64\n", pkg)
		b.WriteString(extra)
		if filename != "\x00" {
			fmt.Fprintf(&b, "Filename: %s\n", filename)
		}
		if size != "\x00" {
			fmt.Fprintf(&b, "Size: %s\n", size)
		}
		fmt.Fprintf(&b, "MD5sum: 0d3a31af2bf9ab78412cbc774364ed6c\n")
		if sha != "\x00" {
			fmt.Fprintf(&b, "SHA256: %s\n", sha)
		}
		b.WriteString("Section: misc\nPriority: optional\n")
		return b.String()
	}
	parts := []string{
		stanza("hello", "pool/main/h/hello/hello_2.10-3_amd64.deb", "53356", hexSum("hello"),
			"Depends: libc6 (>= 2.34)\nDescription: example package based on GNU hello\n The GNU hello program produces a familiar, friendly greeting.  It\n allows non-programmers to use a classic computer science tool which\n .\n Filename: pool/evil/from/a/continuation/line.deb\n Size: 1\n\tSHA256: "+hexSum("continuation")+"\nDescription-md5: 6d7b12b2f9c3e8f1c1f0b8e9a1d2c3b4\nHomepage: https://www.gnu.org/software/hello/\n"),
		stanza("base-files", "pool/main/b/base-files/base-files_12.4+deb12u7_amd64.deb", "70820", hexSum("base-files"), "Essential: yes\n"),
		stanza("absolute", "/etc/shadow", "100", hexSum("absolute"), ""),
		stanza("dotdot", "pool/main/../../../etc/shadow", "100", hexSum("dotdot"), ""),
		stanza("emptyname", "", "100", hexSum("emptyname"), ""),
		stanza("nosha", "pool/main/n/nosha/nosha_1_all.deb", "100", "\x00", ""),
		stanza("nosize", "pool/main/n/nosize/nosize_1_all.deb", "\x00", hexSum("nosize"), ""),
		stanza("noname", "\x00", "100", hexSum("noname"), ""),
		stanza("badsize", "pool/main/b/badsize/badsize_1_all.deb", "1e3", hexSum("badsize"), ""),
		stanza("badsha", "pool/main/b/badsha/badsha_1_all.deb", "100", hexSum("badsha")[:63]+"z", ""),
		// Field names are case-insensitive and values may have extra blanks.
		"package: flat\nfilename:   pool/contrib/f/flat/flat_1.0_all.deb  \nsize:1024\nsha256: " + hexSum("flat") + "\n",
		stanza("last", "pool/main/l/last/last_1_all.deb", "0", hexSum("last"), ""),
	}
	// Stanzas end at empty lines (one of them blank but for spaces), and
	// the file has no newline after the last one.
	text = strings.Join(parts, "\n")
	text = strings.Replace(text, "\n\nPackage: base-files", "\n  \t\nPackage: base-files", 1)
	return strings.TrimSuffix(text, "\n"), want
}

// errStop is what stopParse returns: a callback's error, which must come
// back from the parser as itself.
var errStop = errors.New("stop")

func stopParse(string, Entry) error { return errStop }

// badInput is an input a parser must refuse, with an error that wraps
// want (nil: any error).
type badInput struct {
	name  string
	input []byte
	lim   Limits
	fn    func(string, Entry) error // nil: collect the entries
	want  error
}

// wantRefused runs parse on each bad input.
func wantRefused(t *testing.T, parse func(io.Reader, Limits, func(string, Entry) error) error, inputs []badInput) {
	t.Helper()
	for _, tc := range inputs {
		t.Run(tc.name, func(t *testing.T) {
			fn := tc.fn
			if fn == nil {
				fn = collect(map[string]Entry{})
			}
			err := parse(bytes.NewReader(tc.input), tc.lim, fn)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.want == errStop && err != errStop {
				t.Fatalf("the callback's error came back as %v", err)
			}
		})
	}
}

// --- rpm ---

// repomdSample is a repodata/repomd.xml as Fedora's mirrors serve it
// (shortened), with data files ParseRepomd must skip, and the entries it
// must report.
func repomdSample() (text string, want map[string]Entry) {
	want = map[string]Entry{}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1713868479</revision>
  <tags>
    <distro cpeid="cpe:/o:fedoraproject:fedora:40">Fedora 40</distro>
  </tags>
`)
	// data writes a data element; "\x00" leaves a child out, and a
	// location starting with "<" is written as it is.
	data := func(typ, sumType, sum, href, size, extra string, good bool) {
		fmt.Fprintf(&b, "  <data type=%q>\n", typ)
		switch {
		case sum == "\x00":
		case sumType == "\x00":
			fmt.Fprintf(&b, "    <checksum>%s</checksum>\n", sum)
		default:
			fmt.Fprintf(&b, "    <checksum type=\"%s\">%s</checksum>\n", sumType, sum)
		}
		fmt.Fprintf(&b, "    <open-checksum type=\"sha256\">%s</open-checksum>\n", hexSum("open "+typ))
		switch {
		case strings.HasPrefix(href, "<"):
			b.WriteString("    " + href + "\n")
		case href != "\x00":
			fmt.Fprintf(&b, "    <location href=\"%s\"/>\n", href)
		}
		b.WriteString("    <timestamp>1713868422</timestamp>\n")
		if size != "\x00" {
			fmt.Fprintf(&b, "    <size>%s</size>\n", size)
		}
		b.WriteString("    <open-size>160123456</open-size>\n" + extra + "  </data>\n")
		if good {
			var e Entry
			fmt.Sscan(size, &e.Size)
			hex.Decode(e.SHA256[:], []byte(strings.TrimSpace(sum)))
			want[href] = e
		}
	}
	h := func(name string) string { return hexSum(name) + "-" + name }
	data("primary", "sha256", hexSum("primary"), "repodata/"+h("primary.xml.zst"), "19451234", "", true)
	data("filelists", "sha256", hexSum("filelists"), "repodata/"+h("filelists.xml.zst"), "52123456", "", true)
	data("primary_zck", "sha256", hexSum("primary_zck"), "repodata/"+h("primary.xml.zck"), "27123456",
		"    <header-checksum type=\"sha256\">"+hexSum("header")+"</header-checksum>\n    <header-size>123456</header-size>\n", true)
	data("group", "SHA256", strings.ToUpper(hexSum("group")), "repodata/"+h("comps-Everything.x86_64.xml"), "1456789", "", true)
	// Values with blanks around them, and a comment inside one.
	data("group_xz", "sha256", "\n      "+hexSum("group_xz")+"\n    ", "repodata/"+h("comps.xml.xz"), " 256789 ", "", true)
	b.WriteString(`  <data type="updateinfo">
    <checksum type="sha256">` + hexSum("updateinfo")[:20] + `<!-- split -->` + hexSum("updateinfo")[20:] + `</checksum>
    <location href="repodata/updateinfo.xml.zst"/>
    <size>1234</size>
  </data>
`)
	want["repodata/updateinfo.xml.zst"] = Entry{Size: 1234, SHA256: sum("updateinfo")}
	// Skipped: another checksum type, an unsafe or external location, a
	// child missing, a malformed value.
	data("sha1", "sha", "5d8f3ab8c4e8a8f1f0b3b8b1c7d6e5f4a3b2c1d0", "repodata/sha1.xml.gz", "100", "", false)
	data("sha512", "sha512", hexSum("a")+hexSum("b"), "repodata/sha512.xml.gz", "100", "", false)
	data("notype", "\x00", hexSum("notype"), "repodata/notype.xml.gz", "100", "", false)
	data("absolute", "sha256", hexSum("absolute"), "/etc/passwd", "100", "", false)
	data("dotdot", "sha256", hexSum("dotdot"), "repodata/../../escape", "100", "", false)
	data("empty", "sha256", hexSum("empty"), "", "100", "", false)
	data("external", "sha256", hexSum("external"), `<location xml:base="https://elsewhere.example/" href="repodata/external.xml.gz"/>`, "100", "", false)
	data("nolocation", "sha256", hexSum("nolocation"), "\x00", "100", "", false)
	data("nosize", "sha256", hexSum("nosize"), "repodata/nosize.xml.gz", "\x00", "", false)
	data("nosum", "sha256", "\x00", "repodata/nosum.xml.gz", "100", "", false)
	data("badsize", "sha256", hexSum("badsize"), "repodata/badsize.xml.gz", "1e3", "", false)
	data("negative", "sha256", hexSum("negative"), "repodata/negative.xml.gz", "-1", "", false)
	data("shortsum", "sha256", hexSum("shortsum")[1:], "repodata/shortsum.xml.gz", "100", "", false)
	data("ctrl", "sha256", hexSum("ctrl"), "repodata/ctrl\x7f.xml.gz", "100", "", false)
	// The first checksum counts: it is SHA-1, so the data file is skipped.
	data("twosums", "sha1", "5d8f3ab8c4e8a8f1f0b3b8b1c7d6e5f4a3b2c1d0", "repodata/twosums.xml.gz", "100",
		"    <checksum type=\"sha256\">"+hexSum("twosums")+"</checksum>\n", false)
	// The first location counts.
	data("twolocations", "sha256", hexSum("twolocations"), "repodata/first.xml.gz", "100",
		"    <location href=\"repodata/second.xml.gz\"/>\n", true)
	b.WriteString("</repomd>\n")
	return b.String(), want
}

// primarySample is primary metadata as Fedora's and openSUSE's mirrors
// serve it (shortened), with packages ParsePrimary must skip, and the
// entries it must report.
func primarySample() (text string, want map[string]Entry) {
	want = map[string]Entry{}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="18">
`)
	// pkg writes a package; "\x00" leaves a child out, and a location
	// starting with "<" is written as it is.
	pkg := func(name, sumType, sum, href, size, extra string, good bool) {
		fmt.Fprintf(&b, `<package type="rpm">
  <name>%s</name>
  <arch>x86_64</arch>
  <version epoch="0" ver="2.12.1" rel="4.fc40"/>
`, name)
		if sum != "\x00" {
			fmt.Fprintf(&b, "  <checksum type=\"%s\" pkgid=\"YES\">%s</checksum>\n", sumType, sum)
		}
		fmt.Fprintf(&b, `  <summary>Prints a familiar, friendly greeting</summary>
  <description>The GNU Hello program produces a familiar, friendly greeting.
It &lt;size package="1"&gt; and <![CDATA[<location href="cdata/evil.rpm"/>]]> are text.</description>
  <packager>Fedora Project</packager>
  <url>https://www.gnu.org/software/hello/</url>
  <time file="1706244800" build="1706200000"/>
`)
		if size != "\x00" {
			fmt.Fprintf(&b, "  <size package=\"%s\" installed=\"196447\" archive=\"199640\"/>\n", size)
		}
		switch {
		case strings.HasPrefix(href, "<"):
			b.WriteString("  " + href + "\n")
		case href != "\x00":
			fmt.Fprintf(&b, "  <location href=\"%s\"/>\n", href)
		}
		fmt.Fprintf(&b, `  <format>
    <rpm:license>GPL-3.0-or-later AND GFDL-1.3-or-later</rpm:license>
    <rpm:vendor>Fedora Project</rpm:vendor>
    <rpm:group>Unspecified</rpm:group>
    <rpm:buildhost>buildhw-x86-09.iad2.fedoraproject.org</rpm:buildhost>
    <rpm:sourcerpm>%[1]s-2.12.1-4.fc40.src.rpm</rpm:sourcerpm>
    <rpm:header-range start="4504" end="21549"/>
    <rpm:provides>
      <rpm:entry name="%[1]s" flags="EQ" epoch="0" ver="2.12.1" rel="4.fc40"/>
      <rpm:entry name="%[1]s(x86-64)" flags="EQ" epoch="0" ver="2.12.1" rel="4.fc40"/>
    </rpm:provides>
    <rpm:requires>
      <rpm:entry name="libc.so.6(GLIBC_2.34)(64bit)"/>
      <rpm:entry name="rtld(GNU_HASH)"/>
    </rpm:requires>
    <file>/usr/bin/%[1]s</file>
    <location href="format/%[1]s-nested.rpm"/>
    <size package="1"/>
  </format>
%s</package>
`, name, extra)
		if good {
			var e Entry
			fmt.Sscan(size, &e.Size)
			hex.Decode(e.SHA256[:], []byte(strings.TrimSpace(sum)))
			want[href] = e
		}
	}
	pkg("hello", "sha256", hexSum("hello"), "Packages/h/hello-2.12.1-4.fc40.x86_64.rpm", "87449", "", true)
	pkg("zypper", "sha256", hexSum("zypper"), "x86_64/zypper-1.14.73-1.1.x86_64.rpm", "2212345", "", true)
	pkg("flat", "SHA256", strings.ToUpper(hexSum("flat")), "flat-1.0-1.noarch.rpm", "0", "", true)
	pkg("hello-src", "sha256", " "+hexSum("hello-src")+"\n", "src/hello-2.12.1-4.fc40.src.rpm", "1020304", "", true)
	// Skipped: another checksum type, an unsafe or external location, a
	// child missing, a malformed value.
	pkg("sha1", "sha", "5d8f3ab8c4e8a8f1f0b3b8b1c7d6e5f4a3b2c1d0", "Packages/s/sha1-1-1.x86_64.rpm", "100", "", false)
	pkg("sha512", "sha512", hexSum("a")+hexSum("b"), "Packages/s/sha512-1-1.x86_64.rpm", "100", "", false)
	pkg("external", "sha256", hexSum("external"), `<location xml:base="https://elsewhere.example/repo/" href="Packages/e/external-1-1.x86_64.rpm"/>`, "100", "", false)
	pkg("absolute", "sha256", hexSum("absolute"), "/etc/shadow", "100", "", false)
	pkg("dotdot", "sha256", hexSum("dotdot"), "Packages/../../../etc/shadow", "100", "", false)
	pkg("backslash", "sha256", hexSum("backslash"), `Packages\b\backslash-1-1.x86_64.rpm`, "100", "", false)
	pkg("emptyhref", "sha256", hexSum("emptyhref"), "", "100", "", false)
	pkg("nohref", "sha256", hexSum("nohref"), "\x00", "100", "", false)
	pkg("nosize", "sha256", hexSum("nosize"), "Packages/n/nosize-1-1.x86_64.rpm", "\x00", "", false)
	pkg("nosum", "sha256", "\x00", "Packages/n/nosum-1-1.x86_64.rpm", "100", "", false)
	pkg("badsize", "sha256", hexSum("badsize"), "Packages/b/badsize-1-1.x86_64.rpm", "0x10", "", false)
	pkg("badsum", "sha256", "g"+hexSum("badsum")[1:], "Packages/b/badsum-1-1.x86_64.rpm", "100", "", false)
	// A checksum element after the location and size is as good, and a
	// second checksum does not replace the first.
	pkg("late", "\x00", "\x00", "Packages/l/late-1-1.x86_64.rpm", "4096",
		"  <checksum type=\"sha256\">"+hexSum("late")+"</checksum>\n  <checksum type=\"sha256\">"+hexSum("other")+"</checksum>\n", false)
	want["Packages/l/late-1-1.x86_64.rpm"] = Entry{Size: 4096, SHA256: sum("late")}
	b.WriteString("</metadata>\n")
	return b.String(), want
}
