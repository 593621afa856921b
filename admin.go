package refractor

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(adminPools{})
}

// adminPools is the admin API module that serves GET /refractor/pools: the
// status of every live refractor pool, as a JSON array of PoolStatus. Admin
// modules are provisioned before the apps, so it reads the package-level
// registry of live pools rather than holding handlers.
type adminPools struct{}

// CaddyModule returns the Caddy module information.
func (adminPools) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.refractor",
		New: func() caddy.Module { return new(adminPools) },
	}
}

// Routes returns the /refractor/pools and /refractor/cache routes.
func (a adminPools) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/refractor/pools", Handler: caddy.AdminHandlerFunc(a.handlePools)},
		{Pattern: "/refractor/cache", Handler: caddy.AdminHandlerFunc(a.handleCache)},
	}
}

// handlePools answers GET /refractor/pools.
func (adminPools) handlePools(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed")}
	}
	return writeJSON(w, poolStatuses())
}

// handleCache answers GET /refractor/cache, the state of every cache
// directory as a JSON array of CacheStatus, and DELETE /refractor/cache,
// which purges the file at ?path= (relative to a pool's base: the pools'
// indexes give its hash), the file of ?sha256=, or every file, and answers
// {"purged": n}.
func (adminPools) handleCache(w http.ResponseWriter, r *http.Request) error {
	switch r.Method {
	case http.MethodGet:
		return writeJSON(w, cacheStats())
	case http.MethodDelete:
		n, err := purgeCache(r.Context(), r.URL.Query().Get("path"), r.URL.Query().Get("sha256"))
		if err != nil {
			return err
		}
		return writeJSON(w, map[string]int{"purged": n})
	default:
		w.Header().Set("Allow", "GET, DELETE")
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed")}
	}
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	return nil
}

// Interface guards.
var _ caddy.AdminRouter = adminPools{}
