"""The ``aunshare`` command, run as a real process (``python -m aunshare``).

Only what a user of the command can observe: the program's output, the exit
status, the one-line error on stderr, the JSON report.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from aunshare import Command, Exec, Stdio
from aunshare.executors import get_executor
from conftest import NOBODY, REPO, process_gone

IFACES = "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '"


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env["AUNSHARE_EXECUTOR"] = get_executor().name
    return env


def aunshare(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aunshare", *args], check=False, env=cli_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def ok(*args: str) -> str:
    res = aunshare(*args)
    assert res.returncode == 0, (res.returncode, res.stderr)
    return res.stdout


def one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("aunshare: "), res.stderr
    return lines[0]


# -- isolation -------------------------------------------------------------------

def test_fake_root_in_new_net_namespace():
    out = ok("-r", "--net", "--", "sh", "-c", f"id -u; id -g; {IFACES}")
    assert out.split() == ["0", "0", "lo"]


def test_pid_namespace_with_own_proc():
    out = ok("--pid", "--mount-proc", "--", "ps", "-e", "-o", "pid=,comm=")
    assert [line.split() for line in out.splitlines()] == [["1", "ps"]]
    out = ok("-r", "--pid", "--mount-proc", "--", "sh", "-c", "echo $$")
    assert out == "1\n"


def test_hostname_implies_uts():
    assert ok("-r", "--hostname", "cli-box", "--", "hostname") == "cli-box\n"
    assert os.uname().nodename != "cli-box"


def test_setns_joins_a_holders_namespaces():
    holder = subprocess.Popen(
        [sys.executable, "-m", "aunshare", "--net", "--hostname", "held", "--",
         "sh", "-c", "echo $$; exec sleep 30"],
        env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(holder.stdout.readline())
        out = ok("--setns", f"net:/proc/{pid}/ns/net", "--setns", f"uts:/proc/{pid}/ns/uts",
                 "--", "sh", "-c", "readlink /proc/self/ns/net; hostname")
        assert out.split() == [os.readlink(f"/proc/{pid}/ns/net"), "held"]
        assert out.split()[0] != os.readlink("/proc/self/ns/net")
    finally:
        holder.kill()
        holder.wait()


def test_map_user_and_group():
    assert ok("--map-user", "1000", "--map-group", "2000", "--",
              "sh", "-c", "id -u; id -g").split() == ["1000", "2000"]
    uid = str(os.geteuid())
    assert ok("--map-current-user", "--", "id", "-u").split() == [uid]


def test_keep_caps_and_no_new_privs():
    out = ok("-r", "--keep-caps", "CAP_NET_ADMIN,sys_chroot", "--no-new-privs", "--",
             "grep", "-E", "^(CapEff|CapBnd|NoNewPrivs)", "/proc/self/status")
    fields = dict(line.split(":\t") for line in out.splitlines())
    want = f"{(1 << 12) | (1 << 18):016x}"
    assert fields == {"CapEff": want, "CapBnd": want, "NoNewPrivs": "1"}


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs a static busybox")
def test_pivot_root_into_a_minimal_root(tmp_path):
    for d in ("bin", "proc", "oldroot"):
        (tmp_path / d).mkdir()
    shutil.copy(shutil.which("busybox"), tmp_path / "bin" / "busybox")
    for name in ("sh", "ls"):
        (tmp_path / "bin" / name).symlink_to("busybox")
    res = aunshare("-r", "--pid", "--pivot-root", str(tmp_path), "--mount-proc",
                   "--clearenv", "--env", "PATH=/bin", "--",
                   "sh", "-c", "ls /; ls -A /oldroot; echo $$")
    if res.returncode == 126:
        pytest.skip(f"busybox is not a static binary: {res.stderr}")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["bin", "oldroot", "proc", "1"]


# -- environment, limits, directories ---------------------------------------------

def test_env_and_clearenv():
    assert ok("--clearenv", "--env", "FOO=bar", "--env", "E=", "--", "env") == "FOO=bar\nE=\n"
    out = ok("--env", "FOO=x=y", "--unsetenv", "HOME", "--", "env")
    assert "FOO=x=y" in out.splitlines()
    assert not any(line.startswith("HOME=") for line in out.splitlines())


def test_rlimit_nofile():
    assert ok("--rlimit", "nofile=64", "--", "sh", "-c", "ulimit -n; ulimit -Hn").split() \
        == ["64", "64"]
    assert ok("--rlimit", "RLIMIT_NOFILE=32:64", "--",
              "sh", "-c", "ulimit -n; ulimit -Hn").split() == ["32", "64"]


def test_chdir_and_uid():
    out = ok("--chdir", "/tmp", "--uid", str(NOBODY), "--gid", str(NOBODY), "--groups", "",
             "--", "sh", "-c", "pwd; id -u; id -g; id -G")
    assert out.split() == ["/tmp", str(NOBODY), str(NOBODY), str(NOBODY)]


# -- exit status -------------------------------------------------------------------

def test_exit_code_propagates():
    assert aunshare("sh", "-c", "exit 3").returncode == 3
    assert aunshare("-r", "--net", "sh", "-c", "exit 0").returncode == 0


def test_killed_by_signal_is_128_plus_n():
    res = aunshare("sh", "-c", "kill -KILL $$")
    assert res.returncode == 128 + signal.SIGKILL
    assert res.stderr == ""


def test_missing_program_is_127_with_one_line():
    res = aunshare("-r", "--", "no-such-program-here", "x")
    assert res.returncode == 127
    line = one_error_line(res)
    assert "exec no-such-program-here" in line and "No such file or directory" in line


def test_not_executable_is_126():
    res = aunshare("--", "/etc/passwd")
    assert res.returncode == 126
    assert "Permission denied" in one_error_line(res)


def test_setup_failure_is_125():
    res = aunshare("--chroot", "/no/such/root", "--", "/bin/true")
    assert res.returncode == 125
    line = one_error_line(res)
    assert "chroot /no/such/root" in line and "No such file or directory" in line
    res = aunshare("--setns", "net:/no/such/ns", "--", "true")
    assert res.returncode == 125
    assert "--setns net:/no/such/ns" in one_error_line(res)
    res = aunshare("--pivot-root", "/tmp:no-such-put-old", "--", "/bin/true")
    assert res.returncode == 125
    assert "no-such-put-old" in one_error_line(res)


def test_timeout_is_124():
    start = time.monotonic()
    res = aunshare("--timeout", "0.3", "--kill-after", "0.5", "--", "sleep", "30")
    assert res.returncode == 124
    assert time.monotonic() - start < 10


def test_timeout_escalates_to_sigkill(tmp_path):
    # the program ignores SIGTERM; in a new pid namespace, its own child (sleep,
    # which holds the stdout pipe) goes with it
    report = tmp_path / "st.json"
    res = aunshare("--pid", "--timeout", "0.3", "--kill-after", "0.2",
                   "--json-status", str(report), "--", "sh", "-c", "trap '' TERM; sleep 30")
    assert res.returncode == 124
    data = json.loads(report.read_text())
    assert (data["timed_out"], data["signal_name"], data["aunshare_exit"]) == \
        (True, "SIGKILL", 124)


def test_timeout_sends_term_then_kill_after_the_grace(tmp_path):
    # no pid namespace: the program itself traps SIGTERM and carries on
    report = tmp_path / "st.json"
    start = time.monotonic()
    res = aunshare("--timeout", "0.3", "--kill-after", "0.6", "--json-status", str(report),
                   "--", "sh", "-c", "trap 'echo got TERM' TERM; echo ready; "
                                     "while :; do sleep 0.05; done")
    took = time.monotonic() - start
    assert res.returncode == 124, res.stderr
    assert res.stdout == "ready\ngot TERM\n"
    data = json.loads(report.read_text())
    assert (data["timed_out"], data["signal_name"], data["aunshare_exit"]) == \
        (True, "SIGKILL", 124)
    assert data["elapsed_seconds"] >= 0.9 and took >= 0.9


def test_timeout_with_no_grace_kills_at_once(tmp_path):
    report = tmp_path / "st.json"
    res = aunshare("--timeout", "0.2", "--kill-after", "0", "--json-status", str(report),
                   "--", "sh", "-c", "trap 'echo got TERM' TERM; sleep 5 & wait")
    assert res.returncode == 124
    assert "got TERM" not in res.stdout
    assert json.loads(report.read_text())["signal_name"] == "SIGKILL"


def test_timeout_not_reached_keeps_the_exit_code():
    res = aunshare("-v", "--timeout", "20", "--", "sh", "-c", "exit 4")
    assert res.returncode == 4
    assert "timed out" not in res.stderr


def test_timeout_through_the_handshake():
    # parent-written id maps: the child waits for the parent between clone and exec
    res = aunshare("--map-user", "1000", "--timeout", "0.2", "--kill-after", "0.1", "--",
                   "sh", "-c", "id -u; exec sleep 30")
    assert (res.returncode, res.stdout) == (124, "1000\n")


def test_verbose_timeout():
    res = aunshare("-v", "--timeout", "0.1", "--kill-after", "0", "--", "sleep", "30")
    assert res.returncode == 124
    lines = res.stderr.splitlines()
    assert lines[2] == "aunshare: timed out after 0.1 s: stopping pid " + \
        lines[1].removeprefix("aunshare: pid ")


def test_json_status(tmp_path):
    report = tmp_path / "st.json"
    res = aunshare("--json-status", str(report), "--", "sh", "-c",
                   "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 5")
    assert res.returncode == 5
    data = json.loads(report.read_text())
    assert data["exit_code"] == 5 and data["signal"] is None and data["error"] is None
    assert data["core_dumped"] is False and data["timed_out"] is False
    assert isinstance(data["pid"], int) and data["pid"] > 0
    assert data["user_seconds"] + data["system_seconds"] > 0
    assert data["max_rss_kib"] > 0
    assert 0 < data["elapsed_seconds"] < 20

    res = aunshare("--json-status", str(report), "--", "sh", "-c", "kill -TERM $$")
    assert res.returncode == 128 + signal.SIGTERM
    data = json.loads(report.read_text())
    assert (data["exit_code"], data["signal"], data["signal_name"]) == (None, 15, "SIGTERM")

    res = aunshare("--json-status", str(report), "--", "no-such-program-here")
    data = json.loads(report.read_text())
    assert (data["pid"], data["aunshare_exit"]) == (None, 127)
    assert data["error"].startswith("exec no-such-program-here")


def test_json_status_unwritable_runs_nothing(tmp_path):
    marker = tmp_path / "MARKER"
    res = aunshare("--json-status", "/nonexistent-dir/x.json", "--", "touch", str(marker))
    assert res.returncode == 125
    assert one_error_line(res) == ("aunshare: --json-status /nonexistent-dir/x.json: "
                                   "No such file or directory; nothing was run")
    assert not marker.exists()
    res = aunshare("--json-status", str(tmp_path), "--", "touch", str(marker))
    assert res.returncode == 125 and "Is a directory" in one_error_line(res)
    assert not marker.exists()


def test_json_status_replaces_an_old_report_and_leaves_none_on_usage_error(tmp_path):
    report = tmp_path / "st.json"
    report.write_text("x" * 10000)
    assert aunshare("--json-status", str(report), "--", "true").returncode == 0
    assert json.loads(report.read_text())["exit_code"] == 0
    fresh = tmp_path / "fresh.json"
    res = aunshare("--json-status", str(fresh), "--setns", "uts:/proc/self/ns/uts", "--uts",
                   "--", "true")
    assert res.returncode == 2 and not fresh.exists()


def test_verbose():
    res = aunshare("-v", "-r", "--net", "--", "sh", "-c", "echo $$")
    assert res.returncode == 0
    lines = res.stderr.splitlines()
    assert lines[0].startswith("aunshare: <Command \"sh\" \"-c\"")
    assert "unshare=USER|NET" in lines[0] and "map_root_user" in lines[0]
    assert lines[1] == f"aunshare: pid {res.stdout.strip()}"


# -- signals -----------------------------------------------------------------------

def start_waiting(*args: str) -> subprocess.Popen[str]:
    """Start the command, then wait until the program prints its first line."""
    proc = subprocess.Popen([sys.executable, "-m", "aunshare", *args], env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


def test_sigterm_is_forwarded():
    proc = start_waiting("--", "sh", "-c",
                         "trap 'echo got TERM; exit 7' TERM; echo ready; "
                         "while :; do sleep 0.05; done")
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.read() == "got TERM\n"
    assert proc.wait(10) == 7


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGINT,
                                 signal.SIGQUIT])
def test_signals_are_forwarded(sig):
    # stdin is not a terminal here, so SIGINT and SIGQUIT are passed on too
    name = sig.name.removeprefix("SIG")
    proc = start_waiting("--", "sh", "-c",
                         f"trap 'echo got {name}; exit 7' {name}; echo ready; "
                         "while :; do sleep 0.05; done")
    proc.send_signal(sig)
    assert proc.stdout.read() == f"got {name}\n"
    assert proc.wait(10) == 7


def test_signal_forwarded_to_a_child_started_through_the_handshake():
    proc = start_waiting("--map-user", "1000", "--", "sh", "-c",
                         "trap 'echo got TERM; exit 3' TERM; echo ready; "
                         "while :; do sleep 0.05; done")
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.read() == "got TERM\n"
    assert proc.wait(10) == 3


def test_second_signal_kills_a_program_that_ignores_the_first():
    proc = start_waiting("--", "sh", "-c", "trap '' TERM HUP; echo ready; "
                                           "while :; do sleep 0.05; done")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert proc.poll() is None
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(10) == 128 + signal.SIGKILL


def test_second_signal_kills_a_pid_namespace_init():
    # pid 1 of a new pid namespace ignores SIGTERM (no handler): the second one
    # makes aunshare SIGKILL it
    proc = start_waiting("-r", "--pid", "--", "sh", "-c", "echo ready; exec sleep 30")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 128 + signal.SIGKILL


def test_init_passes_the_first_sigterm_on():
    # with --init, pid 1 is an init that forwards SIGTERM: sleep dies of it at once
    proc = start_waiting("-r", "--init", "--", "sh", "-c", "echo ready; exec sleep 30")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 128 + signal.SIGTERM


def test_init_runs_the_program_as_pid_2_with_its_status():
    assert ok("--init", "--", "sh", "-c", "echo $$") == "2\n"
    assert ok("--pid", "--as-pid-1", "--", "sh", "-c", "echo $$") == "1\n"
    assert aunshare("--init", "--", "sh", "-c", "exit 5").returncode == 5
    res = aunshare("--init", "--", "/nonexistent/program")
    assert res.returncode == 127 and "/nonexistent/program" in res.stderr


def kill_aunshare_under(*options: str) -> int:
    """Start aunshare running sleep, SIGKILL aunshare; returns sleep's pid."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "aunshare", *options, "--", "sh", "-c", "echo $$; exec sleep 30"],
        env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    with proc.stdout:
        pid = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    return pid


