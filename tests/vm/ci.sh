#!/usr/bin/env bash
# The CI stage for the test VMs: prepare both guests, then run a set of test
# files in an x86_64 guest (with one host CPython's virtualenv) and in an
# aarch64 guest (Debian's arm64 python3). Every step prints its duration.
# Exits non-zero if any step fails; nothing is skipped quietly: a guest that
# cannot be prepared fails the stage.
#
# Environment: PYTHON (the interpreter for .venv-3.X when it must be created),
# AUNSHARE_EXECUTOR (passed to both guests; unset = the library's default),
# AUNSHARE_VM_CACHE / AUNSHARE_VM_TIMEOUT (see tests/vm/README.md).
set -uo pipefail
cd "$(dirname "$0")/../.."

# The test files per guest (they will change).
X86_64_TESTS="tests/test_spawn.py tests/test_namespaces.py tests/test_executors.py tests/test_limits.py"
AARCH64_TESTS="tests/test_plan.py tests/test_executors.py tests/test_spawn.py tests/test_namespaces.py tests/test_ptrace.py"
PYTEST_ARGS="-q -p no:cacheprovider -rs"  # -rs: say why each skip skipped
# The host runs every test on asyncio, uvloop and trio; the guests are here
# for their kernel and architecture (every loop waits on the same pidfd
# through epoll): one loop suffices, and emulation makes each test slow.
export AUNSHARE_TEST_BACKENDS=${AUNSHARE_TEST_BACKENDS:-asyncio}
VENV=.venv-3.11

failed=()
now() { date +%s.%N; }
# step NAME COMMAND...: run, time, remember a failure.
step() {
    local name=$1 t0 rc
    shift
    echo "=== $name"
    t0=$(now)
    "$@"
    rc=$?
    printf '=== %s: %s in %.1f s\n' "$name" "$([ $rc = 0 ] && echo ok || echo "FAILED ($rc)")" \
        "$(awk "BEGIN { print $(now) - $t0 }")"
    [ $rc = 0 ] || failed+=("$name")
    return $rc
}

# A host CPython 3.11 with the test extras, in the repository so that the
# x86_64 guest (which sees the host's files) finds it at the same path.
find_python() {
    local root=${PYENV_ROOT:-$HOME/.pyenv} c
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    for c in $(ls -d "$root"/versions/3.11.*/bin/python3.11 2>/dev/null | sort -V -r) \
             "$(command -v python3.11)"; do
        [ -x "$c" ] && "$c" -c 'import venv, ensurepip' 2>/dev/null && { echo "$c"; return; }
    done
    echo "no CPython 3.11 with venv found; set PYTHON" >&2
    return 1
}
make_venv() {
    if [ -x "$VENV/bin/python" ]; then
        echo "using $VENV ($("$VENV/bin/python" -V))"
        return 0
    fi
    local py
    py=$(find_python) || return 1
    echo "creating $VENV with $py"
    "$py" -m venv "$VENV" &&
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
}

# What the guest is, then the tests, in one boot: the kernel, the
# architecture, the cgroup v2 controllers and the executor aunshare picks.
# "--then" separates pytest runs made in the same boot (a boot and the
# interpreter's start under emulation cost tens of seconds).
in_guest() {  # in_guest ARCH PYTHON PYTEST-ARGS... [--then PYTEST-ARGS...]
    local arch=$1 py=$2
    shift 2
    tests/vm/run "$arch" -- sh -c '
        py=$1; opts=$2; shift 2
        echo "guest: kernel $(uname -r), machine $(uname -m)"
        echo "guest: cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
        echo "guest: executor: $("$py" -c "from aunshare.executors import get_executor; print(get_executor().name)")"
        echo "guest: python: $("$py" -c "import sys; print(sys.version.split()[0], sys.executable)")"
        first() {  # first N ARGS...: pytest with the first N of ARGS
            n=$1; shift; all=$#; i=0
            for a in "$@"; do
                [ $i -lt $n ] && set -- "$@" "$a"
                i=$((i + 1))
            done
            shift $all
            echo "guest: pytest $*"
            # shellcheck disable=SC2086  # opts splits into options
            "$py" -m pytest $opts "$@"
        }
        rc=0
        while [ $# -gt 0 ]; do
            n=0
            for a in "$@"; do
                [ "$a" = --then ] && break
                n=$((n + 1))
            done
            t0=$(date +%s)
            first $n "$@" || rc=1
            echo "guest: that run took $(( $(date +%s) - t0 )) s"
            shift $n
            [ $# -gt 0 ] && shift  # the --then
        done
        exit $rc' sh "$py" "$PYTEST_ARGS" "$@"
}

step "prepare x86_64" tests/vm/run x86_64 --prepare
step "prepare aarch64" tests/vm/run aarch64 --prepare
step "host virtualenv $VENV" make_venv
if [ ${#failed[@]} = 0 ]; then
    # shellcheck disable=SC2086  # the lists split into file names
    # Then, in the same boot, cgroup v2 with every controller: the cgroup
    # tests of the supervision suite.
    step "x86_64 tests" in_guest x86_64 "$VENV/bin/python" $X86_64_TESTS \
        --then tests/test_supervise.py -k cgroup
    # shellcheck disable=SC2086
    step "aarch64 tests" in_guest aarch64 python3 $AARCH64_TESTS
fi

if [ ${#failed[@]} != 0 ]; then
    echo "=== FAILED: ${failed[*]}"
    exit 1
fi
echo "=== all passed"
