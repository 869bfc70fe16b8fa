"""The Lambda side: cargo-lambda's runtime emulator, our bootstrap processes behind it, invokes.

  Emulator        `cargo lambda watch --only-lambda-apis` on a loopback port: the Runtime API
                  (/.rt/<function>/2018-06-01/runtime/...) the bootstraps poll, and the invoke API
                  (POST /2015-03-31/functions/<function>/invocations). It starts no function; we
                  start each bootstrap ourselves. A function name must be a binary of this Cargo
                  workspace (producer-api, stream-consumer, compactor) — the emulator checks.
  InitProbe       a byte-forwarding TCP proxy in front of the emulator, one per process, that
                  notes when the process first asks for /runtime/invocation/next: cold init time
                  is process start → that request. It forwards bytes unchanged (measurement only).
  Function        one bootstrap process: its environment, its stdout lines (logs and EMF), its
                  init time, stopped by its own pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from pylib import HOST, ROOT, wait_until

NEXT_PATH = b"/runtime/invocation/next"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class Emulator:
    """cargo-lambda's Lambda emulator with only the Lambda APIs, on 127.0.0.1:<port>."""

    def __init__(self, cargo_lambda: str, log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.log_path = log_path
        self._log = open(log_path, "w")
        env = {**os.environ, "RUST_LOG": os.environ.get("LAMBDA_E2E_EMULATOR_LOG", "info")}
        # Run from the repository: the emulator reads Cargo.toml for the function (binary) names.
        self.proc = subprocess.Popen(
            [cargo_lambda, "lambda", "watch", "--only-lambda-apis", "--ignore-changes",
             "--invoke-address", HOST, "--invoke-port", str(self.port)],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
        try:
            wait_until(lambda: self.proc.poll() is None and port_open(self.port), bool, timeout=60, interval=0.1,
                       failure=lambda _: f"the emulator did not listen on {HOST}:{self.port} (log: {log_path})")
        except TimeoutError:
            self.stop()
            raise

    def runtime_api(self, function: str, port: int | None = None) -> str:
        """AWS_LAMBDA_RUNTIME_API for `function` (through a probe on `port` when given)."""
        return f"http://{HOST}:{port or self.port}/.rt/{function}"

    def invoke(self, function: str, payload: dict, timeout: float = 120) -> tuple[int, object, float]:
        """POST the payload to the invoke API; (HTTP status, decoded JSON body, seconds)."""
        data = json.dumps(payload, separators=(",", ":")).encode()
        request = urllib.request.Request(
            f"http://{HOST}:{self.port}/2015-03-31/functions/{function}/invocations",
            data=data, method="POST", headers={"content-type": "application/json"},
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        elapsed = time.monotonic() - started
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        return status, body, elapsed

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


class InitProbe:
    """A TCP forwarder 127.0.0.1:<port> → the emulator that notes the first /next request."""

    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.first_next: float | None = None
        self.seen = threading.Event()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((HOST, 0))
        self._server.listen(16)
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.upstream))
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, watch: bool) -> None:
        tail = b""
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if watch and self.first_next is None:
                    if NEXT_PATH in tail + chunk:
                        self.first_next = time.monotonic()
                        self.seen.set()
                    tail = chunk[-len(NEXT_PATH):]
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._server.close()


class Function:
    """One bootstrap process serving `name` through the emulator (via its own InitProbe)."""

    def __init__(self, emulator: Emulator, name: str, bootstrap: Path, env: dict[str, str], tag: str = ""):
        self.name = name
        self.tag = tag or name
        self.probe = InitProbe(emulator.port)
        self.lines: list[str] = []
        self.stderr_lines: list[str] = []
        lambda_env = {
            "AWS_LAMBDA_RUNTIME_API": emulator.runtime_api(name, self.probe.port),
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"lambda-e2e/{self.tag}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
            "LAMBDA_TASK_ROOT": str(bootstrap.parent),
        }
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(bootstrap)], cwd=bootstrap.parent, env={**env, **lambda_env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, bufsize=1,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr_lines), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 30) -> float:
        """Seconds from process start to its first /next request."""
        deadline = time.monotonic() + timeout
        while not self.probe.seen.wait(0.01):
            if self.proc.poll() is not None:
                time.sleep(0.1)  # let the readers drain
                raise RuntimeError(
                    f"{self.tag} exited with {self.proc.returncode} before asking for an invocation:\n"
                    + "\n".join((self.lines + self.stderr_lines)[-20:])
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.tag}: no /runtime/invocation/next after {timeout} s")
        return self.probe.first_next - self.started

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=2)
        self.probe.close()
