package pool

import (
	"math"
	"sync"
	"time"
)

// State is what pools learn about mirrors, per mirror (its base URL):
// throughput windows, failure streaks and cool-downs; and which mirrors
// each pool, by name, last had. It is safe for concurrent use and may be
// shared by any number of pools, at once and in succession (across a
// config reload), so that what one pool learned of a mirror serves every
// pool that meets it.
type State struct {
	mu       sync.Mutex
	mirrors  map[string]*mirrorStats
	cooldown map[string]time.Time
	resigned map[string]bool     // cooling down for being slow, not for failing
	members  map[string][]member // by MembersKey
	liars    map[string]bool     // cooling down for lying (verify.go)
}

// NewState returns an empty State.
func NewState() *State {
	return &State{
		mirrors:  make(map[string]*mirrorStats),
		cooldown: make(map[string]time.Time),
		resigned: make(map[string]bool),
		members:  make(map[string][]member),
		liars:    make(map[string]bool),
	}
}

// member is a mirror a pool had, and the samples it still had to show
// before it could resign (see worker.probation): a pool that takes its
// members back, after a reload or a restart, keeps them on the same terms.
type member struct {
	Candidate
	probation int
}

// mirrorStats is the moving window of throughput samples of one mirror.
// Each sample is bytes moved in a time; the score is the window's bytes over
// its time, so a long transfer weighs more than a short one and a mirror
// that turns slow falls quickly (slow samples hold more time). A failure is
// a sample of no bytes that cost the mirror a penalty time. Transfers
// smaller than the sample minimum are coalesced until their sum is large
// enough, so that many small, latency-bound transfers still add up to a
// sample without any single one of them deciding the rank.
type mirrorStats struct {
	samples []sample // ring buffer, len == window
	count   int      // valid samples, at most len(samples)
	next    int      // index of the next write

	pending sample // small transfers not yet a sample

	// shared holds other instances' samples of the mirror, by the record
	// they came from (persist.go); they count in the score, weighted by
	// age like the window's, and are replaced at each reading.
	shared map[string][]sample

	failStreak int
	lastSync   time.Time // the mirror's last sync, when known (freshness.go)

	// Verification (verify.go): files served that matched their index's
	// hash since the mirror last failed a check, files whose length other
	// mirrors corroborated, and whether it served bytes that did not
	// match.
	verified  int
	witnessed int // files served whole whose length other mirrors corroborated
	lied      bool

	// Lifetime counters, for the status view.
	requests int64
	bytes    int64
	failures int64
}

// sample is what one transfer (or a few coalesced small ones) taught.
type sample struct {
	bytes    int64
	time     time.Duration
	at       time.Time // when it was taken
	restored bool      // read back from storage, learned by an earlier process
}

// Old knowledge fades: a sample's weight in its mirror's score, next to
// newer ones, halves every sampleHalfLife of age, and a sample older than
// ForgetAfter no longer counts at all, so a mirror measured fast or slow
// long ago gets a new trial rather than its old rank.
const sampleHalfLife = 6 * time.Hour

// ForgetAfter is the age past which a throughput sample no longer counts
// (a Snapshot holds none older).
const ForgetAfter = 24 * time.Hour

// weight is how much a sample of that age counts.
func weight(age time.Duration) float64 {
	switch {
	case age < time.Minute:
		return 1
	case age >= ForgetAfter:
		return 0
	}
	return math.Exp2(-float64(age) / float64(sampleHalfLife))
}

// stats returns the stats of mirror, creating them with the given window.
func (s *State) stats(mirror string, window int) *mirrorStats {
	ms := s.mirrors[mirror]
	if ms == nil {
		ms = &mirrorStats{samples: make([]sample, window)}
		s.mirrors[mirror] = ms
	} else if len(ms.samples) != window {
		ms.resize(window)
	}
	return ms
}

// resize keeps the newest samples that fit a window of the new size.
func (ms *mirrorStats) resize(window int) {
	kept := ms.recent(window)
	ms.samples = make([]sample, window)
	ms.count, ms.next = 0, 0
	for _, v := range kept {
		ms.push(v)
	}
}

// recent returns up to n samples, oldest first.
func (ms *mirrorStats) recent(n int) []sample {
	n = min(n, ms.count)
	out := make([]sample, 0, n)
	for i := n; i > 0; i-- {
		idx := (ms.next - i + len(ms.samples)) % len(ms.samples)
		out = append(out, ms.samples[idx])
	}
	return out
}

func (ms *mirrorStats) push(s sample) {
	ms.samples[ms.next] = s
	ms.next = (ms.next + 1) % len(ms.samples)
	if ms.count < len(ms.samples) {
		ms.count++
	}
}

