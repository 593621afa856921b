package pool

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// peerServer is a peer as refractor's handler is one: it answers from its
// cache (files, by the SHA-256 the request names), 404 for what it lacks.
type peerServer struct {
	*httptest.Server
	mu    sync.Mutex
	asked []*http.Request
}

func newPeerServer(t *testing.T, files map[string][]byte, lie bool) *peerServer {
	ps := &peerServer{}
	byHash := map[string][]byte{}
	for _, b := range files {
		sum := sha256Hex(b)
		if lie {
			b = flipped(b)
		}
		byHash[sum] = b
	}
	ps.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps.mu.Lock()
		ps.asked = append(ps.asked, r.Clone(r.Context()))
		ps.mu.Unlock()
		b, ok := byHash[r.Header.Get(PeerSumHeader)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", testmirror.ModTime, bytes.NewReader(b))
	}))
	t.Cleanup(ps.Close)
	return ps
}

func (ps *peerServer) base() string { return ps.URL + "/peer/" }

func (ps *peerServer) requests() []*http.Request {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]*http.Request(nil), ps.asked...)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// peerTestRepo is a database listing one package, name, of size bytes,
// and two mirrors serving both.
func peerTestRepo(t *testing.T, name string, size int) (pkgs map[string][]byte, a, b *testmirror.Mirror) {
	t.Helper()
	pkgs = map[string][]byte{name: testmirror.Content(name, size)}
	db := pacmanDB(t, pkgs)
	return pkgs, testmirror.New(t, repoTree(db, pkgs)), testmirror.New(t, repoTree(db, pkgs))
}

// A peer serves the files of known hash it holds, marked as from this
// instance, and is never asked for an index.
func TestPeerServesFilesOfKnownHash(t *testing.T) {
	name := "big-1.0-1-x86_64.pkg.tar.zst"
	pkgs, a, b := peerTestRepo(t, name, 1<<20)
	a.SetRate(2 << 20)
	b.SetRate(2 << 20)
	peer := newPeerServer(t, pkgs, false)
	p := servePool(t, Config{InstanceID: "me"}, a, b)
	p.SetPeers([]Peer{{URL: peer.base()}})
	learnDB(t, p)

	rec, err := serve(t, p, nil, dirOf(dbName)+name)
	if err != nil || !bytes.Equal(rec.Body.Bytes(), pkgs[name]) {
		t.Fatalf("Serve: %v, %d bytes", err, rec.Body.Len())
	}
	if got := rec.Header().Get(MirrorHeader); got != peer.base() {
		t.Errorf("the package came from %q, not the peer (new, so on trial)", got)
	}
	for _, r := range peer.requests() {
		if !strings.HasSuffix(r.URL.Path, ".pkg.tar.zst") {
			t.Errorf("the peer was asked for %s", r.URL.Path)
		}
		if r.Header.Get(PeerHeader) != "me" || r.Header.Get(PeerSumHeader) != sha256Hex(pkgs[name]) {
			t.Errorf("request to the peer without its headers: %v", r.Header)
		}
	}
	if st := p.Status(); !slicesContainsPeer(st.Workers, peer.base()) {
		t.Errorf("the status does not show the peer apart: %+v", st.Workers)
	}
}

func slicesContainsPeer(ws []WorkerStatus, key string) bool {
	for _, w := range ws {
		if w.Mirror == key && w.Peer {
			return true
		}
	}
	return false
}

// A peer that lacks the file declines: no failure of its own, no retry
// used up; the mirrors serve it.
func TestPeerDeclineIsNoFailure(t *testing.T) {
	name := "foo-1.0-1-x86_64.pkg.tar.zst"
	pkgs, a, b := peerTestRepo(t, name, 300<<10)
	empty := newPeerServer(t, nil, false)
	p := servePool(t, Config{Retries: -1}, a, b) // retries 0
	p.SetPeers([]Peer{{URL: empty.base()}})
	learnDB(t, p)
	for range 3 {
		rec, err := serve(t, p, nil, dirOf(dbName)+name)
		if err != nil || !bytes.Equal(rec.Body.Bytes(), pkgs[name]) {
			t.Fatalf("Serve with retries 0 after the peer's 404: %v, %d bytes", err, rec.Body.Len())
		}
	}
	if len(empty.requests()) == 0 {
		t.Fatal("the peer was never asked: the test proves nothing")
	}
	for _, w := range p.Status().Workers {
		if w.Mirror == empty.base() && w.Failures != 0 {
			t.Errorf("the peer's 404s counted %d failures", w.Failures)
		}
	}
	if !slicesContainsPeer(p.Status().Workers, empty.base()) {
		t.Error("the peer left the pool")
	}
}

// A peer whose bytes do not match the index is evicted like a mirror, and
// the client gets the file intact from a mirror.
func TestLyingPeerIsEvicted(t *testing.T) {
	name := "foo-1.0-1-x86_64.pkg.tar.zst"
	pkgs, a, b := peerTestRepo(t, name, 300<<10)
	liar := newPeerServer(t, pkgs, true)
	p := servePool(t, Config{}, a, b)
	p.SetPeers([]Peer{{URL: liar.base()}})
	learnDB(t, p)
	rec, err := serve(t, p, nil, dirOf(dbName)+name)
	if err != nil || !bytes.Equal(rec.Body.Bytes(), pkgs[name]) {
		t.Fatalf("Serve: %v, %d bytes, intact %v", err, rec.Body.Len(), bytes.Equal(rec.Body.Bytes(), pkgs[name]))
	}
	if len(liar.requests()) == 0 {
		t.Fatal("the liar was never asked: the test proves nothing")
	}
	if slicesContainsPeer(p.Status().Workers, liar.base()) {
		t.Fatal("the lying peer is still in the pool")
	}
	p.SetPeers([]Peer{{URL: liar.base()}}) // offered again: it stays out
	if slicesContainsPeer(p.Status().Workers, liar.base()) {
		t.Error("the lying peer came back before its cool-down ended")
	}
}

// A peer that joins while a large transfer runs helps with ranges of it
// (as an explorer), asked as a peer: every request it gets carries the
// peer headers, and one it declines counts no failure.
func TestPeerInASplitIsAskedAsAPeer(t *testing.T) {
	name := "huge-1.0-1-x86_64.pkg.tar.zst"
	pkgs, a, b := peerTestRepo(t, name, 40<<20)
	a.SetRate(6 << 20)
	b.SetRate(6 << 20)
	peer := newPeerServer(t, pkgs, false)
	p := servePool(t, Config{InstanceID: "me", PeekTimeout: 10 * time.Second}, a, b)
	learnDB(t, p)

	done := make(chan error, 1)
	var rec *httptest.ResponseRecorder
	go func() {
		var err error
		rec, err = serve(t, p, nil, dirOf(dbName)+name)
		done <- err
	}()
	pollFor(t, 10*time.Second, "the transfer to start", func() bool { return a.Active()+b.Active() > 0 })
	p.SetPeers([]Peer{{URL: peer.base()}})
	if err := <-done; err != nil || !bytes.Equal(rec.Body.Bytes(), pkgs[name]) {
		t.Fatalf("Serve: %v, %d bytes", err, rec.Body.Len())
	}
	reqs := peer.requests()
	if len(reqs) == 0 {
		t.Fatal("the peer never helped: the test proves nothing")
	}
	for _, r := range reqs {
		if r.Header.Get(PeerHeader) != "me" || r.Header.Get(PeerSumHeader) == "" {
			t.Errorf("a request to the peer (Range %q) without the peer headers", r.Header.Get("Range"))
		}
	}
}
