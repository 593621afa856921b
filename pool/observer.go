package pool

import "time"

// Leave reasons, as reported to an Observer and in the status view.
const (
	ReasonResigned = "resigned" // ranked among the slowest, below good throughput
	ReasonEvicted  = "evicted"  // failed too many times in a row
	ReasonClosed   = "closed"   // the pool shut down
	ReasonLied     = "lied"     // served bytes that do not match the repository's index
)

// Observer is told what happens in a pool, for metrics and events. Its
// methods are called synchronously, sometimes with the pool's lock held:
// they must be quick and must not call back into the pool.
type Observer interface {
	// MirrorJoined: a worker bound to mirror joined the pool.
	MirrorJoined(mirror string)
	// MirrorLeft: the worker of mirror left the pool for reason.
	MirrorLeft(mirror, reason string, score float64)
	// AttemptFailed: an upstream attempt on mirror failed for reason.
	AttemptFailed(mirror, reason string)
	// RequestDone: a request finished with status, after attempts tries,
	// having sent bytes body bytes to the client.
	RequestDone(mirror string, status int, attempts int, bytes int64, d time.Duration)
	// Scored: mirror's score changed to bytesPerSecond.
	Scored(mirror string, bytesPerSecond float64)
	// Queued: a request waited d for a worker.
	Queued(d time.Duration)
	// Refetched: bytes read from mirrors earlier were dropped unsent while
	// their client was not reading, and are being fetched again.
	Refetched(bytes int64)
	// VerifyFailed: a file at path failed its check against the
	// repository's index; mirrors served its bytes (one: it lied).
	VerifyFailed(mirrors []string, path string)
	// ProviderFetched: the provider was asked for candidates; err is nil on
	// success.
	ProviderFetched(err error)
}

type nopObserver struct{}

func (nopObserver) MirrorJoined(string)                                {}
func (nopObserver) VerifyFailed([]string, string)                      {}
func (nopObserver) MirrorLeft(string, string, float64)                 {}
func (nopObserver) AttemptFailed(string, string)                       {}
func (nopObserver) RequestDone(string, int, int, int64, time.Duration) {}
func (nopObserver) Scored(string, float64)                             {}
func (nopObserver) Queued(time.Duration)                               {}
func (nopObserver) Refetched(int64)                                    {}
func (nopObserver) ProviderFetched(error)                              {}
