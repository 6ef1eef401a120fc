#!/usr/bin/env bash
# `make compose-down`: removes what `make compose-demo` started: the project's containers,
# network and volume (the guide's `down -v`), the TaskMaster image and the build stages left
# by building it, and stops dockerd if deploy/engine.sh started it. Debian's packages and
# the base images stay (the next `make compose-demo` reuses them); it says how to remove those.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '%s\n' "$*" >&2; }
STATE=.taskmaster

if ! docker info >/dev/null 2>&1; then
  say "no Docker engine is running: no compose stack to remove"
  exit 0
fi
compose_command=$(deploy/engine.sh --no-install 2>/dev/null)
read -r -a compose <<<"$compose_command"
"${compose[@]}" down -v --remove-orphans
docker image rm "${TASKMASTER_IMAGE:-taskmaster:local}" >/dev/null 2>&1 &&
  say "removed the image ${TASKMASTER_IMAGE:-taskmaster:local}" || true
docker image prune -f --filter label=org.taskmaster.stage=build >/dev/null

kept=$(docker image ls --format '{{.Repository}}:{{.Tag}}' | grep '^taskmaster/' || true)

if [ -s "$STATE/dockerd.pid" ]; then
  pid=$(cat "$STATE/dockerd.pid")
  if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
    say "stopping the dockerd that deploy/engine.sh started (pid $pid) ..."
    kill "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$STATE/dockerd.pid"
fi
[ -z "$kept" ] || say "kept the base images: $(echo $kept) (\`docker image rm\` frees their space)"
