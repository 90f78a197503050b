"""Redis with a password and TLS, configured through settings, against a real TLS redis-server."""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis
from celery import Celery
from celery.backends.redis import RedisBackend

from inference_project.redis_clients import redis_async, redis_sync
from tests.conftest import ROOT, _wait_port, free_port

PASSWORD = "s3cret/with:odd@chars"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        cwd=folder,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=folder,
    )
    (folder / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
        cwd=folder,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.crt",
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
        ],
        cwd=folder,
        stdout=subprocess.DEVNULL,
    )
    _wait_port(port, proc, "redis-server (TLS)")
    yield port, folder / "ca.crt"
    proc.terminate()
    proc.wait(timeout=10)


def settings_redis_url(**env: str) -> str:
    """REDIS_URL as the settings module builds it from the given environment."""
    probe = "import json, inference_project.settings.base as s; print(json.dumps(s.REDIS_URL))"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    url: str = json.loads(out.stdout)
    return url


def test_settings_build_a_tls_url_with_the_password(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    url = settings_redis_url(
        REDIS_PORT=str(port), REDIS_PASSWORD=PASSWORD, REDIS_TLS="true", REDIS_TLS_CA_CERTS=str(ca)
    )
    assert url.startswith("rediss://")
    assert redis_sync(url).ping()

    async def ping() -> bool:
        return await redis_async(url).ping()

    assert asyncio.run(ping())
    # The Celery broker and result backend use the same URL.
    app = Celery(broker=url, backend=url)
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
    backend = cast("RedisBackend", app.backend)  # a redis(s):// backend URL
    backend.client.set("celery-probe", b"1")
    assert backend.client.get("celery-probe") == b"1"


def test_wrong_password_and_unverified_certificate_are_refused(
    tls_redis: tuple[int, Path], tmp_path: Path
) -> None:
    port, ca = tls_redis
    wrong = settings_redis_url(
        REDIS_PORT=str(port), REDIS_PASSWORD="nope", REDIS_TLS="true", REDIS_TLS_CA_CERTS=str(ca)
    )
    with pytest.raises(redis.AuthenticationError):
        redis_sync(wrong).ping()
    other_ca = tmp_path / "other.crt"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "o.key",
        "-out",
        str(other_ca),
        "-days",
        "1",
        "-subj",
        "/CN=other",
        cwd=tmp_path,
    )
    untrusted = settings_redis_url(
        REDIS_PORT=str(port), REDIS_PASSWORD=PASSWORD, REDIS_TLS="true", REDIS_TLS_CA_CERTS=str(other_ca)
    )
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis_sync(untrusted).ping()
    plain = settings_redis_url(REDIS_PORT=str(port), REDIS_PASSWORD=PASSWORD)
    assert plain.startswith("redis://")
    with pytest.raises(redis.ConnectionError):
        redis_sync(plain).ping()


def test_production_settings_pass_the_deployment_checklist() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")},
        "DJANGO_SETTINGS_MODULE": "inference_project.settings.production",
        "DJANGO_SECRET_KEY": "x" * 20 + "-production-secret-with-enough-entropy-0123456789",
        "DJANGO_ALLOWED_HOSTS": "api.example.com",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout
    missing = {k: v for k, v in env.items() if k != "DJANGO_SECRET_KEY"}
    refused = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=missing,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "DJANGO_SECRET_KEY" in refused.stderr
