# shellcheck shell=bash
# The stages that tests/manifests/rootfs_group.sh and podman_group.sh share
# (sourced, not run): TAP helpers; a bare Debian bookworm root made by
# debootstrap from the mirror apt uses here; the Dockerfile's builder stage
# (its RUN line in a copy of that root, then container/build.sh on a copy
# of the source); the engine Dockerfiles' RUN line in another copy. Each
# stage is cached under $cache and made once; every stage prints one TAP
# line, and a stage that fails ends the run.
#
# Sets: repo, cache, suite, mirror, base, builder, bin (the built binaries),
# and with lwsi_image_stage: image. Needs root, debootstrap, chroot,
# unshare; without them, or without the mirror, the test skips as a whole.

here=$(cd "$(dirname "$0")" && pwd)
repo=${LWSI_REPO:-$(cd "$here/../.." && pwd)}
cache=${LWSI_ROOTFS_CACHE:-$repo/build-rootfs}
suite=bookworm

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
  n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"
  shift
  for l in "$@"; do printf '%s\n' "$l" | sed 's/^/#   /'; done
}
skip_all() { echo "1..0 # SKIP $1"; exit 0; }
diag() { sed 's/^/# /'; }
finish() { echo "1..$n"; [ "$failed" -eq 0 ]; exit $?; }

[ "$(id -u)" -eq 0 ] || skip_all "needs root (debootstrap, chroot, unshare)"
for t in debootstrap chroot unshare python3; do
  command -v "$t" >/dev/null || skip_all "$t is not installed (apt-get install debootstrap)"
done
[ -d /usr/share/keyrings ] || skip_all "no /usr/share/keyrings (debian-archive-keyring)"

