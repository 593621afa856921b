package refractor

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-refractor/refractor/pool"
)

// Handler serves package downloads from a self-optimising, rotating pool of
// mirrors. Each request is taken by a worker bound to one mirror, which
// streams the file from its mirror; workers rank themselves by the
// throughput they deliver, the slowest resign, and the provider replaces
// them with fresh mirrors.
type Handler struct {
	// Name identifies this pool in metrics, the admin API and logs.
	// Default: the provider's name and a short hash of its configuration,
	// such as "static-1f2e3d4c".
	Name string `json:"name,omitempty"`
	// How many workers (mirrors) the pool keeps. Default: 8. While a cold
	// pool explores a large download, it takes up to as many more, until
	// the extra ones are measured.
	Workers int `json:"workers,omitempty"`
	// Throughput, in bytes per second, at or above which a mirror never
	// resigns. Default: 10 MiB/s.
	GoodThroughput int64 `json:"good_throughput,omitempty"`
	// How many throughput samples each mirror's moving average holds.
	// Default: 20.
	Window int `json:"window,omitempty"`
	// How many of the bottom-ranked workers resign. Default: 2; 0 turns
	// rotation off.
	Resign *int `json:"resign,omitempty"`
	// How many samples a new worker needs before it is ranked (its fair
	// trial). Default: 3.
	TrialSamples int `json:"trial,omitempty"`
	// Transfers smaller than this are added up until they reach it before
	// they count as one throughput sample, so latency-bound small files
	// neither hide a fast mirror nor flatter a slow one. Default: 256 KiB.
	MinSampleBytes int64 `json:"min_sample,omitempty"`
	// How many bytes of a response are read from the mirror before the
	// response is committed to the client. Default: 1 MiB.
	PeekSize int64 `json:"peek_size,omitempty"`
	// The least time a mirror is given from its response headers to the
	// end of the peek; more when the best ranked mirror would need more
	// (three times its time for those bytes). Past it, the request moves
	// to another worker; that counts against the mirror only if a much
	// faster mirror is known. The last retry is not held to it.
	// Default: 1s.
	PeekTimeout caddy.Duration `json:"peek_timeout,omitempty"`
	// How many other workers a request may try after the first, before
	// its first byte reaches the client (and to continue a broken
	// transfer). Default: 3.
	Retries *int `json:"retries,omitempty"`
	// How many new requests may wait for a free worker; more get 503.
	// Committed work (a transfer resumed, continued or split) always
	// waits, ahead of them. Default: 1024.
	MaxQueue int `json:"max_queue,omitempty"`
	// How long a new request may wait for a free worker before it gets
	// 503. A pool without any worker answers within 5s. Default: 30s.
	QueueTimeout caddy.Duration `json:"queue_timeout,omitempty"`
	// Timeout for connecting to a mirror, TLS included. Default: 3s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`
	// Timeout for a mirror's response headers. Default: 10s.
	HeaderTimeout caddy.Duration `json:"header_timeout,omitempty"`
	// A transfer that receives no byte for this long fails, and committed
	// work (a transfer resumed, continued or split) waits at most this
	// long for a worker. Default: 10s.
	StallTimeout caddy.Duration `json:"stall_timeout,omitempty"`
	// How long a mirror that resigned or was evicted stays out of the
	// pool. Default: 10m.
	Cooldown caddy.Duration `json:"cooldown,omitempty"`
	// How many consecutive failures evict a mirror, however fast it is.
	// Default: 3.
	EvictAfter int `json:"evict_after,omitempty"`
	// How many workers may fetch one large file at once, each a range of
	// it, when fast workers are free and the client keeps up; 1 turns
	// splitting off (a transfer may still move to one faster worker).
	// Files that change in place are never split. Default: 4.
	Split int `json:"split,omitempty"`
	// File name patterns (path.Match syntax, matched against the last
	// path element) of files that change in place, such as package
	// databases; they are never stitched together from two mirrors.
	// Default: Arch, Debian, Fedora and openSUSE indexes (*.db, *.files,
	// InRelease, Release, Packages*, repomd.xml, repomd.xml.asc,
	// repomd.xml.key, openSUSE's content and media.1/media, ...).
	ChangingPaths []string `json:"changing_paths,omitempty"`
	// Path, under each mirror's base, of a file holding the Unix time of
	// the mirror's last sync, as Arch Linux mirrors' "lastsync". Files in
	// changing_paths are served only by the mirrors that synced last
	// (sync times from the provider count too). "off" stops reading it.
	// Default: lastsync.
	SyncFile string `json:"sync_file,omitempty"`
	// How often the sync files are read again. Default: 5m.
	SyncInterval caddy.Duration `json:"sync_interval,omitempty"`
	// Turns off checking each file against the size and SHA-256 the
	// repository's indexes give (pacman databases, apt Release and
	// Packages files, RPM repomd.xml and primary metadata): with it, a
	// mirror's wrong bytes reach the client.
	// Default: false (files are checked).
	SkipVerify bool `json:"skip_verify,omitempty"`
	// Where what the pools learned of mirrors (throughput, failures,
	// cool-downs, sync times, trust) is kept, so that a restart does not
	// start cold: a Caddy storage module, as in Caddy's global `storage`
	// option. Default: Caddy's storage.
	StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=caddy.storage inline_key=module"`
	// With a name, the instances whose refractor uses the same storage and
	// the same share name are a group: each reads the others' measurements
	// and counts them in its ranking, weighted by age. Without, an instance
	// restores only what it learned itself. Throughput does not transfer
	// between networks: share only among instances that reach the mirrors
	// the same way.
	Share string `json:"share,omitempty"`
	// How often what was learned is saved to storage (when it changed),
	// and, with share, the group's other records read. It is also saved
	// when the last handler using that storage is cleaned up (Caddy
	// stops). Default: 2m.
	SaveInterval caddy.Duration `json:"save_interval,omitempty"`
	// An on-disk LAN cache of the packages the pool serves (see Cache).
	// Default: none.
	Cache *Cache `json:"cache,omitempty"`
	// Other refractor instances whose caches this pool may fetch files
	// of known hash from: each URL is the peer's site and path of the same
	// repository, as a mirror's base. With share, the instances of the
	// group that advertise a peer_url for a block of the same name are
	// added. Default: none.
	Peers []string `json:"peers,omitempty"`
	// The URL at which other instances reach this block (its site and
	// path), advertised with this instance's cache to the share group.
	// Without it, the cache is not advertised (static peers may still ask
	// for it). Default: none.
	PeerURL string `json:"peer_url,omitempty"`
	// Whether this instance answers peers' requests from its cache; they
	// never reach the Internet. Default: true.
	ServePeers *bool `json:"serve_peers,omitempty"`
	// How many peer transfers this instance serves at once; more are
	// answered 503 (the asking pool then uses its mirrors). Advertised to
	// the share group: a peer's pool sends it that many at once. Default: 8.
	PeerLoad int `json:"peer_load,omitempty"`
	// The provider of candidate mirrors. Required.
	ProviderRaw json.RawMessage `json:"provider,omitempty" caddy:"namespace=http.handlers.refractor.providers inline_key=source"`

	pool       *pool.Pool
	cache      *cacheStore
	cacheDir   string
	instanceID string
	live       *namedPool
	obs        *observer
	store      *stateStore
	storageID  string
	membersKey string
	logger     *zap.Logger
}

