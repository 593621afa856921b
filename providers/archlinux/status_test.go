package archlinux

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-refractor/refractor/pool"
)

func readStatus(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/status.json")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The mirrors of testdata/status.json that tests refer to, by host.
const (
	alphaHTTPS = "https://mirror.alpha.example/archlinux/"
	alphaHTTP  = "http://mirror.alpha.example/archlinux/"
	beta       = "https://ftp.beta.example/pub/archlinux/"
	gamma      = "https://arch.gamma.example/"
	never      = "https://never-checked.delta.example/arch/"
	retired    = "https://retired.epsilon.example/archlinux/"
	v6only     = "http://v6only.zeta.example/archlinux/"
)

func ptr[T any](v T) *T { return &v }

func urlsOf(cands []pool.Candidate) []string {
	var out []string
	for _, c := range cands {
		out = append(out, c.URL)
	}
	return out
}

func TestFiltersOnTheStatus(t *testing.T) {
	data := readStatus(t)
	for _, tc := range []struct {
		name    string
		a       Archlinux
		want    []string // in order
		wantErr string
	}{
		{
			// rsync, the inactive mirror, the partial one and the
			// never-checked one go; best score first.
			name: "defaults",
			want: []string{alphaHTTP, alphaHTTPS, v6only, beta},
		},
		{name: "https only", a: Archlinux{Protocols: []string{"HTTPS"}}, want: []string{alphaHTTPS, beta}},
		{name: "country codes, any case", a: Archlinux{Countries: []string{"es", "Fr"}}, want: []string{alphaHTTP, alphaHTTPS, beta}},
		{name: "country name", a: Archlinux{Countries: []string{"germany"}}, want: []string{v6only}},
		{name: "max_score", a: Archlinux{MaxScore: 1}, want: []string{alphaHTTP, alphaHTTPS}},
		{name: "max_delay", a: Archlinux{MaxDelay: caddyDuration(time.Hour)}, want: []string{alphaHTTP, alphaHTTPS, v6only}},
		{name: "ipv4", a: Archlinux{IPv4: true}, want: []string{alphaHTTP, alphaHTTPS, beta}},
		{name: "ipv6", a: Archlinux{IPv6: true}, want: []string{alphaHTTP, alphaHTTPS, v6only}},
		{name: "isos", a: Archlinux{ISOs: true}, want: []string{alphaHTTP, alphaHTTPS, beta}},
		{name: "partial sync accepted", a: Archlinux{MinCompletion: ptr(0.95)}, want: []string{alphaHTTP, alphaHTTPS, v6only, beta, gamma}},
		{
			// Nothing but the protocol: the never-checked mirror (null
			// score) comes last, the inactive one takes its place.
			name: "everything",
			a:    Archlinux{MinCompletion: ptr(0.0), Active: ptr(false)},
			want: []string{alphaHTTP, alphaHTTPS, v6only, retired, beta, gamma, never},
		},
		{
			// A null score fails max_score, a null delay max_delay.
			name: "nulls fail the filters that need them",
			a:    Archlinux{MinCompletion: ptr(0.0), MaxScore: 100},
			want: []string{alphaHTTP, alphaHTTPS, v6only, beta, gamma},
		},
		{name: "null delay", a: Archlinux{MinCompletion: ptr(0.0), MaxDelay: caddyDuration(48 * time.Hour)}, want: []string{alphaHTTP, alphaHTTPS, v6only, beta, gamma}},
		{name: "no such country", a: Archlinux{Countries: []string{"XX"}}, wantErr: "countries [XX] left 0 of 4 mirrors (8 in the status list)"},
		{name: "ipv4 after country", a: Archlinux{Countries: []string{"DE"}, IPv4: true}, wantErr: "ipv4 left 0 of 1 mirrors"},
		{name: "score too strict", a: Archlinux{MaxScore: 0.5}, wantErr: "max_score 0.5 left 0 of 4 mirrors"},
		{name: "delay too strict", a: Archlinux{MaxDelay: caddyDuration(time.Minute)}, wantErr: "max_delay 1m0s left 0 of 4 mirrors"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := tc.a.filters()
			if err != nil {
				t.Fatal(err)
			}
			res, err := f.parse(data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := urlsOf(res.Candidates); strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("got\n\t%v\nwant\n\t%v", got, tc.want)
			}
			if res.Entries != 8 {
				t.Errorf("Entries = %d, want 8", res.Entries)
			}
		})
	}
}

