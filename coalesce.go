package refractor

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Indexes are never cached (a cache must not make a client's view of its
// repository older), nor are packages whose hash is not known yet (a cold
// pool still corroborating its indexes), but with a cache, concurrent
// plain GETs of one such file share one upstream transfer: the first
// request is served by the pool as usual while its body is kept in memory,
// and the requests that came meanwhile get that same answer when it is
// complete. Every machine of a LAN asks for the same databases at once
// after the same timer fires, and then for the same packages.

const (
	// coalesceMax bounds the body one flight keeps; a larger file is
	// served to each request on its own.
	coalesceMax = 64 << 20
	// coalesceBudget bounds the bodies all flights keep at once.
	coalesceBudget = 256 << 20
	// followStall: a follower whose flight has not moved for this long
	// (its leader's client stopped reading, and the pool parked it) is
	// served on its own.
	followStall = 2 * time.Second
)

// flights are the transfers under way that others may share, by pool and
// path.
var flights struct {
	sync.Mutex
	m    map[string]*flight
	used atomic.Int64 // bytes the flights' bodies hold
}

// flight is one upstream transfer that later requests follow.
type flight struct {
	done   chan struct{} // closed when the leader's response is complete or failed
	moved  atomic.Int64  // body bytes the leader has sent so far
	status int
	header http.Header
	body   []byte
	ok     bool // the body is the whole of a 200 response
}

// coalescible reports whether r is a request that may share another's
// upstream transfer: a plain, unconditional GET.
func coalescible(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	if r.Header.Get("Range") != "" {
		return false
	}
	for _, h := range conditionalHeaders {
		if r.Header.Get(h) != "" {
			return false
		}
	}
	return true
}

// serveCoalesced serves r for the file at rel: as the leader of a new
// flight (through the pool, keeping the body), or from the flight under
// way. It returns handled false for a follower whose flight failed (the
// pool serves it on its own).
func (h *Handler) serveCoalesced(w http.ResponseWriter, r *http.Request, rel string) (handled bool, err error) {
	key := h.Name + "\x00" + rel
	flights.Lock()
	if flights.m == nil {
		flights.m = map[string]*flight{}
	}
	f, following := flights.m[key]
	if !following {
		f = &flight{done: make(chan struct{})}
		flights.m[key] = f
	}
	flights.Unlock()

	if following {
		tick := time.NewTicker(followStall)
		defer tick.Stop()
		for seen := int64(-1); ; {
			select {
			case <-f.done:
			case <-r.Context().Done():
				return true, r.Context().Err()
			case <-tick.C:
				if n := f.moved.Load(); n != seen {
					seen = n
					continue
				}
				return false, nil // a stalled flight: on its own
			}
			break
		}
		if !f.ok {
			return false, nil
		}
		for k, v := range f.header {
			w.Header()[k] = v
		}
		w.WriteHeader(f.status)
		n, err := w.Write(f.body)
		h.cacheHit()
		h.cacheSent(int64(n), true)
		return true, err
	}

	tw := &teeWriter{countingWriter: &countingWriter{ResponseWriter: w}, moved: &f.moved}
	defer func() {
		flights.Lock()
		delete(flights.m, key)
		flights.Unlock()
		f.status, f.header, f.body = tw.status, tw.Header().Clone(), tw.body
		f.ok = err == nil && tw.status == http.StatusOK && !tw.over &&
			tw.Header().Get("Content-Length") == strconv.Itoa(len(tw.body))
		close(f.done)
		// The followers have what they need once they woke up; the
		// budget is given back now, the memory when the last one is done.
		flights.used.Add(-int64(tw.charged))
		if ce := h.logger.Check(zap.DebugLevel, "shared transfer done"); ce != nil {
			ce.Write(zap.String("path", rel), zap.Bool("shared", f.ok), zap.Int("bytes", len(tw.body)))
		}
	}()
	return true, h.pool.Serve(tw, r, rel)
}

// teeWriter passes a response on and keeps a copy of its body, within
// coalesceMax and the flights' budget.
type teeWriter struct {
	*countingWriter
	moved   *atomic.Int64 // the flight's progress
	body    []byte
	charged int
	over    bool
}

func (tw *teeWriter) Write(b []byte) (int, error) {
	tw.keep(b)
	n, err := tw.countingWriter.Write(b)
	tw.moved.Add(int64(n))
	return n, err
}

// keep adds b to the copy, or drops the copy for good when it would go
// over coalesceMax or the budget (what it charged is given back when the
// flight ends).
func (tw *teeWriter) keep(b []byte) {
	switch {
	case tw.over:
	case len(tw.body)+len(b) > coalesceMax:
		tw.over, tw.body = true, nil
	case flights.used.Add(int64(len(b))) > coalesceBudget:
		flights.used.Add(-int64(len(b)))
		tw.over, tw.body = true, nil
	default:
		tw.charged += len(b)
		tw.body = append(tw.body, b...)
	}
}
