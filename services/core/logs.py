"""Structured logs: one JSON object a line (or plain text), with the video id where one is
known, for every service and for uvicorn's own loggers."""

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

VIDEO_ID = re.compile(r"\b[0-9a-f]{32}\b")


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "video_id"?, "error"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        video_id = getattr(record, "video_id", None)
        if video_id is None and (found := VIDEO_ID.search(message)):
            video_id = found.group(0)
        if video_id:
            entry["video_id"] = video_id
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        # ASCII only: a client's text (a request path, a file name) can hold characters that
        # readers take for line ends (U+2028, U+0085, \x1c...), which would split the record.
        return json.dumps(entry, ensure_ascii=True)


def logging_config(level: str, fmt: str, *, access: bool = False) -> dict[str, Any]:
    """A dictConfig for the platform's and uvicorn's loggers; uvicorn's access lines only with
    `access` (ACCESS_LOG). Each app applies it again as it is imported, after uvicorn applied
    its own options: a handler on uvicorn.access here would turn its access lines back on
    whatever `--no-access-log` said (uvicorn logs them when that logger has a handler)."""
    formatter = (
        {"()": f"{__name__}.JsonFormatter"}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    )
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            name: {"handlers": ["default"], "level": level.upper(), "propagate": False}
            for name in ("uvicorn", "uvicorn.error", *(("uvicorn.access",) if access else ()))
        }
        | ({} if access else {"uvicorn.access": {"handlers": [], "propagate": False}}),
    }
