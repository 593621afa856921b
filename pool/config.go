package pool

import (
	"net/http"
	"time"

	"go.uber.org/zap"
)

// Defaults of the pool's knobs; a zero Config field takes these.
const (
	DefaultWorkers        = 8
	DefaultGoodThroughput = 10 << 20 // bytes per second
	DefaultWindow         = 20
	DefaultResign         = 2
	DefaultTrialSamples   = 3
	DefaultMinSampleBytes = 256 << 10
	DefaultPeekSize       = 1 << 20
	DefaultPeekTimeout    = time.Second
	DefaultRetries        = 3
	DefaultMaxQueue       = 1024
	DefaultQueueTimeout   = 30 * time.Second
	DefaultStallTimeout   = 10 * time.Second
	DefaultCooldown       = 10 * time.Minute
	DefaultEvictAfter     = 3
	DefaultSyncFile       = "lastsync"
	DefaultSyncInterval   = 5 * time.Minute
	DefaultSplit          = 4
	DefaultDrainTimeout   = 5 * time.Minute
)

// DefaultChangingPaths are the file name patterns (path.Match syntax, matched
// against the last path element) of files that change in place on Arch,
// Debian and RPM mirrors: package databases and repository indexes.
var DefaultChangingPaths = []string{
	// Arch (pacman): the sync databases, their signatures, and the
	// mirror's own sync stamps.
	"*.db", "*.db.sig", "*.db.tar.*", "*.files", "*.files.sig", "*.files.tar.*",
	"lastsync", "lastupdate",
	// Debian (apt): dists/<suite>/ and what it holds.
	"InRelease", "Release", "Release.gpg", "Packages*", "Sources*", "Contents-*", "Translation-*",
	// RPM (dnf, zypper): repodata/repomd.xml, its signature and the key
	// zypper fetches beside it. The metadata it lists has its hash in its
	// name (createrepo_c's default) and never changes, except where the
	// repository was made with --simple-md-filenames.
	"repomd.xml", "repomd.xml.asc", "repomd.xml.key",
	"primary.xml*", "filelists.xml*", "other.xml*",
	// openSUSE (zypper): the product description at the root of a
	// distribution repository ("content", signed, and its key), and the
	// media description that zypper reads first (media.1/media,
	// media.1/products).
	"content", "content.asc", "content.key", "media", "products",
}

