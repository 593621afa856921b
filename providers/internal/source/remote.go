package source

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-refractor/refractor/pool"
)

// Backoff bounds for retrying a failed fetch.
const (
	minBackoff = 5 * time.Second
	maxBackoff = 15 * time.Minute
)

// RemoteConfig configures a Remote.
type RemoteConfig struct {
	Provider string        // the provider's name, which prefixes errors
	URL      string        // http(s) URL of the document
	Parse    Parser        // turns the document into candidates
	Refresh  time.Duration // 0: DefaultRefresh
	Timeout  time.Duration // 0: DefaultTimeout
	Storage  Storage       // where the last good document is kept; may be nil
	Ext      string        // extension of the stored copy, such as "json"
	Logger   *zap.Logger   // may be nil

	// For tests: the HTTP client (default: one without keep-alives that
	// honours the proxy environment) and the clock.
	Client *http.Client
	Now    func() time.Time
}

// Remote is a list of candidates fetched from a URL and cached.
//
// There is no background goroutine: Candidates fetches the document when
// the cached list is older than the refresh interval, in the caller's
// goroutine (the pool's recruiter, which asks only when it needs mirrors).
// One fetch runs at a time; while it runs, other callers get the previous
// list at once, or wait for it when there is none yet. A failed fetch
// (network, HTTP status, oversized body, a document the parser rejects,
// filters that leave nothing) keeps the last good list and is not tried
// again until a backoff has passed: 5s, doubling up to 15m, never longer
// than the refresh interval. Each good document is saved in storage; when
// a fetch fails and there is no list yet, as after a restart without
// network, the saved copy is used.
type Remote struct {
	cfg     RemoteConfig
	key     string
	logger  *zap.Logger
	client  *http.Client
	now     func() time.Time
	base    context.Context // cancelled by Close
	cancel  context.CancelFunc
	fetchMu chan struct{} // held by the one caller fetching

	mu           sync.Mutex
	list         []pool.Candidate
	fetched      time.Time // when list was fetched; zero when it came from storage
	failures     int       // consecutive failed fetches
	retryAt      time.Time // no fetch before this, after a failure
	lastErr      error
	triedStorage bool
}

// NewRemote returns a Remote. It fetches nothing until asked.
func NewRemote(cfg RemoteConfig) *Remote {
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	r := &Remote{
		cfg:     cfg,
		key:     StorageKey(cfg.Provider, cfg.URL, cfg.Ext),
		logger:  cfg.Logger,
		client:  cfg.Client,
		now:     cfg.Now,
		fetchMu: make(chan struct{}, 1),
	}
	if r.logger == nil {
		r.logger = zap.NewNop()
	}
	r.logger = r.logger.With(zap.String("url", cfg.URL))
	if r.client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// One fetch an hour: an idle connection (and its goroutines)
		// would only outlive the configuration.
		t.DisableKeepAlives = true
		r.client = &http.Client{Transport: t}
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.base, r.cancel = context.WithCancel(context.Background())
	return r
}

// StorageKey is the key under which the last good document from url is
// kept in Caddy's storage.
func StorageKey(provider, url, ext string) string {
	sum := sha256.Sum256([]byte(url))
	return fmt.Sprintf("refractor/%s/%x.%s", provider, sum[:8], ext)
}

// Candidates returns the cached list, fetching it first when it is stale
// and no backoff is pending. It fails only when there has never been a
// good list, neither fetched nor saved.
func (r *Remote) Candidates(ctx context.Context) ([]pool.Candidate, error) {
	if list, err, ok := r.cached(); ok {
		return list, err
	}
	select {
	case r.fetchMu <- struct{}{}:
	default:
		// Another caller is fetching: use what we have meanwhile.
		if list := r.current(); list != nil {
			return list, nil
		}
		select {
		case r.fetchMu <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("%s provider: waiting for %s: %w", r.cfg.Provider, r.cfg.URL, ctx.Err())
		}
	}
	defer func() { <-r.fetchMu }()
	// The fetch we waited for may have done the work.
	if list, err, ok := r.cached(); ok {
		return list, err
	}
	return r.refresh(ctx)
}

// cached returns the list when it is fresh, or the outcome of the last
// failure while its backoff lasts; ok is false when a fetch is due.
func (r *Remote) cached() (list []pool.Candidate, err error, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if r.list != nil && !r.fetched.IsZero() && now.Before(r.fetched.Add(r.cfg.Refresh)) {
		return clone(r.list), nil, true
	}
	if now.Before(r.retryAt) {
		if r.list != nil {
			return clone(r.list), nil, true
		}
		return nil, fmt.Errorf("%s provider: no mirror list yet (next attempt in %s): %w",
			r.cfg.Provider, r.retryAt.Sub(now).Round(time.Second), r.lastErr), true
	}
	return nil, nil, false
}

func (r *Remote) current() []pool.Candidate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return clone(r.list)
}

