"""Structured logs: one JSON object a line (or plain text), with the video id where one is
known, for every service and for uvicorn's own loggers."""

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from services.core.settings import Settings

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


def logging_config(settings: Settings) -> dict[str, Any]:
    """A dictConfig for the platform's and uvicorn's loggers (LOG_LEVEL, LOG_FORMAT).

    uvicorn logs its access lines whenever the uvicorn.access logger has a handler, and each
    app applies this again as it is imported, after uvicorn applied its own options: so that
    logger gets a handler only with ACCESS_LOG, whatever `--no-access-log` said."""
    level = settings.log_level.upper()
    formatter = (
        {"()": f"{__name__}.JsonFormatter"}
        if settings.log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    )
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
    }
    loggers: dict[str, Any] = {
        name: {"handlers": ["default"], "level": level, "propagate": False}
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
    }
    if not settings.access_log:
        loggers["uvicorn.access"] = {"handlers": [], "propagate": False}
        # httpx logs every request it sends at INFO ("HTTP Request: GET ..."): in the gateway,
        # which relays every request, that was an access log of its own whatever ACCESS_LOG
        # said, formatted and written for every playlist and upload chunk (LOG_LEVEL=DEBUG
        # still shows them).
        if level != "DEBUG":
            loggers["httpx"] = {"level": "WARNING"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level},
        "loggers": loggers,
    }
