package refractor

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// archStatus writes an Arch Linux mirror status document (the real
// schema, version 3) listing the given mirrors.
func archStatus(entries ...string) string {
	return `{"cutoff": 86400, "last_check": "2026-11-22T18:04:12.411Z", "num_checks": 24,
"check_frequency": 3467, "urls": [` + strings.Join(entries, ",\n") + `], "version": 3}`
}

func archStatusEntry(url, country string, completion, score float64, lastSync string) string {
	return fmt.Sprintf(`{"url": %q, "protocol": "http", "last_sync": %q, "completion_pct": %g,
"delay": 1200, "duration_avg": 0.25, "duration_stddev": 0.05, "score": %g, "active": true,
"country": "", "country_code": %q, "isos": true, "ipv4": true, "ipv6": false,
"details": "https://archlinux.org/mirrors/x/1/"}`, url, lastSync, completion, score, country)
}

// TestArchlinuxProvider: Caddy loads a config whose mirrors come from an
// Arch Linux status document, takes only the mirrors that pass its
// filters, serves files byte-identical, and serves the database only from
// the mirror the status says synced last.
func TestArchlinuxProvider(t *testing.T) {
	files := testFiles()
	stale := testFiles()
	stale["core/os/x86_64/core.db"] = testmirror.Content("an older core.db", 40<<10)
	fresh, older := testmirror.New(t, files), testmirror.New(t, stale)
	elsewhere, partial := testmirror.New(t, files), testmirror.New(t, files)

	status := archStatus(
		archStatusEntry(older.Base(), "DE", 1, 1.2, "2026-11-22T16:00:00Z"),
		archStatusEntry(fresh.Base(), "DE", 1, 2.5, "2026-11-22T17:45:51Z"),
		archStatusEntry(elsewhere.Base(), "FR", 1, 0.5, "2026-11-22T17:45:51Z"), // another country
		archStatusEntry(partial.Base(), "DE", 0.5, 0.7, "2026-11-22T17:45:51Z"), // not fully synced
	)
	statusServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status.json" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, status)
	}))
	defer statusServer.Close()

	tester := startCaddy(t, fmt.Sprintf(`
			workers 2
			sync_file off
			provider archlinux {
				url %s/status.json
				countries de
				protocols http
				max_score 5
			}`, statusServer.URL))

	waitFor(t, "both mirrors of the status to join the pool", func() bool {
		for _, ps := range poolStatuses() {
			if len(ps.Workers) == 2 {
				return true
			}
		}
		return false
	})
	for name, want := range files {
		for range 3 {
			resp, body := get(t, tester, newRequest(t, http.MethodGet, name))
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
				t.Fatalf("GET %s: status %d, %d bytes from %s; want the file's %d bytes",
					name, resp.StatusCode, len(body), resp.Header.Get("Refractor-Mirror"), len(want))
			}
			if m := resp.Header.Get("Refractor-Mirror"); m != fresh.Base() && m != older.Base() {
				t.Fatalf("GET %s: served by %s, a mirror the filters exclude", name, m)
			}
		}
	}
	for _, m := range []*testmirror.Mirror{elsewhere, partial} {
		if n := m.Requests(); n != 0 {
			t.Errorf("%s, excluded by the filters, received %d requests", m.Base(), n)
		}
	}
}
