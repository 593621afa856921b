// Command testcaddy is Caddy with its standard modules and refractor, as
// xcaddy builds it, for the tests that run real Caddy processes (restarts,
// several instances sharing storage). Users build theirs with xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-refractor/refractor"
)

func main() {
	caddycmd.Main()
}
