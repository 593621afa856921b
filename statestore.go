package refractor

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	neturl "net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-refractor/refractor/pool"
)

// What the pools of this process learned of mirrors (the package's
// `learned` State) is kept in Caddy's storage, so that a restart does not
// start cold, and, for instances that share a group, read by the others.
//
// Each process writes one record, a JSON document (learnedRecord) under
//
//	refractor/learned/<group>/<instance>.<process>.json
//
// where <group> is "own" without `share`, or "share-" and the share name;
// <instance> is caddy.InstanceID() and <process> a random per-process
// nonce (cloned machines, and processes sharing a data directory, have the
// same instance ID). A record holds only what this process and its
// predecessors measured, never what it read from others, so nothing echoes
// back. At start a process restores the newest record of its own instance
// in its group (and deletes it once its own supersedes it); with `share`
// it also reads the group's other records at every interval, and counts
// their samples, weighted by age. Records not written for a day (the
// samples in them no longer count) are deleted by whoever finds them.
// Storage errors are logged and counted, and never fail a request.

// learnedVersion is the version of learnedRecord; records of another
// version are left alone.
const learnedVersion = 1

// learnedRecord is one process's record. Mirrors and Pools are
// pool.Snapshot's (see its documentation for their fields).
type learnedRecord struct {
	Version  int       `json:"version"`
	Instance string    `json:"instance"`
	Process  string    `json:"process"`
	Written  time.Time `json:"written"`
	pool.Snapshot
	// Peer, when set, offers this instance's cache to its share group
	// (peers.go); Written is its heartbeat.
	Peer *peerAdvert `json:"peer,omitempty"`
}

// Defaults and bounds of the state store.
const (
	defaultSaveInterval = 2 * time.Minute
	storageTimeout      = 10 * time.Second
	recordExpiry        = pool.ForgetAfter // nothing in an older record counts
)

// process is this process's nonce in record keys.
var process = func() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

// stores holds the running state stores, by storage and group, so that a
// config reload that keeps them keeps their loop (and does not restore
// again), and the last handler to go saves.
var stores = caddy.NewUsagePool()

// stateStore saves the learned State in one storage and group, and reads
// the group's other records. Its loop goroutine owns lastSaved, restored
// and seen; Destruct stops the loop before it saves for the last time.
type stateStore struct {
	// The storage in use is that of the newest handler still using the
	// store: a reload's new config replaces the old (which Caddy cleans
	// up, storage module included), a failed load's goes with it.
	mu       sync.Mutex
	users    []storageUse      // guarded by mu, oldest first
	storage  certmagic.Storage // guarded by mu: the last user's, kept for the last save
	peerUses map[any]peerUse   // guarded by mu: what each handler brings to peering

	state    *pool.State
	dir      string // refractor/learned/<group>
	self     string // this process's record key
	instance string
	share    bool
	interval time.Duration
	logger   *zap.Logger

	lastSaved []byte                   // the last Snapshot saved, as JSON
	restored  string                   // the own earlier record restored, deleted after the first save
	seen      map[string]time.Time     // others' records read, by key: their modification time
	adverts   map[string]learnedRecord // others' records that offer peers, by key (Snapshot left out)

	soon   chan struct{} // a save wanted before the next tick
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// storageUse is one handler's storage.
type storageUse struct {
	owner   any
	storage certmagic.Storage
}

// use makes owner's storage the one in use.
func (s *stateStore) use(owner any, storage certmagic.Storage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users = append(s.users, storageUse{owner, storage})
	s.storage = storage
}

// drop takes owner's storage out of use, for the newest remaining one's.
func (s *stateStore) drop(owner any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.peerUses, owner)
	s.users = slices.DeleteFunc(s.users, func(u storageUse) bool { return u.owner == owner })
	if n := len(s.users); n > 0 {
		s.storage = s.users[n-1].storage
	}
}

// peering records what owner brings to peering (peers.go), and asks for a
// save and a reading soon.
func (s *stateStore) peering(owner any, u peerUse) {
	s.mu.Lock()
	s.peerUses[owner] = u
	s.mu.Unlock()
	select {
	case s.soon <- struct{}{}:
	default:
	}
}

// advert is what this process offers its share group, or nil.
func (s *stateStore) advert() *peerAdvert {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.share {
		return nil
	}
	var adv *peerAdvert
	caches := map[*cacheStore]bool{}
	for _, u := range s.peerUses {
		if u.url == "" {
			continue
		}
		if adv == nil {
			adv = &peerAdvert{Pools: map[string]string{}}
		}
		adv.Pools[u.name] = u.url
		adv.Load = max(adv.Load, u.load)
		caches[u.cache] = true
	}
	if adv != nil {
		var sums [][32]byte
		for c := range caches {
			sums = append(sums, c.Sums()...)
		}
		adv.Files = encodeFiles(sums)
	}
	return adv
}

