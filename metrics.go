package refractor

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Prometheus metrics, in Caddy's registry as caddy_refractor_*. Every series
// has a pool label (the handler's name), so that several sites keep theirs
// apart. The collectors live at package level: Caddy makes a new registry
// for every config load, and each load registers them again.
//
// Counters the pool reports as things happen are kept here; what describes
// a pool as it is now (its workers, their scores, the queue) is read from the
// live pools at scrape time by poolCollector, so a mirror's series go as
// soon as it leaves the pool and always agree with the admin API.

const (
	metricsNamespace = "caddy"
	metricsSubsystem = "refractor"
)

// metrics are the counters and histograms the pools' observers feed.
var metrics = struct {
	requests        *prometheus.CounterVec
	bytes           *prometheus.CounterVec
	queueWait       *prometheus.HistogramVec
	attempts        *prometheus.CounterVec
	retries         *prometheus.CounterVec
	failures        *prometheus.CounterVec
	rotations       *prometheus.CounterVec
	providerFetches *prometheus.CounterVec
	providerErrors  *prometheus.CounterVec
	eventsDropped   *prometheus.CounterVec
	refetched       *prometheus.CounterVec
	verifyFailures  *prometheus.CounterVec
	storageErrors   *prometheus.CounterVec
	cacheHits       *prometheus.CounterVec
	cacheMisses     *prometheus.CounterVec
	cacheServed     *prometheus.CounterVec
	cacheSaved      *prometheus.CounterVec
}{
	requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "requests_total",
		Help: "Requests the pool finished, by outcome and the status sent to the client (0: aborted after it was committed; 499: the client went away).",
	}, []string{"pool", "outcome", "code"}),
	bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "response_bytes_total",
		Help: "Body bytes sent to clients.",
	}, []string{"pool"}),
	queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name:    "queue_wait_seconds",
		Help:    "How long requests waited for a free worker (each attempt waits anew).",
		Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"pool"}),
	attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "upstream_attempts_total",
		Help: "Workers that took a request: one per request, plus one per retry.",
	}, []string{"pool"}),
	retries: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "retries_total",
		Help: "Attempts beyond the first of each request.",
	}, []string{"pool"}),
	failures: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "upstream_failures_total",
		Help: "Upstream attempts that failed, by reason (peek_timeout, stalled, trickle, not_found, status, continuation, error).",
	}, []string{"pool", "reason"}),
	rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "rotations_total",
		Help: "Mirrors that left the pool, by reason (resigned, evicted).",
	}, []string{"pool", "reason"}),
	providerFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "provider_fetches_total",
		Help: "Times the provider was asked for candidate mirrors.",
	}, []string{"pool"}),
	providerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "provider_errors_total",
		Help: "Times the provider failed to hand out candidates.",
	}, []string{"pool"}),
	eventsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "events_dropped_total",
		Help: "Caddy events not emitted because the event queue was full.",
	}, []string{"pool"}),
	verifyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "verify_failures_total",
		Help: "Files whose bytes did not match the hash the repository's index gives (the client's response was aborted, or the file fetched elsewhere).",
	}, []string{"pool"}),
	storageErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "storage_errors_total",
		Help: "Failed operations (list, load, save, delete) on the storage that keeps what the pools learned; the process keeps going without it. Not per pool: the learned state is the process's.",
	}, []string{"op"}),
	refetched: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "refetched_bytes_total",
		Help: "Bytes read from mirrors, dropped unsent while their client was not reading (a parked transfer), and fetched again.",
	}, []string{"pool"}),
	cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "cache_hits_total",
		Help: "Requests the LAN cache answered without a transfer of their own: from a complete file, or from one another request is bringing in.",
	}, []string{"pool"}),
	cacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "cache_misses_total",
		Help: "Requests for a file the LAN cache keeps that it did not have: the request started its fill, or the file could not be cached (no room).",
	}, []string{"pool"}),
	cacheServed: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "cache_served_bytes_total",
		Help: "Body bytes sent to clients from the LAN cache's files (complete or on their way in).",
	}, []string{"pool"}),
	cacheSaved: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "cache_saved_bytes_total",
		Help: "Body bytes sent to clients from the LAN cache that did not cross the Internet for them.",
	}, []string{"pool"}),
}

// collectors is everything registerMetrics registers.
func collectors() []prometheus.Collector {
	return []prometheus.Collector{
		metrics.requests, metrics.bytes, metrics.queueWait, metrics.attempts, metrics.retries,
		metrics.failures, metrics.rotations, metrics.providerFetches, metrics.providerErrors,
		metrics.eventsDropped, metrics.refetched, metrics.verifyFailures, metrics.storageErrors,
		metrics.cacheHits, metrics.cacheMisses, metrics.cacheServed, metrics.cacheSaved,
		poolCollector{}, cacheCollector{},
	}
}