def test_die_with_parent():
    pid = kill_aunshare_under("--die-with-parent")
    deadline = time.monotonic() + 5
    while not process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process_gone(pid)


def test_program_outlives_aunshare_by_default():
    pid = kill_aunshare_under()  # as with unshare(1)
    try:
        time.sleep(0.3)
        assert not process_gone(pid)
    finally:
        os.kill(pid, signal.SIGKILL)


# -- usage -------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    [],
    ["--"],
    ["--setns", "bogus:/proc/self/ns/net", "true"],
    ["--setns", "net", "true"],
    ["--rlimit", "nofiles=1", "true"],
    ["--rlimit", "nofile=10:5", "true"],
    ["--keep-caps", "cap_flying", "true"],
    ["--timeout", "-1", "true"],
    ["-r", "--map-user", "5", "true"],
    ["--chroot", "/a", "--pivot-root", "/b", "true"],
    ["--pivot-root", "relative", "true"],
    ["--no-such-option", "true"],
    ["--init", "--as-pid-1", "true"],
    ["--uid", "no-such-user-here", "true"],
], ids=lambda a: " ".join(a) or "nothing")
def test_usage_errors_exit_2(args):
    res = aunshare(*args)
    assert res.returncode == 2, res
    assert res.stderr.startswith("usage: aunshare")
    assert "aunshare: error:" in res.stderr


