"""Can this machine reach the Hugging Face hub? One bounded check per process, so that a laptop on a train learns it
in at most a few seconds, once, instead of after huggingface_hub's five retries per file (about 23 s, and a red wall of
"Name or service not known ... Retrying in 8s") at every call.

The check: resolve the hub's host name (HF_ENDPOINT, else huggingface.co; or the HTTPS proxy's, when one is set) and
open a TCP connection to its port, both within HUB_CHECK_TIMEOUT_S, in a daemon thread (a resolver can block for tens
of seconds; the thread is left to finish on its own). No request is sent. The verdict is kept for the life of the
process: after connecting, restart the kernel (or call `hub_offline_reason(refresh=True)`). HF_HUB_OFFLINE=1 means
offline without checking. Standard library only (no torch).
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from urllib.parse import urlparse

HUB_CHECK_TIMEOUT_S = 4.0
DEFAULT_ENDPOINT = "https://huggingface.co"
TRUE = ("1", "true", "yes", "on")

_verdicts: dict[tuple[str, int], str | None] = {}
_said: set[str] = set()


def _target() -> tuple[str, int, str]:
    """(host, port, what) to check: the hub itself, or the proxy that requests to it go through."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    proxy = urllib.request.getproxies().get(endpoint.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        if parsed.hostname:
            return parsed.hostname, parsed.port or 8080, f"the proxy {parsed.hostname}:{parsed.port or 8080}"
    return host, port, host


def _probe(host: str, port: int, timeout_s: float) -> str | None:
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as error:
            outcome.append(f"{host} cannot be resolved ({error})")
            return
        last = None
        for family, kind, proto, _, address in addresses[:4]:
            try:
                with socket.socket(family, kind, proto) as connection:
                    connection.settimeout(timeout_s)
                    connection.connect(address)
                outcome.append(None)
                return
            except OSError as error:
                last = error
        outcome.append(f"no connection to {host}:{port} ({last})")

    worker = threading.Thread(target=attempt, name="hub-reachable", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return outcome[0] if outcome else f"no answer from {host}:{port} within {timeout_s:g} s"


def hub_offline_reason(refresh: bool = False) -> str | None:
    """None when the hub looks reachable; else why not, in a few words. Checked once per process (see above)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE:
        return "HF_HUB_OFFLINE=1 is set"
    host, port, what = _target()
    if refresh or (host, port) not in _verdicts:
        reason = _probe(host, port, HUB_CHECK_TIMEOUT_S)
        _verdicts[(host, port)] = reason if reason is None or what == host else f"{reason}; checked {what}"
    return _verdicts[(host, port)]


def say_once(message: str) -> None:
    """Print `message` the first time only in this process (an offline notice, not a wall of repeats)."""
    if message not in _said:
        _said.add(message)
        print(message)


def forget() -> None:
    """Drop the kept verdicts and notices (tests; or after the network came back)."""
    _verdicts.clear()
    _said.clear()
