"""Run the whole platform on one machine, in the foreground: `make run`.

Runs the processes listed once in deploy/circus.ini under circus, by priority: Redis (own data
dir, AOF on; none with START_REDIS=false, the default with REDIS_SENTINELS: every process then
follows the master the Sentinels name), then deploy/bin/bootstrap (migrations, admin, demo
model, demo API key, Prometheus configuration: `manage.py platform_bootstrap`), then one Celery
worker per served model queue and the platform worker, the API under uvicorn and Flower, and
Prometheus with the node exporter when Debian's packages are installed. Every line a process
prints comes out with its name in front. A dead worker is restarted (as Kubernetes or systemd
would; 5 times a minute at most); any other process that exits stops the platform.

Writes <var>/run/pids.json (name -> pid, each the leader of its own process group: a Celery
parent, uvicorn, ...), prints the URLs, the demo key and a working curl once /readyz answers 200,
and stops every process, in the reverse order, on Ctrl-C (or SIGTERM).

This process imports neither Django nor TensorFlow.
"""

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

import environ
from circus.arbiter import Arbiter
from circus.config import get_config
from circus.exc import ConflictError
from circus.watcher import Watcher
from tornado.ioloop import IOLoop

ROOT = Path(__file__).resolve().parent.parent
PROCESS_FILE = ROOT / "deploy" / "circus.ini"
# The launcher's own options in the process file (deploy/circus.ini says what each means).
LAUNCHER_OPTIONS = ("oneshot", "per_model", "enabled_by", "requires")
RESTART_LIMIT = 5  # restarts of one process within RESTART_WINDOW_S before the platform stops
RESTART_WINDOW_S = 60.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Defaults every process sees alike (the start scripts in deploy/bin/ have the same ones).
DEFAULTS = {
    "DJANGO_SETTINGS_MODULE": "inference_project.settings.local",
    "API_HOST": "127.0.0.1",
    "API_PORT": "8000",
    "GRPC_PORT": "8081",
    "FLOWER_PORT": "5555",
    "WORKER_METRICS_PORT": "9464",
    "INFERENCE_WORKER_METRICS_HOST": "127.0.0.1",
    "PROMETHEUS_PORT": "9090",
    "NODE_EXPORTER_PORT": "9100",
    "PYTHONUNBUFFERED": "1",
}


def _boolean(value: str) -> bool:
    """One rule for the START_* variables and the process file's options: django-environ's, as
    the settings (and deploy/bin/flower) read booleans."""
    return value.strip().lower() in environ.Env.BOOLEAN_TRUE_STRINGS


def _true(name: str) -> bool:
    return _boolean(os.environ.get(name, "true"))


def environment_prepare() -> Path:
    """The environment every process inherits: .env (as the settings read it), the defaults,
    a generated Flower password and this virtualenv's bin/ first on PATH. Returns the var dir."""
    environ.Env.read_env(ROOT / ".env", overwrite=False)
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    if os.environ.get("REDIS_SENTINELS"):
        # Every process uses the Sentinels' master then; a Redis of our own would serve nobody.
        os.environ.setdefault("START_REDIS", "false")
    # Flower always sits behind basic auth: FLOWER_BASIC_AUTH=user:password, else generated and printed.
    os.environ.setdefault("FLOWER_BASIC_AUTH", f"admin:{secrets.token_urlsafe(12)}")
    var = Path(os.environ.setdefault("INFERENCE_VAR_DIR", str(ROOT / "var"))).resolve()
    os.environ["INFERENCE_VAR_DIR"] = str(var)
    # One host: the workers read the API's shared memory (inference_common/shm_tensors.py).
    os.environ.setdefault("INFERENCE_TENSOR_SHM_BYTES", str(128 * 2**20))
    if os.environ.get("INFERENCE_TENSOR_REDIS_URL") or not _true("START_REDIS"):
        os.environ["START_TENSOR_REDIS"] = "false"
    elif _true("START_TENSOR_REDIS"):
        socket = tensor_socket(var)
        os.environ["TENSOR_REDIS_SOCKET"] = str(socket)
        os.environ["INFERENCE_TENSOR_REDIS_URL"] = f"unix://{socket}"
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return var


