package pool

import (
	"bytes"
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
