package metalink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-refractor/refractor/providers/internal/source"
)

func newContext(t *testing.T) caddy.Context {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

const fedoraURL = "https://mirrors.fedoraproject.org/metalink?repo=updates-released-f41&arch=x86_64"

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		input   string
		want    Metalink
		wantErr []string
	}{
		{name: "inline url", input: "metalink " + fedoraURL, want: Metalink{Location: source.Location{URL: fedoraURL}}},
		{name: "inline path", input: "metalink /var/lib/refractor/fedora.metalink", want: Metalink{Location: source.Location{Path: "/var/lib/refractor/fedora.metalink"}}},
		{
			name: "every option",
			input: `metalink {
				url       ` + fedoraURL + `
				strip     updates/41/Everything/x86_64/repodata/repomd.xml
				countries DE fr
				protocols https
				refresh   30m
				timeout   10s
			}`,
			want: Metalink{
				Location: source.Location{
					URL:     fedoraURL,
					Refresh: caddy.Duration(30 * time.Minute),
					Timeout: caddy.Duration(10 * time.Second),
				},
				Strip:     fedoraStrip,
				Countries: []string{"DE", "fr"},
				Protocols: []string{"https"},
			},
		},
		{name: "nothing", input: "metalink", wantErr: []string{"metalink provider: a url or a path is required"}},
		{name: "two inline", input: "metalink a b", wantErr: []string{"wrong argument count"}},
		{name: "unknown", input: "metalink " + fedoraURL + " {\n\tcountry DE\n}", wantErr: []string{"unrecognized subdirective country"}},
		{name: "strip without value", input: "metalink " + fedoraURL + " {\n\tstrip\n}", wantErr: []string{"wrong argument count"}},
		{name: "strip two values", input: "metalink " + fedoraURL + " {\n\tstrip a b\n}", wantErr: []string{"wrong argument count"}},
		{name: "strip absolute", input: "metalink " + fedoraURL + " {\n\tstrip /repodata/repomd.xml\n}", wantErr: []string{"metalink provider: strip:", "relative"}},
		{name: "strip directory", input: "metalink " + fedoraURL + " {\n\tstrip repodata/\n}", wantErr: []string{"metalink provider: strip:", "name a file"}},
		{name: "strip dotdot", input: "metalink " + fedoraURL + " {\n\tstrip ../repodata/repomd.xml\n}", wantErr: []string{"metalink provider: strip:", "clean"}},
		{name: "strip double slash", input: "metalink " + fedoraURL + " {\n\tstrip a//repomd.xml\n}", wantErr: []string{"metalink provider: strip:", "clean"}},
		{name: "countries without any", input: "metalink " + fedoraURL + " {\n\tcountries\n}", wantErr: []string{"wrong argument count"}},
		{name: "country name", input: "metalink " + fedoraURL + " {\n\tcountries Germany\n}", wantErr: []string{`metalink provider: countries: "Germany" is not a two-letter country code`}},
		{name: "protocol rsync", input: "metalink " + fedoraURL + " {\n\tprotocols rsync\n}", wantErr: []string{`metalink provider: protocols: "rsync" is not http or https`}},
		{name: "refresh too short", input: "metalink " + fedoraURL + " {\n\trefresh 1s\n}", wantErr: []string{"metalink provider: refresh: must be at least 1m0s"}},
		{name: "timeout bad", input: "metalink " + fedoraURL + " {\n\ttimeout never\n}", wantErr: []string{"metalink provider: timeout"}},
		{name: "ftp url", input: "metalink ftp://a.example/metalink", wantErr: []string{"metalink provider: url", "http or https"}},
		{
			name:    "dnf variables",
			input:   "metalink https://mirrors.fedoraproject.org/metalink?repo=fedora-$releasever&arch=$basearch",
			wantErr: []string{"metalink provider: url:", "$releasever, $basearch are not expanded"},
		},
		{name: "url and path", input: "metalink /a {\n\turl " + fedoraURL + "\n}", wantErr: []string{"already specified"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got Metalink
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

// TestProvisionErrors: the JSON configuration is checked as the
// Caddyfile's is, and fails at load naming the setting.
func TestProvisionErrors(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{`{}`, "metalink provider: a url or a path is required"},
		{`{"url": "https://a.example/metalink", "strip": "/repomd.xml"}`, "metalink provider: strip:"},
		{`{"url": "https://a.example/metalink", "protocols": ["ftp"]}`, "metalink provider: protocols:"},
		{`{"url": "https://a.example/metalink", "countries": [""]}`, "metalink provider: countries:"},
		{`{"url": "file:///metalink"}`, "metalink provider: url"},
		{`{"path": "/nonexistent/fedora.metalink"}`, "metalink provider: open /nonexistent/fedora.metalink"},
		{`{"path": "testdata/fedora-updates.metalink", "countries": ["XX"]}`, "metalink provider: testdata/fedora-updates.metalink: countries [XX] left 0"},
	} {
		var m Metalink
		if err := json.Unmarshal([]byte(tc.json), &m); err != nil {
			t.Fatal(err)
		}
		err := m.Provision(newContext(t))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.json, err, tc.want)
		}
	}
}

