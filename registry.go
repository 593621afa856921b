package refractor

import (
	"slices"
	"sync"

	"github.com/caddy-refractor/refractor/pool"
)

// livePools lists the pools of every provisioned handler, for the admin API
// (admin modules are provisioned before the apps, so they must not hold
// handler pointers of their own).
var livePools struct {
	sync.Mutex
	pools []*namedPool
}

// namedPool is a running pool and the name it is known by.
type namedPool struct {
	name string
	pool *pool.Pool
}

func registerPool(np *namedPool) {
	livePools.Lock()
	defer livePools.Unlock()
	livePools.pools = append(livePools.pools, np)
}

func unregisterPool(np *namedPool) {
	livePools.Lock()
	defer livePools.Unlock()
	livePools.pools = slices.DeleteFunc(livePools.pools, func(o *namedPool) bool { return o == np })
}

// poolLive reports whether a pool named name is live. A reload provisions
// the new pools before it cleans up the old ones, so a pool that is cleaned
// up may have a successor of the same name.
func poolLive(name string) bool {
	livePools.Lock()
	defer livePools.Unlock()
	return slices.ContainsFunc(livePools.pools, func(np *namedPool) bool { return np.name == name })
}

// PoolStatus is the status of one named pool, as the admin API's
// GET /refractor/pools returns it.
type PoolStatus struct {
	// Name is the pool's name (the handler's name option).
	Name string `json:"name"`
	// Workers are the pool's workers, best score first.
	Workers []WorkerStatus `json:"workers"`
	// Active is how many workers are serving a transfer.
	Active int `json:"active"`
	// Queued is how many requests wait for a worker.
	Queued int `json:"queued"`
	// Rotations are the mirrors that left the pool lately, oldest first.
	Rotations []pool.Rotation `json:"rotations"`
	// Provider tells when the provider was last asked, and its last error.
	Provider pool.ProviderStatus `json:"provider"`
}

// WorkerStatus is one worker of a pool: its mirror, what it has done, and
// where it stands.
type WorkerStatus struct {
	pool.WorkerStatus
	// State is "trial" while the worker has too few samples to be ranked,
	// then "ranked".
	State string `json:"state"`
}

// Worker states, as WorkerStatus.State reports them.
const (
	StateTrial  = "trial"
	StateRanked = "ranked"
)

// poolStatuses returns the status of every live pool, in the order they
// were provisioned.
func poolStatuses() []PoolStatus {
	livePools.Lock()
	pools := slices.Clone(livePools.pools)
	livePools.Unlock()
	out := make([]PoolStatus, 0, len(pools))
	for _, np := range pools {
		out = append(out, newPoolStatus(np.name, np.pool.Status()))
	}
	return out
}

// newPoolStatus is the admin API's view of the pool status st.
func newPoolStatus(name string, st pool.Status) PoolStatus {
	ps := PoolStatus{
		Name:      name,
		Workers:   make([]WorkerStatus, 0, len(st.Workers)),
		Queued:    st.Queued,
		Rotations: st.Rotations,
		Provider:  st.Provider,
	}
	if ps.Rotations == nil {
		ps.Rotations = []pool.Rotation{}
	}
	for _, w := range st.Workers {
		state := StateTrial
		if w.Ranked {
			state = StateRanked
		}
		if w.Busy {
			ps.Active++
		}
		ps.Workers = append(ps.Workers, WorkerStatus{WorkerStatus: w, State: state})
	}
	return ps
}
