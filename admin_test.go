package refractor

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-refractor/refractor/internal/testmirror"
	"github.com/caddy-refractor/refractor/pool"
)

// startSites loads a Caddyfile of the test's global options, with
// extraGlobals in them, and the site blocks sites.
func startSites(t *testing.T, extraGlobals, sites string) *caddytest.Tester {
	t.Helper()
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{
		AdminPort:          adminPort,
		TestRequestTimeout: 60 * time.Second,
		LoadRequestTimeout: 10 * time.Second,
	})
	globals := strings.TrimSuffix(globalOptions, "}\n") + extraGlobals + "}\n"
	tester.InitServer(globals+sites, "caddyfile")
	return tester
}

// adminGet makes a request to Caddy's admin API and returns the status and
// body.
func adminGet(t *testing.T, method, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, fmt.Sprintf("http://localhost:%d%s", adminPort, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, body
}

// adminPoolsByName returns GET /refractor/pools, decoded.
func adminPoolsByName(t *testing.T) map[string]PoolStatus {
	t.Helper()
	status, body := adminGet(t, http.MethodGet, "/refractor/pools")
	if status != http.StatusOK {
		t.Fatalf("GET /refractor/pools: status %d: %s", status, body)
	}
	var pools []PoolStatus
	if err := json.Unmarshal(body, &pools); err != nil {
		t.Fatalf("GET /refractor/pools: %v\n%s", err, body)
	}
	out := map[string]PoolStatus{}
	for _, p := range pools {
		out[p.Name] = p
	}
	return out
}

// download GETs the file at rawURL and checks it is want.
func download(t *testing.T, tester *caddytest.Tester, rawURL string, want []byte) *http.Response {
	t.Helper()
	resp, err := tester.Client.Get(rawURL)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != string(want) {
		t.Fatalf("GET %s: status %d, %d bytes; want 200 and the file's %d bytes", rawURL, resp.StatusCode, len(body), len(want))
	}
	return resp
}

// waitIdle waits until no worker of any live pool is busy: a worker is
// released just after its response reaches the client.
func waitIdle(t *testing.T) {
	t.Helper()
	waitFor(t, "every worker to be idle", func() bool {
		for _, ps := range poolStatuses() {
			if ps.Active > 0 {
				return false
			}
		}
		return true
	})
}

// TestAdminPoolsTwoSites: two sites, each with its own refractor pool, both
// appear in GET /refractor/pools with the traffic each served.
func TestAdminPoolsTwoSites(t *testing.T) {
	files := testFiles()
	name := "core/os/x86_64/medium-1.0-1-any.pkg.tar.zst"
	a1, a2, b1 := testmirror.New(t, files), testmirror.New(t, files), testmirror.New(t, files)
	tester := startSites(t, "", fmt.Sprintf(`
http://localhost:%[1]d {
	refractor {
		name site-a
		workers 2
		split 1
		sync_file off
		provider static %[2]s %[3]s
	}
}
http://127.0.0.1:%[1]d {
	refractor {
		name site-b
		workers 1
		split 1
		sync_file off
		provider static %[4]s
	}
}
`, httpPort, a1.Base(), a2.Base(), b1.Base()))
	const nA, nB = 5, 3
	for range nA {
		download(t, tester, fmt.Sprintf("http://localhost:%d/%s", httpPort, name), files[name])
	}
	for range nB {
		download(t, tester, fmt.Sprintf("http://127.0.0.1:%d/%s", httpPort, name), files[name])
	}
	waitIdle(t)

	// The shape: the documented keys, whatever the values.
	status, body := adminGet(t, http.MethodGet, "/refractor/pools")
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	for _, p := range raw {
		for _, key := range []string{"name", "workers", "active", "queued", "rotations", "provider"} {
			if _, ok := p[key]; !ok {
				t.Errorf("a pool has no %q: %s", key, body)
			}
		}
		var workers []map[string]any
		_ = json.Unmarshal(p["workers"], &workers)
		for _, w := range workers {
			for _, key := range []string{"mirror", "state", "score", "samples", "ranked", "busy", "requests", "bytes", "failures", "joined"} {
				if _, ok := w[key]; !ok {
					t.Errorf("a worker has no %q: %v", key, w)
				}
			}
		}
		var provider map[string]any
		_ = json.Unmarshal(p["provider"], &provider)
		if _, ok := provider["last_fetch"]; !ok {
			t.Errorf("the provider status has no last_fetch: %s", p["provider"])
		}
	}

	// The values: each pool's own traffic.
	pools := adminPoolsByName(t)
	for _, tc := range []struct {
		pool    string
		mirrors []string
		n       int
	}{
		{"site-a", []string{a1.Base(), a2.Base()}, nA},
		{"site-b", []string{b1.Base()}, nB},
	} {
		p, ok := pools[tc.pool]
		if !ok {
			t.Errorf("pool %s missing from %v", tc.pool, slices.Sorted(maps.Keys(pools)))
			continue
		}
		var requests, bytes int64
		var mirrors []string
		for _, w := range p.Workers {
			requests += w.Requests
			bytes += w.Bytes
			mirrors = append(mirrors, w.Mirror)
			if w.State != StateTrial && w.State != StateRanked {
				t.Errorf("%s: state %q", w.Mirror, w.State)
			}
			if w.Requests > 0 && w.Score <= 0 {
				t.Errorf("%s: %d requests and no score", w.Mirror, w.Requests)
			}
		}
		slices.Sort(mirrors)
		slices.Sort(tc.mirrors)
		if !slices.Equal(mirrors, tc.mirrors) {
			t.Errorf("%s: mirrors %v, want %v", tc.pool, mirrors, tc.mirrors)
		}
		// Each mirror but the first also made its parallel trial of the
		// first download: its head, as much as a sample needs.
		trials := len(tc.mirrors) - 1
		n, size := tc.n+trials, tc.n*len(files[name])+trials*min(len(files[name]), pool.DefaultMinSampleBytes)
		if requests != int64(n) || bytes != int64(size) {
			t.Errorf("%s: %d requests, %d bytes; want %d and %d", tc.pool, requests, bytes, n, size)
		}
		if p.Provider.LastFetch.IsZero() {
			t.Errorf("%s: the provider was never fetched", tc.pool)
		}
	}

	for _, method := range []string{http.MethodPost, http.MethodDelete} {
		if status, _ := adminGet(t, method, "/refractor/pools"); status != http.StatusMethodNotAllowed {
			t.Errorf("%s /refractor/pools: status %d, want 405", method, status)
		}
	}
}