def tensor_socket(var: Path) -> Path:
    """The tensor Redis's unix socket: in var/run, or in the temporary folder when that path is
    past what a socket's address holds (108 bytes on Linux)."""
    socket = var / "run" / "redis-tensors.sock"
    if len(str(socket)) < 100:
        return socket
    return (
        Path(tempfile.gettempdir())
        / f"inference-tensors-{hashlib.sha256(str(var).encode()).hexdigest()[:12]}.sock"
    )


def watcher_enabled(spec: dict[str, Any]) -> bool:
    """False when a variable in `enabled_by` is false or a program in `requires` is missing."""
    return all(_true(name) for name in spec.get("enabled_by", "").split()) and all(
        shutil.which(program) for program in spec.get("requires", "").split()
    )


def watchers_read(path: Path = PROCESS_FILE) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """circus's reading of the process file: its [circus] options and the watchers this run
    starts, highest priority first."""
    config = get_config(str(path))
    watchers = [spec for spec in config.pop("watchers") if watcher_enabled(spec)]
    return config, sorted(watchers, key=lambda spec: -int(spec["priority"]))


def per_model_expand(spec: dict[str, Any], models: list[str]) -> list[dict[str, Any]]:
    """`<name>-<model>` for each served model, MODEL and WORKER_INDEX in its environment."""
    if not _flag(spec, "per_model"):
        return [spec]
    return [
        {
            **spec,
            "name": f"{spec['name']}-{model}",
            "env": {**spec["env"], "MODEL": model, "WORKER_INDEX": str(i)},
        }
        for i, model in enumerate(models)
    ]


def _flag(spec: dict[str, Any], option: str) -> bool:
    return _boolean(str(spec.get(option, "false")))


