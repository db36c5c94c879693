"""The image's HEALTHCHECK: exit 0 when healthy, else 1 (with the reason on stderr).

    python docker/healthcheck.py [URL]   # a service: URL (default HEALTH_URL, else the
                                         # gateway's /health) answers 200
    python docker/healthcheck.py --worker  # a worker: what it works with can be reached

Standard library only, so that a check costs a fraction of a second every few seconds.
"""

import os
import socket
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT = "http://127.0.0.1:8000/health"


def service(url: str) -> str | None:
    """Why the service is not healthy, or None."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return None if response.status == 200 else f"{url}: {response.status}"
    except OSError as exc:
        return f"{url}: {exc}"


def worker() -> str | None:
    """Why a worker cannot work (no writable scratch or storage folder, no database, no S3
    endpoint), or None. A worker serves no port; these are what it needs besides its own
    process, which the engine watches."""
    storage = Path(os.environ.get("STORAGE_DIR", "/data"))
    if not os.access(storage, os.W_OK):
        return f"{storage} is not writable"
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        database = storage / "videos.db"
        return None if database.exists() else f"no SQLite database at {database}"
    problem = reachable("database", url, 5432)
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if problem is None and os.environ.get("STORAGE_URL") and endpoint:
        problem = reachable("S3 endpoint", endpoint, 443 if endpoint.startswith("https") else 80)
    return problem


def reachable(what: str, url: str, default_port: int) -> str | None:
    """Why the host and port of `url` take no TCP connection now, or None."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or default_port
    try:
        socket.create_connection((host, port), 3).close()
    except OSError as exc:
        return f"{what} {host}:{port}: {exc}"
    return None


def main() -> int:
    """Run the check the arguments ask for."""
    arg = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HEALTH_URL", DEFAULT)
    problem = worker() if arg == "--worker" else service(arg)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
