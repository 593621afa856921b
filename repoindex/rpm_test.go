package repoindex

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRepomd(t *testing.T) {
	text, want := repomdSample()
	for _, tc := range []struct{ name, text string }{
		{"as served", text},
		{"CRLF", strings.ReplaceAll(text, "\n", "\r\n")},
		{"no declaration", strings.TrimPrefix(text, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")},
		{"prefixed namespace", strings.NewReplacer("<repomd xmlns=", "<repo:repomd xmlns:repo=", "</repomd>", "</repo:repomd>",
			"<data ", "<repo:data ", "</data>", "</repo:data>").Replace(text)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]Entry{}
			if err := ParseRepomd(strings.NewReader(tc.text), Limits{}, collect(got)); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, want) {
				t.Fatalf("got %v\nwant %v", got, want)
			}
		})
	}
}

func TestParsePrimary(t *testing.T) {
	text, want := primarySample()
	for _, format := range formats {
		t.Run(format, func(t *testing.T) {
			c, ok := compress(t, format, []byte(text))
			if !ok {
				t.Skipf("cannot write %s here", format)
			}
			got := map[string]Entry{}
			huge := Limits{MaxDecompressed: math.MaxInt64, MaxEntries: math.MaxInt, MaxField: math.MaxInt}
			if err := ParsePrimary(bytes.NewReader(c), huge, collect(got)); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, want) {
				t.Fatalf("got %v\nwant %v", got, want)
			}
		})
	}
	// A metadata file of no packages is no error.
	empty := `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<metadata xmlns="http://linux.duke.edu/metadata/common" packages="0"/>`
	if err := ParsePrimary(strings.NewReader(empty), Limits{}, stopParse); err != nil {
		t.Errorf("no packages: %v", err)
	}
}

func TestParseRPMErrors(t *testing.T) {
	text, want := primarySample()
	zst, _ := compress(t, "zstd", []byte(text))
	repomd, _ := repomdSample()
	long := strings.Replace(text, "friendly greeting.", strings.Repeat("long ", 1000), 1)
	// A value split by comments into tokens each under the limit.
	split := strings.Replace(text, hexSum("hello"), strings.Repeat("ab<!-- -->", 3000), 1)
	deep := "<metadata>" + strings.Repeat("<a>", maxXMLDepth) + strings.Repeat("</a>", maxXMLDepth) + "</metadata>"
	primaryOnly := func(r io.Reader, lim Limits, fn func(string, Entry) error) error { return ParsePrimary(r, lim, fn) }
	wantRefused(t, primaryOnly, []badInput{
		{"truncated XML", []byte(text[:len(text)*2/3]), Limits{}, nil, nil},
		{"truncated zstd", zst[:len(zst)-5], Limits{}, nil, nil},
		{"mismatched tags", []byte(strings.Replace(text, "</summary>", "</sumary>", 1)), Limits{}, nil, nil},
		{"not XML", []byte("Package: hello\nFilename: hello.deb\n"), Limits{}, nil, nil},
		{"empty", nil, Limits{}, nil, nil},
		{"another document", []byte(strings.NewReplacer("<metadata ", "<html ", "</metadata>", "</html>").Replace(text)), Limits{}, nil, nil},
		{"two roots", []byte(text + text[strings.Index(text, "<metadata"):]), Limits{}, nil, nil},
		{"undeclared entity", []byte(`<!DOCTYPE metadata [<!ENTITY a "aaaaaaaa">]><metadata><package>&a;</package></metadata>`), Limits{}, nil, nil},
		{"another encoding", []byte(strings.Replace(text, `encoding="UTF-8"`, `encoding="ISO-8859-1"`, 1)), Limits{}, nil, nil},
		{"too many entries", zst, Limits{MaxEntries: len(want) - 1}, nil, ErrLimit},
		{"long token", []byte(long), Limits{MaxField: 4096}, nil, ErrLimit},
		{"long token, no end", []byte(text[:200] + strings.Repeat("x", 5000)), Limits{MaxField: 4096}, nil, ErrLimit},
		{"long tag", []byte(strings.Replace(text, "<package ", "<package "+strings.Repeat(`a="b" `, 1000), 1)), Limits{MaxField: 4096}, nil, ErrLimit},
		{"long value in pieces", []byte(split), Limits{MaxField: 4096}, nil, ErrLimit},
		{"nested too deep", []byte(deep), Limits{}, nil, ErrLimit},
		{"over MaxDecompressed", zst, Limits{MaxDecompressed: int64(len(text) - 1)}, nil, ErrLimit},
		{"callback error", zst, Limits{}, stopParse, errStop},
	})
	wantRefused(t, ParseRepomd, []badInput{
		{"truncated", []byte(repomd[:len(repomd)/2]), Limits{}, nil, nil},
		{"primary", []byte(text), Limits{}, nil, nil},
		{"over MaxDecompressed", []byte(repomd), Limits{MaxDecompressed: 1000}, nil, ErrLimit},
		{"too many entries", []byte(repomd), Limits{MaxEntries: 2}, nil, ErrLimit},
		{"callback error", []byte(repomd), Limits{}, stopParse, errStop},
	})
	// Exactly at the limits is fine: one level less deep, the longest token.
	shallow := strings.Replace(deep, "<a>", "", 1)
	shallow = strings.Replace(shallow, "</a>", "", 1)
	if err := ParsePrimary(strings.NewReader(shallow), Limits{}, stopParse); err != nil {
		t.Errorf("%d deep: %v", maxXMLDepth, err)
	}
	lim := Limits{MaxEntries: len(want), MaxDecompressed: int64(len(text)), MaxField: longestToken(t, text)}
	if err := ParsePrimary(strings.NewReader(text), lim, collect(map[string]Entry{})); err != nil {
		t.Errorf("at the limits: %v", err)
	}
}