// learned is what every pool of this process learns about mirrors, per
// mirror: pools that meet the same mirror share what is known of it, and
// a config reload, whatever it edits, keeps it.
var learned = pool.NewState()

// Provision sets up the handler and starts its pool.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := h.Validate(); err != nil {
		return err
	}
	if h.ProviderRaw == nil {
		return errors.New("provider: a provider of mirrors is required")
	}
	if h.Name == "" {
		h.Name = defaultName(h.ProviderRaw)
	}
	// After a reload, the pool takes back its mirrors only if its
	// provider is unchanged (a mirror taken out of a list must not come
	// back). LoadModule consumes the raw JSON, so take the key first.
	h.membersKey = fmt.Sprintf("%s/%x", h.Name, sha256.Sum256(h.ProviderRaw))
	h.logger = h.logger.With(zap.String("pool", h.Name))
	// What earlier processes learned is restored before the pool recruits.
	if err := h.openStore(ctx); err != nil {
		return err
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	h.obs = newObserver(h.Name, h.logger)
	mod, err := ctx.LoadModule(h, "ProviderRaw")
	if err != nil {
		return fmt.Errorf("provider: loading module: %w", err)
	}
	provider, ok := mod.(pool.Provider)
	if !ok {
		return fmt.Errorf("provider: module %T is not a refractor provider", mod)
	}
	if h.Cache != nil {
		if err := h.openCache(); err != nil {
			return err
		}
	}
	id, err := caddy.InstanceID()
	if err != nil {
		return fmt.Errorf("instance ID: %w", err)
	}
	h.instanceID = id.String()
	h.pool, err = pool.New(h.poolConfig(provider, learned))
	if err != nil {
		return fmt.Errorf("starting pool: %w", err)
	}
	h.pool.SetPeers(staticPeers(h.Peers))
	h.store.peering(h, h.peerUse())
	h.live = &namedPool{name: h.Name, pool: h.pool}
	registerPool(h.live)
	if err := h.obs.events.start(ctx); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	return nil
}

