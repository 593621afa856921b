package refractor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/caddy-refractor/refractor/internal/testmirror"
	"github.com/caddy-refractor/refractor/pool"
)

// learnMirrors is two slow mirrors (listed first) and two fast ones, all
// serving the same packages.
type learnMirrors struct {
	files      map[string][]byte
	names      []string
	slow, fast []*testmirror.Mirror
}

func newLearnMirrors(t *testing.T) *learnMirrors {
	t.Helper()
	m := &learnMirrors{files: map[string][]byte{}}
	for i := range 8 {
		name := fmt.Sprintf("extra/os/x86_64/pkg%d-1.0-1-any.pkg.tar.zst", i)
		m.files[name] = testmirror.Content(name, 256<<10)
		m.names = append(m.names, name)
	}
	for range 2 {
		s := testmirror.New(t, m.files)
		s.SetRate(512 << 10)
		m.slow = append(m.slow, s)
	}
	for range 2 {
		m.fast = append(m.fast, testmirror.New(t, m.files))
	}
	return m
}

// list is the static provider's mirrors, slow ones first.
func (m *learnMirrors) list() string {
	var bases []string
	for _, s := range append(append([]*testmirror.Mirror{}, m.slow...), m.fast...) {
		bases = append(bases, s.Base())
	}
	return strings.Join(bases, " ")
}

func (m *learnMirrors) slowRequests() int64 { return m.slow[0].Requests() + m.slow[1].Requests() }

func (m *learnMirrors) isFast(base string) bool {
	return base == m.fast[0].Base() || base == m.fast[1].Base()
}

// fetch downloads rel through p, checks it, and returns the mirror that
// served it.
func (m *learnMirrors) fetch(t *testing.T, p *caddyProcess, rel string) string {
	t.Helper()
	resp, err := http.Get(p.url(rel))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, m.files[rel]) {
		t.Fatalf("%s: status %d, %d bytes (want %d), err %v", rel, resp.StatusCode, len(body), len(m.files[rel]), err)
	}
	return resp.Header.Get("Refractor-Mirror")
}

// The knobs of these tests' pools: small trials and windows, every
// transfer a sample, nothing but the clients' requests reaching the mirrors
// (no sync file, no verification fetches).
const learnKnobs = `
			trial 2
			window 4
			good_throughput 32MiB
			peek_timeout 5s
			sync_file off
			verify off`

// A restart keeps what was learned: a Caddy process serves until its pool
// has settled on the fast mirrors and stops; a new process with the same
// storage (its default one, in the same data directory) sends its first
// requests to those mirrors, without a trial on the slow ones it learned
// of; and a reload that edits the provider keeps their scores.
func TestRestartRestoresWhatWasLearned(t *testing.T) {
	m := newLearnMirrors(t)
	home := t.TempDir()
	block := learnKnobs + `
			workers 2
			resign 1
			provider static ` + m.list()

	first := startCaddyProcess(t, home, block)
	streak := 0
	for i := 0; streak < 8; i++ {
		if i == 200 {
			t.Fatal("the first process did not settle on the fast mirrors in 200 downloads")
		}
		if m.isFast(m.fetch(t, first, m.names[i%len(m.names)])) {
			streak++
		} else {
			streak = 0
		}
	}
	first.stop(t)

	before := m.slowRequests()
	second := startCaddyProcess(t, home, block)
	restored := func() (n int) {
		for _, ps := range second.pools(t) {
			for _, w := range ps.Workers {
				n += w.From["restored"].Samples
			}
		}
		return n
	}
	// Checked before the workload: its local samples push the restored
	// ones out of the window (4 here).
	waitFor(t, "the restarted pool's workers with their restored samples", func() bool { return restored() > 0 })
	for _, name := range m.names {
		if mirror := m.fetch(t, second, name); !m.isFast(mirror) {
			t.Errorf("%s came from %s, not from a mirror the first process ranked best", name, mirror)
		}
	}
	if n := m.slowRequests() - before; n != 0 {
		t.Errorf("the restarted process sent %d requests to mirrors known to be slow", n)
	}

	// An edited provider (one more mirror, which renames the pool) keeps
	// the scores.
	extra := testmirror.New(t, m.files)
	second.reload(t, block+" "+extra.Base())
	// The new pool takes the fast mirrors back, with their samples, just
	// after the reload, and sends them its requests.
	waitFor(t, "the reloaded pool's workers: the fast mirrors with their samples", func() bool {
		scored := 0
		for _, ps := range second.pools(t) {
			for _, w := range ps.Workers {
				if m.isFast(w.Mirror) && w.Samples > 0 {
					scored++
				}
			}
		}
		return scored == 2
	})
	before = m.slowRequests()
	for _, name := range m.names[:4] {
		m.fetch(t, second, name)
	}
	if n := m.slowRequests() - before; n != 0 {
		t.Errorf("after the reload, %d requests went to mirrors known to be slow", n)
	}
}

