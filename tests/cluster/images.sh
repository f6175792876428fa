#!/usr/bin/env bash
# tests/cluster/images.sh: builds the operator's and the example worker's container
# images from cargo-built binaries, without a registry, a base image or a container
# engine, as OCI image-layout tarballs that `ctr images import` reads.
#
#   tests/cluster/images.sh <out-dir> [<cargo-target-profile-dir>]
#
# Each image holds one binary (debug info stripped) and the shared libraries `ldd` lists
# for it (glibc, libgcc: what distroless/cc, the base of the Dockerfiles in tests/kind,
# provides), runs as user 65532 (distroless's nonroot) and has a writable /tmp only if the
# pod mounts one: the same contents a user's `docker build` of tests/kind/*.Dockerfile
# produces, minus the distroless extras the binaries never read. Names:
#   mainstay.test/mainstay-operator:dev
#   mainstay.test/mainstay-example-worker:dev
# The profile directory defaults to target/debug; the binaries must be built first
# (cargo build -p mainstay-operator -p mainstay-example-worker).
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf 'images.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
[[ $# -ge 1 && $# -le 2 ]] || { printf 'usage: %s <out-dir> [<target-profile-dir>]\n' "${0##*/}" >&2; exit 2; }
out=$1
profile=${2:-$(cd "$script_dir/../.." && pwd)/target/debug}
command -v python3 >/dev/null || die "python3 is required"
command -v ldd >/dev/null || die "ldd is required"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for bin in mainstay-operator mainstay-example-worker; do
    [[ -x "$profile/$bin" ]] || die "$profile/$bin is missing; build it with cargo build -p $bin"
    cp "$profile/$bin" "$work/$bin"
    if command -v strip >/dev/null; then
        strip --strip-debug "$work/$bin"
    fi
    python3 "$script_dir/oci-image.py" --name "mainstay.test/$bin:dev" --out "$out/$bin.tar" \
        --binary-with-libs "$work/$bin:/usr/local/bin/$bin" --entrypoint "/usr/local/bin/$bin" \
        --user 65532 --dir /tmp:1777
done
log "images in $out"
