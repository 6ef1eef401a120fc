#!/usr/bin/env bash
# The images compose.yaml builds on and runs, also on a machine that reaches no image registry.
#
#   deploy/images.sh [--env-file FILE] [--rebuild]
#
# TASKMASTER_BASE_IMAGE, what the TaskMaster image is built on: python:3.11-slim where it is
#   here or can be pulled; otherwise taskmaster/debian-python:bookworm, a minimal Debian root
#   filesystem with Debian's Python made from Debian's archive (mmdebstrap, the mirror apt
#   uses) and imported with `docker import`.
# POSTGRES_IMAGE: postgres:16 where it is here or can be pulled; otherwise
#   taskmaster/debian-postgres:bookworm, Debian's postgresql package on that base
#   (deploy/postgres/).
# deploy/wheels/: Linux wheels of deploy/requirements.txt, downloaded on the host; the
#   Dockerfile installs them without reaching a package index (a container need not reach
#   it the way the host does).
#
# A variable already set in the environment is taken as it is. Prints the two as NAME=value
# lines; --env-file writes them into FILE too (the compose project's .env, so that plain
# `docker compose` commands use the same images). --rebuild makes the Debian base anew.
# Needs a running Docker engine (deploy/engine.sh); as root on Debian it installs mmdebstrap.
set -euo pipefail
cd "$(dirname "$0")/.."

env_file="" rebuild=0
while [ $# -gt 0 ]; do
  case "$1" in
    --env-file) env_file=$2; shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    *) echo "usage: $0 [--env-file FILE] [--rebuild]" >&2; exit 2 ;;
  esac
done

PUBLIC_BASE=python:3.11-slim
PUBLIC_POSTGRES=postgres:16
SUITE=${DEBIAN_SUITE:-bookworm}
LOCAL_BASE=taskmaster/debian-python:$SUITE
LOCAL_POSTGRES=taskmaster/debian-postgres:$SUITE
PYTHON=${PYTHON:-python3}
export DOCKER_BUILDKIT=0  # the classic builder: no buildx needed, same as docker-compose v1

say() { printf '%s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# one run at a time: the wheels folder and the local images are shared
exec 9>deploy/wheels/.lock
flock 9

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
pullable() {
  have_image "$1" && return 0
  say "pulling $1 ..."
  timeout 600 docker pull -q "$1" >/dev/null 2>&1
}

# ---- the wheels, on the host (in the background while the images are made) ----

download_wheels() {
  local arch plats=() n
  arch=$(docker info --format '{{.Architecture}}')
  case "$arch" in amd64) arch=x86_64 ;; arm64) arch=aarch64 ;; esac
  # pip takes only the platform tags it is given: every manylinux up to bookworm's glibc
  for n in $(seq 17 36); do plats+=(--platform "manylinux_2_${n}_${arch}"); done
  plats+=(--platform "manylinux2014_${arch}")
  # the same requirements for the same machine as last time: the wheels are there
  stamp="$arch $(sha256sum deploy/requirements.txt | cut -d' ' -f1)"
  if [ "$(cat deploy/wheels/.stamp 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  rm -f deploy/wheels/.stamp
  find deploy/wheels -name '*.whl' -delete
  "$PYTHON" -m pip download -q --disable-pip-version-check --dest deploy/wheels \
    --only-binary=:all: "${plats[@]}" --python-version 3.11 --implementation cp \
    -r deploy/requirements.txt 'setuptools>=68'
  echo "$stamp" >deploy/wheels/.stamp
}

t0=$(now)
wheels_log=$(mktemp) build_log=$(mktemp)
trap 'rm -f "$wheels_log" "$build_log"' EXIT
download_wheels >"$wheels_log" 2>&1 &
wheels_pid=$!

# ---- the base ----

apt_sources() {
  # the mirrors and suites apt uses here, as sources.list lines for SUITE
  apt-cache policy 2>/dev/null | awk -v suite="$SUITE" '
    /^ *[0-9]+ https?:\/\// { split($3, sc, "/"); s = sc[1]
      if (s == suite || index(s, suite "-") == 1) print "deb " $2 " " s " " sc[2] }' | sort -u
}