// longestToken is the length of the longest token of the XML document s,
// as the decoder reads them: text, tags and what separates them.
func longestToken(t *testing.T, s string) int {
	n := 0
	for lo, hi := 1, len(s); lo <= hi; {
		mid := (lo + hi) / 2
		if err := ParsePrimary(strings.NewReader(s), Limits{MaxField: mid}, collect(map[string]Entry{})); err != nil {
			lo = mid + 1
		} else {
			n, hi = mid, mid-1
		}
	}
	if n == 0 {
		t.Fatal("no MaxField lets the sample through")
	}
	return n
}

// testdata/createrepo is the repodata that createrepo_c 0.17.3 made of
// two packages that rpmbuild 4.18 built, in Fedora's layout
// (Packages/<letter>/) and openSUSE's (noarch/).
func TestParseCreaterepoSample(t *testing.T) {
	dir := filepath.Join("testdata", "createrepo")
	repomd, err := os.ReadFile(filepath.Join(dir, "repodata", "repomd.xml"))
	must(t, err)
	got := map[string]Entry{}
	must(t, ParseRepomd(bytes.NewReader(repomd), Limits{}, collect(got)))
	files, err := filepath.Glob(filepath.Join(dir, "repodata", "*.xml.gz"))
	must(t, err)
	want := map[string]Entry{}
	var primary []byte
	for _, f := range files {
		data, err := os.ReadFile(f)
		must(t, err)
		href := "repodata/" + filepath.Base(f)
		want[href] = Entry{Size: int64(len(data)), SHA256: sha256.Sum256(data)}
		if KindOf(href) == RpmPrimary {
			primary = data
		}
	}
	if len(want) != 3 || !maps.Equal(got, want) {
		t.Fatalf("repomd.xml: got %v\nwant %v", got, want)
	}
	got = map[string]Entry{}
	must(t, ParsePrimary(bytes.NewReader(primary), Limits{}, collect(got)))
	entry := func(size int64, sum string) Entry {
		e := Entry{Size: size}
		hex.Decode(e.SHA256[:], []byte(sum))
		return e
	}
	want = map[string]Entry{
		"Packages/r/refractor-alpha-1.0-1.noarch.rpm": entry(6156, "f33860866b63bd7e214f3e8dae03f74277bfdda12ef6d587f32e3eee0a599898"),
		"noarch/refractor-beta-1.0-1.noarch.rpm":      entry(6152, "407863172a78f982241c6b807527a2fd599067303ec819054ab555cc2f9e2508"),
	}
	if !maps.Equal(got, want) {
		t.Fatalf("primary: got %v\nwant %v", got, want)
	}
}

