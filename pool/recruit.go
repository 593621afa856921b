package pool

import (
	"context"
	"net/url"
	"slices"
	"time"

	"go.uber.org/zap"
)

// missing is how many workers the pool lacks: its size, and its surge
// while it explores (explore.go).
func (p *Pool) missing() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.Workers + p.surge() - len(p.workers)
}

// Backoff bounds of the recruiter when the provider fails or has nothing new.
const (
	minBackoff = time.Second
	maxBackoff = 2 * time.Minute
)

// recruitLoop keeps the pool at full strength. It first takes back the
// mirrors the previous pool with its MembersKey had (after a config
// reload), then
// asks the provider, backing off while the provider fails or has nothing
// new.
func (p *Pool) recruitLoop() {
	defer p.wg.Done()
	p.state.mu.Lock()
	previous := slices.Clone(p.state.members[p.cfg.MembersKey])
	p.state.mu.Unlock()
	p.probeSync(p.admitMembers(previous))

	backoff := minBackoff
	resync := time.NewTicker(p.cfg.SyncInterval)
	defer resync.Stop()
	for {
		if need := p.missing(); need > 0 {
			if joined := p.recruit(need); len(joined) > 0 {
				p.probeSync(joined)
				backoff = minBackoff
				continue
			}
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		select {
		case <-p.wake:
		case <-resync.C:
			p.refreshProbes()
			p.probeSync(p.workerList())
		case <-p.ctx.Done():
			return
		}
	}
}

// refreshProbes gives the workers the provider's newest probes (a metalink
// fetched again since they joined knows newer versions) before they are
// probed again. Only a pool whose workers have probes asks.
func (p *Pool) refreshProbes() {
	p.mu.Lock()
	probed := slices.ContainsFunc(p.workers, func(w *worker) bool { return w.probe != nil })
	p.mu.Unlock()
	if !probed {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, providerTimeout)
	defer cancel()
	cands, err := p.cfg.Provider.Candidates(ctx)
	if err != nil {
		return // the recruiter reports the provider's errors
	}
	ms := make([]member, len(cands))
	for i, c := range cands {
		ms[i] = member{Candidate: c}
	}
	p.mu.Lock()
	p.updateProbes(ms)
	p.mu.Unlock()
}

func (p *Pool) workerList() []*worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.workers)
}

// providerTimeout bounds one call to the provider.
const providerTimeout = time.Minute

// recruit asks the provider for up to need new mirrors and reports how many
// joined. A provider that proposes one mirror a call is asked a few times.
// When it has nothing new, mirrors that resigned (slow, not broken) and
// that it still proposes come back before their cool-down ends, the one
// that left first first: a pool at full strength serves more at once, and
// a mirror that was slow may be fast now.
func (p *Pool) recruit(need int) []*worker {
	var joined []*worker
	var seen []Candidate
	for calls := 0; calls < need+2 && len(joined) < need; calls++ {
		ctx, cancel := context.WithTimeout(p.ctx, providerTimeout)
		cands, err := p.cfg.Provider.Candidates(ctx)
		cancel()
		if p.ctx.Err() != nil {
			return joined
		}
		p.noteProvider(err)
		if err != nil {
			p.log.Warn("provider failed", zap.Error(err))
			return joined
		}
		seen = append(seen, cands...)
		n := p.admit(cands)
		joined = append(joined, n...)
		if len(n) == 0 && len(cands) != 1 {
			break // a list with nothing new: asking again won't help
		}
	}
	for len(joined) < need {
		w := p.readmit(seen)
		if w == nil {
			break
		}
		joined = append(joined, w)
	}
	if len(joined) < need {
		p.mu.Lock()
		p.noteSurgeDry()
		p.mu.Unlock()
	}
	return joined
}

// readmit brings back the candidate that resigned longest ago, if any.
func (p *Pool) readmit(cands []Candidate) *worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing || len(p.workers) >= p.cfg.Workers {
		return nil
	}
	p.state.mu.Lock()
	var best *url.URL
	var bestCand Candidate
	var bestUntil time.Time
	for _, c := range cands {
		u, err := ParseMirrorURL(c.URL)
		if err != nil {
			continue
		}
		key := u.String()
		until, cooling := p.state.cooldown[key]
		if !cooling || !p.state.resigned[key] || p.has(key) {
			continue
		}
		if best == nil || until.Before(bestUntil) {
			best, bestCand, bestUntil = u, c, until
		}
	}
	if best == nil {
		p.state.mu.Unlock()
		return nil
	}
	key := best.String()
	delete(p.state.cooldown, key)
	delete(p.state.resigned, key)
	p.state.mu.Unlock()
	// It keeps what the pool learned of it: ranked at once, it serves when
	// the better workers are busy; it may resign again once it has shown
	// a trial's worth of new samples.
	w := p.join(best, bestCand, p.cfg.TrialSamples)
	return w
}

