#!/usr/bin/env bash
# A running Docker engine and a compose command; what is missing is installed and started.
#
#   deploy/engine.sh [--no-install]
#
# - No engine answering: as root on Debian, Debian's docker.io and docker-compose are
#   installed (apt-get; not with --no-install), and dockerd is started in the background
#   (there may be no systemd). It logs to .taskmaster/dockerd.log; .taskmaster/dockerd.pid
#   tells deploy/compose-down.sh that we started it.
# - Compose: the `docker compose` plugin (v2) where there is one; otherwise Debian's
#   docker-compose (v1), installed as the `docker compose` plugin too
#   (deploy/docker-compose-v1-plugin), so that the demo guide's and the API's
#   `docker compose ...` commands work as written.
#
# Prints the compose command to use on stdout (`docker compose` or `docker-compose`).
set -euo pipefail
cd "$(dirname "$0")/.."

install=1
[ "${1:-}" = --no-install ] && install=0
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
STATE=.taskmaster

say() { printf '%s\n' "$*" >&2; }

apt_install() {
  [ "$install" = 1 ] || { say "not installing $* (--no-install)"; return 1; }
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || {
    say "cannot install $*: needs root and apt-get (Debian)"; return 1; }
  say "installing $* (apt-get) ..."
  # the package lists may be missing or old on a new machine: update once if needed
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}

engine_up() { docker info >/dev/null 2>&1; }

if ! engine_up; then
  if ! command -v dockerd >/dev/null 2>&1; then
    # the compose package too: one apt-get run instead of two
    pkgs=(docker.io)
    docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 ||
      pkgs+=(docker-compose)
    apt_install "${pkgs[@]}" || exit 1
  fi
  [ "$(id -u)" = 0 ] || { say "dockerd is installed but not running: start it as root"; exit 1; }
  mkdir -p "$STATE"
  say "starting dockerd (log: $STATE/dockerd.log) ..."
  setsid dockerd >>"$STATE/dockerd.log" 2>&1 </dev/null &
  echo $! >"$STATE/dockerd.pid"
  for _ in $(seq 1 300); do
    engine_up && break
    kill -0 "$(cat "$STATE/dockerd.pid")" 2>/dev/null || {
      tail -n 20 "$STATE/dockerd.log" >&2; say "dockerd exited"; rm -f "$STATE/dockerd.pid"; exit 1; }
    sleep 0.1
  done
  engine_up || { tail -n 20 "$STATE/dockerd.log" >&2; say "dockerd did not answer within 30 s"; exit 1; }
fi
say "Docker engine $(docker info --format '{{.ServerVersion}}' 2>/dev/null) is running"

# ---- compose ----

compose_major() {  # the major version `docker compose` reports, or nothing
  docker compose version --short 2>/dev/null | sed -E 's/^v//; s/\..*//' || true
}

major=$(compose_major)
if [ -n "$major" ] && [ "$major" -ge 2 ]; then
  echo "docker compose"
  exit 0
fi
command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose || exit 1
if [ -z "$major" ]; then
  if mkdir -p "$PLUGIN_DIR" 2>/dev/null &&
      install -m 0755 deploy/docker-compose-v1-plugin "$PLUGIN_DIR/docker-compose" 2>/dev/null; then
    say "installed $PLUGIN_DIR/docker-compose: \`docker compose\` runs docker-compose (v1)"
  else
    say "no \`docker compose\` plugin here: use docker-compose"
  fi
fi
echo "docker-compose"
