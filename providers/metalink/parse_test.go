package metalink

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/pool"
	"github.com/caddy-refractor/refractor/providers/internal/source"
)

// The samples in testdata have the shape of the real answers, element for
// element (Fedora's MirrorManager: metalink 3.0 with its mm0 timestamp,
// alternates, preference and location; openSUSE's MirrorCache: RFC 5854
// with priority and location), written here from published examples: this
// machine reaches no mirror network to save live ones. Their mirrors and
// hashes are made up; the versions of repomd.xml they name hash the texts
// given here.
var (
	fedoraCurrent = sha256.Sum256([]byte("fedora 41 updates repomd.xml 1795856400"))
	fedoraAlt1    = sha256.Sum256([]byte("fedora 41 updates repomd.xml 1795770000"))
	fedoraAlt2    = sha256.Sum256([]byte("fedora 41 updates repomd.xml 1795683600"))
	suseCurrent   = sha256.Sum256([]byte("tumbleweed repo oss repomd.xml 20261127"))
)

const (
	fedoraStrip = "updates/41/Everything/x86_64/repodata/repomd.xml"
	suseStrip   = "tumbleweed/repo/oss/repodata/repomd.xml"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// newParser returns the parser of a provider with these settings.
func newParser(t testing.TB, m Metalink) *parser {
	t.Helper()
	p, err := m.parser()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func urls(cands []pool.Candidate) string {
	var out []string
	for _, c := range cands {
		out = append(out, c.URL)
	}
	return strings.Join(out, " ")
}

// wantProbe checks that every candidate carries the same probe, for path,
// with those versions.
func wantProbe(t *testing.T, res source.Result, path string, times map[[32]byte]time.Time) {
	t.Helper()
	probe := res.Candidates[0].Probe
	if probe == nil {
		t.Fatal("no probe")
	}
	for _, c := range res.Candidates {
		if c.Probe != probe {
			t.Fatalf("%s has another probe", c.URL)
		}
	}
	if probe.Path != path {
		t.Errorf("probe path %q, want %q", probe.Path, path)
	}
	if len(probe.Times) != len(times) {
		t.Errorf("probe knows %d versions, want %d", len(probe.Times), len(times))
	}
	for sum, want := range times {
		if got, ok := probe.Times[sum]; !ok || !got.Equal(want) {
			t.Errorf("version %x: time %v (known: %v), want %v", sum[:4], got, ok, want)
		}
	}
}

// TestParseFedora: a MirrorManager metalink 3.0 (Fedora's updates for 41,
// x86_64): http and https URLs by preference, rsync skipped, bases cut at
// strip, and the current repomd.xml and its two alternates, each with its
// mm0:timestamp, in the probe.
func TestParseFedora(t *testing.T) {
	res, err := newParser(t, Metalink{Strip: fedoraStrip}).parse(readTestdata(t, "fedora-updates.metalink"))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"https://ftp.alpha.example/fedora/linux/",
		"http://ftp.alpha.example/fedora/linux/",
		"https://mirror.beta.example/pub/fedora/linux/",
		"http://fedora.gamma.example/linux/",
		"http://mirrors.delta.example/fedora/",
		"https://mirrors.delta.example/fedora/",
		"https://mirror.epsilon.example/fedora/linux/",
	}, " ")
	if got := urls(res.Candidates); got != want {
		t.Fatalf("got\n\t%s\nwant\n\t%s", got, want)
	}
	if res.Entries != 10 || len(res.Warnings) != 0 {
		t.Fatalf("entries %d, warnings %q; want 10 and none", res.Entries, res.Warnings)
	}
	for _, c := range res.Candidates {
		if !c.LastSync.IsZero() || c.Remote {
			t.Errorf("%s: LastSync %v, Remote %v; want neither (the probe and the source set them)", c.URL, c.LastSync, c.Remote)
		}
	}
	wantProbe(t, res, fedoraStrip, map[[32]byte]time.Time{
		fedoraCurrent: time.Unix(1795856400, 0),
		fedoraAlt1:    time.Unix(1795770000, 0),
		fedoraAlt2:    time.Unix(1795683600, 0),
	})
}

// TestParseOpenSUSE: a MirrorCache .meta4 (Tumbleweed's repomd.xml): URLs
// by priority, the origin (no location) included, and the current version
// at the document's published time; the hashes of <pieces> are not
// versions of the file.
func TestParseOpenSUSE(t *testing.T) {
	res, err := newParser(t, Metalink{Strip: suseStrip}).parse(readTestdata(t, "opensuse-tumbleweed.meta4"))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"http://ftp.alpha.example/pub/opensuse/",
		"https://mirror.zeta.example/opensuse/",
		"http://mirror.beta.example/opensuse/",
		"https://mirror.eta.example/pub/linux/opensuse/",
		"http://mirrors.delta.example/opensuse/",
		"https://download.opensuse.org/",
	}, " ")
	if got := urls(res.Candidates); got != want {
		t.Fatalf("got\n\t%s\nwant\n\t%s", got, want)
	}
	if res.Entries != 6 || len(res.Warnings) != 0 {
		t.Fatalf("entries %d, warnings %q; want 6 and none", res.Entries, res.Warnings)
	}
	wantProbe(t, res, suseStrip, map[[32]byte]time.Time{
		suseCurrent: time.Date(2026, 11, 28, 9, 12, 44, 0, time.UTC),
	})
}

