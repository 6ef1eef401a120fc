#!/usr/bin/env bash
# `make compose-demo`: the demo guide's compose stack on this machine.
#
# Installs and starts what is missing (deploy/engine.sh), makes the images (deploy/images.sh:
# the public ones, or built from Debian's archive where no registry is reachable, noted in
# .env so that plain `docker compose` commands use them too), builds the TaskMaster image,
# runs the guide's `up --scale worker=3 -d` and waits until the API answers with 3 workers
# online. `make compose-down` removes it all again.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS=${WORKERS:-3}
API=http://localhost:${TASKMASTER_PUBLISH_API_PORT:-8081}

say() { printf '%s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

t0=$(now)
compose_command=$(deploy/engine.sh)
read -r -a compose <<<"$compose_command"
say "engine: $(since "$t0") s (compose: ${compose[*]})"

t=$(now)
deploy/images.sh --env-file .env >/dev/null
say "base images: $(since "$t") s"

t=$(now)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"${compose[@]}" build >"$log" 2>&1 || { cat "$log" >&2; say "the image did not build"; exit 1; }
say "TaskMaster image: $(since "$t") s"

t=$(now)
"${compose[@]}" up --scale "worker=$WORKERS" -d

# `up -d` returns once the containers run: wait for health and for the workers to register
health() {
  local ids
  ids=$("${compose[@]}" ps -q)
  [ -n "$ids" ] || return 0
  # shellcheck disable=SC2086
  docker inspect --format \
    '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}}' \
    $ids
}
ready() {
  local rows
  rows=$(health)
  [ "$(grep -c '^worker running' <<<"$rows")" = "$WORKERS" ] || return 1
  for service in postgres coordinator scheduler; do
    grep -q "^$service running healthy$" <<<"$rows" || return 1
  done
  "${PYTHON:-python3}" - "$API/api/workers" "$WORKERS" <<'EOF'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as resp:
    online = [w for w in json.load(resp) if w["status"] == "online"]
sys.exit(0 if len(online) >= int(sys.argv[2]) else 1)
EOF
}
deadline=$(( $(date +%s) + 180 ))
until ready 2>/dev/null; do
  if [ "$(date +%s)" -gt "$deadline" ]; then
    health >&2
    "${compose[@]}" logs --tail 30 >&2
    say "the stack did not become healthy within 180 s (above: its containers and logs)"
    exit 1
  fi
  sleep 1
done
say "stack up and healthy: $(since "$t") s; in all $(since "$t0") s"

shown="docker compose"
docker compose version >/dev/null 2>&1 || shown="${compose[*]}"

cat <<EOF

TaskMaster runs on docker compose (project taskmaster, $WORKERS workers): $API
The demo guide's tour:

  curl -X POST $API/api/schedule/batch -H "Content-Type: application/json" \\
    -d '{"command": "demo-job", "count": 50, "delay_seconds": 0}'
  curl $API/api/stats
  curl $API/api/tasks
  curl $API/api/workers
  curl $API/api/logs/stream

and its compose commands, from this folder:

  $shown ps
  $shown up --scale worker=1 -d
  $shown up --scale worker=5 -d
  docker stop <a worker's name from /api/workers>
  make compose-down
EOF
