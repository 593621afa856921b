package refractor

import (
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-refractor/refractor/pool"
)

// observer is told what happens in one pool and passes it on to the pool's
// metrics, Caddy events and debug logs. The pool may call it with its lock
// held: every method is quick and none calls back into the pool.
type observer struct {
	metrics *poolMetrics
	events  *eventQueue
	log     *zap.Logger

	mu     sync.Mutex
	scores map[string]float64 // the last score this pool gave each mirror
}

// maxScores bounds observer.scores; it starts over when full.
const maxScores = 4096

// newObserver returns the observer of the pool named name.
func newObserver(name string, log *zap.Logger) *observer {
	m := newPoolMetrics(name)
	return &observer{
		metrics: m,
		events:  newEventQueue(name, m.eventsDropped.Inc),
		log:     log,
		scores:  map[string]float64{},
	}
}

// close stops emitting events and forgets the pool's metrics, unless a
// pool of the same name took over.
func (o *observer) close() {
	o.events.close()
	o.metrics.forget()
}

// MirrorJoined emits refractor.mirror_joined, with the last score the pool
// gave the mirror if it was here before (0 for a new one).
func (o *observer) MirrorJoined(mirror string) {
	o.mu.Lock()
	score := o.scores[mirror]
	o.mu.Unlock()
	o.events.push(mirrorEvent{name: EventMirrorJoined, mirror: mirror, score: score, reason: "joined"})
}

// MirrorLeft counts a rotation and emits refractor.mirror_resigned or
// refractor.mirror_evicted.
func (o *observer) MirrorLeft(mirror, reason string, score float64) {
	name := leaveEvent(reason)
	if name == "" {
		return
	}
	o.metrics.rotations.WithLabelValues(reason).Inc()
	o.events.push(mirrorEvent{name: name, mirror: mirror, score: score, reason: reason})
}

// Refetched counts bytes fetched again after a parked transfer dropped
// them.
func (o *observer) Refetched(bytes int64) { o.metrics.refetched.Add(float64(bytes)) }

// AttemptFailed counts an upstream failure. The pool logs it.
func (o *observer) AttemptFailed(_, reason string) {
	o.metrics.failures.WithLabelValues(reason).Inc()
}

// RequestDone counts a finished request. The pool logs it.
func (o *observer) RequestDone(_ string, status, attempts int, bytes int64, _ time.Duration) {
	o.metrics.requestDone(status, attempts, bytes)
}

// Scored logs, at debug, a mirror's new score: the input of every ranking
// decision.
func (o *observer) Scored(mirror string, bytesPerSecond float64) {
	o.mu.Lock()
	previous, known := o.scores[mirror]
	if !known && len(o.scores) >= maxScores {
		clear(o.scores)
	}
	o.scores[mirror] = bytesPerSecond
	o.mu.Unlock()
	if ce := o.log.Check(zap.DebugLevel, "mirror scored"); ce != nil {
		fields := []zap.Field{zap.String("mirror", mirror), zap.Float64("score_bps", bytesPerSecond)}
		if known {
			fields = append(fields, zap.Float64("previous_bps", previous))
		}
		ce.Write(fields...)
	}
}

// VerifyFailed counts a file that failed its check and, when one mirror
// served all of it, emits refractor.mirror_lied naming it. The pool logs
// it.
func (o *observer) VerifyFailed(mirrors []string, _ string) {
	o.metrics.verifyFailures.Inc()
	if len(mirrors) == 1 {
		o.events.push(mirrorEvent{name: EventMirrorLied, mirror: mirrors[0], reason: pool.ReasonLied})
	}
}

// Queued observes how long a request waited for a worker.
func (o *observer) Queued(d time.Duration) { o.metrics.queued(d) }

// ProviderFetched counts a call to the provider and its failure. The pool
// logs failures.
func (o *observer) ProviderFetched(err error) {
	o.metrics.providerFetches.Inc()
	if err != nil {
		o.metrics.providerErrors.Inc()
	}
}

// Interface guards.
var _ pool.Observer = (*observer)(nil)