// sharedRecords returns the records of learned state in storage dir's
// share group, decoded.
func sharedRecords(t *testing.T, dir, group string) []learnedRecord {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dir, filepath.FromSlash(groupDir(group)), "*.json"))
	var out []learnedRecord
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue // being replaced
		}
		var rec learnedRecord
		if json.Unmarshal(data, &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// Two instances (two processes, each with its own data directory, hence
// its own instance ID) that share a storage directory and a share name:
// B never tries the mirrors A found slow; without share, an instance
// learns nothing from A and tries them.
func TestShareGroupLearnsFromOtherInstances(t *testing.T) {
	m := newLearnMirrors(t)
	shared := t.TempDir()
	storage := fmt.Sprintf("\n\t\t\tstorage file_system %s\n\t\t\tsave_interval 200ms", shared)

	// A has room for every mirror and no rotation: it measures them all.
	a := startCaddyProcess(t, t.TempDir(), learnKnobs+storage+`
			share lab
			workers 4
			resign 0
			provider static `+m.list())
	for i := range 16 {
		m.fetch(t, a, m.names[i%len(m.names)])
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		recs := sharedRecords(t, shared, "lab")
		if len(recs) == 1 && len(recs[0].Mirrors) == 4 && len(recs[0].Mirrors[m.slow[0].Base()].Samples) >= 2 && len(recs[0].Mirrors[m.slow[1].Base()].Samples) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A's record did not reach the shared storage with all four mirrors measured: %+v", recs)
		}
		time.Sleep(50 * time.Millisecond) // polling a file another process writes
	}

	// B has room for two: it takes the two A found fast.
	block := learnKnobs + storage + `
			workers 2
			provider static ` + m.list()
	before := m.slowRequests()
	b := startCaddyProcess(t, t.TempDir(), block+"\n\t\t\tshare lab")
	for _, name := range m.names {
		if mirror := m.fetch(t, b, name); !m.isFast(mirror) {
			t.Errorf("B fetched %s from %s, which A found slow", name, mirror)
		}
	}
	if n := m.slowRequests() - before; n != 0 {
		t.Errorf("B sent %d requests to mirrors A found slow", n)
	}
	for _, ps := range b.pools(t) {
		for _, w := range ps.Workers {
			if w.From["shared"].Samples == 0 {
				t.Errorf("B's %s shows no samples shared by A: %+v", w.Mirror, w.From)
			}
		}
	}
	b.stop(t)

	// C, with the same storage but no share name, learns nothing from A.
	before = m.slowRequests()
	c := startCaddyProcess(t, t.TempDir(), block)
	for _, name := range m.names {
		m.fetch(t, c, name)
	}
	if m.slowRequests() == before {
		t.Error("C, outside the share group, did not try the slow mirrors: it learned from A")
	}
}

// writeRecord stores a record of learned state with one mirror's samples
// under key, as written at written (the file's time too).
func writeRecord(t *testing.T, root, key, mirror string, written time.Time) {
	t.Helper()
	rec := learnedRecord{Version: learnedVersion, Instance: "other", Process: "p", Written: written, Snapshot: pool.Snapshot{
		Mirrors: map[string]pool.MirrorRecord{mirror: {Samples: []pool.SampleRecord{
			{Bytes: 8 << 20, Seconds: 1, At: written.Unix()}, {Bytes: 8 << 20, Seconds: 1, At: written.Unix()}, {Bytes: 8 << 20, Seconds: 1, At: written.Unix()},
		}}},
	}}
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(file, written, written); err != nil {
		t.Fatal(err)
	}
}

