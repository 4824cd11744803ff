"""A real llama.cpp OpenAI-compatible server (``python -m llama_cpp.server``) on the
embedded GGUF, in a subprocess on loopback, for the serving tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from promptgrad.models import embedded_gguf_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``start()`` returns once ``/v1/models`` answers; ``kill()`` is a crash (SIGKILL);
    ``start()`` again restarts on the same port. Use as a context manager to always stop it."""

    def __init__(self, log_path: Path, port: int | None = None):
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> "LlamaServer":
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()),
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048",
                   "--n_threads", "1", "--n_threads_batch", "1"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        exit_code = self.process.poll()
        self.stop()
        state = f"exited with code {exit_code}" if exit_code is not None else f"did not answer within {timeout:.0f}s"
        raise RuntimeError(f"llama.cpp server on port {self.port} {state}: {' '.join(command)}\n"
                           f"Its output ({self.log_path}):\n{self.log_path.read_text(errors='replace')[-4000:]}")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