// TestFilterCounts follows the sample through each default filter.
func TestFilterCounts(t *testing.T) {
	mirrors, err := parseStatus(readStatus(t))
	if err != nil {
		t.Fatal(err)
	}
	f, err := (&Archlinux{Countries: []string{"ES", "DE", "FR"}, MaxScore: 2, IPv6: true}).filters()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	kept := mirrors
	for _, step := range f.steps() {
		before := len(kept)
		kept = slices.DeleteFunc(slices.Clone(kept), func(m mirror) bool { return !step.Keep(&m) })
		got = append(got, fmt.Sprintf("%s %d→%d", step.Name, before, len(kept)))
	}
	want := []string{
		"protocols [https http] 8→7",
		"active 7→6",
		"min_completion 1 6→4",
		"countries [ES DE FR] 4→4",
		"max_score 2 4→3",
		"ipv6 3→3",
	}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Fatalf("got\n\t%s\nwant\n\t%s", strings.Join(got, "; "), strings.Join(want, "; "))
	}
}

func TestLastSync(t *testing.T) {
	f, _ := (&Archlinux{MinCompletion: ptr(0.0)}).filters()
	res, err := f.parse(readStatus(t))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		alphaHTTPS: "2026-11-22T17:31:05Z",
		alphaHTTP:  "2026-11-22T17:31:05Z",
		beta:       "2026-11-22T16:02:44Z",
		gamma:      "2026-11-21T09:12:00Z",
		never:      "0001-01-01T00:00:00Z", // null: unknown
		v6only:     "2026-11-22T17:45:51Z",
	}
	for _, c := range res.Candidates {
		if got := c.LastSync.UTC().Format(time.RFC3339); got != want[c.URL] {
			t.Errorf("%s: LastSync %s, want %s", c.URL, got, want[c.URL])
		}
	}
}

func TestParseStatusErrors(t *testing.T) {
	f, _ := (&Archlinux{}).filters()
	for _, tc := range []struct{ doc, want string }{
		{``, "decoding"},
		{`<html>502 Bad Gateway</html>`, "decoding"},
		{`{"version": 3}`, `no "urls" list`},
		{`{"urls": null}`, `no "urls" list`},
		{`{"urls": []}`, "lists no mirrors"},
		{`{"urls": [{"url": 7}]}`, "decoding"},
		{`{"urls": [{"url": "ftp://x.example/", "protocol": "ftp"}]}`, "protocols [https http] left 0 of 1 mirrors"},
		{`{"urls": [{"url": "https://", "protocol": "https", "active": true, "completion_pct": 1}]}`, "none of the 1 mirrors that passed the filters has a valid URL"},
	} {
		if _, err := f.parse([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.doc, err, tc.want)
		}
	}
}

func TestParseStatusWarnings(t *testing.T) {
	f, _ := (&Archlinux{}).filters()
	doc := `{"urls": [
		{"url": "https://a.example/arch/", "protocol": "https", "active": true, "completion_pct": 1, "score": 2, "last_sync": "yesterday"},
		{"url": "https://A.example:443/arch", "protocol": "https", "active": true, "completion_pct": 1, "score": 1},
		{"url": "https://b.example/arch?x", "protocol": "https", "active": true, "completion_pct": 1, "score": 3}
	]}`
	res, err := f.parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	// The better-scored spelling of the same mirror wins.
	if got := urlsOf(res.Candidates); len(got) != 1 || got[0] != "https://a.example/arch/" || !res.Candidates[0].LastSync.IsZero() {
		t.Fatalf("got %v", res.Candidates)
	}
	if len(res.Warnings) != 3 {
		t.Fatalf("warnings %q; want the repeat, the bad time and the bad URL", res.Warnings)
	}
}

func caddyDuration(d time.Duration) caddy.Duration { return caddy.Duration(d) }
