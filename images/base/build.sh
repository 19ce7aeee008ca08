#!/usr/bin/env bash
# Build the offline base image of the worker: a minimal Debian bookworm with python3 and
# python3-venv, made with debootstrap from the Debian mirror this machine already uses, and
# imported into the local Docker engine. No container registry is needed (DESIGN §9).
#
# Usage: images/base/build.sh [--force] [--tag TAG]
#   --force   rebuild even when TAG already exists
#   --tag     image tag (default sealroom-base:bookworm; env SEALROOM_BASE_TAG)
# Env: SEALROOM_DEBIAN_MIRROR overrides the mirror found in /etc/apt.
# Prints the image id on stdout; progress goes to stderr.
set -euo pipefail

TAG="${SEALROOM_BASE_TAG:-sealroom-base:bookworm}"
FORCE=0
SUITE=bookworm
while [[ $# -gt 0 ]]; do
  case "$1" in
    --force) FORCE=1; shift ;;
    --tag) TAG="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { echo "[base] $*" >&2; }

if [[ "$FORCE" -eq 0 ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
  log "$TAG exists; reusing it (use --force to rebuild)"
  docker image inspect --format '{{.Id}}' "$TAG"
  exit 0
fi

# The first Debian (not -security, not -updates) mirror in the enabled apt sources.
find_mirror() {
  local f uri
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    # deb822: a "URIs:" line inside a stanza whose Suites include the release itself.
    uri="$(awk -v suite="$SUITE" '
      BEGIN { RS=""; FS="\n" }
      {
        uris=""; suites=""; types="";
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); uris=$i }
          if ($i ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", $i); suites=" " $i " " }
          if ($i ~ /^Types:/)  { types=$i }
        }
        if (types ~ /deb([ \t]|$)/ && suites ~ (" " suite " ")) { split(uris, u, " "); print u[1]; exit }
      }' "$f")"
    if [[ -n "$uri" ]]; then echo "$uri"; return 0; fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    uri="$(awk -v suite="$SUITE" '
      $1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i+1) == suite) { print $i; exit }
      }' "$f")"
    if [[ -n "$uri" ]]; then echo "$uri"; return 0; fi
  done
  return 1
}

MIRROR="${SEALROOM_DEBIAN_MIRROR:-$(find_mirror || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install -y debootstrap)"; exit 1; }

case "$(uname -m)" in
  x86_64) ARCH=amd64 ;;
  aarch64|arm64) ARCH=arm64 ;;
  *) log "unsupported machine architecture $(uname -m)"; exit 1 ;;
esac

WORK="$(mktemp -d /var/tmp/sealroom-base.XXXXXX)"
cleanup() { rm -rf --one-file-system "$WORK"; }
trap cleanup EXIT
ROOT="$WORK/rootfs"

log "debootstrap $SUITE ($ARCH) from $MIRROR"
debootstrap --variant=minbase --arch="$ARCH" --include=python3,python3-venv \
  "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
  tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }

# Trim what a worker never needs: apt lists and caches, docs, man pages.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
       "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/*

log "importing into docker as $TAG"
tar --numeric-owner -C "$ROOT" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  - "$TAG" >/dev/null
docker image inspect --format '{{.Id}}' "$TAG"
