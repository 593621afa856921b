package pool

import (
	"bytes"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

// A cold pool, one client fetching its databases one after the other, the
// first mirror of the list slow: while the first database comes from it,
// the other mirrors each fetch the head of that file alongside, so the
// next database comes from the fastest of them, not from the first mirror
// again.
func TestParallelTrialsSendTheNextDatabaseToTheFastest(t *testing.T) {
	const first, second = "core/os/x86_64/core.db", "extra/os/x86_64/extra.db"
	files := map[string][]byte{
		first:  testmirror.Content(first, 128<<10),
		second: testmirror.Content(second, 2<<20),
	}
	// Not verified: the pool does not learn the databases (learning
	// fetches copies from other mirrors, which would measure them too).
	p, _, mirrors := coldPool(t, files, []float64{0.3, 0.2, 8, 1}, 0, func(c *Config) { c.SkipVerify = true })
	get := func(name string) string {
		t.Helper()
		rec, err := serve(t, p, nil, name)
		if err != nil || rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), files[name]) {
			t.Fatalf("%s: status %d, %d of %d bytes (Serve: %v), or not the file's", name, rec.Code, rec.Body.Len(), len(files[name]), err)
		}
		return rec.Header().Get(MirrorHeader)
	}
	if got := get(first); got != mirrors[0].Base() {
		t.Fatalf("the first database came from %s, want the first mirror of the list", got)
	}
	// The fast mirror's trial ends long before the slow mirror's file.
	fast := mirrors[2].Base()
	pollFor(t, 5*time.Second, "the fast mirror's sample from its parallel trial", func() bool {
		st := p.Status()
		i := slices.IndexFunc(st.Workers, func(w WorkerStatus) bool { return w.Mirror == fast })
		return i >= 0 && st.Workers[i].Samples > 0
	})
	if got := get(second); got != fast {
		t.Fatalf("the next database came from %s, want the fastest mirror %s", got, fast)
	}
}

// A request that arrives while the parallel trials hold every idle worker
// does not wait for them: requests come first, and the trials give their
// workers up at once (they may hold them for trialTimeout).
func TestParallelTrialsGiveWayToAWaitingRequest(t *testing.T) {
	const big, small = "core/os/x86_64/big-1-1-any.pkg.tar.zst", "core/os/x86_64/small-1-1-any.pkg.tar.zst"
	files := map[string][]byte{
		big:   testmirror.Content(big, 4<<20),
		small: testmirror.Content(small, 4<<10),
	}
	// The first mirror carries the big file for seconds; the others would
	// need far longer than trialTimeout for a trial's bytes.
	p, _, mirrors := coldPool(t, files, []float64{1, 1.0 / 64, 1.0 / 64}, 0, func(c *Config) { c.Split = 1 })
	done := make(chan error, 1)
	go func() {
		rec, err := serve(t, p, nil, big)
		if err == nil && !bytes.Equal(rec.Body.Bytes(), files[big]) {
			err = errors.New("not the big file")
		}
		done <- err
	}()
	pollFor(t, 5*time.Second, "the trials to start", func() bool {
		return mirrors[1].Active() > 0 && mirrors[2].Active() > 0
	})
	start := time.Now()
	rec, err := serve(t, p, nil, small)
	took := time.Since(start)
	if err != nil || !bytes.Equal(rec.Body.Bytes(), files[small]) {
		t.Fatalf("the small file: status %d, %d bytes (Serve: %v)", rec.Code, rec.Body.Len(), err)
	}
	t.Logf("the small file came in %v, from %s", took, rec.Header().Get(MirrorHeader))
	if took >= trialTimeout*3/4 {
		t.Errorf("the small file waited %v: the trials kept their workers from it", took)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
