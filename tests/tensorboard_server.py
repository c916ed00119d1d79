"""TensorBoard as users run it: its data server (tensorboard-data-server, installed with tensorboard) serving a log
folder, asked over HTTP for what a chart would show. It drops points the way the Python event reader does not."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_steps(logdir: Path, tag: str, want: int, timeout: float = 90.0) -> list[int]:
    """The steps TensorBoard's scalar chart shows for `tag` of the run at `logdir` (its root run '.'), once it
    shows `want` of them or has loaded for `timeout` seconds."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
                               "--host", "127.0.0.1", "--load_fast=true", "--reload_interval=1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?" + urllib.parse.urlencode({"run": ".", "tag": tag})
    steps: list[int] = []
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and len(steps) < want:
            time.sleep(1)
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    steps = [point[1] for point in json.load(response)]
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                continue  # not serving yet, or the tag not loaded yet
        return steps
    finally:
        server.terminate()
        server.wait(timeout=30)
