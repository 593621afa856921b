#!/usr/bin/env bash
# make demo: simulated mirrors of mixed speeds (cmd/mirrorsim), the Caddy
# that `make build` made with refractor in front of them, and a client
# (cmd/refractor-demo) that downloads a package set through it, showing the
# progress and how the pool ranks and rotates its mirrors as it converges.
# Everything runs on 127.0.0.1 and works offline; Ctrl-C stops it all.
#
# Knobs (environment): DEMO_MIRRORS (10), DEMO_SPEEDS (geometric:512KiB-24MiB),
# DEMO_TOTAL (384MiB of packages), DEMO_ROUNDS (3), DEMO_WORKERS (6),
# DEMO_DEGRADE_AT (40s: the fastest mirror then drops to 512 KiB/s; 0: never),
# DEMO_PORT (18080), DEMO_ADMIN_PORT (18019).
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
MIRRORS=${DEMO_MIRRORS:-10}
SPEEDS=${DEMO_SPEEDS:-geometric:512KiB-24MiB}
TOTAL=${DEMO_TOTAL:-384MiB}
ROUNDS=${DEMO_ROUNDS:-3}
WORKERS=${DEMO_WORKERS:-6}
DEGRADE_AT=${DEMO_DEGRADE_AT:-40s}
PORT=${DEMO_PORT:-18080}
ADMIN_PORT=${DEMO_ADMIN_PORT:-18019}

if [[ ! -x ./caddy ]]; then
	${MAKE:-make} build
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/refractor-demo.XXXXXX")
pids=()
cleanup() {
	trap - EXIT INT TERM
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo; echo "stopping..."; exit 130' INT
trap 'exit 143' TERM

echo "building the mirror simulator and the demo client..."
"$GO" build -o "$tmp/mirrorsim" ./cmd/mirrorsim
"$GO" build -o "$tmp/refractor-demo" ./cmd/refractor-demo

degrade=()
if [[ "$DEGRADE_AT" != 0 ]]; then
	degrade=(-degrade-at "$DEGRADE_AT" -degrade-to 512KiB -degrade-count 1)
fi
"$tmp/mirrorsim" -n "$MIRRORS" -speeds "$SPEEDS" -total "$TOTAL" "${degrade[@]}" \
	>"$tmp/mirrors.txt" 2>"$tmp/mirrors.log" &
pids+=($!)
for _ in $(seq 100); do
	[[ $(wc -l <"$tmp/mirrors.txt") -ge $MIRRORS ]] && break
	sleep 0.1
done
if [[ $(wc -l <"$tmp/mirrors.txt") -lt $MIRRORS ]]; then
	cat "$tmp/mirrors.log" >&2
	echo "demo: the mirrors did not start" >&2
	exit 1
fi
echo
cat "$tmp/mirrors.log"

cat >"$tmp/Caddyfile" <<CADDYFILE
{
	admin 127.0.0.1:$ADMIN_PORT
	persist_config off
	skip_install_trust
	log {
		output file $tmp/caddy.log
	}
}

http://127.0.0.1:$PORT {
	handle_path /archlinux/* {
		refractor {
			workers $WORKERS
			provider static $(tr '\n' ' ' <"$tmp/mirrors.txt")
		}
	}
}
CADDYFILE
echo
echo "Caddyfile ($tmp/Caddyfile):"
sed 's/^/    /' "$tmp/Caddyfile"
echo

XDG_CONFIG_HOME="$tmp" XDG_DATA_HOME="$tmp" ./caddy run --config "$tmp/Caddyfile" --adapter caddyfile \
	>"$tmp/caddy.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
	sleep 0.1
done
if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
	cat "$tmp/caddy.out" >&2
	echo "demo: caddy did not start" >&2
	exit 1
fi

"$tmp/refractor-demo" -url "http://127.0.0.1:$PORT/archlinux/" -admin "http://127.0.0.1:$ADMIN_PORT" \
	-total "$TOTAL" -rounds "$ROUNDS" -mirrors "$tmp/mirrors.log" -caddy-log "$tmp/caddy.log"