// has reports whether the mirror key has a worker. p.mu must be held.
func (p *Pool) has(key string) bool {
	return slices.ContainsFunc(p.workers, func(w *worker) bool { return w.key == key })
}

func (p *Pool) noteProvider(err error) {
	p.obs.ProviderFetched(err)
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if err != nil {
		p.provider.LastError, p.provider.ErrorTime = err.Error(), now
		return
	}
	p.provider.LastFetch = now
}

// admit adds workers for the candidates that are valid, new and not cooling
// down, while the pool has room, and returns the workers that joined.
func (p *Pool) admit(cands []Candidate) []*worker {
	ms := make([]member, len(cands))
	for i, c := range cands {
		ms[i] = member{Candidate: c}
	}
	return p.admitMembers(ms)
}

// admitMembers is admit for members taken back, each on the probation it
// had. A candidate whose mirror is in the pool already brings its probe,
// if any, up to date.
func (p *Pool) admitMembers(cands []member) []*worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.updateProbes(cands)
	var joined []*worker
	now := time.Now()
	size := p.cfg.Workers + p.surge()
	for _, c := range p.byPrior(cands) {
		if p.closing || len(p.workers) >= size {
			break
		}
		u, err := ParseMirrorURL(c.URL)
		if err != nil {
			p.log.Warn("provider proposed an invalid mirror", zap.Error(err))
			continue
		}
		key := u.String()
		if p.has(key) {
			continue
		}
		p.state.mu.Lock()
		cooling := p.state.coolingDown(key, now)
		p.state.mu.Unlock()
		if cooling {
			continue
		}
		joined = append(joined, p.join(u, c.Candidate, c.probation))
	}
	return joined
}

// updateProbes gives the workers whose mirrors cands propose again the
// candidates' probes: the provider's newer knowledge of the versions of
// the file they probe. p.mu must be held.
func (p *Pool) updateProbes(cands []member) {
	for _, c := range cands {
		if c.Probe == nil {
			continue
		}
		u, err := ParseMirrorURL(c.URL)
		if err != nil {
			continue // admitMembers logs it
		}
		key := u.String()
		if i := slices.IndexFunc(p.workers, func(w *worker) bool { return w.key == key }); i >= 0 {
			p.workers[i].probe = c.Probe
		}
	}
}

// byPrior orders candidates by what is known of them (priorOrder): a pool
// that restarts, or meets mirrors another pool or instance measured, takes
// the fast ones first and the slow ones last.
func (p *Pool) byPrior(cands []member) []member {
	known := map[string]float64{}
	p.state.mu.Lock()
	for _, c := range cands {
		u, err := ParseMirrorURL(c.URL)
		if err != nil {
			continue // admit logs it
		}
		if ms := p.state.mirrors[u.String()]; ms != nil {
			if score, n := ms.trialScore(p.cfg.TrialSamples); n >= p.cfg.TrialSamples {
				known[c.URL] = score
			}
		}
	}
	p.state.mu.Unlock()
	return priorOrder(cands, known, p.cfg.GoodThroughput)
}

// join adds a worker for the mirror u of candidate c, on probation for that
// many samples, and hands it to whoever waits. p.mu must be held.
func (p *Pool) join(u *url.URL, c Candidate, probation int) *worker {
	key := u.String()
	if !c.Remote {
		p.guard.allow(u)
	}
	c.LastSync, _ = believedSync(c.LastSync, time.Now())
	p.state.mu.Lock()
	stats := p.state.stats(key, p.cfg.Window)
	if stats.lastSync.After(c.LastSync) { // probed since the provider said
		c.LastSync = stats.lastSync
	}
	w := &worker{mirror: u, key: key, remote: c.Remote, stats: stats, joined: time.Now(), lastSync: c.LastSync, probe: c.Probe, probation: probation}
	p.workers = append(p.workers, w)
	p.publishMembers()
	p.state.mu.Unlock()
	p.log.Info("mirror joined the pool", zap.String("mirror", key))
	p.obs.MirrorJoined(key)
	p.handOver(w)
	return w
}