// TestParseStrip: the default strip leaves each repository's directory;
// a strip that no URL ends with fails, naming strip.
func TestParseStrip(t *testing.T) {
	fedora := readTestdata(t, "fedora-updates.metalink")
	res, err := newParser(t, Metalink{}).parse(fedora)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.Candidates[0].URL, "https://ftp.alpha.example/fedora/linux/updates/41/Everything/x86_64/"; got != want {
		t.Fatalf("default strip: first base %s, want %s", got, want)
	}
	wantProbe(t, res, DefaultStrip, map[[32]byte]time.Time{
		fedoraCurrent: time.Unix(1795856400, 0),
		fedoraAlt1:    time.Unix(1795770000, 0),
		fedoraAlt2:    time.Unix(1795683600, 0),
	})

	_, err = newParser(t, Metalink{Strip: "updates/42/Everything/x86_64/repodata/repomd.xml"}).parse(fedora)
	if err == nil || !strings.Contains(err.Error(), "does not end with /updates/42/Everything/x86_64/repodata/repomd.xml (strip)") {
		t.Fatalf("error %v, want one naming strip", err)
	}
}

// doc3 is a metalink 3.0 document with one repomd.xml whose <file> holds
// body.
func doc3(body string) string {
	return `<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/" xmlns:mm0="http://fedorahosted.org/mirrormanager">
 <files><file name="repomd.xml">` + body + `</file></files>
</metalink>`
}