// openStore opens the state store of the handler's storage and share group.
func (h *Handler) openStore(ctx caddy.Context) error {
	// Caddy's storage is one store, whatever the config; the store uses the
	// newest config's storage (an older config's is cleaned up with it).
	storage := ctx.Storage()
	h.storageID = "caddy"
	if h.StorageRaw != nil {
		h.storageID = string(h.StorageRaw) // LoadModule consumes it
		mod, err := ctx.LoadModule(h, "StorageRaw")
		if err != nil {
			return fmt.Errorf("storage: loading module: %w", err)
		}
		conv, ok := mod.(caddy.StorageConverter)
		if !ok {
			return fmt.Errorf("storage: module %T is not a Caddy storage module", mod)
		}
		if storage, err = conv.CertMagicStorage(); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
	}
	var err error
	h.store, err = openStateStore(h, learned, storage, h.storageID, h.Share, cmp.Or(time.Duration(h.SaveInterval), defaultSaveInterval), h.logger)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return nil
}

// defaultName names a pool after its provider's module and configuration.
func defaultName(providerJSON []byte) string {
	var head struct {
		Source string `json:"source"`
	}
	_ = json.Unmarshal(providerJSON, &head)
	sum := sha256.Sum256(providerJSON)
	return fmt.Sprintf("%s-%x", cmp.Or(head.Source, "pool"), sum[:4])
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	for _, c := range []struct {
		name string
		bad  bool
	}{
		{"workers", h.Workers < 0},
		{"good_throughput", h.GoodThroughput < 0},
		{"window", h.Window < 0},
		{"resign", h.Resign != nil && *h.Resign < 0},
		{"trial", h.TrialSamples < 0},
		{"min_sample", h.MinSampleBytes < 0},
		{"peek_size", h.PeekSize < 0},
		{"peek_timeout", h.PeekTimeout < 0},
		{"retries", h.Retries != nil && *h.Retries < 0},
		{"max_queue", h.MaxQueue < 0},
		{"queue_timeout", h.QueueTimeout < 0},
		{"dial_timeout", h.DialTimeout < 0},
		{"header_timeout", h.HeaderTimeout < 0},
		{"stall_timeout", h.StallTimeout < 0},
		{"cooldown", h.Cooldown < 0},
		{"evict_after", h.EvictAfter < 0},
		{"split", h.Split < 0},
		{"sync_interval", h.SyncInterval < 0},
		{"save_interval", h.SaveInterval < 0},
		{"peer_load", h.PeerLoad < 0},
	} {
		if c.bad {
			return fmt.Errorf("%s: must not be negative", c.name)
		}
	}
	workers := cmp.Or(h.Workers, pool.DefaultWorkers)
	if h.Resign != nil && *h.Resign >= workers {
		return fmt.Errorf("resign: %d must be less than workers (%d)", *h.Resign, workers)
	}
	if h.TrialSamples > cmp.Or(h.Window, pool.DefaultWindow) {
		return fmt.Errorf("trial: %d must not exceed window (%d)", h.TrialSamples, cmp.Or(h.Window, pool.DefaultWindow))
	}
	for _, p := range h.ChangingPaths {
		if _, err := pathMatch(p); err != nil {
			return fmt.Errorf("changing_paths: bad pattern %q: %w", p, err)
		}
	}
	for _, u := range h.Peers {
		if _, err := pool.ParseMirrorURL(u); err != nil {
			return fmt.Errorf("peers: %w", err)
		}
	}
	if h.PeerURL != "" {
		if _, err := pool.ParseMirrorURL(h.PeerURL); err != nil {
			return fmt.Errorf("peer_url: %w", err)
		}
		if h.Cache == nil {
			return errors.New("peer_url: advertises the cache, but the block has no cache")
		}
	}
	return nil
}

