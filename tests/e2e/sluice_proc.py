"""Run the Sluice daemon (``python -m sluice run -c FILE``) as a child process for e2e tests.

Public names:
    SluiceProcess(config, *, listener, workdir, argv=None, env=None, start_timeout=20)
        start() waits for the 220 greeting on ``listener`` (PeerError, with the stderr tail,
        if the process exits or stays silent); stop() SIGTERM + wait -> exit status;
        kill9(); restart(); pid; stderr_text(); context manager.
    listener_from_config(path) -> (host, port)   the first ``smtp-listener`` of a config file
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.e2e.peers import PeerError, wait_for_greeting

__all__ = ["SluiceProcess", "listener_from_config"]

_LISTENER = re.compile(r"^\s*smtp-listener\s+(\S+?):(\d+)\s*(?:#.*)?$", re.MULTILINE)
_TAIL = 4000  # characters of stderr quoted in a start-up failure


def listener_from_config(path: Path) -> tuple[str, int]:
    m = _LISTENER.search(path.read_text(encoding="utf-8"))
    if m is None:
        raise ValueError(f"{path}: no smtp-listener line")
    host = m.group(1).strip("[]")
    return ("127.0.0.1" if host in ("0/0", "0.0.0.0", "*") else host), int(m.group(2))


class SluiceProcess:
    """One Sluice daemon; stderr of every run is appended to ``workdir/stderr.log``."""

    def __init__(
        self,
        config: Path,
        *,
        listener: tuple[str, int] | None = None,
        workdir: Path,
        argv: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.config = config
        self.listener = listener if listener is not None else listener_from_config(config)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.argv = (
            list(argv)
            if argv is not None
            else [
                sys.executable,
                "-m",
                "sluice",
                "run",
                "-c",
                str(config),
            ]
        )
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.stderr_path = workdir / "stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.greeting = b""

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise PeerError("sluice is not running")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def start(self) -> SluiceProcess:
        if self.running:
            raise PeerError("sluice is already running")
        self.runs += 1
        with self.stderr_path.open("ab") as err:
            err.write(f"=== sluice run {self.runs}: {' '.join(self.argv)}\n".encode())
            err.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                cwd=self.workdir,
                env=self.env,
                start_new_session=True,
            )
        host, port = self.listener
        try:
            self.greeting = wait_for_greeting(host, port, self.start_timeout, self.proc)
        except PeerError as exc:
            self.kill9()
            tail = self.stderr_text()[-_TAIL:]
            raise PeerError(f"sluice did not start: {exc}\n--- stderr ---\n{tail}") from exc
        return self

    def stop(self, timeout: float | None = None) -> int:
        """SIGTERM and wait; SIGKILL if it outlives ``timeout``. Returns the exit status."""
        if self.proc is None:
            raise PeerError("sluice was never started")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._reap_group()
        return int(self.proc.returncode)

    def kill9(self) -> int:
        """SIGKILL the daemon (and anything it started) at once; returns the exit status."""
        if self.proc is None:
            raise PeerError("sluice was never started")
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(10)
        self._reap_group()
        return int(self.proc.returncode)

    def restart(self, *, hard: bool = False) -> SluiceProcess:
        """Stop (SIGTERM, or SIGKILL when ``hard``) and start again on the same config."""
        if self.running:
            if hard:
                self.kill9()
            else:
                self.stop()
        return self.start()

    def _reap_group(self) -> None:
        # Helper processes the daemon forked share its session; none may outlive it.
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def wait_for_stderr(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Poll the stderr log until ``pattern`` (a regex) appears; PeerError otherwise."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.stderr_text())
            if m is not None:
                return m
            if time.monotonic() > deadline:
                raise PeerError(f"{pattern!r} not in sluice stderr within {timeout}s")
            time.sleep(0.05)

    def __enter__(self) -> SluiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.stop(5.0)
