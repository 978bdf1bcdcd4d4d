#!/usr/bin/env bash
# `make bench`: prints the --load-tool for `python -m benchmarks`, and says beforehand, on
# stderr, when the served benchmark would install a system package. Without wrk on PATH, the
# benchmark installs Debian's wrk with apt-get when run as root; this asks first on a terminal
# (no: the Python load generator, which installs nothing) and otherwise says it will.
#
#   tools/bench-load-tool.sh [auto|wrk|python]     (default: $LOAD_TOOL, else auto)
set -euo pipefail
choice=${1:-${LOAD_TOOL:-auto}}
if [[ $choice == python ]] || command -v wrk >/dev/null 2>&1; then
    echo "$choice"
    exit 0
fi
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    if [[ $choice == auto ]]; then
        echo "make bench: wrk is not on PATH: the served benchmark uses the Python load generator" >&2
    fi
    echo "$choice"
    exit 0
fi
echo "make bench: wrk is not on PATH; the served benchmark will install Debian's wrk package" >&2
echo "  as root with \`apt-get install wrk\` (LOAD_TOOL=python make bench installs nothing)." >&2
if [[ -t 0 ]]; then
    read -r -p "Install wrk with apt-get? [y/N] " answer >&2
    if [[ ! $answer =~ ^[yY] ]]; then
        echo "make bench: not installing wrk: using the Python load generator" >&2
        echo python
        exit 0
    fi
fi
echo "$choice"
