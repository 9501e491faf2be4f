"""The command line has no sharp edges: bad input is a clear message and exit 2, flags are documented,
a run dir is never silently overwritten, an interrupted demo stops every process it started."""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, small_config
from splitleak.cli import _parse, build_parser
from splitleak import entry
from splitleak.config import dump_config, load_config
from splitleak.entry import announce_ready, parse_process_args
from splitleak.runner import run_in_process


def _splitleak(*args, cwd=REPO, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "splitleak.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_adversary_mode_off_from_yaml_and_from_the_command_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("adversary:\n  mode: off\n")  # YAML 1.1 reads a bare off as false
    assert load_config(path).adversary.mode == "off"
    assert load_config(None, ["adversary.mode=off"]).adversary.mode == "off"
    assert load_config(None, ["adversary.mode=proxy"]).adversary.mode == "proxy"


@pytest.mark.parametrize(
    "args, says",
    [
        (["demo", "--run-dir", "{out}", "--epochs", "0"], "train.epochs"),
        (["demo", "train.epochs=[1", "--run-dir", "{out}"], "train.epochs=[1"),
        (["sweep", "--defense", "label_dp", "--values", "abc", "--run-dir", "{out}"], "abc"),
        (["sweep", "--defense", "nope", "--values", "1", "--run-dir", "{out}"], "--defense must be one of"),
        (["inspect", "does/not/exist"], "does/not/exist"),
        (["report", "does/not/exist"], "does/not/exist"),
        (["demo", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, args, says):
    done = _splitleak(*[a.replace("{out}", str(tmp_path / "out")) for a in args])
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert says in done.stderr, done.stderr
    assert not (tmp_path / "out").exists(), "nothing is written for a run that was refused"


def test_overrides_go_anywhere_on_the_line():
    parser = build_parser()
    args = _parse(parser, ["demo", "train.epochs=2", "--run-dir", "x", "data.name=iris", "-q"])
    assert args.overrides == ["train.epochs=2", "data.name=iris"] and args.quiet and str(args.run_dir) == "x"
    sweep = _parse(parser, ["sweep", "train.lr=0.1", "--grid", "model.top_layers=1,2", "--seeds", "0,1"])
    assert sweep.overrides == ["train.lr=0.1"] and sweep.grid == ["model.top_layers=1,2"]


def test_version_and_every_flag_has_help():
    done = _splitleak("--version")
    assert done.returncode == 0 and done.stdout.startswith("splitleak ")

    def walk(parser: argparse.ArgumentParser, path: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, f"{path} {name}")
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield path, action

    undocumented = [f"{path}: {a.dest}" for path, a in walk(build_parser(), "splitleak") if not (a.help or "").strip()]
    assert not undocumented, undocumented


def test_a_run_dir_is_never_silently_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    config = small_config(tmp_path, adversary={"mode": "proxy"})
    run_in_process(config)
    (run_dir / "left-from-the-first-run.txt").write_text("old")
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(config))

    refused = _splitleak("demo", "--config", str(path), "train.epochs=2")
    assert refused.returncode == 2 and "--force" in refused.stderr and "--resume" in refused.stderr, refused.stderr
    assert (run_dir / "left-from-the-first-run.txt").exists()

    with pytest.raises(Exception, match="--force"):
        run_in_process(config)
    run_in_process(config, force=True)
    assert not (run_dir / "left-from-the-first-run.txt").exists(), "--force starts from an empty run dir"

    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    refused = _splitleak("demo", "--config", str(path), "--run-dir", str(other), "--force")
    assert refused.returncode == 2 and "thesis.tex" in (other / "thesis.tex").name
    assert (other / "thesis.tex").read_text() == "precious", "--force never empties a directory that holds no run"


def test_results_resumes_only_the_runs_of_its_own_commit_and_its_header_counts_every_commands_time(tmp_path):
    from splitleak.config import ConfigError
    from splitleak.results import Ledger

    root = tmp_path / "results"
    first = Ledger(root, resume=False, commit="aaaaaaa")
    first.start -= 100.0  # as if it ran 100 s before it was killed
    first.tick()

    with pytest.raises(ConfigError, match="aaaaaaa.*bbbbbbb.*--force"):
        Ledger(root, resume=True, commit="bbbbbbb")
    with pytest.raises(ConfigError, match="--force"):
        Ledger(root, resume=True, commit="aaaaaaa+changes")
    with pytest.raises(ConfigError, match="no results.json"):
        Ledger(tmp_path / "elsewhere", resume=True, commit="aaaaaaa")

    resumed = Ledger(root, resume=True, commit="aaaaaaa")
    resumed.seconds[-1] = 50.0
    assert resumed.describe().startswith("in 150s over 2 commands") and "100s, 50s" in resumed.describe()
    assert Ledger(root, resume=False, commit="ccccccc").describe() == "in 0s"

    # From the command line, as a user would meet it: one clear line, exit 2, nothing run.
    (root / ".splitleak").write_text(json.dumps({"holds": "set of results runs"}) + "\n")
    refused = _splitleak(
        "results",
        "--resume",
        "--run-dir",
        str(root),
        "--out",
        str(tmp_path / "results.md"),
        "--mnist",
        str(REPO.parent / "shared" / "data" / "mnist"),
    )
    assert refused.returncode == 2 and "ccccccc" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert not (tmp_path / "results.md").exists()


def _wait_for(predicate, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited; only its parent has not reaped it yet
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_ctrl_c_stops_the_demo_and_every_process_it_started(tmp_path):
    run_dir = tmp_path / "run"
    # As from a shell on a terminal: SIGINT at its default action. A process may inherit it ignored (a
    # background job of a shell without job control, some test runners' workers), and Python then ignores
    # Ctrl-C too; so the demo is exec'd from a trampoline that restores the default first (same pid).
    trampoline = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.executable, sys.argv[1:])"
    )
    demo = subprocess.Popen(
        [
            sys.executable,
            "-c",
            trampoline,
            sys.executable,
            "-m",
            "splitleak.cli",
            "demo",
            "--run-dir",
            str(run_dir),
            "train.epochs=50",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = run_dir / "attack_log.jsonl"
    _wait_for(lambda: log.exists() and '"type":"round"' in log.read_text())
    pids = json.loads((run_dir / "processes.json").read_text())["pids"]
    demo.send_signal(signal.SIGINT)
    _, stderr = demo.communicate(timeout=120)
    assert demo.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr[-2000:]
    _wait_for(lambda: not any(_alive(pid) for pid in pids.values()), timeout_s=30)


@pytest.mark.slow
def test_on_a_terminal_log_lines_stay_off_the_progress_bars_and_the_summary_is_printed_once(tmp_path):
    """The demo on a real terminal (a pty of 100 columns): one bar per epoch counting that epoch's steps,
    log lines never on a bar's line, and one final summary."""
    import fcntl
    import pty
    import re
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: the demo, on the terminal
        os.chdir(REPO)
        argv = ["demo", "--run-dir", str(tmp_path / "run"), "train.epochs=3", "run.log_level=INFO"]
        os.execv(sys.executable, [sys.executable, "-m", "splitleak.cli", *argv])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 100, 0, 0))
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the terminal closed: the demo ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-3000:]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-B]", "", text)
    lines = [line for chunk in plain.split("\n") for line in chunk.split("\r") if line.strip()]
    bars = [line for line in lines if "━" in line]
    assert bars, "progress bars were drawn on the terminal"
    logs = [line for line in lines if re.search(r"\b(INFO|WARNING)\b", line)]
    assert logs, "log lines were printed on the terminal"
    glued = [line for line in bars if re.search(r"\b(INFO|WARNING)\b|party_feature\[", line)]
    assert not glued, glued[:3]
    steps = -(-1438 // 64)  # digits: 1,438 training samples in batches of 64
    for epoch in (1, 2, 3):
        assert any(f"train epoch {epoch}/3" in line and f"{steps}/{steps}" in line for line in bars), epoch
    assert sum("task accuracy" in line for line in lines) == 1, "one final summary, one accuracy"


def test_a_process_started_before_the_one_it_calls_waits_for_its_ready_file(tmp_path, monkeypatch, capsys):
    """splitleak demo starts all three processes at once: the proxy takes its upstream's port from the label
    party's ready file when it appears, and gives up with a clear message when it never does."""
    ready = tmp_path / "ready" / "label_party.json"
    argv = ["--address-from", str(ready), "adversary.upstream", f"run.dir={tmp_path / 'run'}"]
    writer = threading.Timer(0.3, lambda: announce_ready(ready, role="label_party", port=43210))
    writer.start()
    try:
        config, _ = parse_process_args("adversary", "the proxy", argv)
    finally:
        writer.join()
    assert config.adversary.upstream == "127.0.0.1:43210"

    monkeypatch.setattr(entry, "READY_WAIT_S", 0.3)
    never = ["--address-from", str(tmp_path / "never.json"), "adversary.upstream", f"run.dir={tmp_path / 'run'}"]
    with pytest.raises(SystemExit) as exit_:
        parse_process_args("adversary", "the proxy", never)
    assert exit_.value.code == 1
    assert "never.json did not appear" in capsys.readouterr().err


@pytest.mark.slow
def test_a_server_that_dies_before_serving_is_named_and_the_processes_waiting_for_it_are_stopped(tmp_path):
    """The proxy and the feature party start before the label party serves and wait for its ready file;
    when it never comes (here: a TLS certificate that is not one), the demo names the label party and
    stops them."""
    not_a_cert = tmp_path / "bad.pem"
    not_a_cert.write_text("not a certificate\n")
    run_dir = tmp_path / "run"
    tls = [f"transport.tls.cert={not_a_cert}", f"transport.tls.key={not_a_cert}"]
    done = _splitleak("demo", "--run-dir", str(run_dir), "train.epochs=1", *tls, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "label_party exited with code 1 before serving" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    pids = json.loads((run_dir / "processes.json").read_text())["pids"]
    assert set(pids) == {"label_party", "adversary", "feature_party"}
    _wait_for(lambda: not any(_alive(pid) for pid in pids.values()), timeout_s=30)