func TestModuleRegistered(t *testing.T) {
	info, err := caddy.GetModule("http.handlers.refractor.providers.metalink")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := info.New().(*Metalink); !ok {
		t.Fatalf("the module makes a %T", info.New())
	}
}

// metalinkServer serves a metalink on 127.0.0.1, as MirrorManager does:
// for one repo and arch given in the query.
type metalinkServer struct {
	*httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	status   int
	body     []byte
}

func newMetalinkServer(t *testing.T, body []byte) *metalinkServer {
	t.Helper()
	s := &metalinkServer{status: http.StatusOK, body: body}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if q := r.URL.Query(); r.URL.Path != "/metalink" || q.Get("repo") != "updates-released-f41" || q.Get("arch") != "x86_64" {
			http.Error(w, "# repo = x arch = y error: invalid repo or arch", http.StatusNotFound)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/metalink+xml")
		w.WriteHeader(s.status)
		w.Write(s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *metalinkServer) set(status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

// TestFromURL: the metalink is fetched from a local server when the pool
// first asks, not at load; its mirrors come with the probe; an outage
// keeps the last good list; a newer repomd.xml adds a version.
func TestFromURL(t *testing.T) {
	fedora := readTestdata(t, "fedora-updates.metalink")
	srv := newMetalinkServer(t, fedora)
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	m := &Metalink{
		Location:  source.Location{URL: srv.URL + "/metalink?repo=updates-released-f41&arch=x86_64"},
		Strip:     fedoraStrip,
		Countries: []string{"DE"},
	}
	m.SetClock(func() time.Time { return now })
	if err := m.Provision(newContext(t)); err != nil {
		t.Fatal(err)
	}
	defer m.Cleanup()
	if n := srv.requests.Load(); n != 0 {
		t.Fatalf("Provision made %d requests", n)
	}

	cands, err := m.Candidates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := "https://ftp.alpha.example/fedora/linux/ http://ftp.alpha.example/fedora/linux/ https://mirror.epsilon.example/fedora/linux/"
	if got := urls(cands); got != want || srv.requests.Load() != 1 {
		t.Fatalf("got %s in %d requests; want %s in 1", got, srv.requests.Load(), want)
	}
	probe := cands[0].Probe
	if probe == nil || probe.Path != fedoraStrip || len(probe.Times) != 3 {
		t.Fatalf("probe %+v, want %s with 3 versions", probe, fedoraStrip)
	}

	// Down: the last good list.
	srv.set(http.StatusServiceUnavailable, []byte("maintenance"))
	now = now.Add(2 * time.Hour)
	cands, err = m.Candidates(context.Background())
	if err != nil || urls(cands) != want || srv.requests.Load() != 2 {
		t.Fatalf("during an outage: got %s, %v after %d requests; want the last good list after 2", urls(cands), err, srv.requests.Load())
	}

	// A newer repomd.xml: the older current version stays known.
	next := sha256Hex("fedora 41 updates repomd.xml 1795943000")
	newer := strings.Replace(string(fedora), "1795856400", "1795943000", 1)
	newer = strings.Replace(newer, hexOf(fedoraCurrent), next, 1)
	srv.set(http.StatusOK, []byte(newer))
	now = now.Add(2 * time.Hour)
	cands, err = m.Candidates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := len(cands[0].Probe.Times); got != 4 {
		t.Fatalf("%d versions known after a new repomd.xml, want 4 (the new one, the old current one, 2 alternates)", got)
	}
	if got := cands[0].Probe.Times[fedoraCurrent]; !got.Equal(time.Unix(1795856400, 0)) {
		t.Fatalf("the old current version: %v", got)
	}
}

func hexOf(sum [32]byte) string { return hex.EncodeToString(sum[:]) }

func sha256Hex(s string) string { return hexOf(sha256.Sum256([]byte(s))) }