build_debian_base() {
  command -v mmdebstrap >/dev/null 2>&1 || {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || {
      say "cannot build $LOCAL_BASE: needs mmdebstrap (Debian's package) and root"; return 1; }
    say "installing mmdebstrap (apt-get) ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap \
      >/dev/null 2>&1 || { apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null; }
  }
  local sources=()
  # none found: mmdebstrap's own default mirror
  mapfile -t sources < <(apt_sources)
  say "building $LOCAL_BASE from Debian's archive (${sources[*]:-the default mirror of mmdebstrap}) ..."
  # no documentation, manual pages or translations: they only make the layer bigger
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv \
    --aptopt='Acquire::Languages "none"' --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$SUITE" - "${sources[@]}" </dev/null |
    docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
      --message "Debian $SUITE minbase with Debian's python3, from Debian's archive" \
      - "$LOCAL_BASE" >/dev/null
}

t=$(now)
if [ -n "${TASKMASTER_BASE_IMAGE:-}" ]; then
  pullable "$TASKMASTER_BASE_IMAGE" || { say "TASKMASTER_BASE_IMAGE=$TASKMASTER_BASE_IMAGE: no such image"; exit 1; }
  base=$TASKMASTER_BASE_IMAGE
elif [ "$rebuild" = 0 ] && have_image "$LOCAL_BASE"; then
  base=$LOCAL_BASE
elif [ "$rebuild" = 0 ] && pullable "$PUBLIC_BASE"; then
  base=$PUBLIC_BASE
else
  build_debian_base
  base=$LOCAL_BASE
fi
say "base image: $base ($(since "$t") s)"

# ---- PostgreSQL ----

t=$(now)
if [ -n "${POSTGRES_IMAGE:-}" ]; then
  pullable "$POSTGRES_IMAGE" || { say "POSTGRES_IMAGE=$POSTGRES_IMAGE: no such image"; exit 1; }
  postgres=$POSTGRES_IMAGE
elif [ "$base" != "$LOCAL_BASE" ] && pullable "$PUBLIC_POSTGRES"; then
  postgres=$PUBLIC_POSTGRES
else
  # Debian's package, installed on the base (Debian, whichever of the two it is)
  say "building $LOCAL_POSTGRES from Debian's postgresql package on $base ..."
  docker build -q --force-rm --build-arg "BASE_IMAGE=$base" -t "$LOCAL_POSTGRES" \
    deploy/postgres >/dev/null 2>"$build_log" || { cat "$build_log" >&2; exit 1; }
  postgres=$LOCAL_POSTGRES
fi
say "postgres image: $postgres ($(since "$t") s)"

if ! wait "$wheels_pid"; then
  cat "$wheels_log" >&2
  say "could not download the wheels of deploy/requirements.txt"
  exit 1
fi
say "wheels: $(find deploy/wheels -name '*.whl' | wc -l) in deploy/wheels/ ($(since "$t0") s in all)"

if [ -n "$env_file" ]; then
  touch "$env_file"
  # a public image is compose.yaml's default: its line stays a comment
  for pair in "TASKMASTER_BASE_IMAGE=$base=$PUBLIC_BASE" "POSTGRES_IMAGE=$postgres=$PUBLIC_POSTGRES"; do
    name=${pair%%=*} rest=${pair#*=}
    value=${rest%%=*} default=${rest#*=}
    line="$name=$value"
    [ "$value" = "$default" ] && line="#$name=$default"
    if grep -Eq "^#? *$name=" "$env_file"; then
      sed -i -E "s|^#? *$name=.*|$line|" "$env_file"
    else
      printf '%s\n' "$line" >>"$env_file"
    fi
  done
fi
printf 'TASKMASTER_BASE_IMAGE=%s\nPOSTGRES_IMAGE=%s\n' "$base" "$postgres"