// Config holds a pool's knobs. The zero value of each field means its default.
type Config struct {
	// Workers is how many workers (mirrors) the pool keeps; up to twice
	// as many while it surges (explore.go).
	Workers int
	// GoodThroughput, in bytes per second: a mirror at least this fast
	// never resigns.
	GoodThroughput float64
	// Window is how many samples each mirror's moving average holds.
	Window int
	// Resign is how many of the bottom-ranked workers resign.
	Resign int
	// TrialSamples is how many samples a new worker needs before it is
	// ranked; until then it cannot be asked to resign.
	TrialSamples int
	// MinSampleBytes: smaller transfers are coalesced until their sum
	// reaches this size before they count as one sample.
	MinSampleBytes int64
	// PeekSize is how much of a response body is read from the mirror
	// before the response is committed to the client.
	PeekSize int64
	// PeekTimeout is the least time from the response headers to the end
	// of the peek; the deadline is longer when the best ranked mirror
	// would need longer (peekDeadline). A slower mirror loses the request
	// to another worker, and a failure sample if a much faster mirror is
	// known.
	PeekTimeout time.Duration
	// Retries is how many more workers a request may try after the first.
	Retries int
	// MaxQueue is how many new requests may wait for a worker; committed
	// work always may.
	MaxQueue int
	// QueueTimeout is how long a new request may wait for a worker.
	QueueTimeout time.Duration
	// StallTimeout: a transfer that delivers no byte for this long fails,
	// and committed work waits at most this long for a worker.
	StallTimeout time.Duration
	// Cooldown is how long an evicted or resigned mirror stays out.
	Cooldown time.Duration
	// EvictAfter is how many consecutive failures evict a mirror however
	// fast it is.
	EvictAfter int
	// Split is how many workers may fetch one large file at once, each a
	// range of it, when the pool has fast workers to spare; 1 turns
	// splitting off. Only files that do not change in place are split.
	Split int
	// DrainTimeout bounds how long a closed pool goes on serving the
	// requests it holds (a config reload lets them finish) before it ends
	// them.
	DrainTimeout time.Duration
	// ChangingPaths are the patterns of files that change in place; see
	// DefaultChangingPaths. They are never stitched together from two
	// mirrors.
	ChangingPaths []string

	// InstanceID identifies this refractor instance to its peers
	// (PeerHeader).
	InstanceID string

	// SkipVerify turns off checking files against the repository's
	// indexes (verify.go); the pool then passes on whatever bytes a mirror
	// sends with a plausible answer.
	SkipVerify bool

	// SyncFile is the path, under each mirror's base, of a file holding
	// the Unix time of the mirror's last sync (Arch's "lastsync"). Files
	// that change in place are served only by the mirrors that synced
	// last. "-" turns probing off; sync times from the provider still
	// count.
	SyncFile string
	// SyncInterval is how often the sync files are read again.
	SyncInterval time.Duration

	// MembersKey identifies the pool's mirrors in its State: a new pool
	// with the same key (after a config reload that kept the pool as it
	// was) takes back the mirrors the previous one had. A pool whose
	// provider changed must have another key: it starts from what its
	// provider proposes (what is known of each mirror is kept either way).
	MembersKey string
	// Provider hands out candidate mirrors. Required.
	Provider Provider
	// Upstream holds the timeouts and limits of connections to mirrors.
	Upstream TransportConfig
	// Transport, when set, makes the upstream requests instead of the
	// pool's own transport (which follows Upstream and the outbound rules
	// of outbound.go); tests use it to shape traffic.
	Transport http.RoundTripper

	// serialTrials turns the parallel trials (trial.go) off: the tests
	// that count a mirror's requests, or in which mirrors are tried in
	// the list's order, set it.
	serialTrials bool
	// State is the learned state to start from and to keep learning into,
	// per mirror, shared with the other pools that use it; nil means a new
	// State.
	State *State
	// Logger receives the pool's logs; nil means no logging.
	Logger *zap.Logger
	// Observer is told about the pool's events; nil means nobody.
	Observer Observer
}

func (c *Config) setDefaults() {
	setDefault(&c.Workers, DefaultWorkers)
	setDefault(&c.GoodThroughput, DefaultGoodThroughput)
	setDefault(&c.Window, DefaultWindow)
	setDefault(&c.Resign, DefaultResign)
	setDefault(&c.TrialSamples, DefaultTrialSamples)
	setDefault(&c.MinSampleBytes, DefaultMinSampleBytes)
	setDefault(&c.Split, DefaultSplit)
	setDefault(&c.PeekSize, DefaultPeekSize)
	setDefault(&c.PeekTimeout, DefaultPeekTimeout)
	setDefault(&c.Retries, DefaultRetries)
	setDefault(&c.MaxQueue, DefaultMaxQueue)
	setDefault(&c.QueueTimeout, DefaultQueueTimeout)
	setDefault(&c.StallTimeout, DefaultStallTimeout)
	setDefault(&c.Cooldown, DefaultCooldown)
	setDefault(&c.EvictAfter, DefaultEvictAfter)
	setDefault(&c.SyncFile, DefaultSyncFile)
	setDefault(&c.SyncInterval, DefaultSyncInterval)
	setDefault(&c.DrainTimeout, DefaultDrainTimeout)
	if c.SyncFile == "-" {
		c.SyncFile = ""
	}
	if c.ChangingPaths == nil {
		c.ChangingPaths = DefaultChangingPaths
	}
	if c.State == nil {
		c.State = NewState()
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	c.TrialSamples = min(c.TrialSamples, c.Window)
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
