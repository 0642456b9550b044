#!/usr/bin/env bash
# Builds the image tests/test_docker_image.py runs, from docker/Dockerfile unchanged apart from its build
# arguments, with podman, on a machine that cannot pull pytorch/pytorch (no Docker Hub):
#
#   1. a base image (Debian bookworm + python3 venv + torch/torchvision from pip, docker/test-base/Containerfile)
#      built once and tagged by a hash of its recipe, so a rebuild happens only when the recipe changes;
#   2. docker/Dockerfile with BASE_IMAGE=that base and PREFETCH_WEIGHTS= (no weight downloads here).
#
#   docker/test-image.sh              # build (the base only if missing); prints the image name last
#   docker/test-image.sh --install    # first apt-get install podman, runc and mmdebstrap where missing
#   docker/test-image.sh --print-base # the base image's name, nothing built
#
# Environment: COVID_SWEEP_TEST_IMAGE (default localhost/covid-sweep:test), DEBIAN_MIRROR, CONTAINERS_CONF
# (default docker/test-base/containers.conf: runc and no default ulimits, which this kind of machine needs).
# pip inside the builds uses this machine's own pip settings: `pip config list` (index URLs, CA bundle,
# local wheel folders) is bind-mounted read-only into each RUN, never copied into a layer.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
here="$repo/docker/test-base"
image=${COVID_SWEEP_TEST_IMAGE:-localhost/covid-sweep:test}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}

suite=bookworm
packages=python3,python3-venv,ca-certificates
torch_pins="torch==2.14.1 torchvision==0.29.1"

install=no
print_base=no
for arg in "$@"; do
    case "$arg" in
        --install) install=yes ;;
        --print-base) print_base=yes ;;
        *) echo "usage: $0 [--install] [--print-base]" >&2; exit 2 ;;
    esac
done

# Everything that decides the base's content goes into its tag: a changed pin or recipe builds a new base.
recipe_hash=$(printf '%s\n' "$suite" "$packages" "$torch_pins" | cat - "$here/Containerfile" | sha256sum | cut -c1-16)
base="localhost/covid-sweep-test-base:$recipe_hash"
rootfs="localhost/covid-sweep-test-rootfs:$recipe_hash"
if [ "$print_base" = yes ]; then
    echo "$base"
    exit 0
fi

if [ "$install" = yes ]; then
    missing=()
    for tool in podman runc mmdebstrap; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        sudo=()
        if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
        "${sudo[@]}" apt-get update -q
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}"
    fi
fi
for tool in podman python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$0: $tool not found (--install installs podman)" >&2; exit 1; }
done

# The machine's effective pip settings as one pip.conf (environment variables folded in, as pip ranks
# them), mounted at /etc/pip.conf, and every local file or folder those settings name, mounted at its path.
pipdir=$(mktemp -d)
trap 'rm -rf "$pipdir"' EXIT
python3 - "$pipdir/pip.conf" "$pipdir/mounts" <<'PY'
import ast, configparser, os, subprocess, sys
listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                        check=True).stdout.splitlines()
rank = {"global": 0, "install": 1, "download": 1, "wheel": 1, ":env:": 2}
chosen = {}
for line in listed:
    key, _, value = line.partition("=")
    scope, _, option = key.partition(".")
    section = "global" if scope == ":env:" else scope
    old = chosen.get((section, option))
    if old is None or rank.get(scope, 1) >= old[0]:
        chosen[(section, option)] = (rank.get(scope, 1), ast.literal_eval(value))
conf = configparser.ConfigParser(interpolation=None)
paths = set()
for (section, option), (_, value) in sorted(chosen.items()):
    conf.setdefault(section, {})[option] = value
    if option in ("cert", "client-cert", "constraint", "find-links", "index-url", "extra-index-url"):
        for token in value.split():
            path = token.removeprefix("file://").rstrip("/")
            if option.endswith("index-url"):
                path = os.path.dirname(path)  # a local index links its files by "../../files/..."
            if os.path.isabs(path) and os.path.exists(path):
                paths.add(os.path.realpath(path))
with open(sys.argv[1], "w") as out:
    conf.write(out)
with open(sys.argv[2], "w") as out:
    out.writelines(f"{p}\n" for p in sorted(paths))
PY
mounts=(-v "$pipdir/pip.conf:/etc/pip.conf:ro")
while IFS= read -r path; do
    mounts+=(-v "$path:$path:ro")
done < "$pipdir/mounts"

seconds() { date +%s; }

if ! podman image exists "$base"; then
    if ! podman image exists "$rootfs"; then
        command -v mmdebstrap >/dev/null 2>&1 || { echo "$0: mmdebstrap not found (--install installs it)" >&2; exit 1; }
        start=$(seconds)
        mmdebstrap --quiet --variant=minbase --include="$packages" "$suite" - "$mirror" </dev/null \
            | podman import --quiet - "$rootfs" >/dev/null
        echo "test-image: root filesystem $rootfs in $(( $(seconds) - start )) s" >&2
    fi
    start=$(seconds)
    podman build --quiet --format docker --layers=false "${mounts[@]}" --build-arg ROOTFS="$rootfs" \
        --build-arg TORCH_PINS="$torch_pins" -f "$here/Containerfile" -t "$base" "$here" >/dev/null
    echo "test-image: base $base in $(( $(seconds) - start )) s" >&2
fi

start=$(seconds)
# --no-cache: podman reuses the layer of a RUN whose --mount=from=builder input changed (the wheel of the code
# under test), so a cached build would test the previous code; the base above stays cached by its tag.
podman build --no-cache --format docker "${mounts[@]}" --build-arg BASE_IMAGE="$base" --build-arg PREFETCH_WEIGHTS= \
    -f "$repo/docker/Dockerfile" -t "$image" "$repo" >&2
echo "test-image: $image in $(( $(seconds) - start )) s" >&2
echo "$image"
