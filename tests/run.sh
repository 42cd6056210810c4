#!/usr/bin/env bash
# Set up a virtualenv for one interpreter and run the whole suite against
# both executors. PYTHON picks the interpreter (default: python3); extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=".venv-$ver"
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,lint]'

if [ "$(id -u)" = 0 ]; then
    # The re-assembly tests need GNU as/objcopy (and the aarch64 ones); the
    # namespace tests a static busybox (a minimal root) and newuidmap/newgidmap.
    need=()
    command -v as >/dev/null && command -v objcopy >/dev/null || need+=(binutils)
    command -v aarch64-linux-gnu-as >/dev/null || need+=(binutils-aarch64-linux-gnu)
    [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
    command -v newuidmap >/dev/null || need+=(uidmap)
    # strace shows which clone call made each child (the clone(2) fallback
    # tests); qemu-aarch64 runs the aarch64 routine on any host.
    command -v strace >/dev/null || need+=(strace)
    command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
    # The sandbox tests compare with bubblewrap and list processes with ps;
    # user_network runs pasta; the pytest plugin's example serves redis; the
    # syscall and Landlock tables are checked against the kernel headers.
    command -v bwrap >/dev/null || need+=(bubblewrap)
    command -v ps >/dev/null || need+=(procps)
    command -v pasta >/dev/null || need+=(passt)
    command -v redis-server >/dev/null || need+=(redis-server)
    [ -e /usr/include/linux/landlock.h ] || need+=(linux-libc-dev)
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    # Some tests run this interpreter as uid 65534; every directory above it
    # must be traversable (search permission only, nothing becomes readable).
    real=$("$venv/bin/python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
    d=$(dirname "$real")
    while [ "$d" != / ]; do
        [ "$(stat -c %a "$d" | cut -c3)" = 0 ] && chmod o+x "$d"
        d=$(dirname "$d")
    done
fi

status=0
# Lint once per interpreter (the settings are in pyproject.toml: mypy --strict
# on aunshare/ as Python 3.11, ruff's rule set); a finding fails the run, the
# tests still run.
start=$SECONDS
echo "== lint (mypy --strict, ruff) on CPython $ver"
"$venv/bin/python" -m mypy || status=1
"$venv/bin/python" -m ruff check aunshare tests bench examples || status=1
echo "== lint (mypy --strict, ruff) $((SECONDS - start))s"

# CPython's and trio's own subprocess test suites against aunshare.compat,
# once per interpreter (they test the front ends, not the loops or executors).
start=$SECONDS
echo "== peer suites on CPython $ver"
"$venv/bin/python" tests/peers/run.py || status=1
echo "== peer suites $((SECONDS - start))s"

# The native executor under every event loop; the portable one under
# asyncio alone (an executor runs before any loop is involved, and the
# loops' own paths were just tested).
for executor in native portable; do
    backends=${AUNSHARE_TEST_BACKENDS:-asyncio,uvloop,trio}
    sizes=()
    skip=()
    if [ "$executor" = portable ]; then
        # Each portable spawn copies the parent: a fifth of the stress sizes
        # (unless set) keeps the run's length near the native one's.
        backends=asyncio
        sizes=(SOAK_SPAWNS="${SOAK_SPAWNS:-2000}" RECURSION_SPAWNS="${RECURSION_SPAWNS:-20000}"
               STRESS_THREAD_SPAWNS="${STRESS_THREAD_SPAWNS:-30}")
        # Files that run both executors themselves (ptrace, aarch64, clone
        # fallback) or test no spawn path (packaging, tables, layers, the
        # pytest plugin's workers): the native run has covered them.
        for f in test_ptrace test_aarch64 test_clone_fallback test_packaging test_syscalls \
                 test_layers test_pytest_plugin; do
            skip+=(--ignore="tests/$f.py")
        done
    fi
    echo "== CPython $ver, executor $executor, loops $backends ${sizes[*]}"
    start=$SECONDS
    env "${sizes[@]}" AUNSHARE_EXECUTOR=$executor AUNSHARE_TEST_BACKENDS=$backends \
        "$venv/bin/python" -m pytest -p no:cacheprovider -q -rs --durations=15 "${skip[@]}" "$@" \
        || status=1
    echo "== CPython $ver, executor $executor: $((SECONDS - start))s"
done
exit $status
