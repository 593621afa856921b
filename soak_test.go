//go:build soak

package refractor

// The soak test runs only with -tags soak: many concurrent clients against
// flaky mirrors for a few minutes (-soak.duration), then it reports what
// the clients saw, and fails on any corrupt file or leaked goroutine.
//
//	go test -tags soak -run TestSoak -soak.duration 3m -v .

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

var (
	soakDuration = flag.Duration("soak.duration", 2*time.Minute, "how long the soak test runs")
	soakClients  = flag.Int("soak.clients", 32, "concurrent clients in the soak test")
)

func TestSoak(t *testing.T) {
	files := map[string][]byte{}
	var names []string
	sizes := []int{2 << 10, 40 << 10, 300 << 10, 1 << 20, 3 << 20, 8 << 20}
	for i := range 24 {
		name := fmt.Sprintf("core/os/x86_64/pkg%02d-1.0-1-x86_64.pkg.tar.zst", i)
		files[name] = testmirror.Content(name, sizes[i%len(sizes)])
		names = append(names, name)
	}
	files["core/os/x86_64/core.db"] = testmirror.Content("core.db", 2<<20)
	names = append(names, "core/os/x86_64/core.db")

	var bases []string
	for i := range 8 {
		m := testmirror.New(t, files)
		m.SetRate((4 + 4*i) << 20)
		if i%2 == 1 {
			m.SetFlaky(0.1)
		}
		bases = append(bases, m.Base())
	}
	tester := startCaddy(t, fmt.Sprintf(`
			workers 5
			stall_timeout 1s
			peek_timeout 1s
			cooldown 5s
			provider static %s`, strings.Join(bases, " ")))
	tester.Client.Timeout = time.Minute
	// Warm up, then take the baseline.
	get(t, tester, newRequest(t, http.MethodGet, names[0]))
	runtime.GC()
	goroutinesBefore := runtime.NumGoroutine()

	var requests, bytesOK, clientFailures, corrupt atomic.Int64
	var peakHeap atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range *soakClients {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				name := names[rand.IntN(len(names))]
				requests.Add(1)
				resp, err := tester.Client.Get(url(name))
				if err != nil {
					clientFailures.Add(1)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case err != nil || resp.StatusCode != http.StatusOK:
					clientFailures.Add(1) // detected by the client: not silent
				case !bytes.Equal(body, files[name]):
					corrupt.Add(1)
					t.Errorf("%s: corrupt body (%d bytes) from %s", name, len(body), resp.Header.Get("Refractor-Mirror"))
				default:
					bytesOK.Add(int64(len(body)))
				}
			}
		})
	}
	sampler := time.NewTicker(time.Second)
	deadline := time.After(*soakDuration)
	var goroutines []int
loop:
	for {
		select {
		case <-sampler.C:
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peakHeap.Load() {
				peakHeap.Store(ms.HeapInuse)
			}
			goroutines = append(goroutines, runtime.NumGoroutine())
		case <-deadline:
			break loop
		}
	}
	sampler.Stop()
	close(stop)
	wg.Wait()
	for _, ps := range poolStatuses() {
		for _, r := range ps.Rotations {
			t.Logf("rotation: %s %s (score %.0f B/s)", r.Mirror, r.Reason, r.Score)
		}
	}
	tester.Client.CloseIdleConnections()
	// Unload refractor: its pool closes its idle connections to the
	// mirrors, which are not leaks but would hide one.
	tester.InitServer(globalOptions+fmt.Sprintf("http://localhost:%d {\n\trespond ok\n}\n", httpPort), "caddyfile")

	var goroutinesAfter int
	waitForSettle := time.Now().Add(30 * time.Second)
	for {
		runtime.GC()
		goroutinesAfter = runtime.NumGoroutine()
		if goroutinesAfter <= goroutinesBefore || time.Now().After(waitForSettle) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	sort.Ints(goroutines)
	status, _ := os.ReadFile("/proc/self/status")
	var hwm string
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM") {
			hwm = strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:"))
		}
	}
	t.Logf("soak: %v, %d clients: %d requests, %.1f MiB served intact, %d failures seen by clients, %d corrupt files",
		*soakDuration, *soakClients, requests.Load(), float64(bytesOK.Load())/(1<<20), clientFailures.Load(), corrupt.Load())
	t.Logf("soak: peak heap in use %.1f MiB, peak RSS %s; goroutines before %d, during max %d, after unloading %d",
		float64(peakHeap.Load())/(1<<20), hwm, goroutinesBefore, goroutines[len(goroutines)-1], goroutinesAfter)
	if corrupt.Load() != 0 {
		t.Errorf("%d corrupt files", corrupt.Load())
	}
	if goroutinesAfter > goroutinesBefore {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d before, %d after the clients stopped:\n%s", goroutinesBefore, goroutinesAfter, buf[:runtime.Stack(buf, true)])
	}
}
