package refractor

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/caddy-refractor/refractor/internal/testmirror"
	"github.com/caddy-refractor/refractor/pool"
)

// scrape is one read of Caddy's /metrics.
type scrape map[string]*dto.MetricFamily

// scrapeMetrics reads Caddy's metrics from the admin endpoint.
func scrapeMetrics(t *testing.T) scrape {
	t.Helper()
	status, body := adminGet(t, http.MethodGet, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d: %s", status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return families
}

// series returns the series of the metric name whose labels include
// labels (name, value pairs).
func (s scrape) series(name string, labels ...string) []*dto.Metric {
	f := s[name]
	if f == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range f.Metric {
		if hasLabels(m, labels...) {
			out = append(out, m)
		}
	}
	return out
}

func hasLabels(m *dto.Metric, labels ...string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.Label {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// value is the sum of the matching series' values (a histogram's count).
func (s scrape) value(name string, labels ...string) float64 {
	var v float64
	for _, m := range s.series(name, labels...) {
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Histogram != nil:
			v += float64(m.Histogram.GetSampleCount())
		}
	}
	return v
}

// mirrorsIn returns the mirror label values of every caddy_refractor_*
// series of the pool named poolName.
func (s scrape) mirrorsIn(poolName string) map[string]bool {
	out := map[string]bool{}
	for name, f := range s {
		if len(name) < len("caddy_refractor_") || name[:len("caddy_refractor_")] != "caddy_refractor_" {
			continue
		}
		for _, m := range f.Metric {
			if !hasLabels(m, "pool", poolName) {
				continue
			}
			for _, lp := range m.Label {
				if lp.GetName() == "mirror" {
					out[lp.GetValue()] = true
				}
			}
		}
	}
	return out
}

// TestMetricsReflectTraffic: after downloads and a file no mirror has, the
// counters say what happened and the per-mirror series agree with the admin
// API.
func TestMetricsReflectTraffic(t *testing.T) {
	files := testFiles()
	a, b := testmirror.New(t, files), testmirror.New(t, files)
	tester := startCaddy(t, fmt.Sprintf(`
			name metrics-traffic
			workers 2
			split 1
			sync_file off
			provider static %s %s`, a.Base(), b.Base()))
	const pkg = "core/os/x86_64/medium-1.0-1-any.pkg.tar.zst"
	const n = 6
	for range n {
		download(t, tester, url(pkg), files[pkg])
	}
	resp, _ := get(t, tester, newRequest(t, http.MethodGet, "core/os/x86_64/core.db.sig"))
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a file no mirror has: status %d, want 404", resp.StatusCode)
	}
	waitIdle(t)

	s := scrapeMetrics(t)
	p := []string{"pool", "metrics-traffic"}
	for _, c := range []struct {
		metric string
		labels []string
		want   float64
	}{
		{"caddy_refractor_requests_total", []string{"outcome", "ok", "code", "200"}, n},
		{"caddy_refractor_requests_total", []string{"outcome", "not_found", "code", "404"}, 1},
		{"caddy_refractor_requests_total", nil, n + 1},
		{"caddy_refractor_response_bytes_total", nil, float64(n * len(files[pkg]))},
		// The 404 was asked of both mirrors.
		{"caddy_refractor_upstream_attempts_total", nil, n + 2},
		{"caddy_refractor_retries_total", nil, 1},
		{"caddy_refractor_upstream_failures_total", []string{"reason", "not_found"}, 2},
		{"caddy_refractor_queue_wait_seconds", nil, n + 2},
		{"caddy_refractor_workers", nil, 2},
		{"caddy_refractor_active_workers", nil, 0},
		{"caddy_refractor_queue_length", nil, 0},
		{"caddy_refractor_rotations_total", nil, 0},
		// And b's parallel trial of the first download: its head, as
		// much as a sample needs.
		{"caddy_refractor_mirror_requests_total", nil, n + 3},
		{"caddy_refractor_mirror_received_bytes_total", nil, float64(n*len(files[pkg]) + min(len(files[pkg]), pool.DefaultMinSampleBytes))},
	} {
		if got := s.value(c.metric, append(c.labels, p...)...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.metric, c.labels, got, c.want)
		}
	}
	if got := s.value("caddy_refractor_provider_fetches_total", p...); got < 1 {
		t.Errorf("caddy_refractor_provider_fetches_total = %v, want at least 1", got)
	}

	// Each mirror's series are the admin API's numbers.
	pools := adminPoolsByName(t)
	workers := pools["metrics-traffic"].Workers
	if len(workers) != 2 {
		t.Fatalf("admin API: %d workers, want 2", len(workers))
	}
	for _, w := range workers {
		m := []string{"pool", "metrics-traffic", "mirror", w.Mirror}
		for _, c := range []struct {
			metric string
			want   float64
		}{
			{"caddy_refractor_mirror_throughput_bytes_per_second", w.Score},
			{"caddy_refractor_mirror_samples", float64(w.Samples)},
			{"caddy_refractor_mirror_requests_total", float64(w.Requests)},
			{"caddy_refractor_mirror_received_bytes_total", float64(w.Bytes)},
			{"caddy_refractor_mirror_failures_total", float64(w.Failures)},
		} {
			if len(s.series(c.metric, m...)) != 1 {
				t.Errorf("%s{mirror=%q}: %d series, want 1", c.metric, w.Mirror, len(s.series(c.metric, m...)))
			} else if got := s.value(c.metric, m...); got != c.want {
				t.Errorf("%s{mirror=%q} = %v, the admin API says %v", c.metric, w.Mirror, got, c.want)
			}
		}
		if w.Requests > 0 && w.Score <= 0 {
			t.Errorf("%s served %d requests and has no score", w.Mirror, w.Requests)
		}
	}
}

