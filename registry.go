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

// PoolStatus is the status of one named pool.
type PoolStatus struct {
	Name string `json:"name"`
	pool.Status
}

// poolStatuses returns the status of every live pool, in the order they
// were provisioned.
func poolStatuses() []PoolStatus {
	livePools.Lock()
	pools := slices.Clone(livePools.pools)
	livePools.Unlock()
	out := make([]PoolStatus, 0, len(pools))
	for _, np := range pools {
		out = append(out, PoolStatus{Name: np.name, Status: np.pool.Status()})
	}
	return out
}