def test_option_conflict_found_by_the_library_is_a_usage_error():
    res = aunshare("--setns", "uts:/proc/self/ns/uts", "--uts", "true")
    assert res.returncode == 2
    assert "aunshare: error: the uts namespace is both created (--uts) and joined " \
        "(--setns); choose one" in res.stderr
    assert not API_NAMES.search(res.stderr), res.stderr


def test_help_and_version():
    res = aunshare("--help")
    assert res.returncode == 0
    assert res.stdout.startswith("usage: aunshare [options] [--] PROGRAM [ARGS...]")
    assert "examples:" in res.stdout and "--map-root-user" in res.stdout
    res = aunshare("--version")
    assert res.returncode == 0 and res.stdout.startswith("aunshare ")


def test_docs_show_the_current_help():
    """docs/cli.md carries the --help text as printed on an 80-column terminal."""
    env = cli_env() | {"COLUMNS": "80", "NO_COLOR": "1"}
    res = subprocess.run([sys.executable, "-m", "aunshare", "--help"], check=False, env=env,
                         capture_output=True, text=True, timeout=20)
    page = (REPO / "docs" / "cli.md").read_text()
    assert f"```text\n{res.stdout}```" in page, "regenerate the --help block of docs/cli.md"


def test_options_after_the_program_belong_to_it():
    assert ok("echo", "-r", "--net") == "-r --net\n"


