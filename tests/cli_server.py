"""Run ``python -m reptile_cli ARGS`` for the tests without paying the interpreter's start-up each time.

A server process imports what every CLI run imports (torch, Hydra, Typer, the tool) once, runs nothing, and
then forks one fresh process per request. That process is what ``subprocess.run([python, "-m", "reptile_cli",
...])`` would have been once its imports were done: its own pid, working directory, environment, stdin from
/dev/null, stdout and stderr captured to files, ``__main__`` run by ``runpy`` as ``-m`` does, and at the end
the interpreter's own shutdown steps (non-daemon threads joined, atexit handlers, streams flushed) before it
exits with the code Python would give (an uncaught exception: traceback, exit 1; killed: minus the signal).
A CLI run costs ~2.5 s of imports on the project's 2-core machines; the default suite makes hundreds of them.

Only what is read at import time is shared: the environment the server started with (the tests' own). A test
that needs another start-up environment, or a real process to signal, uses ``subprocess`` directly.
``REPTILE_TEST_SUBPROCESS=1`` makes every CLI call a plain subprocess again.

Protocol: the client connects to the server's Unix socket and sends one JSON line ``{"args", "cwd", "env",
"out", "err", "timeout"}``; a waiter process forked for the request forks the run, waits for it (killing it
past ``timeout``) and answers one JSON line ``{"returncode"}`` or ``{"timeout": true}``.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

PRELOAD = ("torch", "numpy", "h5py", "hydra", "omegaconf", "typer", "rich", "PIL.Image", "reptile_cli.cli",
           "reptile_cli.jobs", "reptile_cli.trainer", "reptile_cli.evaluate", "reptile_cli.families",
           "hydra._internal.utils", "hydra.core.utils")


def _run_cli(request: dict) -> None:
    """In the forked run: become ``python -m reptile_cli ARGS`` and exit as it would. Never returns."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, path in ((1, request["out"]), (2, request["err"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        sys.path[0] = request["cwd"]  # as `python -m` puts the working directory first
        sys.argv = ["-m", *request["args"]]
        import runpy

        try:
            runpy.run_module("reptile_cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        try:
            threading._shutdown()
        except Exception:
            pass
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _wait(conn: socket.socket, request: dict) -> None:
    """In the waiter: fork the run, wait for it, answer. Never returns."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _run_cli(request)
    deadline = time.monotonic() + request["timeout"]
    answer: dict = {}
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            answer = {"returncode": os.waitstatus_to_exitcode(status)}
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            answer = {"timeout": True}
            break
        time.sleep(0.005)
    try:
        conn.sendall((json.dumps(answer) + "\n").encode())
    finally:
        os._exit(0)


def serve(path: str) -> None:
    """The server: preload, listen on ``path``, fork a waiter per request."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # waiters are reaped by the kernel
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        request = json.loads(conn.makefile("r").readline())
        if os.fork() == 0:
            server.close()
            _wait(conn, request)
        conn.close()


class Unavailable(Exception):
    """The server could not be started here (before any request was sent)."""


class Client:
    """Starts the server on first use (stopped when the test process exits) and runs CLI calls through it."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.dir = tempfile.mkdtemp(prefix="reptile-cli-server-", dir="/tmp" if os.path.isdir("/tmp") else None)
        self.path = os.path.join(self.dir, "socket")  # a Unix socket path has at most ~107 bytes
        self.calls = 0
        self.failed: str | None = None  # why the server could not start: the tests then use plain subprocesses

    def start(self, env: dict, cwd: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(cwd)!r}); "
                                      f"from tests.cli_server import serve; serve({self.path!r})"],
                                     cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the CLI test server did not start (run with REPTILE_TEST_SUBPROCESS=1 to bypass it)")
        atexit.register(self.stop)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def run(self, args: list[str], cwd: Path, env: dict, timeout: float,
            server_env: dict, repo: Path) -> subprocess.CompletedProcess:
        if self.proc is None:
            try:
                self.start(server_env, repo)
            except (OSError, RuntimeError) as err:
                raise Unavailable(str(err)) from err
        if self.proc.poll() is not None:
            raise RuntimeError(f"the CLI test server exited with code {self.proc.returncode}")
        self.calls += 1
        out, err = (os.path.join(self.dir, f"{self.calls}.{s}") for s in ("out", "err"))
        request = {"args": args, "cwd": str(cwd), "env": env, "out": out, "err": err, "timeout": timeout}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(self.path)
            conn.sendall((json.dumps(request) + "\n").encode())
            answer = json.loads(conn.makefile("r").readline())
        stdout, stderr = (Path(p).read_text(errors="replace") if os.path.exists(p) else "" for p in (out, err))
        for p in (out, err):
            if os.path.exists(p):
                os.unlink(p)
        command = [sys.executable, "-m", "reptile_cli", *args]
        if answer.get("timeout"):
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, answer["returncode"], stdout, stderr)
