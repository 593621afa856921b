package refractor

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/filecache"
)

var update = flag.Bool("update", false, "rewrite the golden files of the tests that have them")

// recordedAt is when testdata/admin_pools.json was recorded (from
// `make demo`): the table shows times relative to it.
var recordedAt = time.Date(2026, 11, 23, 6, 9, 12, 0, time.UTC)

// TestRenderPools renders a recorded admin API answer as `caddy refractor`
// prints it, and compares it with testdata/refractor_cmd.golden (go test
// -run TestRenderPools -update rewrites it).
func TestRenderPools(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "admin_pools.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pools []PoolStatus
	if err := json.Unmarshal(data, &pools); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	renderPools(&got, pools, recordedAt)

	golden := filepath.Join("testdata", "refractor_cmd.golden")
	if *update {
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("renderPools differs from %s (-update rewrites it):\n--- got\n%s\n--- want\n%s", golden, got.Bytes(), want)
	}
}

func TestRenderCaches(t *testing.T) {
	var got bytes.Buffer
	renderCaches(&got, []CacheStatus{{
		Stats: filecache.Stats{Dir: "/var/cache/refractor", Files: 120, Size: 3 << 30, Filling: 2, MaxSize: 50 << 30, MinFree: 5 << 30, Evicted: 4},
		Hits:  900, Misses: 120, ServedBytes: 12 << 30, SavedBytes: 9 << 30,
	}})
	want := `
cache /var/cache/refractor: 120 files, 3.0 GiB of 50 GiB (min_free 5.0 GiB), 2 filling
  900 hits, 120 misses; 12 GiB served, 9.0 GiB of it not from the Internet; 4 evicted, 0 write errors
`
	if got.String() != want {
		t.Errorf("got\n%s\nwant\n%s", got.String(), want)
	}
}

func TestRenderNoPools(t *testing.T) {
	var got bytes.Buffer
	renderPools(&got, nil, recordedAt)
	if got.String() != "no refractor pool is running\n" {
		t.Errorf("got %q", got.String())
	}
}

func TestAgo(t *testing.T) {
	now := recordedAt
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "never"},
		{now.Add(time.Second), "0s ago"}, // clocks disagree: not in the future
		{now.Add(-1400 * time.Millisecond), "1s ago"},
		{now.Add(-(5*time.Minute + 7*time.Second)), "5m07s ago"},
		{now.Add(-(3*time.Hour + 2*time.Minute + 59*time.Second)), "3h02m ago"},
		{now.Add(-(52 * time.Hour)), "2d04h ago"},
	} {
		if got := ago(now, tc.t); got != tc.want {
			t.Errorf("ago(%v) = %q, want %q", now.Sub(tc.t), got, tc.want)
		}
	}
}