// applyPeers gives each pool its peers: its block's, and the group's
// instances that advertise a block of its name and are alive.
func (s *stateStore) applyPeers(now time.Time) {
	s.mu.Lock()
	uses := slices.Collect(maps.Values(s.peerUses))
	s.mu.Unlock()
	for _, u := range uses {
		peers := staticPeers(u.static)
		for _, rec := range s.adverts {
			url, ok := rec.Peer.Pools[u.name]
			if ok && rec.Instance != s.instance && now.Sub(rec.Written) <= peerExpiry*s.interval {
				holds, n := holdsFiles(rec.Peer.Files)
				peers = append(peers, pool.Peer{URL: url, Holds: holds, Files: n, Load: rec.Peer.Load})
			}
		}
		u.pool.SetPeers(peers)
	}
}

// storeKey names a state store in stores.
func storeKey(storageID, share string) string { return storageID + "\x00" + share }

// groupDir is the storage directory of a group's records.
func groupDir(share string) string {
	if share == "" {
		return "refractor/learned/own"
	}
	return "refractor/learned/share-" + neturl.PathEscape(share)
}

// openStateStore returns the state store of storage and share, starting it
// (and restoring into state what storage holds) if no handler uses it yet;
// while owner holds it, the store uses this storage (the newest config's).
// release gives it back.
func openStateStore(owner any, state *pool.State, storage certmagic.Storage, storageID, share string, interval time.Duration, logger *zap.Logger) (*stateStore, error) {
	val, _, err := stores.LoadOrNew(storeKey(storageID, share), func() (caddy.Destructor, error) {
		id, err := caddy.InstanceID()
		if err != nil {
			return nil, fmt.Errorf("instance ID: %w", err)
		}
		s := &stateStore{
			storage: storage, state: state, dir: groupDir(share),
			instance: id.String(), share: share != "", interval: interval,
			logger:   logger.Named("state").With(zap.String("group", groupDir(share))),
			seen:     map[string]time.Time{},
			adverts:  map[string]learnedRecord{},
			peerUses: map[any]peerUse{},
			soon:     make(chan struct{}, 1),
			done:     make(chan struct{}),
		}
		s.self = path.Join(s.dir, s.instance+"."+process+".json")
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel = cancel
		// Provision waits for this first reading: one deadline for all of it.
		first, done := context.WithTimeout(ctx, storageTimeout)
		s.read(first, true)
		done()
		// What was restored is what storage holds already: a process that
		// learns nothing new (such as `caddy validate`) writes nothing, and
		// deletes nothing.
		s.lastSaved, _ = json.Marshal(s.state.Snapshot(time.Now()))
		go s.loop(ctx)
		return s, nil
	})
	if err != nil {
		return nil, err
	}
	s := val.(*stateStore)
	s.use(owner, storage)
	return s, nil
}

// release gives the store back; the last handler's release saves.
// Otherwise (a reload) it asks for a save soon: Cleanup must not wait on
// storage while Caddy holds its config lock, except for the last save.
func (s *stateStore) release(owner any, storageID, share string) {
	s.drop(owner)
	deleted, _ := stores.Delete(storeKey(storageID, share))
	if !deleted {
		select {
		case s.soon <- struct{}{}:
		default:
		}
	}
}

// Destruct stops the loop and saves what was learned.
func (s *stateStore) Destruct() error {
	s.once.Do(func() {
		s.cancel()
		<-s.done
		s.save(context.Background())
	})
	return nil
}

func (s *stateStore) loop(ctx context.Context) {
	defer close(s.done)
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.soon:
		}
		s.save(ctx)
		if s.share {
			s.read(ctx, false) // and applyPeers
		} else {
			s.applyPeers(time.Now()) // the blocks' own peers, back after a cool-down
		}
	}
}

// save writes the State's snapshot as this process's record, if it
// changed since the last save and holds anything.
func (s *stateStore) save(ctx context.Context) {
	now := time.Now()
	snap := s.state.Snapshot(now)
	body, err := json.Marshal(snap)
	adv := s.advert() // with one, every save is a heartbeat
	if err != nil || adv == nil && (bytes.Equal(body, s.lastSaved) || (len(snap.Mirrors) == 0 && len(snap.Pools) == 0)) {
		return
	}
	rec, err := json.Marshal(learnedRecord{Version: learnedVersion, Instance: s.instance, Process: process, Written: now.UTC(), Snapshot: snap, Peer: adv})
	if err != nil {
		return
	}
	if err := s.op(ctx, "save", func(ctx context.Context, st certmagic.Storage) error { return st.Store(ctx, s.self, rec) }); err != nil {
		return
	}
	s.lastSaved = body
	if s.restored != "" {
		// Superseded: others must not count it next to this one.
		if s.op(ctx, "delete", func(ctx context.Context, st certmagic.Storage) error { return st.Delete(ctx, s.restored) }) == nil {
			s.restored = ""
		}
	}
}

