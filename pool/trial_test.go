package pool

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
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
	var mirrors []*testmirror.Mirror
	var bases []string
	for _, rate := range []float64{0.3, 0.2, 8, 1} { // MiB/s
		m := testmirror.New(t, files)
		m.SetRate(int(rate * (1 << 20)))
		mirrors = append(mirrors, m)
		bases = append(bases, m.Base())
	}
	// Not verified: the pool does not learn the databases (learning
	// fetches copies from other mirrors, which would measure them too).
	p := startPool(t, Config{Workers: len(bases), SkipVerify: true, PeekTimeout: 10 * time.Second}, bases...)
	waitForWorkers(t, p, len(bases))
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = p.Serve(w, r, strings.TrimPrefix(r.URL.Path, "/"))
	}))
	t.Cleanup(front.Close)
	get := func(name string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, front.URL+"/"+name, nil)
		resp, err := front.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || string(body) != string(files[name]) {
			t.Fatalf("%s: got %d of %d bytes (err %v), or not the file's", name, len(body), len(files[name]), err)
		}
		return resp.Header.Get(MirrorHeader)
	}
	if got := get(first); got != mirrors[0].Base() {
		t.Fatalf("the first database came from %s, want the first mirror of the list", got)
	}
	// The fast mirror's trial ends long before the slow mirror's file.
	fast := mirrors[2].Base()
	for deadline := time.Now().Add(5 * time.Second); ; {
		st := p.Status()
		i := slices.IndexFunc(st.Workers, func(w WorkerStatus) bool { return w.Mirror == fast })
		if i >= 0 && st.Workers[i].Samples > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fast mirror made no sample while the first database came from the slow one: %+v", st.Workers)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := get(second); got != fast {
		t.Fatalf("the next database came from %s, want the fastest mirror %s", got, fast)
	}
}
