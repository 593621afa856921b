package refractor

import (
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-refractor/refractor/pool"
)

// Peers: refractor instances of a LAN serve each other what their caches
// hold. A pool takes peers as sources of the files of known hash
// (pool/peers.go ranks and checks them like mirrors); the peers are the
// block's `peers` and, with `share`, the instances of the share group
// that advertise a `peer_url` for a block of the same name in their
// record of learned state (statestore.go), with the set of files their
// cache holds and a heartbeat (the record's time). A peer answers a peer's
// request (pool.PeerHeader) from its cache alone: never from the Internet,
// so requests cannot go round, and never one that carries its own ID.

// defaultPeerLoad is PeerLoad's default.
const defaultPeerLoad = pool.DefaultPeerLoad

// peerExpiry: a peer whose record has not been written for this many
// save intervals is gone.
const peerExpiry = 3

// peerAdvert is what an instance tells its share group of its cache, in
// its record of learned state.
type peerAdvert struct {
	// Pools maps the names of the blocks it offers to the URLs peers
	// reach them at (peer_url).
	Pools map[string]string `json:"pools"`
	// Load is how many peer transfers it serves at once.
	Load int `json:"load"`
	// Files are the files its caches hold: the first 8 bytes of each
	// SHA-256, big-endian, sorted, in base64.
	Files string `json:"files"`
}

// peerUse is what one handler brings to its store's peering.
type peerUse struct {
	name   string
	url    string      // peer_url: advertised, with cache
	cache  *cacheStore // what it advertises
	load   int
	static []string   // its peers block
	pool   *pool.Pool // receives the peers
}

// peers returns what h brings to peering: whether it advertises its cache
// and which peers its pool takes.
func (h *Handler) peerUse() peerUse {
	u := peerUse{name: h.Name, static: h.Peers, pool: h.pool, load: cmp.Or(h.PeerLoad, defaultPeerLoad)}
	if h.PeerURL != "" && h.cache != nil && h.servesPeers() {
		u.url, u.cache = h.PeerURL, h.cache
	}
	return u
}

func (h *Handler) servesPeers() bool { return h.ServePeers == nil || *h.ServePeers }

// staticPeers is the pool's peers from its own block.
func staticPeers(urls []string) []pool.Peer {
	out := make([]pool.Peer, 0, len(urls))
	for _, u := range urls {
		out = append(out, pool.Peer{URL: u})
	}
	return out
}

// encodeFiles is an advert's Files for the hashes sums.
func encodeFiles(sums [][32]byte) string {
	prefixes := make([]uint64, 0, len(sums))
	for _, s := range sums {
		prefixes = append(prefixes, binary.BigEndian.Uint64(s[:8]))
	}
	slices.Sort(prefixes)
	prefixes = slices.Compact(prefixes)
	b := make([]byte, 0, 8*len(prefixes))
	for _, p := range prefixes {
		b = binary.BigEndian.AppendUint64(b, p)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// holdsFiles is the membership test of an advert's Files and how many
// they are, or nil if they cannot be read (the peer is then asked for
// anything, and says 404).
func holdsFiles(files string) (func([32]byte) bool, int) {
	b, err := base64.StdEncoding.DecodeString(files)
	if err != nil || len(b)%8 != 0 {
		return nil, 0
	}
	prefixes := make([]uint64, len(b)/8)
	for i := range prefixes {
		prefixes[i] = binary.BigEndian.Uint64(b[8*i:])
	}
	return func(sum [32]byte) bool {
		_, found := slices.BinarySearch(prefixes, binary.BigEndian.Uint64(sum[:8]))
		return found
	}, len(prefixes)
}

// servePeer answers a peer's request for the file of the hash it names,
// from the cache alone.
func (h *Handler) servePeer(w http.ResponseWriter, r *http.Request, via string) error {
	for id := range strings.SplitSeq(via, ",") {
		if strings.TrimSpace(id) == h.instanceID {
			return caddyhttp.Error(http.StatusLoopDetected, errors.New("a peer request that came from this instance"))
		}
	}
	if !h.servesPeers() {
		return caddyhttp.Error(http.StatusForbidden, errors.New("this instance does not serve peers (serve_peers off)"))
	}
	sum, ok := parseSum(r.Header.Get(pool.PeerSumHeader))
	if !ok {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("a peer request needs %s: 64 hex digits", pool.PeerSumHeader))
	}
	if h.cache == nil {
		return caddyhttp.Error(http.StatusNotFound, errors.New("no cache"))
	}
	limit := int64(cmp.Or(h.PeerLoad, defaultPeerLoad))
	if h.cache.peerActive.Add(1) > limit {
		h.cache.peerActive.Add(-1)
		w.Header().Set("Retry-After", "1")
		return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("serving %d peers already", limit))
	}
	defer h.cache.peerActive.Add(-1)
	f, info, ok := h.cache.Get(sum, -1)
	if !ok {
		return caddyhttp.Error(http.StatusNotFound, errors.New("not in the cache"))
	}
	defer f.Close()
	cw, body := serveFile(w, r, r.URL.Path, func() ([32]byte, bool) { return sum, true }, info.Size(), info.ModTime(), f)
	defer func() { h.cache.peerServed.Add(cw.n) }()
	if err := h.finishFile(r, r.URL.Path, body); err != nil {
		return err
	}
	if ce := h.logger.Check(zap.DebugLevel, "served a peer"); ce != nil {
		ce.Write(zap.String("peer", via), zap.String("sha256", hex.EncodeToString(sum[:])), zap.Int64("bytes", cw.n))
	}
	return nil
}

// peerCounters are a cache's counts of what it did for peers.
type peerCounters struct {
	peerActive atomic.Int64 // peer transfers under way
	peerServed atomic.Int64 // bytes sent to peers
}
