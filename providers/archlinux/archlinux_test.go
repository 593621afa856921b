package archlinux

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"

	"github.com/caddy-refractor/refractor/providers/internal/source"
)

func newContext(t *testing.T) caddy.Context {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    Archlinux
		wantErr []string
	}{
		{name: "bare", input: `archlinux`, want: Archlinux{}},
		{
			name:  "inline url",
			input: `archlinux http://127.0.0.1:8000/status.json`,
			want:  Archlinux{Location: source.Location{URL: "http://127.0.0.1:8000/status.json"}},
		},
		{
			name:  "inline path",
			input: `archlinux /var/lib/refractor/status.json`,
			want:  Archlinux{Location: source.Location{Path: "/var/lib/refractor/status.json"}},
		},
		{
			name: "every option",
			input: `archlinux {
				url            https://archlinux.org/mirrors/status/json/
				countries      DE FR nl
				protocols      https
				min_completion 0.95
				max_score      5.5
				max_delay      2h
				ipv4
				ipv6           false
				isos           true
				active         false
				refresh        30m
				timeout        10s
			}`,
			want: Archlinux{
				Location: source.Location{
					URL:     "https://archlinux.org/mirrors/status/json/",
					Refresh: caddy.Duration(30 * time.Minute),
					Timeout: caddy.Duration(10 * time.Second),
				},
				Countries:     []string{"DE", "FR", "nl"},
				Protocols:     []string{"https"},
				MinCompletion: ptr(0.95),
				MaxScore:      5.5,
				MaxDelay:      caddy.Duration(2 * time.Hour),
				IPv4:          true,
				ISOs:          true,
				Active:        ptr(false),
			},
		},
		{name: "two inline", input: `archlinux a b`, wantErr: []string{"wrong argument count"}},
		{name: "unknown", input: "archlinux {\n\tcountry DE\n}", wantErr: []string{"unrecognized subdirective country"}},
		{name: "countries without any", input: "archlinux {\n\tcountries\n}", wantErr: []string{"wrong argument count"}},
		{name: "min_completion above 1", input: "archlinux {\n\tmin_completion 1.5\n}", wantErr: []string{"archlinux provider: min_completion: must be between 0 and 1"}},
		{name: "min_completion not a number", input: "archlinux {\n\tmin_completion all\n}", wantErr: []string{"min_completion", "'all'"}},
		{name: "max_score negative", input: "archlinux {\n\tmax_score -1\n}", wantErr: []string{"archlinux provider: max_score"}},
		{name: "max_delay", input: "archlinux {\n\tmax_delay soon\n}", wantErr: []string{"archlinux provider: max_delay"}},
		{name: "flag value", input: "archlinux {\n\tipv6 maybe\n}", wantErr: []string{"archlinux provider: ipv6", "true or false"}},
		{name: "refresh too short", input: "archlinux {\n\turl https://a.example/s.json\n\trefresh 1s\n}", wantErr: []string{"archlinux provider: refresh: must be at least 1m0s"}},
		{name: "refresh bad", input: "archlinux {\n\trefresh often\n}", wantErr: []string{"archlinux provider: refresh"}},
		{name: "url and path", input: "archlinux https://a.example/s.json {\n\tpath /x\n}", wantErr: []string{"already specified"}},
		{name: "ftp url", input: "archlinux ftp://a.example/s.json", wantErr: []string{"archlinux provider: url", "http or https"}},
		{name: "refresh with a path", input: "archlinux /x {\n\trefresh 1h\n}", wantErr: []string{"only to a url"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got Archlinux
			err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want one mentioning %q", tc.wantErr)
				}
				for _, sub := range tc.wantErr {
					if !strings.Contains(err.Error(), sub) {
						t.Errorf("error %q does not mention %q", err, sub)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestProvisionErrors(t *testing.T) {
	for _, tc := range []struct {
		json string
		want string
	}{
		{`{"min_completion": 2}`, "archlinux provider: min_completion: must be between 0 and 1, got 2"},
		{`{"max_score": -1}`, "archlinux provider: max_score"},
		{`{"max_delay": -1}`, "archlinux provider: max_delay"},
		{`{"protocols": ["rsync"]}`, `archlinux provider: protocols: "rsync" is not http or https`},
		{`{"countries": [""]}`, "archlinux provider: countries"},
		{`{"url": "file:///status.json"}`, "archlinux provider: url"},
		{`{"path": "/nonexistent/status.json"}`, "archlinux provider: open /nonexistent/status.json"},
		{`{"path": "testdata/status.json", "countries": ["XX"]}`, "archlinux provider: testdata/status.json: countries [XX] left 0"},
	} {
		var a Archlinux
		if err := json.Unmarshal([]byte(tc.json), &a); err != nil {
			t.Fatal(err)
		}
		err := a.Provision(newContext(t))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.json, err, tc.want)
		}
	}
}

// TestProvisionDoesNotFetch: a configuration loads offline; the status is
// fetched when the pool first asks.
func TestProvisionDoesNotFetch(t *testing.T) {
	srv := newStatusServer(t, readStatus(t))
	a := &Archlinux{Location: source.Location{URL: srv.URL + "/status.json"}}
	if err := a.Provision(newContext(t)); err != nil {
		t.Fatal(err)
	}
	defer a.Cleanup()
	if n := srv.requests.Load(); n != 0 {
		t.Fatalf("Provision made %d requests", n)
	}
	cands, err := a.Candidates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) != 4 || srv.requests.Load() != 1 {
		t.Fatalf("got %d candidates in %d requests; want 4 in 1", len(cands), srv.requests.Load())
	}

	b := &Archlinux{}
	if err := b.Provision(newContext(t)); err != nil {
		t.Fatal(err)
	}
	defer b.Cleanup()
	if b.URL != DefaultURL {
		t.Fatalf("default URL %q, want %q", b.URL, DefaultURL)
	}
}

func TestPathSource(t *testing.T) {
	a := &Archlinux{Location: source.Location{Path: "testdata/status.json"}, Protocols: []string{"https"}}
	if err := a.Provision(newContext(t)); err != nil {
		t.Fatal(err)
	}
	cands, err := a.Candidates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(urlsOf(cands), " "); got != alphaHTTPS+" "+beta {
		t.Fatalf("got %s", got)
	}
}

// statusServer serves a status document on 127.0.0.1 that tests change.
type statusServer struct {
	*httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	status   int
	body     []byte
}

func newStatusServer(t *testing.T, body []byte) *statusServer {
	t.Helper()
	s := &statusServer{status: http.StatusOK, body: body}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s.status)
		w.Write(s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *statusServer) set(status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, []byte(body)
}

// TestOutagesKeepTheLastGoodList: the status URL fails in every way the
// real one might; the provider keeps answering with the last good list.
func TestOutagesKeepTheLastGoodList(t *testing.T) {
	srv := newStatusServer(t, readStatus(t))
	// A fake clock: only this goroutine calls Candidates.
	now := time.Date(2026, 11, 22, 18, 0, 0, 0, time.UTC)
	a := &Archlinux{Location: source.Location{URL: srv.URL + "/status.json"}}
	a.SetClock(func() time.Time { return now })
	if err := a.Provision(newContext(t)); err != nil {
		t.Fatal(err)
	}
	defer a.Cleanup()
	good, err := a.Candidates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join(urlsOf(good), " ")

	for _, o := range []struct {
		name   string
		status int
		body   string
	}{
		{"500", http.StatusInternalServerError, "oops"},
		{"garbage", http.StatusOK, "<html><body>Service Unavailable</body></html>"},
		{"truncated", http.StatusOK, string(readStatus(t)[:500])},
		{"empty list", http.StatusOK, `{"cutoff": 86400, "urls": [], "version": 3}`},
		{"filtered empty", http.StatusOK, `{"urls": [{"url": "https://x.example/", "protocol": "https", "active": false}], "version": 3}`},
	} {
		now = now.Add(time.Hour)
		srv.set(o.status, o.body)
		before := srv.requests.Load()
		got, err := a.Candidates(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", o.name, err)
		}
		if strings.Join(urlsOf(got), " ") != want {
			t.Fatalf("%s: got %v, want the last good list", o.name, urlsOf(got))
		}
		if srv.requests.Load() != before+1 {
			t.Fatalf("%s: the status was not fetched again", o.name)
		}
	}
	now = now.Add(time.Hour)
	srv.Close() // connection refused
	got, err := a.Candidates(context.Background())
	if err != nil || strings.Join(urlsOf(got), " ") != want {
		t.Fatalf("server gone: got %v, %v; want the last good list", urlsOf(got), err)
	}
}

// caddyContext returns a Caddy context whose storage is a file system
// storage in dir, as `storage file_system <dir>` configures.
func caddyContext(t *testing.T, dir string) caddy.Context {
	t.Helper()
	cfg := &caddy.Config{StorageRaw: json.RawMessage(fmt.Sprintf(`{"module": "file_system", "root": %q}`, dir))}
	ctx, err := caddy.ProvisionContext(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ctx
}

func loadProvider(t *testing.T, ctx caddy.Context, cfg string) *Archlinux {
	t.Helper()
	mod, err := ctx.LoadModuleByID("http.handlers.refractor.providers.archlinux", json.RawMessage(cfg))
	if err != nil {
		t.Fatal(err)
	}
	a := mod.(*Archlinux)
	t.Cleanup(func() { a.Cleanup() })
	return a
}

// TestStorageSurvivesARestart: the last good status is saved in Caddy's
// storage, and a restart without network uses it, with the filters of the
// new configuration.
func TestStorageSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	srv := newStatusServer(t, readStatus(t))
	url := srv.URL + "/status.json"
	cfg := fmt.Sprintf(`{"url": %q}`, url)

	a := loadProvider(t, caddyContext(t, dir), cfg)
	if _, err := a.Candidates(context.Background()); err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(dir, filepath.FromSlash(source.StorageKey("archlinux", url, "json")))
	data, err := os.ReadFile(saved)
	if err != nil {
		t.Fatalf("the status was not saved: %v", err)
	}
	if string(data) != string(readStatus(t)) {
		t.Fatal("the saved status differs from the fetched one")
	}
	if !strings.HasPrefix(filepath.ToSlash(saved), filepath.ToSlash(dir)+"/refractor/archlinux/") {
		t.Fatalf("saved at %s", saved)
	}

	// Restart: the network is down, and the filters changed.
	srv.Close()
	b := loadProvider(t, caddyContext(t, dir), fmt.Sprintf(`{"url": %q, "protocols": ["https"]}`, url))
	got, err := b.Candidates(context.Background())
	if err != nil {
		t.Fatalf("restart offline: %v", err)
	}
	if strings.Join(urlsOf(got), " ") != alphaHTTPS+" "+beta {
		t.Fatalf("restart offline: got %v", urlsOf(got))
	}

	// Without a saved copy, an offline start has nothing, and says why.
	c := loadProvider(t, caddyContext(t, t.TempDir()), cfg)
	if _, err := c.Candidates(context.Background()); err == nil || !strings.Contains(err.Error(), "archlinux provider") {
		t.Fatalf("offline without a saved copy: error %v", err)
	}
}