// transferTime is how long a transfer of n bytes counts for in a sample,
// given how long the mirror took to answer (wait) and to send the body.
// A large transfer is timed from its first byte: its rate is the mirror's
// bandwidth, which is what decides how long big files take, and the answer
// time is bounded anyway by the peek timeout. A small transfer is mostly
// answer time, and counts it in proportion to how small it is: a mirror
// near the client (a LAN mirror answering in a millisecond) then ranks high,
// and one whose tiny files arrive in one burst after a long wait is not
// flattered by that burst.
func transferTime(n int64, wait, body time.Duration, minBytes int64) time.Duration {
	if n >= minBytes || minBytes <= 0 {
		return body
	}
	share := 1 - float64(n)/float64(minBytes)
	return body + time.Duration(share*float64(wait))
}

// addTransfer records a successful transfer of n bytes that kept the mirror
// busy for d. It returns true when a sample was added to the window.
func (ms *mirrorStats) addTransfer(n int64, d time.Duration, minBytes int64) bool {
	ms.failStreak = 0
	ms.pending.bytes += n
	ms.pending.time += d
	if ms.pending.bytes < minBytes {
		return false
	}
	ms.pending.at = time.Now()
	ms.push(ms.pending)
	ms.pending = sample{}
	return true
}

// addFailure records a failed transfer as a sample of no bytes that cost
// penalty.
func (ms *mirrorStats) addFailure(penalty time.Duration) {
	ms.failStreak++
	ms.failures++
	ms.push(sample{time: penalty, at: time.Now()})
}

// counting calls f for each sample that counts at now, with its weight
// and where it came from ("local", "restored" or "shared"): the window's
// and other instances', forgotten ones left out.
func (ms *mirrorStats) counting(now time.Time, f func(s sample, w float64, from string)) {
	add := func(s sample, from string) {
		if w := weight(now.Sub(s.at)); w > 0 {
			f(s, w, from)
		}
	}
	for _, s := range ms.samples[:ms.count] { // the valid ones, in some order
		add(s, cond(s.restored, "restored", "local"))
	}
	for _, from := range ms.shared {
		for _, s := range from {
			add(s, "shared")
		}
	}
}

// totals adds up the samples that count at now, each weighted by its
// age. n is how many count.
func (ms *mirrorStats) totals(now time.Time) (bytes, secs float64, n int) {
	ms.counting(now, func(s sample, w float64, _ string) {
		bytes += w * float64(s.bytes)
		secs += w * s.time.Seconds()
		n++
	})
	return bytes, secs, n
}

// score is the throughput of the samples that count: their bytes over
// their time, in bytes per second, newer samples weighing more.
func (ms *mirrorStats) score() float64 {
	bytes, secs, _ := ms.totals(time.Now())
	return rate(bytes, secs)
}

func rate(bytes, secs float64) float64 {
	if bytes == 0 {
		return 0
	}
	return bytes / max(secs, 1e-6)
}

// trialScore is the score and how many samples count, counting the small
// transfers not yet a sample while fewer than trial samples count: a
// mirror whose trial ends by its number of transfers (all of them small) is
// ranked by what they showed, not as a mirror that moved nothing.
func (ms *mirrorStats) trialScore(trial int) (float64, int) {
	bytes, secs, n := ms.totals(time.Now())
	if n < trial && ms.pending.bytes > 0 {
		bytes += float64(ms.pending.bytes)
		secs += ms.pending.time.Seconds()
	}
	return rate(bytes, secs), n
}

// coolDown keeps mirror out of pools for a cool-down from now, for
// leaving for reason: a liar for liarCooldown of them. A mirror that
// resigned (slow, not broken) keeps what was learned of it (see recruit);
// any other comes back to a fresh trial. s.mu must be held.
func (s *State) coolDown(mirror, reason string, now time.Time, cooldown time.Duration) {
	if reason == ReasonLied {
		cooldown *= liarCooldown
		s.liars[mirror] = true
	}
	s.cooldown[mirror] = now.Add(cooldown)
	if reason == ReasonResigned {
		s.resigned[mirror] = true
		return
	}
	delete(s.resigned, mirror)
	delete(s.mirrors, mirror)
}

// sources counts the samples that count at now by where they came from,
// for the status view.
func (ms *mirrorStats) sources(now time.Time) map[string]SampleSource {
	out := map[string]SampleSource{}
	ms.counting(now, func(s sample, _ float64, from string) {
		src := out[from]
		src.Samples++
		if s.at.After(src.Newest) {
			src.Newest = s.at
		}
		out[from] = src
	})
	return out
}

func cond[T any](c bool, a, b T) T {
	if c {
		return a
	}
	return b
}

// coolingDown reports whether mirror left the pool recently, forgetting
// cool-downs that have expired: a mirror back from one starts a fresh trial.
func (s *State) coolingDown(mirror string, now time.Time) bool {
	until, ok := s.cooldown[mirror]
	if !ok {
		return false
	}
	if now.Before(until) {
		return true
	}
	delete(s.cooldown, mirror)
	delete(s.resigned, mirror)
	delete(s.liars, mirror)
	delete(s.mirrors, mirror)
	return false
}
