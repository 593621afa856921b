package refractor

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// loadCaddyfile adapts a Caddyfile and, if that works, validates the JSON
// the way `caddy validate` does: modules are provisioned, then cleaned up.
func loadCaddyfile(caddyfileText string) error {
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfgJSON, _, err := adapter.Adapt([]byte(caddyfileText), nil)
	if err != nil {
		return err
	}
	var cfg caddy.Config
	if err := caddy.StrictUnmarshalJSON(cfgJSON, &cfg); err != nil {
		return err
	}
	return caddy.Validate(&cfg)
}

func TestConfigErrorsNameTheDirective(t *testing.T) {
	for _, tc := range []struct {
		block string
		want  string
	}{
		{"workers 0", "workers"},
		{"workers many", "workers"},
		{"workers 1 2", "workers"},
		{"window -3", "window"},
		{"resign x", "resign"},
		{"workers 2\nresign 2", "resign"},
		{"trial 0", "trial"},
		{"window 4\ntrial 5", "trial"},
		{"good_throughput fast", "good_throughput"},
		{"peek_size", "peek_size"},
		{"peek_size 0", "peek_size"},
		{"min_sample lots", "min_sample"},
		{"peek_timeout soon", "peek_timeout"},
		{"peek_timeout -1s", "peek_timeout"},
		{"retries -1", "retries"},
		{"max_queue 0", "max_queue"},
		{"queue_timeout 0s", "queue_timeout"},
		{"dial_timeout x", "dial_timeout"},
		{"header_timeout x", "header_timeout"},
		{"stall_timeout x", "stall_timeout"},
		{"cooldown x", "cooldown"},
		{"evict_after 0", "evict_after"},
		{"split 0", "split"},
		{"changing_paths", "changing_paths"},
		{"verify maybe", "verify"},
		{"verify", "verify"},
		{"changing_paths [", "changing_paths"},
		{"no_such_option 1", "no_such_option"},
		{"provider", "provider"},
		{"provider nosuch", "nosuch"},
		{"provider static ftp://m.example/arch/", "ftp://m.example/arch/"},
		{"provider static https://a.example/ https://a.example", "duplicates"},
		{"provider command", "command"},
		{"provider static https://a.example/\nprovider static https://b.example/", "already"},
		{"workers 3", "provider"}, // no provider at all
		{"share", "share"},
		{"share a b", "share"},
		{"save_interval 0s", "save_interval"},
		{"storage", "storage"},
		{"storage nosuch", "nosuch"},
		{"storage file_system /tmp/a\nstorage file_system /tmp/b", "already"},
		{"cache", "cache"},
		{"cache /tmp/a /tmp/b", "cache"},
		{"cache /tmp/a {\nmax_size big\n}", "max_size"},
		{"cache /tmp/a {\nmin_free 0\n}", "min_free"},
		{"cache /tmp/a {\nmax_age 1d\n}", "max_age"},
		{"cache /tmp/a\ncache /tmp/b", "already"},
		{"cache /dev/null/cache\nprovider static https://a.example/", "cache"}, // cannot be created
		{"peers", "peers"},
		{"peers ftp://peer.lan/arch/\nprovider static https://a.example/", "peers"},
		{"peer_url", "peer_url"},
		{"peer_url not-a-url\nprovider static https://a.example/", "peer_url"},
		{"peer_url http://gw1.lan/arch/\nprovider static https://a.example/", "peer_url"}, // no cache
		{"serve_peers maybe", "serve_peers"},
		{"peer_load 0", "peer_load"},
	} {
		t.Run(strings.ReplaceAll(tc.block, "\n", ";"), func(t *testing.T) {
			err := loadCaddyfile(":0 {\n\trefractor {\n\t\t" + strings.ReplaceAll(tc.block, "\n", "\n\t\t") + "\n\t}\n}\n")
			if err == nil {
				t.Fatalf("config loaded; want an error naming %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
		})
	}
}

func TestCaddyfileAdapt(t *testing.T) {
	paths, err := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no adapt tests found: %v", err)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			caddyfileText, wantJSON, ok := strings.Cut(string(data), "\n----------\n")
			if !ok {
				t.Fatalf("%s: no ---------- separator", path)
			}
			if !caddytest.CompareAdapt(t, path, caddyfileText, "caddyfile", strings.TrimSuffix(wantJSON, "\n")) {
				t.Fail()
			}
		})
	}
}

// TestShippedConfigsLoad keeps Caddyfile.example and the README's Caddyfile
// examples from rotting: each must adapt and validate.
func TestShippedConfigsLoad(t *testing.T) {
	example, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := loadCaddyfile(string(example)); err != nil {
		t.Errorf("Caddyfile.example: %v", err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```caddyfile\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```caddyfile blocks")
	}
	for i, b := range blocks {
		// Provisioning a cache creates its directory: not in /var/cache.
		text := strings.ReplaceAll(b[1], "/var/cache/refractor", t.TempDir())
		if err := loadCaddyfile(text); err != nil {
			t.Errorf("README.md Caddyfile block %d: %v\n%s", i+1, err, b[1])
		}
	}
}
