package pool

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// probeTimeout bounds one fetch of a mirror's sync file.
const probeTimeout = 5 * time.Second

// probeSync reads the sync file of each worker's mirror, concurrently, and
// records when the mirror last synchronised. A mirror without a readable
// sync file keeps what its provider said, if anything.
func (p *Pool) probeSync(workers []*worker) {
	if p.cfg.SyncFile == "" || len(workers) == 0 {
		return
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			t, err := p.fetchSync(w)
			if err != nil {
				p.log.Debug("no sync time from mirror", zap.String("mirror", w.key), zap.Error(err))
				return
			}
			t, ok := believedSync(t, time.Now())
			if !ok {
				p.log.Warn("ignoring a sync time in the future", zap.String("mirror", w.key), zap.Time("last_sync", t))
				return
			}
			p.mu.Lock()
			w.lastSync = t
			p.state.mu.Lock()
			w.stats.lastSync = t // kept with what is learned of the mirror
			p.state.mu.Unlock()
			p.handOverIdle() // it may be the freshest now
			p.mu.Unlock()
		})
	}
	wg.Wait()
}

// maxClockSkew: a sync time further than this in the future is not
// believed (a wrong clock, or a lie, would make the mirror "the freshest"
// and give it every index).
const maxClockSkew = 5 * time.Minute

// believedSync is a mirror's sync time t as the pool believes it at now:
// one further than maxClockSkew in the future is not believed (ok false);
// a nearer one is taken as now, so that a clock a little ahead does not
// make its mirror the only fresh one either.
func believedSync(t, now time.Time) (_ time.Time, ok bool) {
	if t.After(now.Add(maxClockSkew)) {
		return time.Time{}, false
	}
	if t.After(now) {
		return now, true
	}
	return t, true
}

// fetchSync reads a mirror's sync file: a Unix time in seconds, as the
// lastsync file at the root of Arch Linux mirrors.
func (p *Pool) fetchSync(w *worker) (time.Time, error) {
	ctx, cancel := context.WithTimeout(p.ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.mirror.JoinPath(p.cfg.SyncFile).String(), nil)
	if err != nil {
		return time.Time{}, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return time.Time{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return time.Time{}, &statusError{resp.Status}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	if err != nil {
		return time.Time{}, err
	}
	secs, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || secs <= 0 {
		return time.Time{}, errors.New("sync file is not a Unix time")
	}
	return time.Unix(secs, 0), nil
}
