package refractor

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/caddy-refractor/refractor/internal/testmirror"
	"github.com/caddy-refractor/refractor/pool"
)

// peerBlock is the refractor block of an instance of the share group lab
// in the shared storage dir, with its own cache, offering it.
func peerBlock(shared, cache string, ms []*testmirror.Mirror) string {
	return fmt.Sprintf(`
			workers %d
			sync_file off
			name arch
			storage file_system %s
			share lab
			save_interval 200ms
			cache %s {
				min_free 1MiB
			}
			peer_url $SELF
			provider static %s`, len(ms), shared, cache, bases(ms))
}

// getFrom downloads rel through p, checks it, and returns who served it.
func getFrom(t *testing.T, p *caddyProcess, rel string, want []byte) string {
	t.Helper()
	resp, err := http.Get(p.url(rel))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || (want != nil && !bytes.Equal(body, want)) {
		t.Fatalf("%s: status %d, %d bytes (want %d), err %v", rel, resp.StatusCode, len(body), len(want), err)
	}
	return resp.Header.Get(pool.MirrorHeader)
}

// peersOf lists the peers in p's pools.
func peersOf(t *testing.T, p *caddyProcess) []string {
	var out []string
	for _, ps := range p.pools(t) {
		for _, w := range ps.Workers {
			if w.Peer {
				out = append(out, w.Mirror)
			}
		}
	}
	return out
}

// Two instances sharing a storage directory and a share group: B gets a
// package A has cached from A, without a request to any mirror for it; a
// request between peers never goes round; when A goes down, it expires
// from B's pool and B's downloads come from the mirrors, none failing.
func TestPeersServeEachOtherFromTheirCaches(t *testing.T) {
	repo := newCacheRepo(2<<20, 2<<20)
	ms := repo.mirrors(t, 2)
	shared := t.TempDir()
	a := startCaddyProcess(t, t.TempDir(), peerBlock(shared, t.TempDir(), ms))
	b := startCaddyProcess(t, t.TempDir(), peerBlock(shared, t.TempDir(), ms))
	aURL := "http://" + a.http + "/archlinux/"

	// A gets both packages into its cache.
	getFrom(t, a, cacheDB, nil)
	for _, pkg := range repo.pkgs {
		waitFor(t, "A to serve "+pkg+" from its cache", func() bool { return getFrom(t, a, pkg, repo.files[pkg]) == cacheMirror })
	}
	// B learns the database, and A as a peer holding them.
	getFrom(t, b, cacheDB, nil)
	waitFor(t, "B to take A as a peer", func() bool {
		peers := peersOf(t, b)
		return len(peers) == 1 && peers[0] == aURL
	})
	recs := sharedRecords(t, shared, "lab")
	waitFor(t, "A's record to advertise both packages", func() bool {
		recs = sharedRecords(t, shared, "lab")
		for _, rec := range recs {
			if rec.Peer != nil && rec.Peer.Pools["arch"] == aURL {
				holds, _ := holdsFiles(rec.Peer.Files)
				return holds != nil && holds(sha256.Sum256(repo.files[repo.pkgs[0]])) && holds(sha256.Sum256(repo.files[repo.pkgs[1]]))
			}
		}
		return false
	})

	waitFor(t, "B to know A's two files", func() bool {
		for _, ps := range b.pools(t) {
			for _, w := range ps.Workers {
				if w.Peer && w.PeerFiles == 2 {
					return true
				}
			}
		}
		return false
	})

	before := sent(ms)
	if from := getFrom(t, b, repo.pkgs[0], repo.files[repo.pkgs[0]]); from != cacheMirror {
		t.Errorf("B served the package from %q, not its cache (filled from A)", from)
	}
	if up := sent(ms) - before; up != 0 {
		t.Errorf("the mirrors sent %d bytes while B got a package A holds", up)
	}
	if n := peerBytesFrom(t, b, aURL); n < int64(len(repo.files[repo.pkgs[0]])) {
		t.Errorf("B received %d bytes from A, want the package's %d", n, len(repo.files[repo.pkgs[0]]))
	}

	// A request that carries A's own ID is a loop: A refuses it.
	req, _ := http.NewRequest(http.MethodGet, a.url(repo.pkgs[0]), nil)
	req.Header.Set(pool.PeerHeader, instanceIDOf(t, a.home))
	req.Header.Set(pool.PeerSumHeader, fmt.Sprintf("%x", sha256.Sum256(repo.files[repo.pkgs[0]])))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusLoopDetected {
		t.Errorf("a peer request carrying A's own ID: %v, %v; want 508", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}

	// A goes down: B's next download comes from the mirrors, whole, and A
	// leaves B's pool once its heartbeat is old.
	a.stop(t)
	if from := getFrom(t, b, repo.pkgs[1], repo.files[repo.pkgs[1]]); from != cacheMirror {
		t.Errorf("B served the second package from %q", from)
	}
	waitFor(t, "A to expire from B's pool", func() bool { return len(peersOf(t, b)) == 0 })
}

// peerBytesFrom is how many bytes p's pools received from the peer key.
func peerBytesFrom(t *testing.T, p *caddyProcess, key string) (n int64) {
	for _, ps := range p.pools(t) {
		for _, w := range ps.Workers {
			if w.Mirror == key && w.Peer {
				n += w.Bytes
			}
		}
	}
	return n
}

// instanceIDOf reads the instance ID of the Caddy process with home as its
// data directory.
func instanceIDOf(t *testing.T, home string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(home, "caddy", "instance.uuid")) // XDG_DATA_HOME/caddy
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.TrimSpace(b))
}

// A peer whose bytes are wrong is evicted like a mirror, and the client
// still gets the package intact, from a mirror.
func TestLyingPeerIsEvictedAndTheClientGetsIntactBytes(t *testing.T) {
	repo := newCacheRepo(512 << 10)
	pkg := repo.pkgs[0]
	var asked atomic.Int64
	liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		b := bytes.Clone(repo.files[pkg])
		b[len(b)/2] ^= 0xff
		http.ServeContent(w, r, "", testmirror.ModTime, bytes.NewReader(b))
	}))
	t.Cleanup(liar.Close)
	ms := repo.mirrors(t, 2)
	tester := startCaddy(t, cacheBlock(t.TempDir(), "", ms)+"\npeers "+liar.URL+"/archlinux/")
	repo.learn(t, tester)
	fetchAll(t, tester, 1, pkg, repo.files[pkg])
	if asked.Load() == 0 {
		t.Fatal("the lying peer was never asked: the test proves nothing")
	}
	for _, ps := range poolStatuses() {
		for _, w := range ps.Workers {
			if w.Peer {
				t.Errorf("the lying peer %s is still in the pool", w.Mirror)
			}
		}
	}
}