# The mirror apt is configured with here.
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
             /etc/apt/sources.list.d/*.sources 2>/dev/null |
         grep -E '^(deb |URIs:)' | grep -oE 'https?://[^ ]*debian/?' | grep -v security | head -n1)
[ -n "$mirror" ] || skip_all "apt has no Debian mirror configured (debootstrap needs one)"
fetch() { # URL: prints the body
  python3 - "$1" <<'PY'
import sys, urllib.error, urllib.request
try:
    sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())
except urllib.error.HTTPError as e:
    sys.stdout.write(f"HTTP {e.code}\n{e.read().decode()}")
    sys.exit(1)
PY
}
if ! fetch "${mirror%/}/dists/$suite/Release" >/dev/null 2>&1; then
  skip_all "the Debian mirror $mirror is not reachable (debootstrap needs it)"
fi
echo "# mirror: $mirror; cache: $cache"
mkdir -p "$cache"

# A cached stage: DIR is made once, by `MAKE [ARG...] DIR.tmp` (its output in
# LOG), marked complete (DIR.tmp/.lwsi-complete) and only then renamed to DIR;
# a later run finds the marker and reuses DIR, and a stage left incomplete is
# made again from scratch. One that fails ends the run with LOG's last lines.
cached_stage() { # DIR LOG LABEL MAKE [ARG...]
  local dir=$1 log=$2 label=$3 t0
  shift 3
  if [ -f "$dir/.lwsi-complete" ]; then
    ok "$label (cached)"
    return 0
  fi
  rm -rf "$dir" "$dir.tmp"
  t0=$(date +%s)
  if "$@" "$dir.tmp" >"$log" 2>&1; then
    touch "$dir.tmp/.lwsi-complete"
    mv "$dir.tmp" "$dir"
    ok "$label ($(( $(date +%s) - t0 )) s)"
  else
    not_ok "$label" "$(tail -n 20 "$log")"
    rm -rf "$dir.tmp"
    finish
  fi
}

# In a private mount namespace with /proc: what a container's RUN line sees.
in_root() { # DIR CMD...
  local dir=$1; shift
  unshare --mount --fork sh -c 'mount -t proc proc "$1/proc" && shift && exec chroot "$@"' \
    sh "$dir" "$dir" "$@"
}

# --- 1. a bare bookworm root ---------------------------------------------------
base=$cache/base-$suite
# shellcheck disable=SC2317  # called by cached_stage
debootstrap_into() { debootstrap --variant=minbase "$suite" "$1" "$mirror"; }
cached_stage "$base" "$cache/debootstrap.log" "debootstrap --variant=minbase $suite" \
  debootstrap_into

# A copy of the bare root (without its mark) with a Dockerfile's RUN line run
# in it, as `docker build` does.
# shellcheck disable=SC2317  # called by cached_stage
run_in_copy() { # RUN-LINE DIR
  cp -a "$base" "$2"
  rm -f "$2/.lwsi-complete"
  cp -L /etc/resolv.conf "$2/etc/resolv.conf"
  in_root "$2" sh -c "$1"
}

# --- 2. the shipped binaries, built as container/Dockerfile's builder stage -----
# The stage's RUN line (its build packages), verbatim, in a copy of the bare
# root; then container/build.sh on a copy of the source, as `COPY . .` and
# `RUN container/build.sh /out` do.
# Continuation lines are joined as the Dockerfile parser joins them (the
# backslash and the newline removed) before the shell sees the line, which
# matters inside quotes.
run_after() { # FILE REGEX: the first RUN instruction after a line matching REGEX
  awk -v re="$2" '$0 ~ re {on=1; next}
       on && /^RUN / {sub(/^RUN /, ""); grab=1}
       grab {if ($0 ~ /\\$/) {sub(/\\$/, ""); line = line $0; next}
             print line $0; exit}' "$1"
}
run_builder=$(run_after "$repo/container/Dockerfile" '^FROM .* AS builder')
key=$(printf '%s' "$run_builder" | sha256sum | cut -c1-16)
builder=$cache/builder-$suite-$key
cached_stage "$builder" "$cache/builder.log" \
  "the Dockerfile's builder stage: its RUN line, in the bare root" run_in_copy "$run_builder"
rm -rf "$builder/src"
mkdir -p "$builder/src"
(cd "$repo" && tar --exclude='./build*' --exclude='./.git' -cf - .) | tar -xf - -C "$builder/src"
cp -L /etc/resolv.conf "$builder/etc/resolv.conf"
log=$cache/build.log
if in_root "$builder" sh -c 'cd /src && container/build.sh /out' >"$log" 2>&1; then
  ok "container/build.sh in the builder root: libc only, glibc <= 2.34"
  grep -E '^lwsinit' "$log" | diag
else
  not_ok "container/build.sh in the builder root: libc only, glibc <= 2.34" "$(tail -n 20 "$log")"
  finish
fi
bin=$builder/out/stage/usr/local/bin

# --- 3. the engine Dockerfiles' RUN line in a copy of the bare root ---------------
# The RUN instruction after the marker, with its continuation lines; both
# engine Dockerfiles must carry the same one. Sets image.
lwsi_image_stage() {
  local run_sglang run_vllm key
  run_sglang=$(run_after "$repo/container/Dockerfile.sglang" '^# lwsinit-run-line')
  run_vllm=$(run_after "$repo/container/Dockerfile.vllm" '^# lwsinit-run-line')
  if [ -n "$run_sglang" ] && [ "$run_sglang" = "$run_vllm" ]; then
    ok "Dockerfile.sglang and Dockerfile.vllm have the same RUN line"
  else
    not_ok "Dockerfile.sglang and Dockerfile.vllm have the same RUN line" "$run_sglang" "---" "$run_vllm"
  fi
  key=$(printf '%s' "$run_sglang" | sha256sum | cut -c1-16)
  image=$cache/image-$suite-$key
  cached_stage "$image" "$cache/run-line.log" "the RUN line, in the bare root" \
    run_in_copy "$run_sglang"
  grep -E '^(Setting up|Note, selecting)' "$cache/run-line.log" 2>/dev/null | diag
  install -m 0755 "$bin/lwsinit" "$bin/lwsinit-gpucheck" "$image/usr/local/bin/"
}