// registerMetrics registers the collectors in reg. Several handlers register
// into the same registry: a collector that is already there is fine.
func registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range collectors() {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// poolMetrics are the series of one named pool.
type poolMetrics struct {
	name            string
	requests        *prometheus.CounterVec // outcome, code
	bytes           prometheus.Counter
	queueWait       prometheus.Observer
	attempts        prometheus.Counter
	retries         prometheus.Counter
	failures        *prometheus.CounterVec // reason
	rotations       *prometheus.CounterVec // reason
	providerFetches prometheus.Counter
	providerErrors  prometheus.Counter
	eventsDropped   prometheus.Counter
	refetched       prometheus.Counter
	verifyFailures  prometheus.Counter
	cacheHits       prometheus.Counter
	cacheMisses     prometheus.Counter
	cacheServed     prometheus.Counter
	cacheSaved      prometheus.Counter
}

// newPoolMetrics returns the series of the pool named name, creating those
// without further labels at zero so that rates start at once.
func newPoolMetrics(name string) *poolMetrics {
	l := prometheus.Labels{"pool": name}
	return &poolMetrics{
		name:            name,
		requests:        metrics.requests.MustCurryWith(l),
		bytes:           metrics.bytes.With(l),
		queueWait:       metrics.queueWait.With(l),
		attempts:        metrics.attempts.With(l),
		retries:         metrics.retries.With(l),
		failures:        metrics.failures.MustCurryWith(l),
		rotations:       metrics.rotations.MustCurryWith(l),
		providerFetches: metrics.providerFetches.With(l),
		providerErrors:  metrics.providerErrors.With(l),
		eventsDropped:   metrics.eventsDropped.With(l),
		refetched:       metrics.refetched.With(l),
		verifyFailures:  metrics.verifyFailures.With(l),
		cacheHits:       metrics.cacheHits.With(l),
		cacheMisses:     metrics.cacheMisses.With(l),
		cacheServed:     metrics.cacheServed.With(l),
		cacheSaved:      metrics.cacheSaved.With(l),
	}
}

// forget deletes the pool's series, unless a pool of the same name is
// live: after a reload the new pool carries them on.
func (m *poolMetrics) forget() {
	if poolLive(m.name) {
		return
	}
	l := prometheus.Labels{"pool": m.name}
	metrics.requests.DeletePartialMatch(l)
	metrics.bytes.DeletePartialMatch(l)
	metrics.queueWait.DeletePartialMatch(l)
	metrics.attempts.DeletePartialMatch(l)
	metrics.retries.DeletePartialMatch(l)
	metrics.failures.DeletePartialMatch(l)
	metrics.rotations.DeletePartialMatch(l)
	metrics.providerFetches.DeletePartialMatch(l)
	metrics.providerErrors.DeletePartialMatch(l)
	metrics.eventsDropped.DeletePartialMatch(l)
	metrics.refetched.DeletePartialMatch(l)
	metrics.verifyFailures.DeletePartialMatch(l)
	metrics.cacheHits.DeletePartialMatch(l)
	metrics.cacheMisses.DeletePartialMatch(l)
	metrics.cacheServed.DeletePartialMatch(l)
	metrics.cacheSaved.DeletePartialMatch(l)
}

// requestDone counts a finished request.
func (m *poolMetrics) requestDone(status, attempts int, bytes int64) {
	m.requests.WithLabelValues(requestOutcome(status), strconv.Itoa(status)).Inc()
	m.bytes.Add(float64(bytes))
	m.attempts.Add(float64(attempts))
	if attempts > 1 {
		m.retries.Add(float64(attempts - 1))
	}
}

func (m *poolMetrics) queued(d time.Duration) { m.queueWait.Observe(d.Seconds()) }

// Request outcomes, the outcome label of caddy_refractor_requests_total.
const (
	outcomeOK          = "ok"           // a mirror's answer reached the client whole
	outcomeClientError = "client_error" // a mirror's 4xx for the client's request, such as 416
	outcomeNotFound    = "not_found"    // no mirror has the file
	outcomeFailed      = "failed"       // every mirror tried failed: 502
	outcomeUnavailable = "unavailable"  // no worker free in time, or the queue full: 503
	outcomeClientGone  = "client_gone"  // the client went away
	outcomeAborted     = "aborted"      // committed, then no mirror could finish it
)

// requestOutcome classifies the status a request finished with.
func requestOutcome(status int) string {
	switch {
	case status == 0:
		return outcomeAborted
	case status == 499:
		return outcomeClientGone
	case status == http.StatusNotFound || status == http.StatusGone:
		return outcomeNotFound
	case status == http.StatusServiceUnavailable:
		return outcomeUnavailable
	case status == http.StatusBadGateway:
		return outcomeFailed
	case status >= 400:
		return outcomeClientError
	}
	return outcomeOK
}

// Descriptions of the series poolCollector reads from the live pools.
var (
	descWorkers = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "workers"),
		"Workers (mirrors) in the pool.", []string{"pool"}, nil)
	descActive = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "active_workers"),
		"Workers serving a transfer now.", []string{"pool"}, nil)
	descQueue = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "queue_length"),
		"Requests waiting for a free worker.", []string{"pool"}, nil)
	descScore = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "mirror_throughput_bytes_per_second"),
		"A mirror's score: the average throughput of its last samples, which the pool ranks by.",
		[]string{"pool", "mirror"}, nil)
	descSamples = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "mirror_samples"),
		"Throughput samples in a mirror's averaging window.", []string{"pool", "mirror"}, nil)
	descRanked = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "mirror_ranked"),
		"1 if the mirror has finished its trial and is ranked, 0 while on trial.", []string{"pool", "mirror"}, nil)
	descMirrorRequests = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "mirror_requests_total"),
		"Transfers a mirror took on (counted since the pool first met it).", []string{"pool", "mirror"}, nil)
	descMirrorBytes = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "mirror_received_bytes_total"),
		"Body bytes received from a mirror.", []string{"pool", "mirror"}, nil)
	descPeers = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "peers"),
		"Peers (other refractor instances' caches) in the pool; they are not counted in workers.", []string{"pool"}, nil)
	descPeerBytes = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "peer_received_bytes_total"),
		"Body bytes received from peers rather than mirrors: what the peers saved the Internet (counted since the pool met each peer present).", []string{"pool"}, nil)
	descMirrorFailures = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "mirror_failures_total"),
		"Failures counted against a mirror.", []string{"pool", "mirror"}, nil)
)