// read lists the group's records. At start it restores the newest of this
// instance's own; with share it counts the others' samples, reading again
// only those that changed, and forgets those gone. Records of another
// version are skipped; expired ones are deleted.
func (s *stateStore) read(ctx context.Context, start bool) {
	var keys []string
	if err := s.op(ctx, "list", func(ctx context.Context, st certmagic.Storage) (err error) {
		keys, err = st.List(ctx, s.dir, false)
		return err
	}); err != nil {
		return
	}
	now := time.Now()
	var own *learnedRecord
	var ownKey string
	others := map[string]learnedRecord{}
	present := map[string]bool{}
	for _, key := range keys {
		name := path.Base(key)
		if key == s.self || !strings.HasSuffix(name, ".json") {
			continue
		}
		present[key] = true
		isOwn := start && strings.HasPrefix(name, s.instance+".")
		if (!isOwn && !s.share) || key == s.restored {
			continue
		}
		var modified time.Time
		if err := s.op(ctx, "load", func(ctx context.Context, st certmagic.Storage) error {
			info, err := st.Stat(ctx, key)
			modified = info.Modified
			return err
		}); err != nil {
			continue
		}
		if now.Sub(modified) > recordExpiry {
			s.expire(ctx, key)
			continue
		}
		if !isOwn && s.seen[key].Equal(modified) {
			continue // read already, unchanged
		}
		rec, ok := s.load(ctx, key, now)
		if !ok {
			continue
		}
		s.seen[key] = modified
		if isOwn && (own == nil || rec.Written.After(own.Written)) {
			if own != nil && s.share {
				others[ownKey] = *own // another process of this instance ID: a clone
			}
			own, ownKey = &rec, key
			continue
		}
		if s.share {
			others[key] = rec
		}
		if rec.Peer != nil {
			s.adverts[key] = learnedRecord{Instance: rec.Instance, Written: rec.Written, Peer: rec.Peer}
		} else {
			delete(s.adverts, key)
		}
	}
	if own != nil {
		s.state.Restore(own.Snapshot, now)
		s.restored = ownKey
		s.logger.Info("restored what an earlier process learned",
			zap.String("record", ownKey), zap.Time("written", own.Written), zap.Int("mirrors", len(own.Mirrors)))
	}
	for key, rec := range others {
		s.state.Share(key, rec.Snapshot, now)
	}
	for key := range s.seen {
		if !present[key] {
			delete(s.seen, key)
			delete(s.adverts, key)
			s.state.Unshare(key)
		}
	}
	s.applyPeers(now)
}

// load reads and decodes one record, deleting it if it expired.
func (s *stateStore) load(ctx context.Context, key string, now time.Time) (learnedRecord, bool) {
	var data []byte
	if err := s.op(ctx, "load", func(ctx context.Context, st certmagic.Storage) (err error) {
		data, err = st.Load(ctx, key)
		return err
	}); err != nil {
		return learnedRecord{}, false
	}
	var rec learnedRecord
	if err := json.Unmarshal(data, &rec); err != nil || rec.Version != learnedVersion {
		s.logger.Warn("skipping a record of learned state that is not of this version or not valid",
			zap.String("record", key), zap.Int("version", rec.Version), zap.Error(err))
		return learnedRecord{}, false
	}
	if now.Sub(rec.Written) > recordExpiry {
		s.expire(ctx, key)
		return learnedRecord{}, false
	}
	return rec, true
}

// expire deletes the record of a process gone quiet, and forgets its
// samples.
func (s *stateStore) expire(ctx context.Context, key string) {
	if s.op(ctx, "delete", func(ctx context.Context, st certmagic.Storage) error { return st.Delete(ctx, key) }) == nil {
		s.logger.Info("deleted an expired record of learned state", zap.String("record", key))
	}
	s.state.Unshare(key)
	delete(s.seen, key)
	delete(s.adverts, key)
}

// op runs one storage operation with its own deadline, and logs and
// counts its failure (a record that vanished meanwhile is no failure). It
// returns at the deadline even if the storage ignores its context (as a
// file system on a hung network mount does): f then finishes, or not, on
// its own, and the caller must not read what f writes unless op returns
// nil.
func (s *stateStore) op(ctx context.Context, name string, f func(context.Context, certmagic.Storage) error) error {
	ctx, cancel := context.WithTimeout(ctx, storageTimeout)
	defer cancel()
	s.mu.Lock()
	st := s.storage
	s.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- f(ctx, st) }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, context.Canceled) {
		metrics.storageErrors.WithLabelValues(name).Inc()
		s.logger.Warn("storage operation failed", zap.String("op", name), zap.Error(err))
	}
	return err
}