func (h *Handler) poolConfig(provider pool.Provider, state *pool.State) pool.Config {
	cfg := pool.Config{
		Workers:        h.Workers,
		GoodThroughput: float64(h.GoodThroughput),
		Window:         h.Window,
		TrialSamples:   h.TrialSamples,
		MinSampleBytes: h.MinSampleBytes,
		PeekSize:       h.PeekSize,
		PeekTimeout:    time.Duration(h.PeekTimeout),
		MaxQueue:       h.MaxQueue,
		QueueTimeout:   time.Duration(h.QueueTimeout),
		StallTimeout:   time.Duration(h.StallTimeout),
		Cooldown:       time.Duration(h.Cooldown),
		EvictAfter:     h.EvictAfter,
		Split:          h.Split,
		ChangingPaths:  h.ChangingPaths,
		SyncFile:       h.SyncFile,
		SyncInterval:   time.Duration(h.SyncInterval),
		SkipVerify:     h.SkipVerify,
		InstanceID:     h.instanceID,
		MembersKey:     h.membersKey,
		Provider:       provider,
		State:          state,
		Logger:         h.logger,
		Upstream: pool.TransportConfig{
			DialTimeout:   time.Duration(h.DialTimeout),
			HeaderTimeout: time.Duration(h.HeaderTimeout),
		},
	}
	// In the pool a zero means the default; an explicit zero here means
	// none, which the pool spells as a negative number.
	if h.Retries != nil {
		cfg.Retries = cmp.Or(*h.Retries, -1)
	}
	if h.SyncFile == "off" {
		cfg.SyncFile = "-"
	}
	if h.Resign != nil {
		cfg.Resign = cmp.Or(*h.Resign, -1)
	}
	if h.obs != nil {
		cfg.Observer = h.obs
	}
	return cfg
}

// Cleanup closes the pool and returns at once (Caddy calls it under its
// config lock): the pool lets the requests it holds finish in the
// background, then stops. What it learned of its mirrors stays, for the
// next config and every other pool, and is saved to storage (at once
// when Caddy stops, soon after a reload).
func (h *Handler) Cleanup() error {
	if h.live != nil {
		unregisterPool(h.live)
	}
	if h.pool != nil {
		_ = h.pool.Close()
	}
	if h.obs != nil {
		h.obs.close()
	}
	if h.store != nil {
		h.store.release(h, h.storageID, h.Share)
	}
	h.closeCache()
	return nil
}

// ServeHTTP checks the request and hands it to the pool. Only GET and HEAD
// of a clean path under the mirrors' base are served.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return caddyhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed", r.Method))
	}
	if !strings.HasPrefix(r.RequestURI, "/") || r.URL.Host != "" {
		return caddyhttp.Error(http.StatusBadRequest, errors.New("request target must be a path"))
	}
	// Check the path as the client sent it too: Caddy's rewrites (such as
	// handle_path's) may have already resolved what a client smuggled in.
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		if _, err := pool.CleanPath(orig.URL.EscapedPath()); err != nil {
			return pathError(err)
		}
	}
	rel, err := pool.CleanPath(r.URL.EscapedPath())
	if err != nil {
		return pathError(err)
	}

	handled := false
	if via := r.Header.Get(pool.PeerHeader); via != "" {
		handled, err = true, h.servePeer(w, r, via) // from the cache alone
	} else if h.cache != nil {
		handled, err = h.serveCached(w, r, rel)
		if !handled && coalescible(r) { // a file the cache does not keep
			handled, err = h.serveCoalesced(w, r, rel)
		}
	}
	if !handled {
		err = h.pool.Serve(w, r, rel)
	}
	var perr *pool.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &perr):
		level := zap.WarnLevel
		if perr.Status == http.StatusNotFound {
			level = zap.DebugLevel // routine: .sig files of unsigned databases
		}
		if ce := h.logger.Check(level, "request failed"); ce != nil {
			ce.Write(zap.String("path", rel), zap.Int("status", perr.Status), zap.Error(err))
		}
		if perr.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(perr.RetryAfter.Seconds())))
		}
		// Through Caddy's error handling, so that handle_errors routes
		// apply; {err.message} says what happened (every mirror tried
		// and why).
		return caddyhttp.Error(perr.Status, fmt.Errorf("refractor: %w", perr))
	case errors.Is(err, pool.ErrAborted):
		h.logger.Error("aborting a committed response", zap.String("path", rel), zap.Error(err))
		panic(http.ErrAbortHandler)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil // the client went away
	default:
		return err
	}
}

// pathError is the client error for a path CleanPath rejected.
func pathError(err error) error {
	if errors.Is(err, pool.ErrPathTooLong) {
		return caddyhttp.Error(http.StatusRequestURITooLong, err)
	}
	return caddyhttp.Error(http.StatusBadRequest, err)
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)

func pathMatch(pattern string) (bool, error) { return path.Match(pattern, "") }
