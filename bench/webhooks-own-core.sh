#!/usr/bin/env bash
# confab bench webhooks with the webhooks process on a core of its own (bench/README.md,
# "Webhooks on a core of their own"): a fresh `confab up` with every process of it pinned
# to core 0, except the webhooks process, which shares core 1 with the bench (the load
# generator and the receiver). Needs two cores and taskset (util-linux).
#
#   bench/webhooks-own-core.sh [OUT_DIR] [PAIRS]
set -euo pipefail
out=${1:-bench/results/own-core}
pairs=${2:-3}
bin=.venv/bin
data=$(mktemp -d)
mkdir -p "$out"
free_port() { "$bin/python" -c "from confab_infra.backends import free_port; print(free_port())"; }
setsid "$bin/confab" up --data-dir "$data" --gateway-port "$(free_port)" \
  --fanout-port "$(free_port)" --no-demo > "$out/up.log" 2>&1 &
up=$!
trap 'kill -INT -- -$up 2>/dev/null; wait $up 2>/dev/null; rm -rf "$data"' EXIT
until grep -q "^confab: ready" "$out/up.log"; do
  kill -0 $up 2>/dev/null || { echo "confab up did not start: see $out/up.log" >&2; exit 1; }
  sleep 1
done
webhooks=$("$bin/python" -c "import json, sys; print(json.load(open(sys.argv[1]))['pids']['webhooks'])" "$data/stack.json")
tree() { echo "$1"; for child in $(pgrep -P "$1"); do tree "$child"; done; }
for pid in $(tree $up); do taskset -a -pc 0 "$pid" > /dev/null; done
for pid in $(tree "$webhooks"); do taskset -a -pc 1 "$pid" > /dev/null; done
taskset -c 1 "$bin/confab" bench webhooks --target "$data/stack.json" --seconds 15 \
  --pairs "$pairs" --out "$out"
