package static

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-refractor/refractor/pool"
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
		want    []string
		wantErr []string // substrings the error must contain
	}{
		{
			name:  "inline single",
			input: `static https://a.example/debian`,
			want:  []string{"https://a.example/debian"},
		},
		{
			name:  "inline several",
			input: `static https://a.example/ http://b.example/x/`,
			want:  []string{"https://a.example/", "http://b.example/x/"},
		},
		{
			name: "block",
			input: `static {
				mirror https://a.example/
				mirror https://b.example/ https://c.example/
			}`,
			want: []string{"https://a.example/", "https://b.example/", "https://c.example/"},
		},
		{
			name: "inline then block",
			input: `static https://a.example/ {
				mirror https://b.example/
			}`,
			want: []string{"https://a.example/", "https://b.example/"},
		},
		{
			name:    "nothing",
			input:   `static`,
			wantErr: []string{"static provider", "at least one mirror"},
		},
		{
			name:    "empty block",
			input:   "static {\n}",
			wantErr: []string{"static provider", "at least one mirror"},
		},
		{
			name: "mirror without argument",
			input: `static {
				mirror
			}`,
			wantErr: []string{"mirror", "Testfile:2"},
		},
		{
			name: "unknown subdirective",
			input: `static {
				mirrors https://a.example/
			}`,
			wantErr: []string{"unrecognized subdirective mirrors", "Testfile:2"},
		},
		{
			name:    "ftp inline",
			input:   `static ftp://a.example/`,
			wantErr: []string{"static provider", "ftp://a.example/", "scheme"},
		},
		{
			name: "relative in block",
			input: `static {
				mirror https://a.example/ a.example/debian
			}`,
			wantErr: []string{"static provider", "a.example/debian", "Testfile:2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Static
			err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("got no error, mirrors %q", s.Mirrors)
				}
				for _, sub := range tt.wantErr {
					if !strings.Contains(err.Error(), sub) {
						t.Errorf("error %q does not mention %q", err, sub)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.Mirrors, tt.want) {
				t.Errorf("mirrors = %q, want %q", s.Mirrors, tt.want)
			}
		})
	}
}

func TestProvisionAndCandidates(t *testing.T) {
	tests := []struct {
		name    string
		mirrors []string
		want    []string
		wantErr []string
	}{
		{
			name:    "order kept and normalised",
			mirrors: []string{"https://z.example/debian", "http://a.example", "https://m.example/x/"},
			want:    []string{"https://z.example/debian/", "http://a.example/", "https://m.example/x/"},
		},
		{
			name:    "none",
			wantErr: []string{"static provider", "no mirrors"},
		},
		{
			name:    "empty list",
			mirrors: []string{},
			wantErr: []string{"static provider", "no mirrors"},
		},
		{
			name:    "exact duplicate",
			mirrors: []string{"https://a.example/", "https://b.example/", "https://a.example/"},
			wantErr: []string{"static provider", `"https://a.example/"`, "duplicates"},
		},
		{
			name:    "duplicate after normalisation",
			mirrors: []string{"https://a.example/debian", "https://a.example/debian/"},
			wantErr: []string{"static provider", `"https://a.example/debian/" duplicates "https://a.example/debian"`},
		},
		{
			name:    "not http",
			mirrors: []string{"https://a.example/", "ftp://b.example/"},
			wantErr: []string{"static provider", "ftp://b.example/", "scheme"},
		},
		{
			name:    "user info",
			mirrors: []string{"https://user:pw@a.example/"},
			wantErr: []string{"static provider", "user info"},
		},
		{
			name:    "no host",
			mirrors: []string{"https:///debian"},
			wantErr: []string{"static provider", "missing host"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Static{Mirrors: tt.mirrors}
			err := s.Provision(newContext(t))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatal("got no error")
				}
				for _, sub := range tt.wantErr {
					if !strings.Contains(err.Error(), sub) {
						t.Errorf("error %q does not mention %q", err, sub)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Candidates(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var urls []string
			for _, c := range got {
				if !c.LastSync.IsZero() {
					t.Errorf("%s: LastSync = %v, want zero", c.URL, c.LastSync)
				}
				urls = append(urls, c.URL)
			}
			if !slices.Equal(urls, tt.want) {
				t.Errorf("candidates = %q, want %q", urls, tt.want)
			}

			// Changing the returned slice must not affect later calls.
			got[0].URL = "https://changed.example/"
			again, err := s.Candidates(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if again[0].URL != tt.want[0] {
				t.Errorf("caller's change leaked: first candidate is %q", again[0].URL)
			}
		})
	}
}

func TestCandidatesUnprovisioned(t *testing.T) {
	s := &Static{Mirrors: []string{"https://a.example/"}}
	if _, err := s.Candidates(context.Background()); err == nil {
		t.Fatal("got no error before Provision")
	}
}

func TestModule(t *testing.T) {
	mod, err := caddy.GetModule("http.handlers.refractor.providers.static")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mod.New().(pool.Provider); !ok {
		t.Fatalf("%T is not a pool.Provider", mod.New())
	}

	// The JSON form loads into the same field the Caddyfile fills.
	var s Static
	if err := json.Unmarshal([]byte(`{"mirrors":["https://a.example/x"]}`), &s); err != nil {
		t.Fatal(err)
	}
	if err := s.Provision(newContext(t)); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Candidates(context.Background())
	if len(got) != 1 || got[0].URL != "https://a.example/x/" {
		t.Fatalf("candidates = %v", got)
	}
}

func TestConcurrentCandidates(t *testing.T) {
	s := &Static{Mirrors: []string{"https://a.example/", "https://b.example/"}}
	if err := s.Provision(newContext(t)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	for range 8 {
		go func() {
			got, err := s.Candidates(context.Background())
			if err == nil {
				got[0].URL = "x" // must not race with other callers
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