// A share group's records of instances gone quiet for a day are deleted;
// recent ones count in the ranking as shared samples.
func TestShareGroupExpiresQuietInstances(t *testing.T) {
	root := t.TempDir()
	fresh, stale := "http://fresh.example/repo/", "http://stale.example/repo/"
	writeRecord(t, root, groupDir("lab")+"/recent.p1.json", fresh, time.Now().Add(-time.Hour))
	writeRecord(t, root, groupDir("lab")+"/quiet.p2.json", stale, time.Now().Add(-25*time.Hour))

	state := pool.NewState()
	storage := &certmagic.FileStorage{Path: root}
	st, err := openStateStore(t, state, storage, "test "+root, "lab", time.Hour, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.release(t, "test "+root, "lab") })
	if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(groupDir("lab")), "quiet.p2.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the quiet instance's record is still there (%v)", err)
	}

	p, err := pool.New(pool.Config{Workers: 2, State: state, SyncFile: "-", Provider: pool.ProviderFunc(
		func(context.Context) ([]pool.Candidate, error) {
			return []pool.Candidate{{URL: stale}, {URL: fresh}}, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	deadline := time.Now().Add(10 * time.Second)
	for len(p.Status().Workers) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the pool did not take both mirrors: %+v", p.Status())
		}
		time.Sleep(5 * time.Millisecond) // the recruiter is the pool's own goroutine
	}
	for _, w := range p.Status().Workers {
		want := map[string]int{fresh: 3, stale: 0}[w.Mirror]
		if got := w.From["shared"].Samples; got != want {
			t.Errorf("%s: %d shared samples, want %d", w.Mirror, got, want)
		}
	}
}

// A storage that fails (here a file system storage whose root is a file)
// costs no request: the failures are counted and logged.
func TestStorageOutageNeverFailsARequest(t *testing.T) {
	files := testFiles()
	m := testmirror.New(t, files)
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, err := caddy.ProvisionContext(&caddy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var h Handler
	cfg := fmt.Sprintf(`{"storage": {"module": "file_system", "root": %q}, "sync_file": "off", "provider": {"source": "static", "mirrors": [%q]}}`, notADir, m.Base())
	if err := json.Unmarshal([]byte(cfg), &h); err != nil {
		t.Fatal(err)
	}
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("a failing storage failed the provisioning: %v", err)
	}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h.ServeHTTP(w, r, nil)
	}))
	defer front.Close()
	for name, want := range files {
		resp, err := http.Get(front.URL + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
			t.Fatalf("%s: status %d, %d bytes", name, resp.StatusCode, len(body))
		}
	}
	saves := counterValue(metrics.storageErrors.WithLabelValues("save"))
	if err := h.Cleanup(); err != nil { // the last user: it saves, and fails
		t.Fatal(err)
	}
	if got := counterValue(metrics.storageErrors.WithLabelValues("save")); got != saves+1 {
		t.Errorf("save errors counted: %v, want %v", got, saves+1)
	}
}

// counterValue reads a counter of this process.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

// A process that restores what an earlier one of its instance saved, and
// learns nothing new (as `caddy validate` does: it provisions and cleans
// up), writes nothing and deletes nothing: the running process's record
// stays the only one.
func TestAProcessThatLearnsNothingLeavesTheRecordAlone(t *testing.T) {
	root := t.TempDir()
	id, err := caddy.InstanceID()
	if err != nil {
		t.Fatal(err)
	}
	key := groupDir("") + "/" + id.String() + ".running.json"
	writeRecord(t, root, key, "http://m.example/repo/", time.Now().Add(-time.Minute))

	storage := &certmagic.FileStorage{Path: root}
	st, err := openStateStore(t, pool.NewState(), storage, "test "+root, "", time.Hour, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	st.release(t, "test "+root, "") // Cleanup: the last user saves, if anything changed
	left, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(groupDir("")), "*.json"))
	if len(left) != 1 || filepath.Base(left[0]) != path.Base(key) {
		t.Fatalf("records after a process that learned nothing: %v, want only %s", left, key)
	}
}

// After a reload, the store writes to the new config's storage: the old
// config's storage module is cleaned up with it (a Redis client closed);
// a config that failed to load leaves the running one's in use.
func TestStoreUsesTheNewestConfigsStorage(t *testing.T) {
	before, after, failed := t.TempDir(), t.TempDir(), t.TempDir()
	const id = "test-reload"
	state := pool.NewState()
	open := func(owner any, dir string) *stateStore {
		st, err := openStateStore(owner, state, &certmagic.FileStorage{Path: dir}, id, "", time.Hour, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	oldCfg, newCfg, badCfg := new(int), new(int), new(int)
	st := open(oldCfg, before)
	open(newCfg, after)
	st.release(oldCfg, id, "") // the reload cleans the old config up
	open(badCfg, failed)
	st.release(badCfg, id, "") // a load that failed
	state.Restore(pool.Snapshot{Mirrors: map[string]pool.MirrorRecord{"http://m.example/repo/": {
		Samples: []pool.SampleRecord{{Bytes: 1 << 20, Seconds: 1, At: time.Now().Unix()}},
	}}}, time.Now()) // something learned meanwhile
	st.release(newCfg, id, "") // Caddy stops: the last user saves
	for dir, want := range map[string]int{before: 0, after: 1, failed: 0} {
		got, _ := filepath.Glob(filepath.Join(dir, filepath.FromSlash(groupDir("")), "*.json"))
		if len(got) != want {
			t.Errorf("records in %s: %v, want %d", dir, got, want)
		}
	}
}
