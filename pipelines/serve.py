"""Serve ``models:/<name>@champion`` and follow the alias when it moves.

``mlflow models serve -m models:/<name>@champion`` resolves the alias once, when it starts: after a promotion or a
served deletion request (which moves or removes ``champion``) it would keep answering with the old version. This
step keeps one MLflow scoring server per champion version on a private loopback port and answers on the public
port through a small proxy:

- ``POST /invocations``: forwarded to the current champion's server; the JSON answer gains ``"version"`` (the
  registered version that answered) and the header ``X-Model-Version``;
- ``GET /ping``: 200 while a champion is served, else 503; ``GET /version``: ``{"model": ..., "version": ...}``;
- no champion (never promoted, or removed by a deletion request whose new version failed the gate), or a champion
  whose approval does not verify (``components.approval.serving_problem``: the gate's signature over its decision
  tags, gate passed, not retired: an account with EDIT could move the alias by hand): every request gets 503 with
  ``{"error": "no approved model: ..."}``. Verifying needs the gate's key (``$FAIRFORGET_GATE_KEY_FILE``).

Every ``poll_seconds`` the alias is resolved again. When it moved, the new version's server is started and
answers ``/ping`` before the proxy switches to it, and only then is the old one stopped: no request is answered by
a version that is no longer champion once the switch is logged, and none is refused during it.

    python -m fairforget.pipelines.serve --model-name fairforget-classifier --host 127.0.0.1 --port 5001
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mlflow
from mlflow.exceptions import MlflowException

from fairforget.pipelines.cli import OneLineParser, float_arg, int_arg
from fairforget.components.approval import gate_key, serving_problem
from fairforget.pipelines.registry import CHAMPION
from fairforget.pipelines.tracking import configure_tracking, start_process, run_cli

log = logging.getLogger(__name__)


def champion_version(model_name: str, alias: str = CHAMPION) -> str | None:
    """The version behind ``models:/<model_name>@<alias>``, or None when the alias (or the model) does not exist."""
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ScoringServer:
    """``mlflow models serve`` of one registered version on a private loopback port (a child process)."""

    def __init__(self, model_name: str, version: str, start_timeout: float = 300.0):
        self.version, self.port = version, _free_port()
        env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{model_name}/{version}",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + start_timeout
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the scoring server of {model_name} version {version} did not start "
                                   f"(exit code {self.process.returncode}); try `mlflow models serve -m "
                                   f"models:/{model_name}/{version} --env-manager local` to see why")
            time.sleep(0.5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ChampionFollower:
    """The public proxy and the poll loop (see the module docstring)."""

    def __init__(self, model_name: str, host: str, port: int, alias: str = CHAMPION, poll_seconds: float = 10.0):
        self.model_name, self.alias, self.poll_seconds = model_name, alias, poll_seconds
        self.key = gate_key(create=False)  # verifies the gate's signatures; refused at start when missing
        self.refusal: str | None = None
        self.listening = False
        self.current: ScoringServer | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        follower = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # the poll loop logs what matters
                pass

            def _send(self, status: int, body: dict, version: str | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if version is not None:
                    self.send_header("X-Model-Version", version)
                self.end_headers()
                self.wfile.write(data)

            def _no_model(self) -> None:
                reason = (f"models:/{follower.model_name}@{follower.alias} is not approved: {follower.refusal}"
                          if follower.refusal else
                          f"models:/{follower.model_name}@{follower.alias} is not set (not promoted yet, or a "
                          "deletion request is open)")
                self._send(503, {"error": f"no approved model: {reason}; promote a version with the promote "
                                          "entry point"})

            def do_GET(self):  # noqa: N802 (http.server's naming)
                server = follower.current
                if server is None:
                    return self._no_model()
                if self.path == "/version":
                    return self._send(200, {"model": follower.model_name, "version": server.version},
                                      server.version)
                if self.path == "/ping":
                    return self._send(200, {"status": "ok", "version": server.version}, server.version)
                self._send(404, {"error": "unknown path: use POST /invocations, GET /ping or GET /version"})

            def do_POST(self):  # noqa: N802
                server = follower.current
                if server is None:
                    return self._no_model()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = urllib.request.Request(f"{server.url}{self.path}", body,
                                                 {"Content-Type": self.headers.get("Content-Type",
                                                                                   "application/json")})
                try:
                    with urllib.request.urlopen(request, timeout=300) as answer:
                        status, payload = answer.status, json.load(answer)
                except urllib.error.HTTPError as err:  # MLflow's own error answer, e.g. a malformed request
                    status, text = err.code, err.read()
                    try:
                        payload = json.loads(text or b"{}")
                    except ValueError:
                        payload = {"error": text.decode(errors="replace")}
                if isinstance(payload, dict):
                    payload["version"] = server.version
                self._send(status, payload, server.version)

        self.http = ThreadingHTTPServer((host, port), Handler)

    def follow_once(self) -> None:
        """Resolve the alias; check the version's signed approval (``serving_problem``: anyone with EDIT can move an
        alias); start the new champion's server (ready before the switch), then stop the old one."""
        version = champion_version(self.model_name, self.alias)
        if version is not None:
            tags = mlflow.MlflowClient().get_model_version(self.model_name, version).tags
            problem = serving_problem(self.model_name, version, tags, self.key)
            if problem != self.refusal:
                if problem:
                    log.warning("serve: not serving %s@%s: %s", self.model_name, self.alias, problem)
                self.refusal = problem
            if problem:
                version = None
        else:
            self.refusal = None
        current = self.current.version if self.current else None
        if version == current:
            return
        started = time.monotonic()
        new = ScoringServer(self.model_name, version) if version is not None else None
        with self.lock:
            old, self.current = self.current, new
        if old is not None:
            old.stop()
        if version is None:
            log.info("serve: %s@%s is not set: answering 503 'no approved model'", self.model_name, self.alias)
        else:
            log.info("serve: %s@%s is version %s (was %s); serving it after %.1f s", self.model_name, self.alias,
                     version, current or "none", time.monotonic() - started)

    def serve_forever(self) -> None:
        self.listening = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        log.info("serve: listening on %s:%d for models:/%s@%s (checked every %.0f s)", *self.http.server_address[:2],
                 self.model_name, self.alias, self.poll_seconds)
        try:
            while not self.stopping.is_set():
                try:
                    self.follow_once()
                except (MlflowException, RuntimeError) as err:  # a registry hiccup or a failed start: retry later
                    log.warning("serve: %s", err)
                self.stopping.wait(self.poll_seconds)
        finally:
            self.close()

    def close(self) -> None:
        self.stopping.set()
        if self.listening:  # shutdown() waits for a serve_forever loop: never call it without one
            self.http.shutdown()
        self.http.server_close()
        if self.current is not None:
            self.current.stop()


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-name", default="fairforget-classifier")
    parser.add_argument("--alias", default=CHAMPION)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int_arg, default=5001)
    parser.add_argument("--poll-seconds", type=float_arg, default=10.0, help="how often the alias is resolved")
    args = parser.parse_args(argv)
    start_process()

    def run() -> None:
        configure_tracking()
        follower = ChampionFollower(args.model_name, args.host, args.port, args.alias, args.poll_seconds)
        signal.signal(signal.SIGTERM, lambda *_: follower.stopping.set())  # docker stop: children stopped too
        follower.serve_forever()

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
