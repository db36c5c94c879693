"""The webhook outbox: one row per configured URL for each event of a webhook type, written in
the transaction of the event (`enqueue`, called by `events.record`), so a change that commits
always gets its webhook and a rolled-back one never does.

The admin service's sender (`services.admin.webhooks`) claims the rows, signs and POSTs them;
this module only writes them, with the body each delivery will carry:

    {"type": "video.ready", "id": "<delivery id>", "event_id": 12,
     "created_at": "2026-01-01T12:00:00.000000Z", "reason": "...", "data": {<video record>}}
"""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from services.core.models import DeliveryStatus, Video, VideoEvent, WebhookDelivery
from services.core.schemas import VideoOut
from services.core.settings import Settings, get_settings

TYPES = ("upload.completed", "video.ready", "video.failed")


def rfc3339(value: datetime) -> str:
    """A UTC time as RFC 3339 with a `Z`, the way the APIs write times."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _body(delivery_id: str, event: VideoEvent, video: Video | None) -> str:
    data = VideoOut.of(video).model_dump(mode="json") if video else {"id": event.video_id}
    payload: dict[str, Any] = {
        "type": event.kind,
        "id": delivery_id,
        "event_id": event.id,
        "created_at": rfc3339(event.at),
        "reason": event.reason,
        "data": data,
    }
    return json.dumps(payload, separators=(",", ":"))


def enqueue(session: Session, event: VideoEvent, settings: Settings | None = None) -> int:
    """Write one outbox row per configured URL for `event`; return how many."""
    urls = (settings or get_settings()).webhook_url_list()
    if not urls:
        return 0
    # The video as it is after the change (the change may have been a bulk UPDATE).
    video = session.get(Video, event.video_id, populate_existing=True)
    for url in urls:
        delivery_id = uuid.uuid4().hex
        session.add(
            WebhookDelivery(
                id=delivery_id,
                event_id=event.id,
                video_id=event.video_id,
                type=event.kind,
                url=url,
                body=_body(delivery_id, event, video),
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=event.at,
            )
        )
    return len(urls)
