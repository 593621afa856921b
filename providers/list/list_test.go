package list

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-refractor/refractor/pool"
	"github.com/caddy-refractor/refractor/providers/internal/source"
)

func newContext(t *testing.T) caddy.Context {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

func urls(cands []pool.Candidate) string {
	var out []string
	for _, c := range cands {
		out = append(out, c.URL)
	}
	return strings.Join(out, " ")
}

func parseFile(t *testing.T, name string) source.Result {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	res, err := parseList(data)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestParseUbuntuMirrors(t *testing.T) {
	res := parseFile(t, "mirrors.txt")
	want := "http://ubuntu.mirror.alpha.example/ubuntu/ https://ftp.beta.example/ubuntu/ http://archive.gamma.example/ubuntu/"
	if got := urls(res.Candidates); got != want {
		t.Fatalf("got\n\t%s\nwant\n\t%s", got, want)
	}
	if res.Entries != 3 || len(res.Warnings) != 0 {
		t.Fatalf("entries %d, warnings %q", res.Entries, res.Warnings)
	}
}

func TestParseAptMirrorList(t *testing.T) {
	res := parseFile(t, "apt-mirrors.list")
	// Metadata after the URL is ignored; the repeat and the file: entry
	// are skipped.
	want := "https://deb.alpha.example/debian/ http://deb.beta.example/debian/ https://deb.gamma.example/debian/"
	if got := urls(res.Candidates); got != want {
		t.Fatalf("got\n\t%s\nwant\n\t%s", got, want)
	}
	if res.Entries != 5 || len(res.Warnings) != 2 {
		t.Fatalf("entries %d, warnings:\n%s", res.Entries, strings.Join(res.Warnings, "\n"))
	}
	if !strings.HasPrefix(res.Warnings[0], "line 7: ") || !strings.Contains(res.Warnings[0], "repeats line 2") {
		t.Errorf("warning %q", res.Warnings[0])
	}
	if !strings.HasPrefix(res.Warnings[1], "line 9: ") {
		t.Errorf("warning %q", res.Warnings[1])
	}
}

func TestParseListErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"", "the list has no mirror"},
		{"# nothing\n\n", "the list has no mirror"},
		{"<html><body>hello</body></html>\n", "none of the 1 lines has a valid http(s) mirror URL"},
	} {
		if _, err := parseList([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.doc, err, tc.want)
		}
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		input   string
		want    source.Location
		wantErr string
	}{
		{input: `list http://mirrors.ubuntu.com/mirrors.txt`, want: source.Location{URL: "http://mirrors.ubuntu.com/mirrors.txt"}},
		{input: `list /etc/apt/mirrors/debian.list`, want: source.Location{Path: "/etc/apt/mirrors/debian.list"}},
		{
			input: "list {\n\turl https://a.example/mirrors.txt\n\trefresh 6h\n\ttimeout 5s\n}",
			want:  source.Location{URL: "https://a.example/mirrors.txt", Refresh: caddy.Duration(6 * time.Hour), Timeout: caddy.Duration(5 * time.Second)},
		},
		{input: "list {\n\tpath /srv/mirrors\n}", want: source.Location{Path: "/srv/mirrors"}},
		{input: `list`, wantErr: "list provider: a url or a path is required"},
		{input: `list a b`, wantErr: "wrong argument count"},
		{input: `list ftp://a.example/mirrors.txt`, wantErr: "list provider: url"},
		{input: "list /a {\n\turl https://a.example/\n}", wantErr: "list provider: url: a url or path is already specified"},
		{input: "list /a {\n\trefresh 1h\n}", wantErr: "only to a url"},
		{input: "list https://a.example/ {\n\ttimeout 0s\n}", wantErr: "list provider: timeout"},
		{input: "list https://a.example/ {\n\tmirror https://b.example/\n}", wantErr: "unrecognized subdirective mirror"},
	} {
		var l List
		err := l.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want %q", tc.input, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(l.Location, tc.want) {
			t.Errorf("%q: got %+v, %v; want %+v", tc.input, l.Location, err, tc.want)
		}
	}
}

func TestFromFile(t *testing.T) {
	l := &List{Location: source.Location{Path: "testdata/apt-mirrors.list"}}
	if err := l.Provision(newContext(t)); err != nil {
		t.Fatal(err)
	}
	cands, err := l.Candidates(context.Background())
	if err != nil || len(cands) != 3 {
		t.Fatalf("got %v, %v; want 3 mirrors", cands, err)
	}

	missing := &List{Location: source.Location{Path: filepath.Join(t.TempDir(), "nope")}}
	if err := missing.Provision(newContext(t)); err == nil || !strings.Contains(err.Error(), "list provider: open ") {
		t.Fatalf("missing file: error %v", err)
	}
}

// TestFromURL: fetched lazily, and an outage keeps the last good list.
func TestFromURL(t *testing.T) {
	var requests atomic.Int64
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		if down.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "http://a.example/ubuntu/\nhttp://b.example/ubuntu/\n")
	}))
	defer srv.Close()

	now := time.Date(2026, 11, 22, 18, 0, 0, 0, time.UTC)
	l := &List{Location: source.Location{URL: srv.URL + "/mirrors.txt"}}
	l.SetClock(func() time.Time { return now })
	if err := l.Provision(newContext(t)); err != nil {
		t.Fatal(err)
	}
	defer l.Cleanup()
	if requests.Load() != 0 {
		t.Fatal("Provision fetched the list")
	}
	cands, err := l.Candidates(context.Background())
	if err != nil || urls(cands) != "http://a.example/ubuntu/ http://b.example/ubuntu/" {
		t.Fatalf("got %v, %v", urls(cands), err)
	}
	down.Store(true)
	now = now.Add(2 * time.Hour)
	cands, err = l.Candidates(context.Background())
	if err != nil || len(cands) != 2 || requests.Load() != 2 {
		t.Fatalf("during an outage: got %v, %v after %d requests; want the last good list after 2", urls(cands), err, requests.Load())
	}
}