// refresh fetches and parses the document and updates the cache. It runs
// with fetchMu held.
func (r *Remote) refresh(ctx context.Context) ([]pool.Candidate, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	stop := context.AfterFunc(r.base, cancel) // Close cancels a fetch under way
	defer stop()

	data, local, err := r.fetch(ctx)
	var res Result
	if err == nil {
		res, err = r.cfg.Parse(data)
	}
	if err == nil {
		markRemote(res.Candidates, !local)
		r.logResult("mirror list refreshed", res)
		r.save(ctx, data)
		r.mu.Lock()
		r.list, r.fetched = res.Candidates, r.now()
		r.failures, r.retryAt, r.lastErr = 0, time.Time{}, nil
		r.mu.Unlock()
		return clone(res.Candidates), nil
	}
	if errors.Is(err, context.Canceled) && r.base.Err() != nil {
		return nil, fmt.Errorf("%s provider: closed", r.cfg.Provider)
	}

	r.mu.Lock()
	r.failures++
	backoff := min(minBackoff<<min(r.failures-1, 20), maxBackoff, r.cfg.Refresh)
	r.retryAt, r.lastErr = r.now().Add(backoff), err
	failures := r.failures
	loadSaved := r.list == nil && !r.triedStorage
	r.triedStorage = r.triedStorage || loadSaved
	r.mu.Unlock()

	if loadSaved {
		r.loadSaved(ctx)
	}
	list := r.current()
	r.logger.Warn("refreshing the mirror list failed",
		zap.Error(err),
		zap.Int("failures", failures),
		zap.Duration("retry_in", backoff),
		zap.Int("keeping", len(list)))
	if list != nil {
		return list, nil
	}
	return nil, fmt.Errorf("%s provider: %w", r.cfg.Provider, err)
}

// fetch gets the document. local tells whether it came straight (no
// proxy) from a non-public address: the mirrors such a list names may be
// on the LAN too (see pool.Candidate.Remote).
func (r *Remote) fetch(ctx context.Context) (data []byte, local bool, err error) {
	var peer net.Addr
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) { peer = ci.Conn.RemoteAddr() },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.cfg.URL, nil)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("User-Agent", UserAgent)
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false, fmt.Errorf("GET %s: %s", r.cfg.URL, resp.Status)
	}
	data, err = readAll(resp.Body)
	if err != nil {
		return nil, false, fmt.Errorf("GET %s: reading body: %w", r.cfg.URL, err)
	}
	return data, resp.Request == req && isLocalPeer(req, peer), nil
}

// isLocalPeer reports whether req was answered from the non-public address
// peer, which it connected to itself, not through a proxy (whose address
// says nothing of where the document came from).
func isLocalPeer(req *http.Request, peer net.Addr) bool {
	tcp, ok := peer.(*net.TCPAddr)
	if !ok {
		return false
	}
	if proxy, err := http.ProxyFromEnvironment(req); proxy != nil || err != nil {
		return false
	}
	a, ok := netip.AddrFromSlice(tcp.IP)
	return ok && !pool.IsPublic(a)
}

// markRemote sets Candidate.Remote on every candidate of a list.
func markRemote(list []pool.Candidate, remote bool) {
	for i := range list {
		list[i].Remote = remote
	}
}

// save keeps a good document in storage for the next start.
func (r *Remote) save(ctx context.Context, data []byte) {
	if r.cfg.Storage == nil {
		return
	}
	if err := r.cfg.Storage.Store(ctx, r.key, data); err != nil {
		r.logger.Warn("saving the mirror list in storage failed", zap.String("key", r.key), zap.Error(err))
	}
}

// loadSaved takes the document saved by an earlier run, if any. The list
// counts as stale, so the next fetch is tried when the backoff allows.
func (r *Remote) loadSaved(ctx context.Context) {
	if r.cfg.Storage == nil {
		return
	}
	// The fetch may have used up ctx: give storage its own short deadline.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	stop := context.AfterFunc(r.base, cancel)
	defer stop()
	data, err := r.cfg.Storage.Load(ctx, r.key)
	if err != nil {
		r.logger.Debug("no saved mirror list", zap.String("key", r.key), zap.Error(err))
		return
	}
	res, err := r.cfg.Parse(data)
	if err != nil {
		r.logger.Warn("the saved mirror list is unusable", zap.String("key", r.key), zap.Error(err))
		return
	}
	r.logResult("using the mirror list saved in storage", res, zap.String("key", r.key))
	markRemote(res.Candidates, true) // where it came from is not known
	r.mu.Lock()
	if r.list == nil {
		r.list = res.Candidates
	}
	r.mu.Unlock()
}

func (r *Remote) logResult(msg string, res Result, fields ...zap.Field) {
	for _, w := range res.Warnings {
		r.logger.Warn("mirror list entry", zap.String("warning", w))
	}
	r.logger.Info(msg, append(fields,
		zap.Int("entries", res.Entries),
		zap.Int("candidates", len(res.Candidates)),
		zap.Int("skipped", len(res.Warnings)))...)
}

// Close cancels a fetch under way.
func (r *Remote) Close() {
	r.cancel()
	r.client.CloseIdleConnections()
}

// Interface guard
var _ Source = (*Remote)(nil)
