"""A local HTTP server speaking the part of Jenkins' REST API that python-jenkins uses to start a
build: the CSRF crumb issuer, `buildWithParameters` (crumb and basic auth required) and queue
items. It records every build request."""

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

CRUMB = "test-crumb-5f2a"


@dataclass
class Build:
    job: str
    parameters: dict[str, str]
    queue_item: int


@dataclass
class FakeJenkins:
    user: str = "release-bot"
    token: str = "jenkins-api-token"
    builds: list[Build] = field(default_factory=list)
    crumb_requests: int = 0

    def start(self) -> str:
        jenkins = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _authorized(self) -> bool:
                expected = base64.b64encode(f"{jenkins.user}:{jenkins.token}".encode()).decode()
                return self.headers.get("Authorization") == f"Basic {expected}"

            def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Jenkins", "2.462.3")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = urlparse(self.path).path
                if not self._authorized():
                    return self._json(401, {"error": "unauthorized"})
                if path == "/crumbIssuer/api/json":
                    jenkins.crumb_requests += 1
                    return self._json(200, {"crumb": CRUMB, "crumbRequestField": "Jenkins-Crumb"})
                if path.startswith("/queue/item/"):
                    number = int(path.split("/")[3])
                    return self._json(
                        200, {"id": number, "blocked": False, "why": "Waiting for next available executor"}
                    )
                return self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                url = urlparse(self.path)
                if not self._authorized():
                    return self._json(401, {"error": "unauthorized"})
                if self.headers.get("Jenkins-Crumb") != CRUMB:
                    return self._json(403, {"error": "No valid crumb was included in the request"})
                parts = url.path.strip("/").split("/")
                if len(parts) == 3 and parts[0] == "job" and parts[2] == "buildWithParameters":
                    length = int(self.headers.get("Content-Length") or 0)
                    form = (
                        parse_qs(self.rfile.read(length).decode(), keep_blank_values=True) if length else {}
                    )
                    query = parse_qs(url.query, keep_blank_values=True)
                    parameters = {k: v[0] for k, v in {**query, **form}.items()}
                    number = len(jenkins.builds) + 1
                    jenkins.builds.append(Build(unquote(parts[1]), parameters, number))
                    location = f"http://{self.headers['Host']}/queue/item/{number}/"
                    return self._json(201, {}, {"Location": location})
                return self._json(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
