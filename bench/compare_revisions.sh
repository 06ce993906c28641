#!/usr/bin/env bash
# Run one benchmark on the code of an earlier revision and on the working tree, alternately,
# on this machine: a change that should not move speed is checked against its own baseline
# (published tables come from other days and machines).
#
#   bash bench/compare_revisions.sh REV ROUNDS bench/match_bench.py --sizes 8000 20000
#
# Each round runs REV's code, then this tree's, with this tree's virtual environment; outputs
# go to stdout, each headed by which code ran. The benchmark script of each revision is used.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$1 rounds=$2 script=$3
shift 3
python=${PYTHON:-$PWD/.venv/bin/python}
old=$(mktemp -d)
trap 'git worktree remove --force "$old/tree" >/dev/null 2>&1; rm -rf "$old"' EXIT
git worktree add -q --detach "$old/tree" "$rev"
run() {  # the CLI's import name (visiontk_cli) maps to each tree's cli/ through a shim folder
    local tree=$1 shim
    shift
    shim=$(mktemp -d -p "$old")
    ln -s "$tree/cli" "$shim/visiontk_cli"
    echo "=== $(git -C "$tree" rev-parse --short HEAD)$([ "$tree" = "$PWD" ] && echo ' + working tree')"
    (cd "$tree" && PYTHONPATH="$tree:$shim" "$python" "$script" "$@")
}
# numba caches kernels by their file's path: each tree compiles its own once, before any timing
for tree in "$old/tree" "$PWD"; do
    (cd "$tree" && PYTHONPATH="$tree" "$python" -c \
        "from visiontk._numba_cache import compile_kernels; compile_kernels()" 2>/dev/null) || true
done
for ((i = 1; i <= rounds; i++)); do
    run "$old/tree" "$@"
    run "$PWD" "$@"
done
