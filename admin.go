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

// Routes returns the /refractor/pools route.
func (a adminPools) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/refractor/pools", Handler: caddy.AdminHandlerFunc(a.handlePools)}}
}

// handlePools answers GET /refractor/pools.
func (adminPools) handlePools(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed")}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(poolStatuses()); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	return nil
}

// Interface guards.
var _ caddy.AdminRouter = adminPools{}