def exit_description(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"exited with signal {-code} ({signal.Signals(-code).name})"
        return f"exited with signal {-code}"
    return f"exited with code {code}"


class Output:
    """Lines of every process, each with the process's name in front (coloured on a terminal)."""

    COLOURS = ("36", "33", "32", "35", "34", "31")

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.width = len("platform")
        self.colour = out.isatty()
        self._colours: dict[str, str] = {}

    def name_add(self, name: str) -> None:
        self.width = max(self.width, len(name))

    def lines(self, name: str, lines: Iterable[str]) -> None:
        prefix = f"{name:<{self.width}} | "
        if self.colour:
            colour = self._colours.setdefault(name, self.COLOURS[len(self._colours) % len(self.COLOURS)])
            prefix = f"\033[{colour}m{prefix}\033[0m"
        self.out.write("".join(f"{prefix}{line}\n" for line in lines))
        self.out.flush()

    def platform(self, message: str) -> None:
        self.lines("platform", message.splitlines())

    def raw(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


class PrefixedStream:
    """A circus output stream: whole lines of one watcher's processes (circus reads 1 KiB at a
    time, so a line may come in pieces), each with the watcher's name in front."""

    LONGEST_LINE = 64 * 1024

    def __init__(self, output: Output, name: str) -> None:
        self.output = output
        self.name = name
        self.partial: dict[tuple[int, str], bytes] = {}

    def __call__(self, data: dict[str, Any]) -> None:
        key = (data["pid"], data["name"])
        *lines, rest = (self.partial.pop(key, b"") + data["data"]).split(b"\n")
        if len(rest) > self.LONGEST_LINE:
            lines.append(rest)
        elif rest:
            self.partial[key] = rest
        if lines:
            self.output.lines(self.name, (line.decode(errors="replace").rstrip("\r") for line in lines))

    def flush(self, pid: int | None = None) -> None:
        for key in [k for k in self.partial if pid is None or k[0] == pid]:
            self.output.lines(self.name, [self.partial.pop(key).decode(errors="replace")])

    def close(self) -> None:
        self.flush()


class Platform:
    """The process file run by a circus arbiter in this process, and what `make run` adds: the
    order of start (a oneshot watcher finishes first), one worker per served model, pids.json,
    the restart budget, stopping everything when a process that is not restarted exits, the
    banner, and a stop in the reverse order of start."""

    def __init__(self, *, var: Path, config: dict[str, Any], watchers: list[dict[str, Any]]) -> None:
        self.var = var
        self.config = config
        self.specs = watchers
        self.output = Output()
        for spec in watchers:
            self.output.name_add(f"{spec['name']}-" if _flag(spec, "per_model") else spec["name"])
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self.pids: dict[str, int] = {}
        self.restarts: dict[str, list[float]] = {}
        self.oneshots: dict[str, asyncio.Future[int | None]] = {}
        self.streams: dict[str, PrefixedStream] = {}
        self.summary: dict[str, Any] = {}
        # Built in the running event loop, which circus shares (tornado's IOLoop over asyncio).
        self.arbiter = Arbiter(
            [],
            self._endpoint("circus"),
            self._endpoint("circus-events"),
            check_delay=float(config.get("check_delay", 0.5)),
            loop=IOLoop.current(),
            multicast_endpoint=None,  # no cluster discovery on the network
        )

    # -- what circus calls -------------------------------------------------------------------

    def _hooks(self) -> dict[str, tuple[Callable[..., bool], bool]]:
        # (hook, ignore its failure): a failing after_spawn would make circus kill the process.
        return {
            "after_spawn": (self._after_spawn, True),
            "before_reap": (self._before_reap, True),
            "after_reap": (self._after_reap, True),
            "after_stop": (self._after_stop, True),
        }

    def _after_spawn(self, watcher: Watcher, pid: int, **_: Any) -> bool:
        if watcher.name not in self.oneshots:
            self.pids[watcher.name] = pid
            self._pids_write()
        return True

    def _before_reap(self, watcher: Watcher, process_pid: int, **_: Any) -> bool:
        """Read what a dead process left in its pipes before circus closes them (a traceback)."""
        process = watcher.processes.get(process_pid)
        stream = self.streams.get(watcher.name)
        if process is None or stream is None:
            return True
        for pipe_name, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
            if pipe is None or pipe.closed:
                continue
            os.set_blocking(pipe.fileno(), False)
            with contextlib.suppress(OSError, ValueError):
                while data := os.read(pipe.fileno(), 65536):
                    stream({"data": data, "pid": process_pid, "name": pipe_name})
        stream.flush(process_pid)
        return True

    def _after_reap(self, watcher: Watcher, process_pid: int, exit_code: int | None = None, **_: Any) -> bool:
        # Children of the dead process (a Celery parent's pool) must not outlive it: they would
        # keep the tasks they had prefetched.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process_pid, signal.SIGKILL)
        if watcher.name in self.oneshots:
            if not self.oneshots[watcher.name].done():
                self.oneshots[watcher.name].set_result(exit_code)
            return True
        if self.stopping.is_set() or watcher.is_stopping():
            return True
        what = f"{watcher.name} {exit_description(exit_code)}"
        if not watcher.respawn:
            self.fail(f"{what}; stopping the platform")
            return True
        now = time.monotonic()
        recent = [t for t in self.restarts.get(watcher.name, []) if now - t < RESTART_WINDOW_S]
        if len(recent) >= RESTART_LIMIT:
            watcher.respawn = False
            self.fail(
                f"{what}, {RESTART_LIMIT + 1} times within {RESTART_WINDOW_S:.0f}s; stopping the platform"
            )
            return True
        self.restarts[watcher.name] = [*recent, now]
        self.output.platform(f"{what}; restarting it")
        return True

    def _after_stop(self, watcher: Watcher, **_: Any) -> bool:
        """A watcher stopped by itself: its process exited, or could not be started at all."""
        if watcher.name in self.oneshots:
            if not self.oneshots[watcher.name].done():
                self.oneshots[watcher.name].set_result(None)
        elif not self.stopping.is_set():
            self.fail(f"{watcher.name} stopped; stopping the platform")
        return True

    # -- start --------------------------------------------------------------------------------

    def _endpoint(self, name: str) -> str:
        path = self.var / "run" / f"{name}.sock"
        if len(str(path)) > 100:  # a Unix socket's path is at most 107 bytes
            path = Path("/tmp") / f"inference-{os.getpid()}-{name}.sock"  # noqa: S108 (fallback)
        return f"ipc://{path}"

    def _pids_write(self) -> None:
        path = self.var / "run" / "pids.json"
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(self.pids))
        partial.replace(path)

    def _watcher_add(self, spec: dict[str, Any]) -> Watcher:
        spec = {key: value for key, value in spec.items() if key not in LAUNCHER_OPTIONS}
        name = spec.pop("name")
        self.output.name_add(name)
        stream = self.streams[name] = PrefixedStream(self.output, name)
        spec.update(
            working_dir=str(ROOT),
            copy_env=True,
            env={**spec.get("env", {}), "INFERENCE_SERVICE": name},
            stdout_stream={"stream": stream},
            stderr_stream={"stream": stream},
            hooks=self._hooks(),
        )
        return self.arbiter.add_watcher(name, spec.pop("cmd"), **spec)

    async def _circus(self, call: Callable[..., Any], **kwargs: Any) -> Any:
        """An arbiter command, retried while circus runs another (it refuses two at once)."""
        while True:
            try:
                return await call(**kwargs)
            except ConflictError:
                await asyncio.sleep(0.05)

    async def _until_stopping(self, awaitable: Any) -> Any:
        """The awaitable's result, or None once a stop was requested."""
        task = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        return None

    async def start(self) -> None:
        """Watchers by priority; a oneshot one (the bootstrap) must exit 0 before the next
        priority starts, and its summary names the models to start a worker for."""
        summary_path = self.var / "run" / "bootstrap.json"
        summary_path.unlink(missing_ok=True)
        for _, group in itertools.groupby(self.specs, key=lambda spec: int(spec["priority"])):
            if self.stopping.is_set():
                return
            specs = list(group)
            if any(_flag(spec, "per_model") for spec in specs) and not self.summary:
                raise RuntimeError("a per_model watcher needs a oneshot bootstrap before it")
            watchers = [self._watcher_add(s) for spec in specs for s in per_model_expand(spec, self.models)]
            for spec in specs:
                if _flag(spec, "oneshot"):
                    self.oneshots[spec["name"]] = asyncio.get_running_loop().create_future()
            await self._circus(self.arbiter.start_watchers, watcher_iter_func=lambda w=watchers: w)
            for spec in specs:
                if _flag(spec, "oneshot"):
                    code = await self._until_stopping(self.oneshots[spec["name"]])
                    if self.stopping.is_set():
                        return
                    if code != 0:
                        raise RuntimeError(f"{spec['name']} {exit_description(code)}")
                    if summary_path.exists():
                        self.summary = json.loads(summary_path.read_text())
        await self._ready()

    @property
    def models(self) -> list[str]:
        return list(self.summary.get("models", []))

    async def _ready(self) -> None:
        url = f"http://{os.environ['API_HOST']}:{os.environ['API_PORT']}/readyz"
        timeout_s = float(os.environ.get("READY_TIMEOUT_S", "300"))

        def answers() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        deadline = time.monotonic() + timeout_s
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            if await loop.run_in_executor(None, answers):
                self.banner()
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer 200 within {timeout_s:.0f}s")
            await self._until_stopping(asyncio.sleep(0.5))

    def banner(self) -> None:
        env = os.environ
        api = f"http://{env['API_HOST']}:{env['API_PORT']}"
        started = {spec["name"] for spec in self.specs}
        prometheus = (
            f"http://127.0.0.1:{env['PROMETHEUS_PORT']}"
            if "prometheus" in started
            else "not started (apt-get install -y prometheus to have it)"
        )
        token = self.summary.get("demo_key", "")
        redis_note = env.get("REDIS_SENTINELS") and (
            f"master {env.get('REDIS_SENTINEL_MASTER')!r} of the Sentinels {env['REDIS_SENTINELS']}"
        )
        lines = [
            "",
            "The platform is ready.",
            f"  API        {api}   (environment: {self.summary.get('environment')})",
            f"  gRPC       {env['API_HOST']}:{env['GRPC_PORT']}   (Open Inference Protocol)",
            f"  admin      {api}/admin/",
            f"  readiness  {api}/readyz",
            f"  Flower     http://127.0.0.1:{env['FLOWER_PORT']}   (basic auth {env['FLOWER_BASIC_AUTH']})",
            f"  metrics    {api}/metrics   (workers: :{env['WORKER_METRICS_PORT']} and up)",
            f"  Prometheus {prometheus}",
            *([f"  Redis      {redis_note}"] if redis_note else []),
            f"  demo key   {token}",
        ]
        if self.summary.get("admin_note"):
            lines.append(f"  {self.summary['admin_note']}")
        lines += [
            "",
            "Try it (the sample is a held-out image of a 7):",
            f"  curl -s {api}/api/v1/predictions -H 'Authorization: Bearer {token}' \\",
            f"       -H 'Content-Type: application/json' -d @{ROOT / 'docs' / 'sample-digit.json'}",
            "",
            "Ctrl-C stops everything.",
            "",
        ]
        self.output.raw("\n".join(lines))

    # -- stop ---------------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        self.output.platform(reason)
        self.exit_code = 1
        self.stopping.set()

    async def stop(self) -> None:
        """Priorities in the reverse order of start (the API before the workers, Redis last),
        each process given its graceful_timeout; then whatever is left of their process groups
        is killed."""
        groups = set(self.pids.values()) | {pid for w in self.arbiter.watchers for pid in w.processes}
        by_priority = sorted(self.arbiter.watchers, key=lambda watcher: watcher.priority)
        for _, group in itertools.groupby(by_priority, key=lambda watcher: watcher.priority):
            watchers = [watcher for watcher in group if not watcher.is_stopped()]
            if watchers:
                self.output.platform(f"stopping {', '.join(watcher.name for watcher in watchers)}")
                await self._circus(
                    self.arbiter.stop_watchers, watcher_iter_func=lambda reverse=False, w=watchers: w
                )
        await self._circus(self.arbiter.stop)
        await asyncio.sleep(0.1)  # circus closes its sockets in a callback
        for pid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    async def run(self) -> int:
        (self.var / "run").mkdir(parents=True, exist_ok=True)
        (self.var / "run" / "pids.json").write_text("{}")
        loop = asyncio.get_running_loop()
        await self.arbiter.start()
        # After circus installed its handlers: a stop must wait for a command circus is running
        # (it refuses a second one), which its own handlers do not.
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self.stopping.set)
        start = asyncio.ensure_future(self.start())
        start.add_done_callback(self._started)
        await self.stopping.wait()
        await asyncio.wait({start})  # it returns at its next step once stopping is set
        await self.stop()
        self.output.platform("stopped")
        return self.exit_code

    def _started(self, start: "asyncio.Task[None]") -> None:
        if not start.cancelled() and start.exception() is not None:
            self.fail(f"start-up failed: {start.exception()}")


def logging_route(output: Output) -> None:
    """circus's and tornado's own warnings as the launcher's lines (circus is quiet at INFO)."""

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            # circus's periodic check is refused (and logged) while the launcher runs a command.
            if record.exc_info and isinstance(record.exc_info[1], ConflictError):
                return
            output.platform(f"{record.name}: {record.getMessage()}")

    logging.basicConfig(level=logging.WARNING, handlers=[Handler()], force=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the platform in the foreground (make run).")
    parser.add_argument("--process-file", type=Path, default=PROCESS_FILE, help="default: %(default)s")
    args = parser.parse_args(argv)
    var = environment_prepare()
    config, watchers = watchers_read(args.process_file)
    os.environ["PLATFORM_PROCESSES"] = ",".join(spec["name"] for spec in watchers)
    # A TextIOWrapper at run time; typeshed types sys.stdout as TextIO, which has no reconfigure.
    sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    sys.exit(asyncio.run(_run(var=var, config=config, watchers=watchers)))


async def _run(*, var: Path, config: dict[str, Any], watchers: list[dict[str, Any]]) -> int:
    platform = Platform(var=var, config=config, watchers=watchers)
    logging_route(platform.output)
    return await platform.run()


if __name__ == "__main__":
    main()
