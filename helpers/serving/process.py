"""The server as a process: ports (valid, free, bound before anything slow), starting `python -m helpers.serve` in its
own process group, knowing that `/health` answers from that very process, and stopping it without leaving anything.

Two notebooks that start a server on the same port a moment apart cannot both believe they have it: the server binds
its port before it loads the model (the second one fails at once: "already in use"), and `start_server` accepts only a
`/health` that carries the instance token it handed to its own child.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..download.processes import group_members
from ..errors import CourseError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
API_KEY_ENV_VAR = "GROK2_COURSE_API_KEY"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
INSTANCE_ENV_VAR = "GROK2_COURSE_SERVER_INSTANCE"  # start_server's proof that /health answers from its own child
MAX_PORT = 65535

# ============================================================================================================ ports


def check_port_number(port) -> int:
    """`port` as an int in 0-65535 (0: any free port), or a CourseError that says so."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= MAX_PORT:
        raise CourseError(f"port={port!r} is not a TCP port.",
                          f"Use a whole number from 1 to {MAX_PORT} (e.g. 8000), or 0 for any free port.")
    return port


def port_owner(port: int) -> str | None:
    """Who listens on `port`, in words, when the system lets us see it."""
    try:
        import psutil

        for connection in psutil.net_connections(kind="tcp"):
            if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_LISTEN:
                if connection.pid:
                    process = psutil.Process(connection.pid)
                    return f"pid {connection.pid} ({' '.join(process.cmdline())[:120]})"
                return "another process"
    except Exception:  # noqa: BLE001 - permissions differ per OS; the message works without it
        return None
    return None


