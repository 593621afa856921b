package pool

import (
	"sync"
	"time"
)

// State is what a pool learns about mirrors: throughput windows, failure
// streaks, cool-downs and which mirrors were last in the pool. It is safe
// for concurrent use and may be shared by successive pools (across a config
// reload) so that the learned ranking survives.
type State struct {
	mu       sync.Mutex
	mirrors  map[string]*mirrorStats
	cooldown map[string]time.Time
	members  []string
}

// NewState returns an empty State.
func NewState() *State {
	return &State{
		mirrors:  make(map[string]*mirrorStats),
		cooldown: make(map[string]time.Time),
	}
}

// mirrorStats is the moving window of throughput samples of one mirror.
// Samples are rates in bytes per second; a failure is a zero sample.
// Transfers smaller than the sample minimum are coalesced until their sum is
// large enough, so that many small, latency-bound transfers still add up to a
// sample without any single one of them deciding the rank.
type mirrorStats struct {
	samples []float64 // ring buffer, len == window
	count   int       // valid samples, at most len(samples)
	next    int       // index of the next write

	pendingBytes int64
	pendingTime  time.Duration

	failStreak int

	// Lifetime counters, for the status view.
	requests int64
	bytes    int64
	failures int64
}

// stats returns the stats of mirror, creating them with the given window.
func (s *State) stats(mirror string, window int) *mirrorStats {
	ms := s.mirrors[mirror]
	if ms == nil {
		ms = &mirrorStats{samples: make([]float64, window)}
		s.mirrors[mirror] = ms
	} else if len(ms.samples) != window {
		ms.resize(window)
	}
	return ms
}

// resize keeps the newest samples that fit a window of the new size.
func (ms *mirrorStats) resize(window int) {
	kept := ms.recent(window)
	ms.samples = make([]float64, window)
	ms.count, ms.next = 0, 0
	for _, v := range kept {
		ms.push(v)
	}
}

// recent returns up to n samples, oldest first.
func (ms *mirrorStats) recent(n int) []float64 {
	n = min(n, ms.count)
	out := make([]float64, 0, n)
	for i := n; i > 0; i-- {
		idx := (ms.next - i + len(ms.samples)) % len(ms.samples)
		out = append(out, ms.samples[idx])
	}
	return out
}

func (ms *mirrorStats) push(rate float64) {
	ms.samples[ms.next] = rate
	ms.next = (ms.next + 1) % len(ms.samples)
	if ms.count < len(ms.samples) {
		ms.count++
	}
}

// addTransfer records a successful transfer of n bytes that kept the mirror
// busy for d. It returns true when a sample was added to the window.
func (ms *mirrorStats) addTransfer(n int64, d time.Duration, minBytes int64) bool {
	ms.failStreak = 0
	ms.pendingBytes += n
	ms.pendingTime += d
	if ms.pendingBytes < minBytes {
		return false
	}
	secs := max(ms.pendingTime.Seconds(), 1e-6)
	ms.push(float64(ms.pendingBytes) / secs)
	ms.pendingBytes, ms.pendingTime = 0, 0
	return true
}

// addFailure records a failed transfer as a zero sample.
func (ms *mirrorStats) addFailure() {
	ms.failStreak++
	ms.failures++
	ms.push(0)
}

// score is the mean of the samples in the window, in bytes per second.
func (ms *mirrorStats) score() float64 {
	if ms.count == 0 {
		return 0
	}
	var sum float64
	for _, v := range ms.recent(ms.count) {
		sum += v
	}
	return sum / float64(ms.count)
}

// coolingDown reports whether mirror was evicted recently, forgetting
// cool-downs that have expired.
func (s *State) coolingDown(mirror string, now time.Time) bool {
	until, ok := s.cooldown[mirror]
	if !ok {
		return false
	}
	if now.Before(until) {
		return true
	}
	delete(s.cooldown, mirror)
	return false
}