// doc4 is an RFC 5854 document published at 2026-11-28T09:00:00Z with one
// repomd.xml whose <file> holds body.
func doc4(body string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
 <published>2026-11-28T09:00:00Z</published>
 <file name="repomd.xml">` + body + `</file>
</metalink>`
}

func hash3(sum [32]byte) string {
	return fmt.Sprintf(`<verification><hash type="sha256">%x</hash></verification>`, sum)
}

func url3(pref, u string) string {
	return fmt.Sprintf(`<url protocol="http" type="http" location="DE" preference="%s">%srepodata/repomd.xml</url>`, pref, u)
}

func TestParseCases(t *testing.T) {
	fedora := string(readTestdata(t, "fedora-updates.metalink"))
	suse := string(readTestdata(t, "opensuse-tumbleweed.meta4"))
	sumA := sha256.Sum256([]byte("a"))
	for _, tc := range []struct {
		name     string
		cfg      Metalink
		doc      string
		want     string   // the candidates' URLs, space-separated
		warnings []string // a substring of each warning, in order
		times    map[[32]byte]time.Time
		noProbe  bool
		wantErr  string
	}{
		{
			name: "countries",
			cfg:  Metalink{Strip: fedoraStrip, Countries: []string{"de"}},
			doc:  fedora,
			want: "https://ftp.alpha.example/fedora/linux/ http://ftp.alpha.example/fedora/linux/ https://mirror.epsilon.example/fedora/linux/",
		},
		{
			name: "protocols",
			cfg:  Metalink{Strip: fedoraStrip, Protocols: []string{"HTTPS"}, Countries: []string{"US", "NL"}},
			doc:  fedora,
			want: "https://mirror.beta.example/pub/fedora/linux/ https://mirrors.delta.example/fedora/",
		},
		{
			name: "countries leave nothing",
			cfg:  Metalink{Strip: fedoraStrip, Countries: []string{"XX"}},
			doc:  fedora,
			// 7 http(s) URLs of 10.
			wantErr: "countries [XX] left 0 of 7 URLs (10 in the metalink)",
		},
		{
			name: "meta4 countries exclude the origin without location",
			cfg:  Metalink{Strip: suseStrip, Countries: []string{"US"}},
			doc:  suse,
			want: "http://mirrors.delta.example/opensuse/",
		},
		{
			name: "preference order, none last, ties in document order",
			doc: doc3(hash3(sumA) + `<mm0:timestamp>1000</mm0:timestamp><resources>` +
				url3("", "http://none.example/") + url3("50", "http://fifty.example/") +
				url3("100", "http://hundred.example/") + url3("50", "http://fifty2.example/") + `</resources>`),
			want:  "http://hundred.example/ http://fifty.example/ http://fifty2.example/ http://none.example/",
			times: map[[32]byte]time.Time{sumA: time.Unix(1000, 0)},
		},
		{
			name: "priority order, none last",
			doc: doc4(fmt.Sprintf(`<hash type="sha-256">%x</hash>`, sumA) +
				`<url priority="3">https://three.example/repodata/repomd.xml</url>` +
				`<url>https://none.example/repodata/repomd.xml</url>` +
				`<url priority="1" location="de">https://one.example/repodata/repomd.xml</url>`),
			want:  "https://one.example/ https://three.example/ https://none.example/",
			times: map[[32]byte]time.Time{sumA: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)},
		},
		{
			name: "meta4 without published: updated",
			doc: strings.Replace(doc4(fmt.Sprintf(`<hash type="sha-256">%x</hash>`, sumA)+
				`<url>https://one.example/repodata/repomd.xml</url>`), "published", "updated", 2),
			want:  "https://one.example/",
			times: map[[32]byte]time.Time{sumA: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)},
		},
		{
			name: "torrents, ftp and rsync skipped",
			doc: doc3(`<resources>` +
				`<url type="bittorrent" preference="100">http://t.example/repodata/repomd.xml.torrent</url>` +
				`<url protocol="ftp" type="ftp" preference="100">ftp://f.example/repodata/repomd.xml</url>` +
				`<url protocol="rsync" type="rsync" preference="100">rsync://r.example/repodata/repomd.xml</url>` +
				url3("90", "http://h.example/") + `</resources>`),
			want:     "http://h.example/",
			warnings: []string{"current version: no sha-256 hash; not used to judge freshness"},
			noProbe:  true,
		},
		{
			name: "bad URLs, repeats and strip mismatches",
			doc: doc3(hash3(sumA) + `<mm0:timestamp>1000</mm0:timestamp><resources>` +
				url3("100", "http://a.example/") +
				`<url preference="99">http://a.example/other/repomd.xml</url>` +
				`<url preference="98">http://A.EXAMPLE:80/repodata/repomd.xml</url>` +
				`<url preference="97">http://q.example/repodata/repomd.xml?country=de</url>` +
				`<url preference="96">http://%zz/repodata/repomd.xml</url>` +
				`</resources>`),
			want: "http://a.example/",
			warnings: []string{
				"url 5: mirror URL", // unparsable: skipped first
				"url 2: mirror URL \"http://a.example/other/repomd.xml\" does not end with /repodata/repomd.xml (strip)",
				"url 3: mirror URL \"http://A.EXAMPLE:80/\" repeats url 1",
				"url 4: mirror URL \"http://q.example/?country=de\": query and fragment are not allowed",
			},
			times: map[[32]byte]time.Time{sumA: time.Unix(1000, 0)},
		},
		{
			name: "bad versions are left out",
			doc: doc3(`<mm0:timestamp>soon</mm0:timestamp>` + hash3(sumA) +
				`<mm0:alternates>` +
				`<mm0:alternate><mm0:timestamp>900</mm0:timestamp>` + hash3(fedoraAlt1) + `</mm0:alternate>` +
				`<mm0:alternate><mm0:timestamp>800</mm0:timestamp><verification><hash type="sha256">abc</hash></verification></mm0:alternate>` +
				`</mm0:alternates><resources>` + url3("100", "http://a.example/") + `</resources>`),
			want: "http://a.example/",
			warnings: []string{
				`current version: mm0:timestamp "soon" is not a Unix time`,
				`alternate 2: sha-256 "abc" is not 64 hex digits`,
			},
			times: map[[32]byte]time.Time{fedoraAlt1: time.Unix(900, 0)},
		},
		{
			name: "several files: the first",
			doc: `<metalink xmlns="urn:ietf:params:xml:ns:metalink"><published>2026-11-28T09:00:00Z</published>` +
				`<file name="repomd.xml"><url>https://one.example/repodata/repomd.xml</url></file>` +
				`<file name="repomd.xml.asc"><url>https://two.example/repodata/repomd.xml.asc</url></file></metalink>`,
			want:     "https://one.example/",
			warnings: []string{`metalink: 2 files listed; only the first, "repomd.xml", is read`, "no sha-256 hash"},
			noProbe:  true,
		},
		{name: "not XML", doc: "<html><body>Service Unavailable", wantErr: "decoding the metalink: XML syntax error"},
		{name: "empty", doc: "", wantErr: "decoding the metalink: EOF"},
		{name: "other root", doc: `<repomd xmlns="http://linux.duke.edu/metadata/repo"/>`, wantErr: "not a metalink: the root element is <repomd>"},
		{name: "no namespace", doc: `<metalink><file name="x"/></metalink>`, wantErr: `not a metalink: the root element is <metalink> in namespace ""`},
		{name: "no file", doc: `<metalink version="3.0" xmlns="http://www.metalinker.org/"><files/></metalink>`, wantErr: "the metalink lists no file"},
		{name: "no URL", doc: doc3(hash3(sumA)), wantErr: `the metalink lists no URL for "repomd.xml"`},
		{
			name:    "no http URL",
			doc:     doc3(`<resources><url type="rsync">rsync://r.example/repodata/repomd.xml</url></resources>`),
			wantErr: "protocols [https http] left 0 of 1 URLs (1 in the metalink)",
		},
		{
			name:    "no usable URL",
			doc:     doc3(`<resources>` + url3("1", "http://a.example/x/") + `</resources>`),
			cfg:     Metalink{Strip: "os/repodata/repomd.xml"},
			wantErr: "none of the 1 mirrors that passed the filters has a usable URL: url 1: mirror URL \"http://a.example/x/repodata/repomd.xml\" does not end with /os/repodata/repomd.xml (strip)",
		},
		{
			name:    "no valid URL",
			doc:     doc3(`<resources><url>http://%zz/</url></resources>`),
			wantErr: "none of the 1 URLs in the metalink is valid: url 1: mirror URL",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := newParser(t, tc.cfg).parse([]byte(tc.doc))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := urls(res.Candidates); got != tc.want {
				t.Fatalf("got\n\t%s\nwant\n\t%s", got, tc.want)
			}
			if len(res.Warnings) != len(tc.warnings) {
				t.Fatalf("warnings:\n%s\nwant %d", strings.Join(res.Warnings, "\n"), len(tc.warnings))
			}
			for i, w := range tc.warnings {
				if !strings.Contains(res.Warnings[i], w) {
					t.Errorf("warning %d: %q, want %q", i, res.Warnings[i], w)
				}
			}
			switch {
			case tc.noProbe:
				if res.Candidates[0].Probe != nil {
					t.Fatalf("probe %+v, want none", res.Candidates[0].Probe)
				}
			case tc.times != nil:
				wantProbe(t, res, cmp.Or(tc.cfg.Strip, DefaultStrip), tc.times)
			}
		})
	}
}

