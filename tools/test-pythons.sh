#!/usr/bin/env bash
# `make test`: the whole suite on the main interpreter (the .venv), then the in-process suite
# (everything but the tests marked real_server) on each other CPython version named, each in
# a virtual environment of its own (.venv-X.Y). Interpreters are found through pyenv where it
# is installed, else as pythonX.Y on PATH; a version found nowhere is reported, not failed.
# Ends with one line per version: what ran, how long it took, and whether it passed.
#
#   tools/test-pythons.sh MAIN_PYTHON [X.Y ...] [-- PYTEST_ARGS...]
set -uo pipefail
cd "$(dirname "$0")/.."

main_python=$1
shift
versions=()
while (($#)) && [[ $1 != -- ]]; do
    versions+=("$1")
    shift
done
[[ ${1-} == -- ]] && shift
pytest_args=("$@")

summary=()
failed=0

# The interpreter for CPython X.Y: the newest pyenv X.Y.*, else pythonX.Y on PATH (pyenv's
# shims are on PATH too, but answer only for versions pyenv has activated: hence the check).
find_python() {
    local version=$1 found=""
    if command -v pyenv >/dev/null 2>&1; then
        found=$(pyenv versions --bare 2>/dev/null | grep -E "^${version//./\\.}(\.[0-9]+)?$" |
            sort -V | tail -n 1)
        [[ -n $found ]] && found="$(pyenv root)/versions/$found/bin/python$version"
    fi
    if [[ -z $found ]]; then
        found=$(command -v "python$version" 2>/dev/null || true)
    fi
    if [[ -n $found ]] && "$found" -c "import sys; assert sys.version.startswith('$version.')" \
        >/dev/null 2>&1; then
        echo "$found"
    fi
}

run() {  # run LABEL PYTHON PYTEST_ARGS...
    local label=$1 python=$2 started status
    shift 2
    started=$SECONDS
    echo "=== $label: $("$python" -VV | head -n 1)"
    "$python" -m pytest "$@"
    status=$?
    local took=$((SECONDS - started))
    local verdict="passed"
    if ((status != 0)); then
        verdict="FAILED (pytest exit $status)"
        failed=1
    fi
    summary+=("$label: $verdict in $((took / 60))m$((took % 60))s ($("$python" -V))")
}

main_version=$("$main_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
run "CPython $main_version, whole suite (.venv)" "$main_python" "${pytest_args[@]}"

for version in "${versions[@]}"; do
    if [[ $version == "$main_version" ]]; then
        continue
    fi
    python=$(find_python "$version")
    if [[ -z $python ]]; then
        summary+=("CPython $version: not found (neither pyenv nor python$version on PATH): not run")
        continue
    fi
    venv=".venv-$version"
    if [[ ! -f $venv/.installed || pyproject.toml -nt $venv/.installed ]]; then
        echo "=== $venv: installing the test extra with $python"
        if ! { "$python" -m venv "$venv" &&
            "$venv/bin/python" -m pip install --quiet --upgrade pip &&
            "$venv/bin/python" -m pip install --quiet -e '.[test]' &&
            touch "$venv/.installed"; }; then
            summary+=("CPython $version: FAILED to install $venv")
            failed=1
            continue
        fi
    fi
    run "CPython $version, in-process suite ($venv)" "$venv/bin/python" \
        -m "not real_server" "${pytest_args[@]}"
done

echo
echo "=== make test, by Python version:"
printf '  %s\n' "${summary[@]}"
exit $failed
