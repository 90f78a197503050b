"""Closed-loop HTTP load with wrk: C connections, each sends its next request when the previous
answer arrived (no coordinated omission hidden: latency is measured per request, and the
request rate is what the server sustains). wrk's --latency gives the percentiles."""

import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

LUA = """
wrk.method = "{method}"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
if wrk.method == "GET" then wrk.body = nil end
{headers}
local non2xx = 0
response = function(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("NON2XX %d\\n", non2xx))
end
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _found(pattern: str, text: str) -> str:
    """The first group of `pattern`'s match in wrk's report."""
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"wrk's report has no {pattern!r}:\n{text}")
    return match.group(1)


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * UNITS[match.group(2)]


def wrk(
    url: str,
    body: bytes,
    *,
    concurrency: int,
    seconds: float,
    headers: dict[str, str],
    method: str = "POST",
    pace_ms: float | None = None,
) -> LoadResult:
    """`pace_ms`: each connection waits that long on average after an answer before its next request
    (wrk's delay(), drawn uniformly from half to one and a half times it, so the connections do not
    fall into step; the wait is not in the latencies): paced clients instead of flat out."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is required: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as folder:
        body_path = Path(folder) / "body"
        body_path.write_bytes(body)
        header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        script = Path(folder) / "post.lua"
        script.write_text(
            LUA.replace("{body}", str(body_path))
            .replace("{headers}", header_lines)
            .replace("{method}", method)
            + (
                f"delay = function() return math.random({round(pace_ms / 2)}, {round(pace_ms * 1.5)}) end\n"
                if pace_ms is not None
                else ""
            )
        )
        threads = min(2, concurrency)
        done = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{concurrency}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "60s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    out = done.stdout
    percentiles = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.MULTILINE))
    requests = int(_found(r"(\d+) requests in", out))
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = int(_found(r"NON2XX (\d+)", out))
    return LoadResult(
        concurrency=concurrency,
        seconds=seconds,
        requests=requests,
        rps=float(_found(r"Requests/sec:\s+([\d.]+)", out)),
        p50_ms=_ms(percentiles["50"]),
        p90_ms=_ms(percentiles["90"]),
        p99_ms=_ms(percentiles["99"]),
        errors=socket_errors + non2xx,
    )


def grpc_frame(message: bytes) -> bytes:
    """One gRPC message on the wire: uncompressed flag, 4-byte big-endian length, the bytes."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def h2load_grpc(
    url: str, message: bytes, *, concurrency: int, seconds: float, headers: dict[str, str]
) -> LoadResult:
    """Closed-loop unary gRPC calls with nghttp2's h2load, a C load generator as wrk is for REST:
    `concurrency` HTTP/2 connections with one stream each, each POSTing `message` (a serialized
    request) to `url` (`http://host:port/<package.Service>/<Method>`) as gRPC does. Latency per
    call from h2load's request log. h2load sees HTTP statuses, not the grpc-status trailer: the
    caller counts the calls the server answered with an error (ours: its metrics)."""
    if shutil.which("h2load") is None:
        raise RuntimeError("h2load is required: apt-get install -y nghttp2-client")
    with tempfile.TemporaryDirectory() as folder:
        body_path = Path(folder) / "body"
        body_path.write_bytes(grpc_frame(message))
        log_path = Path(folder) / "requests.log"
        grpc_headers = {"content-type": "application/grpc", "te": "trailers", **headers}
        done = subprocess.run(
            [
                "h2load",
                f"--clients={concurrency}",
                "--max-concurrent-streams=1",
                f"--threads={min(2, concurrency)}",
                f"--duration={max(1, round(seconds))}",
                "--warm-up-time=0",
                f"--data={body_path}",
                f"--log-file={log_path}",
                *[f"--header={name}: {value}" for name, value in grpc_headers.items()],
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows = [line.split("\t") for line in log_path.read_text().splitlines() if line.strip()]
    statuses = [int(row[1]) for row in rows]
    latencies_ms = sorted(int(row[2]) / 1000 for row in rows)
    failed = sum(int(n) for n in re.findall(r"(\d+) (?:failed|errored|timeout)", done.stdout))
    if not latencies_ms:
        raise ValueError(f"h2load logged no request:\n{done.stdout}\n{done.stderr}")

    def percentile(q: float) -> float:
        return latencies_ms[min(len(latencies_ms) - 1, int(q / 100 * len(latencies_ms)))]

    return LoadResult(
        concurrency=concurrency,
        seconds=seconds,
        requests=len(rows),
        rps=float(_found(r"finished in [\d.]+\w*, ([\d.]+) req/s", done.stdout)),
        p50_ms=percentile(50),
        p90_ms=percentile(90),
        p99_ms=percentile(99),
        errors=failed + sum(not 200 <= status < 300 for status in statuses),
    )
