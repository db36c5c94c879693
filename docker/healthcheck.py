"""The image's HEALTHCHECK: exit 0 when a `/health` URL answers 200, else 1.

python docker/healthcheck.py [URL]   # default: HEALTH_URL, else the gateway's /health
"""

import os
import sys
import urllib.request

DEFAULT = "http://127.0.0.1:8000/health"


def main() -> int:
    """Probe the URL once; the engine decides how often and how many failures count."""
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HEALTH_URL", DEFAULT)
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