// TestHistory: a .meta4 gives its current version the time it was
// published, new at each fetch; the provider keeps the first time it saw
// each version, and a version it saw before stays known as an older one.
func TestHistory(t *testing.T) {
	p := newParser(t, Metalink{Strip: suseStrip})
	suse := string(readTestdata(t, "opensuse-tumbleweed.meta4"))
	published := time.Date(2026, 11, 28, 9, 12, 44, 0, time.UTC)
	parse := func(doc string) source.Result {
		t.Helper()
		res, err := p.parse([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	parse(suse)
	later := strings.Replace(suse, "2026-11-28T09:12:44Z", "2026-11-28T10:30:00Z", 1)
	wantProbe(t, parse(later), suseStrip, map[[32]byte]time.Time{suseCurrent: published})

	next := sha256.Sum256([]byte("tumbleweed repo oss repomd.xml 20261128"))
	newer := strings.Replace(later, fmt.Sprintf("%x", suseCurrent), fmt.Sprintf("%x", next), 1)
	newer = strings.Replace(newer, "2026-11-28T10:30:00Z", "2026-11-28T22:00:00Z", 1)
	wantProbe(t, parse(newer), suseStrip, map[[32]byte]time.Time{
		suseCurrent: published,
		next:        time.Date(2026, 11, 28, 22, 0, 0, 0, time.UTC),
	})

	// A probe is a copy: later fetches do not change it under the pool.
	res := parse(newer)
	before := len(res.Candidates[0].Probe.Times)
	parse(strings.Replace(newer, fmt.Sprintf("%x", next), fmt.Sprintf("%x", fedoraCurrent), 1))
	if len(res.Candidates[0].Probe.Times) != before {
		t.Fatal("a later fetch changed an earlier probe")
	}
}

// TestHistoryBound: the history keeps the newest maxVersions versions.
func TestHistoryBound(t *testing.T) {
	var h history
	base := time.Unix(1_800_000_000, 0)
	for i := range maxVersions + 10 {
		h.merge(map[[32]byte]time.Time{sha256.Sum256(fmt.Append(nil, i)): base.Add(time.Duration(i) * time.Hour)})
	}
	got := h.merge(nil)
	if len(got) != maxVersions {
		t.Fatalf("%d versions kept, want %d", len(got), maxVersions)
	}
	if _, ok := got[sha256.Sum256(fmt.Append(nil, 9))]; ok {
		t.Fatal("an oldest version was kept")
	}
	if _, ok := got[sha256.Sum256(fmt.Append(nil, 10))]; !ok {
		t.Fatal("the oldest of the newest versions was dropped")
	}
}