def test_console_script_entry_point():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "aunshare"]
    assert ep.value == "aunshare.cli:main"


# -- unprivileged ------------------------------------------------------------------

def as_nobody(*args: str) -> Command:
    """The command run by uid 65534, which needs the repository and the
    site-packages on its path and a HOME it may use."""
    path = os.pathsep.join([str(REPO), *[p for p in sys.path if p and "site-packages" in p]])
    return (Command(sys.executable).args(["-m", "aunshare", *args])
            .uid(NOBODY).gid(NOBODY).groups([])
            .env_clear()
            .envs({"HOME": "/tmp", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                   "PYTHONPATH": path, "AUNSHARE_EXECUTOR": get_executor().name})
            .current_dir("/tmp"))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
async def test_fake_root_net_as_nobody():
    try:
        out = await as_nobody("-r", "--net", "--", "sh", "-c",
                              f"id -u; cat /proc/self/uid_map; {IFACES}").output()
    except Exec as exc:
        if exc.errno != 13:
            raise
        pytest.skip(f"uid 65534 may not run this interpreter ({exc})")
    assert out.status.success(), out.stderr.decode()
    assert out.stdout.decode().split() == ["0", "0", str(NOBODY), "1", "lo"]

    # without a user namespace, an unprivileged caller gets no network namespace
    out = await as_nobody("--net", "--", "true").output()
    assert out.status.code == 125
    err = out.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("aunshare: clone3"), err
    assert "Operation not permitted" in err and "(-r/--map-root-user)" in err


