package pool

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// probeTimeout bounds one fetch of a mirror's sync file or probe file.
const probeTimeout = 5 * time.Second

// maxProbeBytes bounds the file a candidate's SyncProbe reads (a
// repomd.xml is a few KiB).
const maxProbeBytes = 1 << 20

// probeSync learns, concurrently, when each worker's mirror last
// synchronised: from its candidate's SyncProbe when it has one, else from
// the pool's sync file unless that is off. A mirror whose time cannot be
// read keeps what it had (its provider's word, an earlier probe, or
// nothing).
func (p *Pool) probeSync(workers []*worker) {
	var wg sync.WaitGroup
	for _, w := range workers {
		p.mu.Lock()
		probe := w.probe
		p.mu.Unlock()
		if probe == nil && p.cfg.SyncFile == "" {
			continue
		}
		wg.Go(func() {
			var t time.Time
			var err error
			if probe != nil {
				t, err = p.fetchProbe(w, probe)
			} else {
				t, err = p.fetchSync(w)
			}
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
	b, err := p.fetchSmall(w, p.cfg.SyncFile, 64)
	if err != nil {
		return time.Time{}, err
	}
	secs, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || secs <= 0 {
		return time.Time{}, errors.New("sync file is not a Unix time")
	}
	return time.Unix(secs, 0), nil
}

// fetchProbe reads the file of a candidate's probe from a mirror and
// returns the time its version became current. A version the probe does
// not know is an error: the mirror's sync time stays as it was.
func (p *Pool) fetchProbe(w *worker, probe *SyncProbe) (time.Time, error) {
	b, err := p.fetchSmall(w, probe.Path, maxProbeBytes)
	if err != nil {
		return time.Time{}, err
	}
	sum := sha256.Sum256(b)
	t, ok := probe.Times[sum]
	if !ok {
		return time.Time{}, fmt.Errorf("%s: a version the provider does not know (sha256 %x)", probe.Path, sum)
	}
	return t, nil
}

// fetchSmall reads the file at rel under a mirror's base, failing when it
// is larger than limit bytes.
func (p *Pool) fetchSmall(w *worker, rel string, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(p.ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.mirror.JoinPath(rel).String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{resp.Status}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", rel, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", rel, limit)
	}
	return b, nil
}