// Repositories that createrepo_c made, with each of its options that
// change what the parsers see, of packages that rpmbuild built.
func TestParseCreaterepo(t *testing.T) {
	skipWithout(t, "rpmbuild", "createrepo_c")
	work := t.TempDir()
	pkgs := map[string]Entry{}
	repo := filepath.Join(work, "repo")
	for _, p := range []struct{ name, dir string }{
		{"alpha", "Packages/r"}, {"beta", "noarch"}, {"gamma", ""},
	} {
		data := rpmPackage(t, filepath.Join(work, "build"), "refractor-"+p.name)
		href := path.Join(p.dir, "refractor-"+p.name+"-1.0-1.noarch.rpm")
		must(t, os.MkdirAll(filepath.Join(repo, p.dir), 0o755))
		must(t, os.WriteFile(filepath.Join(repo, href), data, 0o644))
		pkgs[href] = Entry{Size: int64(len(data)), SHA256: sha256.Sum256(data)}
	}
	for _, tc := range []struct {
		name string
		args []string
		none bool // no SHA-256 anywhere: nothing is reported
	}{
		{"default", nil, false},
		{"xz", []string{"--general-compress-type=xz"}, false},
		{"bzip2", []string{"--general-compress-type=bz2"}, false},
		{"simple names", []string{"--simple-md-filenames"}, false},
		{"zchunk", []string{"--zck"}, false},
		{"sha1", []string{"--checksum=sha1"}, true},
		{"sha512", []string{"--checksum=sha512"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			must(t, os.RemoveAll(filepath.Join(repo, "repodata")))
			run(t, repo, "createrepo_c", append(append([]string{"--quiet"}, tc.args...), ".")...)
			repomd, err := os.ReadFile(filepath.Join(repo, "repodata", "repomd.xml"))
			must(t, err)
			got := map[string]Entry{}
			must(t, ParseRepomd(bytes.NewReader(repomd), Limits{}, collect(got)))
			entries, err := os.ReadDir(filepath.Join(repo, "repodata"))
			must(t, err)
			want := map[string]Entry{}
			var primary string
			for _, e := range entries {
				href := "repodata/" + e.Name()
				if e.Name() == "repomd.xml" {
					continue
				}
				data, err := os.ReadFile(filepath.Join(repo, href))
				must(t, err)
				want[href] = Entry{Size: int64(len(data)), SHA256: sha256.Sum256(data)}
				if KindOf(href) == RpmPrimary {
					primary = href
				}
			}
			if tc.none {
				want = map[string]Entry{}
			}
			if !maps.Equal(got, want) {
				t.Fatalf("repomd.xml: got %v\nwant %v\n%s", got, want, repomd)
			}
			if primary == "" {
				t.Fatalf("no primary metadata that KindOf knows in %v", entries)
			}
			data, err := os.ReadFile(filepath.Join(repo, primary))
			must(t, err)
			got = map[string]Entry{}
			must(t, ParsePrimary(bytes.NewReader(data), Limits{}, collect(got)))
			want = pkgs
			if tc.none {
				want = map[string]Entry{}
			}
			if !maps.Equal(got, want) {
				t.Fatalf("%s: got %v\nwant %v", primary, got, want)
			}
		})
	}
	// Packages elsewhere (--baseurl) are not the mirror's to check.
	must(t, os.RemoveAll(filepath.Join(repo, "repodata")))
	run(t, repo, "createrepo_c", "--quiet", "--baseurl=https://elsewhere.example/repo/", ".")
	files, err := filepath.Glob(filepath.Join(repo, "repodata", "*-primary.xml.gz"))
	must(t, err)
	if len(files) != 1 {
		t.Fatalf("primary metadata: %v", files)
	}
	data, err := os.ReadFile(files[0])
	must(t, err)
	if err := ParsePrimary(bytes.NewReader(data), Limits{}, stopParse); err != nil {
		t.Errorf("--baseurl: %v", err)
	}
}

// rpmPackage builds a noarch package called name with rpmbuild in work and
// returns it.
func rpmPackage(t *testing.T, work, name string) []byte {
	t.Helper()
	spec := filepath.Join(work, name+".spec")
	must(t, os.MkdirAll(work, 0o755))
	must(t, os.WriteFile(spec, fmt.Appendf(nil, `Name: %[1]s
Version: 1.0
Release: 1
Summary: a test package
License: MIT
BuildArch: noarch
%%description
A test package for refractor's repoindex: <%[1]s> & "quotes".
%%install
mkdir -p %%{buildroot}/usr/share/%[1]s
echo %[1]s > %%{buildroot}/usr/share/%[1]s/data
%%files
/usr/share/%[1]s/data
`, name), 0o644))
	top := filepath.Join(work, "top")
	run(t, work, "rpmbuild", "--quiet", "--define", "_topdir "+top, "--define", "_build_id_links none", "-bb", spec)
	data, err := os.ReadFile(filepath.Join(top, "RPMS", "noarch", name+"-1.0-1.noarch.rpm"))
	must(t, err)
	return data
}