# -- messages name the command's flags, not the Python API --------------------------

# What the library's texts say to a Python caller: a call such as
# map_root_user(), a Namespace member, set_namespace.
API_NAMES = re.compile(r"\b[a-z_]+\(\)|Namespace\.|\bunshare\(|set_namespace|set_id_map")


async def without_caps(*args: str):
    """``aunshare ARGS`` run by root with every capability dropped, the
    bounding set included: refused what an unprivileged user is refused
    (new namespaces other than a user namespace, maps of other ids,
    capability changes), and able to run this interpreter wherever it is."""
    return await (Command(sys.executable).args(["-m", "aunshare", *args])
                  .envs(cli_env()).keep_caps([]).stdin(Stdio.null()).output())


def error_line_of(out) -> str:
    err = out.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("aunshare: "), err
    assert not API_NAMES.search(err), err
    return err


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
async def test_fork_eperm_hint_names_the_flag():
    out = await without_caps("--net", "--", "true")
    assert out.status.code == 125
    err = error_line_of(out)
    assert err.startswith("aunshare: clone3: Operation not permitted")
    assert "ask for a user namespace too (-r/--map-root-user)" in err


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
async def test_capability_hint_names_the_flag():
    out = await without_caps("--keep-caps", "", "--", "true")
    assert out.status.code == 125
    err = error_line_of(out)
    assert "Operation not permitted" in err
    assert "(root, or a new user namespace: -r/--map-root-user)" in err


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
async def test_id_map_hint_names_no_api():
    out = await without_caps("--map-user", "5", "--", "true")
    assert out.status.code == 125
    err = error_line_of(out)
    assert "uid_map: Operation not permitted" in err and "ranges need root" in err


