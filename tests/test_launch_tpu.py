"""launch_tpu.sh: the exact gcloud commands it prints under DRY_RUN=1, its usage errors, and its
remote commands, which are also run here with bash against fake git / python / gcloud programs."""

import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash not found")

SCRIPT = Path(__file__).resolve().parent.parent / "launch_tpu.sh"
GCLOUD = ["gcloud", "compute", "tpus", "tpu-vm"]
TARGET = ["my-tpu", "--zone=us-central2-b", "--project=p"]
SCRIPT_VARS = (
    "TPU_NAME ZONE PROJECT ACCELERATOR_TYPE RUNTIME_VERSION SPOT BUCKET WORKDIR RUN_ID REPO_URL "
    "REPO_REF REMOTE_DIR REMOTE_PYTHON TFDS_DATA_DIR WORKER LINES DRY_RUN"
).split()


def _write_exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_bin(tmp_path):
    """A PATH entry whose `gcloud` records its arguments (NUL separated) and calls nobody."""
    bin_dir = tmp_path / "bin"
    _write_exe(
        bin_dir / "gcloud",
        '#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$GCLOUD_ARGV"\n',
    )
    return bin_dir


@pytest.fixture
def launch(tmp_path, fake_bin):
    """Run launch_tpu.sh with only the given script variables set (DRY_RUN=1 unless overridden)."""

    def _launch(*args, **env_vars):
        env = {k: v for k, v in os.environ.items() if k not in SCRIPT_VARS}
        env.update(TPU_NAME="my-tpu", ZONE="us-central2-b", PROJECT="p", DRY_RUN="1")
        env.update(env_vars)
        env = {k: v for k, v in env.items() if v is not None}  # None: leave the variable unset
        env["PATH"] = f"{fake_bin}{os.pathsep}{env.get('PATH', '')}"
        env["GCLOUD_ARGV"] = str(tmp_path / "gcloud_argv")
        return subprocess.run(
            [BASH, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
        )

    return _launch


def _commands(result) -> list[list[str]]:
    """The printed `+ ` lines, each split back into its words."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith("+ ") for line in lines), result.stdout
    return [shlex.split(line[2:]) for line in lines]


def _ssh_remote(result, worker="all") -> str:
    """Checks the single printed command is `tpu-vm ssh` on `worker`; returns its remote command."""
    [cmd] = _commands(result)
    assert cmd[:-1] == GCLOUD + ["ssh"] + TARGET + [f"--worker={worker}"]
    assert cmd[-1].startswith("--command=")
    return cmd[-1].removeprefix("--command=")


# --- the exact printed gcloud commands ------------------------------------------------------------


def test_create(launch, tmp_path):
    result = launch("create")
    assert _commands(result) == [
        GCLOUD + ["create"] + TARGET + ["--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base"]
    ]
    assert not (tmp_path / "gcloud_argv").exists()  # DRY_RUN never runs gcloud


def test_create_spot_pod_and_extra_flags(launch):
    result = launch(
        "create",
        "--reserved",
        SPOT="1",
        ACCELERATOR_TYPE="v4-32",
        RUNTIME_VERSION="tpu-vm-v4-base",
    )
    assert _commands(result) == [
        GCLOUD
        + ["create"]
        + TARGET
        + ["--accelerator-type=v4-32", "--version=tpu-vm-v4-base", "--spot", "--reserved"]
    ]


def test_create_spot_0_is_not_spot(launch):
    assert "--spot" not in _commands(launch("create", SPOT="0"))[0]


def test_delete(launch):
    assert _commands(launch("delete")) == [GCLOUD + ["delete"] + TARGET + ["--quiet"]]


def test_stop(launch):
    remote = _ssh_remote(launch("stop"))
    assert remote == (
        "if [ -f mmgen_jax/logs/latest.pid ]; then pid=$(cat mmgen_jax/logs/latest.pid);"
        ' if grep -qs mmgen_jax.main "/proc/$pid/cmdline" && kill "$pid"; then'
        ' echo "$(hostname): stopped pid $pid";'
        ' else echo "$(hostname): pid $pid is not running mmgen_jax.main"; fi;'
        ' else echo "$(hostname): no pid file mmgen_jax/logs/latest.pid" >&2; fi'
    )
    assert "pkill" not in remote and "killall" not in remote


def test_logs(launch):
    remote = _ssh_remote(launch("logs"), worker="0")
    assert remote == "tail -n 100 -f mmgen_jax/logs/latest.log"
    remote = _ssh_remote(launch("logs", WORKER="3", LINES="20", REMOTE_DIR="~/code/mm"), worker="3")
    assert remote == "tail -n 20 -f code/mm/logs/latest.log"


def test_without_dry_run_gcloud_runs_with_the_printed_words(launch, tmp_path):
    result = launch("create", SPOT="1", DRY_RUN=None)
    assert result.returncode == 0, result.stderr
    argv = (tmp_path / "gcloud_argv").read_text().split("\0")[:-1]
    expected = (
        GCLOUD
        + ["create"]
        + TARGET
        + ["--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base", "--spot"]
    )
    assert ["gcloud", *argv] == expected
    assert result.stdout == ""
    assert f"+ {shlex.join(expected)}" in result.stderr.splitlines()


# --- run ------------------------------------------------------------------------------------------


def test_run_with_workdir(launch):
    args = ["--config=configs/dit.py:model=DiT-XL/2", "--config.data.data_dir=gs://b/tfds"]
    remote = _ssh_remote(launch("run", *args, "--workdir=gs://b/w"))
    assert "python -m mmgen_jax.main" in remote
    assert "nohup" in remote
    words = shlex.split(remote)
    start = next(i + 2 for i in range(len(words)) if words[i : i + 2] == ["-m", "mmgen_jax.main"])
    assert words[start : start + 4] == ["--distributed", *args, "--workdir=gs://b/w"]
    assert words.count("--workdir=gs://b/w") == 1 and not any(
        w.startswith("--workdir=") and w != "--workdir=gs://b/w" for w in words
    )
    assert re.search(r"echo \$! > logs/\d{8}-\d{6}\.pid;", remote)
    assert re.search(r"> logs/\d{8}-\d{6}\.log 2>&1", remote)
    assert "mkdir -p mmgen_jax/logs" in remote
    assert "ln -sf" in remote and "logs/latest.pid" in remote and "logs/latest.log" in remote
    assert "TFDS_DATA_DIR" not in remote


def test_run_default_workdir_is_timestamped_under_bucket(launch):
    remote = _ssh_remote(launch("run", "--config=configs/dit.py", BUCKET="gs://b/"))
    match = re.search(r"--workdir=gs://b/mmgen_jax_runs/(\d{8}-\d{6}) ", remote)
    assert match, remote
    assert f"logs/{match.group(1)}.log" in remote  # the run id also names the log
    assert "--distributed" in shlex.split(remote)


def test_run_workdir_from_env_and_run_id(launch):
    remote = _ssh_remote(launch("run", "--config=configs/dit.py", WORKDIR="gs://c/x", RUN_ID="r1"))
    assert "--workdir=gs://c/x" in shlex.split(remote)
    assert "> logs/r1.log 2>&1" in remote and "echo $! > logs/r1.pid;" in remote


def test_run_needs_bucket_or_workdir(launch):
    result = launch("run", "--config=configs/dit.py")
    assert result.returncode == 2
    assert "BUCKET" in result.stderr
    assert result.stdout == ""


def test_run_id_must_be_a_plain_name(launch):
    result = launch("run", "--workdir=gs://b/w", RUN_ID="../x")
    assert result.returncode == 2 and "RUN_ID" in result.stderr


def test_run_argument_with_space_and_quotes_survives(launch):
    tricky = '--config.name=it\'s "my run" $HOME `x`;'
    remote = _ssh_remote(launch("run", "--config=configs/dit.py", tricky, "--workdir=gs://b/w"))
    assert tricky in shlex.split(remote)


def test_run_exports_tfds_data_dir(launch):
    remote = _ssh_remote(launch("run", "--workdir=gs://b/w", TFDS_DATA_DIR="gs://b/tensorflow ds"))
    assert "export TFDS_DATA_DIR=gs://b/tensorflow\\ ds;" in remote


# --- setup ----------------------------------------------------------------------------------------


def test_setup(launch):
    remote = _ssh_remote(launch("setup"))
    assert "git clone https://github.com/mmgen-jax/mmgen_jax.git mmgen_jax" in remote
    assert "[ -d mmgen_jax/.git ]" in remote
    assert "git -C mmgen_jax fetch" in remote and "git -C mmgen_jax checkout main" in remote
    assert "pull --ff-only" in remote
    assert "[ ! -x mmgen_jax/.venv/bin/python ]" in remote
    assert "pip install -U pip" in remote
    assert "pip install -e mmgen_jax" in remote
    assert "'jax[tpu]'" in remote


def test_setup_repo_and_ref(launch):
    remote = _ssh_remote(launch("setup", REPO_URL="git@github.com:me/fork.git", REPO_REF="v1.0"))
    assert "git clone git@github.com:me/fork.git mmgen_jax" in remote
    assert "checkout v1.0" in remote


# --- usage errors ---------------------------------------------------------------------------------


def test_missing_tpu_name(launch):
    result = launch("create", TPU_NAME=None)
    assert result.returncode == 2
    assert "TPU_NAME" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("var", ["ZONE", "PROJECT"])
def test_missing_zone_or_project(launch, var):
    result = launch("delete", **{var: ""})
    assert result.returncode == 2 and var in result.stderr


def test_unknown_subcommand(launch):
    result = launch("frobnicate", TPU_NAME=None)
    assert result.returncode == 2
    assert "frobnicate" in result.stderr


def test_missing_subcommand(launch):
    result = launch()
    assert result.returncode == 2 and "missing subcommand" in result.stderr


def test_extra_arguments_are_an_error(launch):
    result = launch("stop", "now")
    assert result.returncode == 2 and "now" in result.stderr


def test_help(launch):
    result = launch("help", TPU_NAME=None)
    assert result.returncode == 0
    for word in ["create", "setup", "run", "logs", "stop", "delete", *SCRIPT_VARS]:
        assert word in result.stdout


def test_bash_syntax():
    assert subprocess.run([BASH, "-n", str(SCRIPT)]).returncode == 0


def test_is_executable():
    assert os.access(SCRIPT, os.X_OK)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck():
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the remote commands, run locally -------------------------------------------------------------


def _remote_shell(remote: str, home: Path, path_prefix: Path | None = None):
    """Runs a remote command the way ssh would: `bash -c` from the (fake) home directory."""
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_VARS}
    env["HOME"] = str(home)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [BASH, "-c", remote], cwd=home, env=env, capture_output=True, text=True, timeout=60
    )


def test_setup_runs_and_is_idempotent(launch, tmp_path):
    home, tools = tmp_path / "home", tmp_path / "tools"
    home.mkdir()
    calls = home / "calls.log"
    _write_exe(
        tools / "git",
        "#!/usr/bin/env bash\n"
        'printf "git %s\\n" "$*" >> "$HOME/calls.log"\n'
        'if [ "$1" = clone ]; then mkdir -p "$3/.git"; fi\n'
        'if [ "$3" = rev-parse ]; then echo abc1234; fi\n',
    )
    _write_exe(tools / "sudo", '#!/usr/bin/env bash\necho "sudo $*" >> "$HOME/calls.log"\nexit 1\n')
    venv_python = '#!/usr/bin/env bash\nprintf "venv-python %s\\n" "$*" >> "$HOME/calls.log"\n'
    python = _write_exe(
        tools / "python3.11",
        "#!/usr/bin/env bash\n"
        'printf "python3.11 %s\\n" "$*" >> "$HOME/calls.log"\n'
        'if [ "$2" = venv ]; then mkdir -p "$3/bin"; '
        f"printf '%s' {shlex.quote(venv_python)} > \"$3/bin/python\"; "
        'chmod +x "$3/bin/python"; fi\n',
    )
    remote = _ssh_remote(launch("setup", REMOTE_PYTHON=str(python)))
    pip = [
        "venv-python -m pip install -U pip",
        "venv-python -m pip install -e mmgen_jax",
        "venv-python -m pip install -U jax[tpu]",
        "git -C mmgen_jax rev-parse --short HEAD",
    ]
    checkout = [
        "git -C mmgen_jax checkout main",
        "git -C mmgen_jax symbolic-ref -q HEAD",
        "git -C mmgen_jax pull --ff-only",
    ]

    result = _remote_shell(remote, home, tools)
    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == [
        "git clone https://github.com/mmgen-jax/mmgen_jax.git mmgen_jax",
        *checkout,
        "python3.11 -m venv mmgen_jax/.venv",
        *pip,
    ]
    assert "set up abc1234" in result.stdout

    calls.unlink()
    result = _remote_shell(remote, home, tools)
    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == ["git -C mmgen_jax fetch", *checkout, *pip]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


FAKE_MAIN = """\
import os, sys, time
home = os.environ["HOME"]
with open(os.path.join(home, "argv.tmp"), "w") as f:
    f.write("\\0".join(sys.argv[1:]) + "\\0")
with open(os.path.join(home, "env"), "w") as f:
    f.write(os.environ.get("TFDS_DATA_DIR", "") + "\\n" + os.getcwd())
os.rename(os.path.join(home, "argv.tmp"), os.path.join(home, "argv"))
print("training", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc (Linux)")
def test_run_and_stop_run_locally(launch, tmp_path):
    # A worker's home: the checkout holds a stand-in mmgen_jax.main and the venv a real Python.
    home = tmp_path / "home"
    repo = home / "mmgen_jax"
    (repo / "mmgen_jax").mkdir(parents=True)
    (repo / "mmgen_jax" / "__init__.py").write_text("")
    (repo / "mmgen_jax" / "main.py").write_text(FAKE_MAIN)
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    tricky = '--config.name=it\'s "my run" $HOME `x`;'
    args = ["--config=configs/dit.py:model=DiT-XL/2", tricky]
    result = launch("run", *args, BUCKET="gs://b", RUN_ID="r1", TFDS_DATA_DIR="gs://b/tfds")
    remote = _ssh_remote(result)
    stop = _ssh_remote(launch("stop"))
    logs = repo / "logs"

    result = _remote_shell(stop, home)
    assert result.returncode == 0 and "no pid file mmgen_jax/logs/latest.pid" in result.stderr

    pid = None
    other = subprocess.Popen(["sleep", "60"])  # a live process that is not mmgen_jax.main
    try:
        # A pid file naming some other process (a reused pid) neither blocks a run nor is killed.
        logs.mkdir()
        (logs / "latest.pid").write_text(f"{other.pid}\n")
        result = _remote_shell(stop, home)
        assert result.returncode == 0 and "is not running mmgen_jax.main" in result.stdout
        assert other.poll() is None
        (logs / "latest.pid").unlink()
        (logs / "latest.pid").symlink_to("missing.pid")  # a dangling pointer does not block either

        result = _remote_shell(remote, home)
        assert result.returncode == 0, result.stderr
        pid = int((logs / "r1.pid").read_text())
        assert f"started pid {pid} logging to mmgen_jax/logs/r1.log" in result.stdout
        assert os.readlink(logs / "latest.pid") == "r1.pid"
        assert os.readlink(logs / "latest.log") == "r1.log"
        assert _wait_for((home / "argv").exists)
        argv = (home / "argv").read_text().split("\0")[:-1]
        assert argv == ["--distributed", "--workdir=gs://b/mmgen_jax_runs/r1", *args]
        assert (home / "env").read_text() == f"gs://b/tfds\n{repo}"
        assert _wait_for(lambda: "training" in (logs / "r1.log").read_text())
        assert _alive(pid)

        # A second run while the first is alive is refused (a TPU serves one process).
        again = _remote_shell(remote, home)
        assert again.returncode == 1 and f"pid {pid} is still running" in again.stderr

        result = _remote_shell(stop, home)
        assert result.returncode == 0 and f"stopped pid {pid}" in result.stdout
        assert _wait_for(lambda: not _alive(pid))
        result = _remote_shell(stop, home)
        assert result.returncode == 0 and f"pid {pid} is not running" in result.stdout
    finally:
        other.kill()
        other.wait()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_run_before_setup_fails_on_the_worker(launch, tmp_path):
    remote = _ssh_remote(launch("run", "--workdir=gs://b/w"))
    result = _remote_shell(remote, tmp_path)
    assert result.returncode == 1 and "run setup first" in result.stderr
    assert not (tmp_path / "mmgen_jax" / "logs" / "latest.pid").exists()