def _port_in_use(host: str, port: int, error: OSError) -> CourseError:
    owner = port_owner(port)
    return CourseError(
        f"Port {port} on {host} is already in use{' by ' + owner if owner else ''} ({error.strerror}).",
        "Stop the server that holds it (`server.stop()` on the object you started, or "
        "`helpers.serve.stop_all_servers()` in the notebook that started it; otherwise end that process), "
        "or choose another port: `start_server(port=0)` picks a free one.",
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, for uvicorn to serve on; CourseError naming the fix if the port is taken."""
    check_port_number(port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is not "in use"
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise _port_in_use(host, port, error) from None
        raise CourseError(f"Cannot listen on {host}:{port} ({error.strerror}).",
                          "Use host='127.0.0.1' and a port above 1023 (ports below need administrator rights).") from None
    return sock


def check_port_free(host: str, port: int) -> None:
    """Raise CourseError naming the fix when something already listens on host:port."""
    bind_socket(host, port).close()


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


# ================================================================================================ the child process


def exit_with_parent(parent_pid: int) -> None:
    """If the process that started us (e.g. a notebook kernel) dies, stop: no orphan server keeps the port."""

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="parent watchdog", daemon=True).start()


# ====================================================================================== the parent's handle on it

_RUNNING: list[ServerProcess] = []


class ServerProcess:
    """A server started by `start_server`: its address, a client for it, its log, and a clean `stop()`."""

    def __init__(self, process: subprocess.Popen, host: str, port: int, log_path: Path, api_key: str | None,
                 models: list[str], instance: str = ""):
        self.process, self.host, self.port, self.log_path, self.api_key = process, host, port, log_path, api_key
        self.models, self.instance = models, instance

    @property
    def model(self) -> str:
        """The name to pass as `model=` (the adapter's, when one is served)."""
        return self.models[-1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def health(self, timeout: float = 5.0) -> dict:
        """GET /health: status, models, and the scheduler (slots, active, queued, steps_per_s, counters)."""
        import httpx

        return httpx.get(f"{self.url}/health", timeout=timeout).json()

    def client(self, **kwargs):
        """The official openai client for this server."""
        from openai import OpenAI

        kwargs.setdefault("timeout", 60.0)
        kwargs.setdefault("max_retries", 0)
        return OpenAI(base_url=self.base_url, api_key=self.api_key or "not-needed", **kwargs)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> dict:
        """SIGTERM (uvicorn finishes open responses, the scheduler is joined), then SIGKILL to the whole process group
        if it has not exited in `timeout` s. Returns what happened, verified: `process_gone` (no process has the
        server's pid any more), `orphans` (what of its process group is left: always empty, since anything left
        raises) and `port_free` (the port can be bound again)."""
        how = "already exited"
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
                how = "SIGTERM"
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
                how = "SIGKILL (did not stop on SIGTERM)"
        # Anything else left in the server's process group (nothing is expected) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self in _RUNNING:
            _RUNNING.remove(self)
        leftover = group_members(self.process.pid) or []  # None: cannot be listed here (no /proc, no psutil)
        if leftover:
            raise CourseError(f"Processes of the server's group survived: {leftover}.",
                              f"End them by id: `kill -9 {' '.join(map(str, leftover))}`.")
        return {"pid": self.process.pid, "stopped_by": how, "exit_code": self.process.returncode,
                "process_gone": not _pid_exists(self.process.pid), "orphans": leftover,
                "port_free": _port_is_free(self.host, self.port)}

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited ({self.process.returncode})"
        return f"<ServerProcess {self.base_url} pid={self.pid} {state} models={self.models}>"


def _pid_exists(pid: int) -> bool:
    try:
        import psutil
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process holds that pid now
            return True
        return True
    return psutil.pid_exists(pid)


def _port_is_free(host: str, port: int) -> bool:
    try:
        check_port_free(host, port)
    except CourseError:
        return False
    return True


def stop_all_servers() -> list[dict]:
    """Stop every server this Python process started (also run at exit)."""
    return [server.stop() for server in list(_RUNNING)]


atexit.register(stop_all_servers)


def start_server(model: str | Path | None = None, *, adapter: str | Path | None = None, merge: bool = False,
                 host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, api_key: str | None = None,
                 served_model_name: str | None = None, max_batch_size: int = 8, max_queue: int | None = None,
                 default_max_tokens: int = 256, profile: str | None = None, dtype: str = "auto",
                 max_model_len: int | None = None, startup_timeout: float = 120.0,
                 log_path: str | Path | None = None, allow_remote: bool = False,
                 torch_threads: int | None = None) -> ServerProcess:
    """Start `python -m helpers.serve` in the background and return once its own `/health` answers.

    `port=0` picks a free port. `host` stays 127.0.0.1 (this machine only) unless `allow_remote=True`; serving beyond
    this machine also needs an `api_key`. `max_batch_size` KV-cache slots are generated together; up to `max_queue`
    more requests wait for one (default 64), and beyond that the server answers 503.
    """
    from ..paths import workspace_dir
    from ..profiles import resolve_source

    check_port_number(port)
    if host not in LOOPBACK_HOSTS:
        if not allow_remote:
            raise CourseError(f"host={host!r} would expose the server beyond this machine.",
                              "Keep the default host='127.0.0.1', or pass allow_remote=True together with an api_key "
                              "(and a firewall / TLS proxy in front of it).")
        if not api_key:
            raise CourseError("A server reachable from other machines needs an API key.",
                              "Pass api_key='...' (clients send it as 'Authorization: Bearer ...').")
    if port == 0:
        port = free_port(host)
    check_port_free(host, port)
    source = resolve_source(model, profile)
    instance = secrets.token_hex(16)
    # One log per start (two notebooks starting on one port must not write into each other's file).
    log_file = Path(log_path) if log_path else workspace_dir() / "server-logs" / f"serve-{port}-{instance[:8]}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "helpers.serve", "--model", source, "--host", host, "--port", str(port),
               *(["--allow-remote"] if allow_remote else []), "--dtype", dtype,
               "--max-batch-size", str(max_batch_size), "--default-max-tokens", str(default_max_tokens),
               "--parent-pid", str(os.getpid())]
    for flag, value in (("--max-queue", max_queue), ("--max-model-len", max_model_len),
                        ("--served-model-name", served_model_name), ("--profile", profile),
                        ("--torch-threads", torch_threads), ("--adapter", adapter)):
        if value:
            command += [flag, str(value)]
    if adapter is not None and merge:
        command.append("--merge")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", INSTANCE_ENV_VAR: instance}
    env.pop(API_KEY_ENV_VAR, None)
    if api_key:
        env[API_KEY_ENV_VAR] = api_key  # in the environment, not on the command line (which `ps` shows everyone)
    with open(log_file, "wb") as log_handle:
        process = subprocess.Popen(command, stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True, cwd=str(Path(__file__).resolve().parents[2]))
    server = ServerProcess(process, host, port, log_file, api_key, [], instance)
    _RUNNING.append(server)
    try:
        server.models = _wait_until_healthy(server, startup_timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_healthy(server: ServerProcess, timeout: float) -> list[str]:
    """Poll /health until it answers with our child's instance token. Another server on the port does not count."""
    import httpx

    deadline = time.monotonic() + timeout
    stranger = None  # the /health of someone else's server that answered on our port
    while time.monotonic() < deadline:
        if not server.alive():
            tail = server.log_tail()
            if "already in use" in tail.lower():
                owner = f"pid {stranger['pid']}" if stranger and "pid" in stranger else port_owner(server.port)
                raise CourseError(f"Port {server.port} on {server.host} was taken{' by ' + owner if owner else ''} "
                                  "while this server started (another notebook started one there a moment before).",
                                  "Choose another port, e.g. start_server(port=0).")
            raise CourseError(f"The server exited during start-up (exit code {server.process.returncode}). "
                              f"Last lines of its log ({server.log_path}):\n{tail}",
                              "Read the error above: usually a wrong model path or adapter folder.")
        try:
            reply = httpx.get(f"{server.url}/health", timeout=2.0)
            if reply.status_code == 200:
                health = reply.json()
                if health.get("instance") == server.instance:
                    return health["models"]
                stranger = health
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise CourseError(f"The server did not answer /health within {timeout:.0f} s. Last lines of its log:\n"
                      f"{server.log_tail()}", "Wait longer (startup_timeout=...) for a big model, or read the log.")
