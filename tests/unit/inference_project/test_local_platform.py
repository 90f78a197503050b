"""The `make run` launcher (inference_project/local_platform.py) over small process files of
stand-in processes, and the start scripts of deploy/bin/ with stand-ins for the programs they run."""

import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from inference_project.local_platform import (
    Output,
    PrefixedStream,
    environment_prepare,
    exit_description,
    per_model_expand,
    watcher_enabled,
    watchers_read,
)
from inference_project.redis_clients import redis_sync
from tests.conftest import ROOT, free_port

BIN = ROOT / "deploy" / "bin"


class Lines(Output):
    """An `Output` that keeps the lines it is given instead of writing them."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.seen: list[tuple[str, str]] = []
        self.width = 8

    def lines(self, name: str, lines: Iterable[str]) -> None:
        self.seen += [(name, line) for line in lines]


def test_the_stream_prints_whole_lines_of_each_process_and_pipe() -> None:
    out = Lines()
    stream = PrefixedStream(out, "worker-digits")
    stream({"pid": 1, "name": "stdout", "data": b'{"message": "pred'})
    stream({"pid": 2, "name": "stdout", "data": b"other\n"})
    stream({"pid": 1, "name": "stderr", "data": b"warning\npartial"})
    stream({"pid": 1, "name": "stdout", "data": b'iction"}\nnext'})
    assert out.seen == [
        ("worker-digits", "other"),
        ("worker-digits", "warning"),
        ("worker-digits", '{"message": "prediction"}'),
    ]
    stream.close()
    assert sorted(out.seen[3:]) == [("worker-digits", "next"), ("worker-digits", "partial")]


def test_output_on_a_terminal_is_coloured_per_process() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    out = Output(terminal)
    out.name_add("worker-digits")
    out.lines("api", ["one"])
    out.lines("worker-digits", ["two"])
    out.platform("three")
    assert terminal.getvalue().splitlines() == [
        "\033[36mapi           | \033[0mone",
        "\033[33mworker-digits | \033[0mtwo",
        "\033[32mplatform      | \033[0mthree",
    ]


def test_the_process_file_starts_redis_bootstrap_workers_api_flower_then_prometheus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("START_PROMETHEUS", "true")
    monkeypatch.setenv("START_REDIS", "false")
    _, watchers = watchers_read()
    names = [spec["name"] for spec in watchers]
    assert "redis" not in names
    assert names[:2] == ["bootstrap", "worker"]
    assert names.index("worker-platform") < names.index("api") < names.index("flower")
    for spec in watchers:
        assert (ROOT / spec["cmd"].split()[0]).parent == BIN, spec["name"]
    workers = per_model_expand(next(s for s in watchers if s["name"] == "worker"), ["digits", "mobilenet"])
    assert [(w["name"], w["env"]["MODEL"], w["env"]["WORKER_INDEX"]) for w in workers] == [
        ("worker-digits", "digits", "0"),
        ("worker-mobilenet", "mobilenet", "1"),
    ]


def test_optional_processes_need_their_flag_and_program(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {"enabled_by": "START_PROMETHEUS START_NODE_EXPORTER", "requires": "sh"}
    monkeypatch.delenv("START_PROMETHEUS", raising=False)
    assert watcher_enabled(spec)
    monkeypatch.setenv("START_NODE_EXPORTER", "false")
    assert not watcher_enabled(spec)
    assert not watcher_enabled({"requires": "no-such-program-here"})
    assert exit_description(-9) == "exited with signal 9 (SIGKILL)"
    assert exit_description(3) == "exited with code 3"


PROCESS_FILE = """
[circus]
check_delay = 0.2

[watcher:bootstrap]
cmd = python $(circus.env.TEST_DIR)/bootstrap.py
priority = 50
oneshot = true
respawn = false

[watcher:worker]
cmd = sh -c "echo serving $MODEL at $WORKER_INDEX as $INFERENCE_SERVICE; sleep 1 & exec sleep 600"
priority = 40
per_model = true
stop_children = true

[watcher:api]
cmd = python -m http.server --bind 127.0.0.1 $(circus.env.API_PORT) --directory $(circus.env.READY_DIR)
priority = 30
respawn = false
"""


BOOTSTRAP = """
import json, os, sys
if os.environ.get("BOOTSTRAP_FAILS"):
    print("no database")
    sys.exit(3)
