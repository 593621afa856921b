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