// poolCollector reports the live pools' workers and queues at scrape time.
type poolCollector struct{}

// Describe sends the descriptions of the series poolCollector reports.
func (poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWorkers, descActive, descQueue, descScore, descSamples,
		descRanked, descMirrorRequests, descMirrorBytes, descMirrorFailures, descPeers, descPeerBytes} {
		ch <- d
	}
}

// Collect reports the series of every live pool. While a reload runs, the
// old and the new pool of one name are both live: the newer one speaks.
func (poolCollector) Collect(ch chan<- prometheus.Metric) {
	statuses := poolStatuses()
	seen := make(map[string]bool, len(statuses))
	for i := len(statuses) - 1; i >= 0; i-- {
		ps := statuses[i]
		if seen[ps.Name] {
			continue
		}
		seen[ps.Name] = true
		peers, peerBytes := 0, int64(0)
		for _, w := range ps.Workers {
			if w.Peer {
				peers++
				peerBytes += w.Bytes
			}
		}
		ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(len(ps.Workers)-peers), ps.Name)
		ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(peers), ps.Name)
		ch <- prometheus.MustNewConstMetric(descPeerBytes, prometheus.CounterValue, float64(peerBytes), ps.Name)
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(ps.Active), ps.Name)
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(ps.Queued), ps.Name)
		for _, w := range ps.Workers {
			ranked := 0.0
			if w.Ranked {
				ranked = 1
			}
			for _, m := range []struct {
				desc  *prometheus.Desc
				typ   prometheus.ValueType
				value float64
			}{
				{descScore, prometheus.GaugeValue, w.Score},
				{descSamples, prometheus.GaugeValue, float64(w.Samples)},
				{descRanked, prometheus.GaugeValue, ranked},
				{descMirrorRequests, prometheus.CounterValue, float64(w.Requests)},
				{descMirrorBytes, prometheus.CounterValue, float64(w.Bytes)},
				{descMirrorFailures, prometheus.CounterValue, float64(w.Failures)},
			} {
				ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value, ps.Name, w.Mirror)
			}
		}
	}
}

// Descriptions of the series cacheCollector reads from the open caches.
var (
	descCacheSize = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "cache_size_bytes"),
		"Bytes of the complete files in a LAN cache.", []string{"dir"}, nil)
	descCacheFiles = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "cache_files"),
		"Complete files in a LAN cache.", []string{"dir"}, nil)
	descCacheEvicted = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "cache_evicted_total"),
		"Files a LAN cache evicted to stay within max_size and min_free (since it was opened).", []string{"dir"}, nil)
	descCacheWriteErrors = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "cache_write_errors_total"),
		"Fills a LAN cache could not write (a full disk, an I/O error); their clients were served from the mirrors.", []string{"dir"}, nil)
)

// cacheCollector reports the open caches at scrape time.
type cacheCollector struct{}

// Describe sends the descriptions of the series cacheCollector reports.
func (cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCacheSize, descCacheFiles, descCacheEvicted, descCacheWriteErrors} {
		ch <- d
	}
}

// Collect reports the series of every open cache.
func (cacheCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range cacheStats() {
		ch <- prometheus.MustNewConstMetric(descCacheSize, prometheus.GaugeValue, float64(st.Size), st.Dir)
		ch <- prometheus.MustNewConstMetric(descCacheFiles, prometheus.GaugeValue, float64(st.Files), st.Dir)
		ch <- prometheus.MustNewConstMetric(descCacheEvicted, prometheus.CounterValue, float64(st.Evicted), st.Dir)
		ch <- prometheus.MustNewConstMetric(descCacheWriteErrors, prometheus.CounterValue, float64(st.WriteErrors), st.Dir)
	}
}

// Interface guards.
var (
	_ prometheus.Collector = poolCollector{}
	_ prometheus.Collector = cacheCollector{}
)