def test_setns_user_with_new_namespaces_names_the_flags():
    res = aunshare("--setns", "user:/proc/self/ns/user", "--net", "--", "true")
    assert res.returncode == 2
    assert "aunshare: error: --setns user:PATH with --net: the new namespaces" in res.stderr
    assert not API_NAMES.search(res.stderr), res.stderr


def test_setns_wrong_file_names_no_api():
    res = aunshare("--setns", "net:/proc/self/ns/uts", "--", "true")
    assert res.returncode == 125
    line = one_error_line(res)
    assert line == ("aunshare: --setns net:/proc/self/ns/uts: '/proc/self/ns/uts' is a uts "
                    "namespace, not net")
    res = aunshare("--setns", "net:/etc/hostname", "--", "true")
    assert res.returncode == 125
    line = one_error_line(res)
    assert "'/etc/hostname' is not a namespace file" in line
    assert not API_NAMES.search(line), line


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
async def test_builder_refusals_translate_to_flags(tmp_path):
    """Each refusal of the builder the command could meet, through the
    translation the command applies to what it prints."""
    from aunshare import Namespace
    from aunshare.cli import cli_text

    own_user_ns = "/proc/self/ns/user"
    cases = [
        (Command("true").hostname("x"), "--hostname would rename the host: it needs a UTS "
                                        "namespace, add --uts"),
        (Command("true").pivot_root(str(tmp_path), "old"),
         "--pivot-root needs a new mount namespace, or it would change the root of every "
         "process in the caller's: add --mount"),
        (Command("true").mount_proc(), "add --mount (and --pid to see only"),
        (Command("true").chroot_dir("/").unshare(Namespace.MOUNT).pivot_root(str(tmp_path), "old"),
         "--chroot and --pivot-root both change the root"),
        (Command("true").unshare(Namespace.NET | Namespace.USER)
         .set_namespace("/proc/self/ns/net", Namespace.NET),
         "the net namespace is both created (--net) and joined (--setns)"),
        (Command("true").unshare(Namespace.NET | Namespace.UTS)
         .set_namespace(own_user_ns, Namespace.USER),
         "--setns user:PATH with --uts --net: the new namespaces"),
        (Command("true").map_root_user().set_namespace(own_user_ns, Namespace.USER), "--setns"),
        (Command("true").map_current_user().set_namespace(own_user_ns, Namespace.USER),
         "--setns"),
    ]
    for cmd, want in cases:
        with pytest.raises(ValueError) as info:
            await cmd.status()
        text = cli_text(str(info.value))
        assert want in text, (str(info.value), text)
        assert not API_NAMES.search(text), (str(info.value), text)


def test_every_fork_cause_names_no_api():
    from aunshare.cli import cli_text
    from aunshare.errors import fork_causes

    from aunshare import Namespace

    for flags in (int(Namespace.NET | Namespace.PID), int(Namespace.USER | Namespace.NET)):
        for err in errno.errorcode:
            text = cli_text(fork_causes(err, flags, cgroup=True))
            assert not API_NAMES.search(text), text


@pytest.mark.parametrize("args, message", [
    (["--chroot", "rel"], "--chroot DIR must be an absolute path"),
    (["--mount", "--pivot-root", "rel"], "--pivot-root NEWROOT must be an absolute path"),
    (["--mount", "--pivot-root", "/srv:.."], "--pivot-root PUT_OLD must name a directory"),
    (["--uts", "--hostname", "x" * 65], "--hostname must be 1 to 64 bytes"),
    (["--rlimit", "nofile=10:5"], "--rlimit: the soft limit 10 is above the hard limit 5"),
    (["--chroot", "/", "--pivot-root", "/srv"], "--chroot and --pivot-root both change the root"),
])
def test_option_values_are_checked_once_by_the_builder(args, message, tmp_path):
    """The command's options share the builder's checks (no second copy in
    the CLI); a refusal is a usage error in the command's own words, and
    nothing runs."""
    marker = tmp_path / "ran"
    res = aunshare(*args, "--", "touch", str(marker))
    assert res.returncode == 2, res
    assert message in res.stderr, res.stderr
    assert not marker.exists()