print("set up")
summary = {"environment": "dev", "models": ["a", "b"], "demo_key": "k", "admin_note": None}
with open(os.path.join(os.environ["INFERENCE_VAR_DIR"], "run", "bootstrap.json"), "w") as out:
    json.dump(summary, out)
"""


def launch(tmp_path: Path, process_file: str, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    (tmp_path / "bootstrap.py").write_text(BOOTSTRAP)
    (tmp_path / "ready").mkdir()
    (tmp_path / "ready" / "readyz").write_text("ok")
    (tmp_path / "circus.ini").write_text(process_file)
    log = tmp_path / "out.log"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("INFERENCE_", "API_", "DJANGO_"))},
        "INFERENCE_VAR_DIR": str(tmp_path / "var"),
        "API_PORT": str(free_port()),
        "READY_DIR": str(tmp_path / "ready"),
        "TEST_DIR": str(tmp_path),
        "READY_TIMEOUT_S": "20",
        **env,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inference_project.local_platform",
                "--process-file",
                str(tmp_path / "circus.ini"),
            ],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, log


def wait_for(check: Callable[[], object], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_launcher_restarts_a_worker_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    proc, log = launch(tmp_path, PROCESS_FILE)
    try:
        wait_for(lambda: "The platform is ready." in log.read_text() or proc.poll() is not None)
        pids_file = tmp_path / "var" / "run" / "pids.json"
        pids = json.loads(pids_file.read_text())
        assert set(pids) == {"worker-a", "worker-b", "api"}
        text = log.read_text()
        assert re.search(r"^bootstrap +\| set up$", text, re.MULTILINE), text
        assert re.search(r"^worker-b +\| serving b at 1 as worker-b$", text, re.MULTILINE), text
        # The whole group of the leader in pids.json, as the reliability tests kill a worker.
        os.killpg(pids["worker-a"], signal.SIGKILL)
        wait_for(lambda: json.loads(pids_file.read_text())["worker-a"] != pids["worker-a"])
        assert "worker-a exited with signal 9 (SIGKILL); restarting it" in log.read_text()
        pids = json.loads(pids_file.read_text())
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    text = log.read_text()
    assert code == 0, text
    assert not [name for name, pid in pids.items() if alive(pid)], text
    assert text.index("stopping api") < text.index("stopping worker-a, worker-b") < text.index("stopped")


def test_a_failed_bootstrap_stops_the_platform_with_an_error(tmp_path: Path) -> None:
    proc, log = launch(tmp_path, PROCESS_FILE, BOOTSTRAP_FAILS="1")
    code = proc.wait(timeout=30)
    text = log.read_text()
    assert code == 1, text
    assert "no database" in text
    assert "start-up failed: bootstrap exited with code 3" in text
    assert "worker-a" not in text


def fake_programs(tmp_path: Path, *names: str) -> dict[str, str]:
    """Stand-ins for celery, uvicorn, ...: each prints its arguments and a few variables."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in names:
        program = folder / name
        program.write_text(
            '#!/bin/sh\necho "$0 $*"\necho "service=$INFERENCE_SERVICE models=${INFERENCE_WORKER_MODELS:-}'
            ' metrics=${INFERENCE_WORKER_METRICS_PORT:-} dir=${PROMETHEUS_MULTIPROC_DIR:-}"\n'
        )
        program.chmod(program.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{folder}:{os.environ['PATH']}", "INFERENCE_VAR_DIR": str(tmp_path / "var")}


def run_script(name: str, env: dict[str, str], *args: str) -> str:
    prefixes = ("WORKER_", "INFERENCE_", "MODEL", "API_", "FLOWER_", "CELERY_", "PROMETHEUS_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    done = subprocess.run(
        [str(BIN / name), *args], env={**clean, **env}, capture_output=True, text=True, check=True, cwd="/"
    )
    return done.stdout


def test_the_worker_script_consumes_one_model_queue(tmp_path: Path) -> None:
    env = fake_programs(tmp_path, "celery")
    out = run_script("worker", {**env, "MODEL": "mobile-net", "WORKER_CONCURRENCY": "3", "WORKER_INDEX": "2"})
    assert "worker -Q inference.mobile-net -n mobile-net@%h --concurrency 3 --loglevel INFO" in out
    metrics_dir = tmp_path / "var" / "metrics" / "worker-mobile-net"
    assert f"service=worker-mobile-net models=mobile-net metrics=9466 dir={metrics_dir}" in out
    assert metrics_dir.is_dir()
    specific = run_script(
        "worker", {**env, "WORKER_CONCURRENCY": "3", "WORKER_CONCURRENCY_MOBILE_NET": "2"}, "mobile-net"
    )
    assert "--concurrency 2" in specific
    platform = run_script("worker-platform", env)
    assert (
        f"-Q platform -n platform@%h --concurrency 1 --beat --schedule {tmp_path}/var/celerybeat-schedule"
        in platform
    )
    assert "service=worker-platform" in platform


def test_the_api_and_flower_scripts(tmp_path: Path) -> None:
    env = fake_programs(tmp_path, "uvicorn", "celery")
    api = run_script("api", {**env, "API_PORT": "8123", "API_WORKERS": "2"})
    assert "--host 127.0.0.1 --port 8123 --workers 2 --loop asyncio --no-access-log" in api
    assert f"service=api models= metrics= dir={tmp_path}/var/metrics/api" in api
    flower = run_script(
        "flower", {**env, "FLOWER_BASIC_AUTH": "u:p", "CELERY_WORKER_SEND_TASK_EVENTS": "False"}
    )
    assert "flower --port=5555 --address=127.0.0.1 --basic-auth=u:p --enable_events=False" in flower
    assert "--enable_events=False" in run_script("flower", {**env, "FLOWER_BASIC_AUTH": "u:p"})  # default
    on = run_script("flower", {**env, "FLOWER_BASIC_AUTH": "u:p", "CELERY_WORKER_SEND_TASK_EVENTS": "true"})
    assert "--enable_events=True" in on
    with pytest.raises(subprocess.CalledProcessError):
        run_script("flower", env)  # never without basic auth


def test_every_start_script_is_posix_sh() -> None:
    for script in sorted(BIN.iterdir()):
        assert script.stat().st_mode & stat.S_IXUSR, script.name
        assert script.read_text().startswith("#!/bin/sh\n"), script.name
        subprocess.run(["sh", "-n", str(script)], check=True)


def test_make_run_keeps_tensors_in_a_redis_without_persistence_on_a_unix_socket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    saved = dict(os.environ)  # environment_prepare writes os.environ
    try:
        for name in (
            "START_REDIS",
            "START_TENSOR_REDIS",
            "INFERENCE_TENSOR_REDIS_URL",
            "TENSOR_REDIS_SOCKET",
        ):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("INFERENCE_VAR_DIR", str(tmp_path))
        environment_prepare()
        socket = Path(os.environ["TENSOR_REDIS_SOCKET"])
        assert os.environ["INFERENCE_TENSOR_REDIS_URL"] == f"unix://{socket}" and len(str(socket)) < 100
        _, watchers = watchers_read()
        assert "redis-tensors" in [spec["name"] for spec in watchers]
        server = subprocess.Popen([BIN / "redis-tensors"], env=dict(os.environ), cwd=tmp_path)
        try:
            client = redis_sync(os.environ["INFERENCE_TENSOR_REDIS_URL"])
            deadline = time.monotonic() + 10
            while not socket.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.ping()
            config: dict[str | None, str | None] = {
                **client.config_get("appendonly"),
                **client.config_get("save"),
                **client.config_get("maxmemory*"),
            }
            assert config["appendonly"] == "no" and config["save"] == ""
            assert config["maxmemory-policy"] == "noeviction" and config["maxmemory"] == str(2**30)
        finally:
            server.terminate()
            server.wait(timeout=10)
        # Another tensor Redis named, or no Redis of our own: none started.
        os.environ.clear()
        os.environ.update(saved)
        monkeypatch.setenv("INFERENCE_VAR_DIR", str(tmp_path))
        monkeypatch.setenv("START_REDIS", "false")
        monkeypatch.delenv("INFERENCE_TENSOR_REDIS_URL", raising=False)
        environment_prepare()
        assert os.environ["START_TENSOR_REDIS"] == "false" and "INFERENCE_TENSOR_REDIS_URL" not in os.environ
    finally:
        monkeypatch.undo()
        os.environ.clear()
        os.environ.update(saved)
