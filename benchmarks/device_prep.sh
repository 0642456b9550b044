#!/usr/bin/env bash
# Build .device/ (wheels of what the lent GPU machine lacks + this project's wheel + the shared data set as
# lossless WebP + .device/setup.sh) with the shared tool ../shared/tools/device-bundle, here, on the CPU box.
# Then the GPU run is: carry [".device"], command `bash benchmarks/gpu_check.sh` (benchmarks/README.md).
#
#   bash benchmarks/device_prep.sh [EXTRA_PACKAGE ...]      # from the project root, with its venv active
#
# Why a wrapper: the tool appends to `.git/info/exclude`, which does not exist in a git worktree (there `.git` is
# a file), so it stops at once there. In a worktree this runs a copy of it with the worktree's real exclude file
# (`git rev-parse --git-path info/exclude`, shared by all worktrees) and the tool's own folder filled in.
set -euo pipefail
cd "$(dirname "$0")/.."
tool="${DEVICE_BUNDLE:-../shared/tools/device-bundle}"
[ -f "$tool" ] || { echo "device_prep: $tool not found (set DEVICE_BUNDLE=/path/to/device-bundle)" >&2; exit 1; }

# the tool as it is in a plain clone; in a worktree a copy with the worktree's exclude file and the tool's folder
bundle() {
    if [ -d .git ]; then
        bash "$tool" "$@"
        return
    fi
    local exclude tooldir patched
    exclude="$(git rev-parse --path-format=absolute --git-path info/exclude)"
    mkdir -p "$(dirname "$exclude")"
    tooldir="$(cd "$(dirname "$tool")" && pwd)"
    patched="$(sed -e "s| \.git/info/exclude| $exclude|g" \
                   -e "s|^here=\"\$(cd \"\$(dirname \"\$0\")\" \&\& pwd)\";|here=\"$tooldir\";|" "$tool")"
    # the copy must have both substitutions, or it would write somewhere else: refuse if the tool's text changed
    if grep -q ' \.git/info/exclude' <<<"$patched" || ! grep -q "^here=\"$tooldir\";" <<<"$patched"; then
        echo "device_prep: $tool changed; cannot adapt it to a worktree. Run it from a plain clone." >&2
        exit 1
    fi
    bash -c "$patched" device-bundle "$@"
}

# bytes of the files under the paths given, or of what git sends when none: tracked + untracked-not-ignored
bytes() {
    if [ "$#" -gt 0 ]; then
        find "$@" -type f -printf '%s\n'
    else
        { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s -- 2>/dev/null || true
    fi | awk '{s += $1} END {print s + 0}'
}

# only the train images: gpu_check.sh trains and never reads test/, and the test images (9 MB as WebP) would take
# the run over what it may carry (a 66.5 MB tree + bundle was refused). setup.sh rebuilds what pixels.csv lists.
drop_test_images() {
    rm -f .device/data/test/*.webp
    awk -F, 'NR == 1 || $1 != "test"' .device/data/pixels.csv >.device/data/pixels.train && mv .device/data/pixels.train .device/data/pixels.csv
}

bundle "$@"
drop_test_images
# gpu_check.sh prints it there: which commit (and local changes) the wheel and the tree came from
{ echo "prepared $(date -u +%FT%TZ) from $(git rev-parse --short HEAD 2>/dev/null || echo '?')"; git status --short; } \
    >.device/tree.txt
# the run tool refused 66.5 MB although that is under 64 MiB: keep under 64 MB (decimal) and a margin
tree=$(bytes); dev=$(bytes .device); limit=$((62 * 1000 * 1000))
echo "travels: tree ${tree} + .device ${dev} = $((tree + dev)) bytes of ${limit} ($(((limit - tree - dev) / 1024)) KiB left)"
if [ $((tree + dev)) -gt "$limit" ]; then
    echo "device_prep: over the ${limit} bytes planned for a run's carry (its limit: 64 MiB, refused at 66.5 MB)" >&2
    exit 1
fi