// resignationConfig is a pool of two workers where a slow mirror, listed
// first, resigns as soon as it and a fast one are ranked.
func resignationConfig(name string, slow, fast, spare *testmirror.Mirror) string {
	return fmt.Sprintf(`
			name %s
			workers 2
			resign 1
			trial 2
			window 4
			split 1
			good_throughput 32MiB
			peek_timeout 5s
			sync_file off
			provider static %s %s %s`, name, slow.Base(), fast.Base(), spare.Base())
}

// driveUntilResigned downloads files one at a time until the pool named
// poolName reports a resignation, and returns that rotation.
func driveUntilResigned(t *testing.T, tester *caddytest.Tester, poolName string, files map[string][]byte) pool.Rotation {
	t.Helper()
	const pkg = "core/os/x86_64/medium-1.0-1-any.pkg.tar.zst"
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		download(t, tester, url(pkg), files[pkg])
		for _, ps := range poolStatuses() {
			if ps.Name != poolName {
				continue
			}
			for _, r := range ps.Rotations {
				if r.Reason == pool.ReasonResigned {
					return r
				}
			}
		}
	}
	t.Fatal("no mirror resigned within 30s")
	return pool.Rotation{}
}

// TestMetricsForgetResignedMirror: a mirror that resigned has no series
// left, its rotation is counted, and the mirrors in the pool keep theirs.
func TestMetricsForgetResignedMirror(t *testing.T) {
	files := testFiles()
	slow, fast, spare := testmirror.New(t, files), testmirror.New(t, files), testmirror.New(t, files)
	slow.SetRate(512 << 10)
	tester := startCaddy(t, resignationConfig("metrics-resign", slow, fast, spare))

	before := scrapeMetrics(t)
	r := driveUntilResigned(t, tester, "metrics-resign", files)
	if r.Mirror != slow.Base() {
		t.Errorf("%s resigned, want the slow %s", r.Mirror, slow.Base())
	}
	if !before.mirrorsIn("metrics-resign")[slow.Base()] {
		t.Errorf("before it resigned, %s had no series", slow.Base())
	}
	waitIdle(t)

	// The pool before the scrape: a replacement that joins in between has
	// series but is not checked, rather than checked and missing.
	inPool := map[string]bool{}
	for _, w := range adminPoolsByName(t)["metrics-resign"].Workers {
		inPool[w.Mirror] = true
	}
	s := scrapeMetrics(t)
	if inPool[r.Mirror] {
		t.Fatalf("%s is back in the pool already", r.Mirror)
	}
	series := s.mirrorsIn("metrics-resign")
	if series[r.Mirror] {
		t.Errorf("%s resigned and still has series", r.Mirror)
	}
	for m := range inPool {
		if !series[m] {
			t.Errorf("%s is in the pool and has no series", m)
		}
	}
	if got := s.value("caddy_refractor_rotations_total", "pool", "metrics-resign", "reason", pool.ReasonResigned); got < 1 {
		t.Errorf("caddy_refractor_rotations_total{reason=resigned} = %v, want at least 1", got)
	}
}

// TestMetricsSurviveOtherSitesReload: reloading a config that drops one
// site's pool forgets that pool's series and keeps those of a pool that
// lives on under the same name.
func TestMetricsSurviveOtherSitesReload(t *testing.T) {
	files := testFiles()
	a, b := testmirror.New(t, files), testmirror.New(t, files)
	site := func(host, name string, m *testmirror.Mirror) string {
		return fmt.Sprintf(`
http://%s:%d {
	refractor {
		name %s
		sync_file off
		provider static %s
	}
}
`, host, httpPort, name, m.Base())
	}
	const pkg = "core/os/x86_64/small-1.0-1-any.pkg.tar.zst"
	tester := startSites(t, "", site("localhost", "reload-kept", a)+site("127.0.0.1", "reload-dropped", b))
	download(t, tester, fmt.Sprintf("http://localhost:%d/%s", httpPort, pkg), files[pkg])
	download(t, tester, fmt.Sprintf("http://127.0.0.1:%d/%s", httpPort, pkg), files[pkg])
	waitIdle(t)

	startSites(t, "", site("localhost", "reload-kept", a)) // the other site is gone
	waitFor(t, "the kept pool to take its mirror back", func() bool {
		for _, ps := range poolStatuses() {
			if ps.Name == "reload-kept" && len(ps.Workers) == 1 {
				return true
			}
		}
		return false
	})
	s := scrapeMetrics(t)
	if got := s.value("caddy_refractor_requests_total", "pool", "reload-kept"); got != 1 {
		t.Errorf("the kept pool's requests_total = %v after the reload, want 1", got)
	}
	if got := s.value("caddy_refractor_response_bytes_total", "pool", "reload-kept"); got != float64(len(files[pkg])) {
		t.Errorf("the kept pool's response_bytes_total = %v after the reload, want %d", got, len(files[pkg]))
	}
	if !s.mirrorsIn("reload-kept")[a.Base()] {
		t.Errorf("the kept pool's mirror %s has no series after the reload", a.Base())
	}
	for name, f := range s {
		for _, m := range f.Metric {
			if hasLabels(m, "pool", "reload-dropped") {
				t.Errorf("%s still has a series of the dropped pool", name)
			}
		}
	}
}
