package pool

import (
	"cmp"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Peers: other refractor instances whose LAN caches serve this pool's
// files. A peer is a worker of its own kind: it is asked only for a file
// whose SHA-256 the catalog knows (never an index), and only if it may
// hold it (its advertised set); it is ranked by the throughput it shows
// like a mirror, takes part in splits and moves, and its bytes are checked
// like a mirror's (a liar is evicted). It does not count as one of the
// pool's workers, never resigns, and no rule that judges mirrors against
// each other counts its LAN speed (mirrorsOf). A peer that lacks the file
// (404) or is busy (503), or refuses peers (403, 508), has declined: that
// is no failure and uses up no retry, in a split as in a first attempt. The pool asks the peer with PeerHeader (this instance's ID) and
// PeerSumHeader (the file's hash); the peer answers from its cache only.

const (
	// PeerHeader, on a request to a peer, carries the asking instance's
	// ID: a peer refuses a request that carries its own (a loop), and
	// answers any other from its cache alone, never from the Internet.
	PeerHeader = "Refractor-Peer"
	// PeerSumHeader, on a request to a peer, is the hex SHA-256 of the
	// file asked for: the peer finds it in its cache by that.
	PeerSumHeader = "Refractor-Sha256"
)

// Peer is another refractor instance offered to the pool as a source of
// the files its cache holds.
type Peer struct {
	// URL is the peer's base for this pool's repository (its site and the
	// path of the same repository), as a mirror's.
	URL string
	// Holds reports whether the peer may hold the file of that SHA-256;
	// nil means it may hold any (it says 404 quickly for what it lacks).
	Holds func([32]byte) bool
	// Files is how many files the peer advertises (for the status view);
	// 0 if it does not say.
	Files int
	// Load is how many transfers the peer accepts at once (its worker
	// carries that many); 0 means DefaultPeerLoad.
	Load int
}

// DefaultPeerLoad is how many transfers a peer accepts at once unless it
// says otherwise: enough for a client's parallel downloads (pacman's
// ParallelDownloads is often 5).
const DefaultPeerLoad = 8

// peerInfo is what a peer's worker knows of the peer.
type peerInfo struct {
	holds func([32]byte) bool
	files int
	load  int
}

// SetPeers makes peers the pool's peers: new ones join (unless cooling
// down, after failing or lying), ones no longer listed leave once idle,
// and the sets of the others are replaced.
func (p *Pool) SetPeers(peers []Peer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return
	}
	want := make(map[string]Peer, len(peers))
	for _, pr := range peers {
		u, err := ParseMirrorURL(pr.URL)
		if err != nil {
			p.log.Warn("ignoring a peer", zap.String("peer", pr.URL), zap.Error(err))
			continue
		}
		want[u.String()] = pr
	}
	for _, w := range slices.Clone(p.peers) {
		pr, ok := want[w.key]
		switch {
		case !ok && w.load == 0:
			p.dropPeer(w)
		case ok:
			w.peer.holds, w.peer.files, w.peer.load = pr.Holds, pr.Files, cmp.Or(pr.Load, DefaultPeerLoad)
			delete(want, w.key)
		}
	}
	now := time.Now()
	for key, pr := range want {
		u, _ := ParseMirrorURL(key)
		p.state.mu.Lock()
		cooling := p.state.coolingDown(key, now)
		var stats *mirrorStats
		if !cooling {
			stats = p.state.stats(key, p.cfg.Window)
		}
		p.state.mu.Unlock()
		if cooling || slices.ContainsFunc(p.workers, func(w *worker) bool { return w.key == key }) {
			continue
		}
		p.guard.allow(u) // peers are LAN addresses by nature
		w := &worker{mirror: u, key: key, stats: stats, joined: now, peer: &peerInfo{holds: pr.Holds, files: pr.Files, load: cmp.Or(pr.Load, DefaultPeerLoad)}}
		p.peers = append(p.peers, w)
		p.log.Info("peer joined the pool", zap.String("peer", key))
		p.handOver(w)
	}
}

// dropPeer takes a peer that is no longer offered out of the pool, with
// no cool-down. p.mu must be held.
func (p *Pool) dropPeer(w *worker) {
	if i := slices.Index(p.peers, w); i >= 0 {
		p.peers = slices.Delete(p.peers, i, i+1)
		p.log.Info("peer left the pool", zap.String("peer", w.key))
	}
}

// setPeerHeaders marks a request to w, if w is a peer: who asks, and the
// hash of the file asked for. Every request to a peer goes through it (a
// peer answers one without them as a client, from the Internet).
func (t *transfer) setPeerHeaders(req *http.Request, w *worker) {
	if w.peer == nil {
		return
	}
	req.Header.Set(PeerHeader, t.p.cfg.InstanceID)
	req.Header.Set(PeerSumHeader, hex.EncodeToString(t.expect.sum[:]))
}

// declined reports whether a peer's answer err is one that does not count
// against it nor uses up a retry: it does not hold the file (404, 410), is
// busy (503), does not serve peers (403, serve_peers off) or is this
// instance itself (508, a loop: a peers list naming it).
func declined(w *worker, err error) bool {
	if w.peer == nil || err == nil {
		return false
	}
	var se *statusError
	if !errors.As(err, &se) {
		return false
	}
	code, _, _ := strings.Cut(se.status, " ")
	return slices.Contains([]string{"403", "404", "410", "503", "508"}, code)
}
