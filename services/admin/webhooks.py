"""Webhooks: signed JSON sent to the URLs of WEBHOOK_URLS when a video is ready or failed, or an
upload completed; an outbox in the database, sent at least once, retried with backoff.

The outbox row is written in the transaction of the event (`services.core.outbox`, called by
`events.record`), so a change that commits always gets its webhook and a rolled-back one never
does. This sender (the admin service runs it) claims due rows with a lease, POSTs them and
records the outcome; a sender that dies mid-request leaves the lease to expire and the row is
sent again. Receivers drop repeats by the `Webhook-Id` header (also the body's `id`).

Each request:

    POST <url>
    Content-Type: application/json
    Webhook-Id: <delivery id>
    Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(WEBHOOK_SECRET, "<t>." + body)>

    {"type": "video.ready", "id": "<delivery id>", "event_id": 12,
     "created_at": "2026-01-01T12:00:00.000000Z", "reason": "...", "data": {<video record>}}

A 2xx answer is delivered; anything else (redirects are not followed), a timeout or a refused
connection is retried after WEBHOOK_BACKOFF_SECONDS, doubled each time, until
WEBHOOK_MAX_ATTEMPTS, then the delivery is `failed`.
"""

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from services.core.db import session_scope
from services.core.models import DeliveryStatus, WebhookDelivery, utcnow
from services.core.settings import Settings
from services.core.tasks import sleep_unless

log = logging.getLogger(__name__)

ID_HEADER = "Webhook-Id"
SIGNATURE_HEADER = "Webhook-Signature"
# However many attempts are configured, a retry is never put off by more than an hour.
MAX_BACKOFF_SECONDS = 3600.0
BATCH = 10


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The Webhook-Signature value: `t=<timestamp>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


# --- claiming due rows, recording attempts ----------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """A claimed delivery: where to send what."""

    id: str
    url: str
    body: str


def _due(now: datetime) -> Any:
    return and_(
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.lease_expires_at.is_(None), WebhookDelivery.lease_expires_at < now),
    )


def claim_due(
    session: Session, *, worker_id: str, lease_seconds: float, limit: int = BATCH
) -> list[Outgoing]:
    """Claim up to `limit` deliveries that are due, with a lease (compare-and-set, as jobs)."""
    now = utcnow()
    candidates = session.scalars(
        select(WebhookDelivery.id)
        .where(_due(now))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    claimed = []
    for delivery_id in candidates:
        result = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, _due(now))
            .values(worker_id=worker_id, lease_expires_at=now + timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(delivery_id)
    rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.id.in_(claimed)))
    return [Outgoing(d.id, d.url, d.body) for d in rows]


def record_attempt(
    session: Session,
    *,
    delivery_id: str,
    worker_id: str,
    status_code: int | None,
    error: str | None,
    settings: Settings,
    retry: bool = True,
) -> str | None:
    """Record one attempt (error None = delivered); return the delivery's new status.

    None when the lease was lost meanwhile: another sender owns the row now.
    """
    delivery = session.get(WebhookDelivery, delivery_id, populate_existing=True)
    if delivery is None or delivery.worker_id != worker_id:
        return None
    if delivery.status != DeliveryStatus.PENDING:
        return None
    delivery.attempts += 1
    delivery.last_status_code, delivery.last_error = status_code, error
    delivery.worker_id = delivery.lease_expires_at = None
    if error is None:
        delivery.status, delivery.delivered_at = DeliveryStatus.DELIVERED, utcnow()
    elif not retry or delivery.attempts >= settings.webhook_max_attempts:
        delivery.status = DeliveryStatus.FAILED
    else:
        delay = settings.webhook_backoff_seconds * 2 ** (delivery.attempts - 1)
        delivery.next_attempt_at = utcnow() + timedelta(seconds=min(delay, MAX_BACKOFF_SECONDS))
    return delivery.status


# --- sending ----------------------------------------------------------------------------------


async def post(
    client: httpx.AsyncClient, secret: str, delivery: Outgoing
) -> tuple[int | None, str | None]:
    """POST one delivery, signed now; (status code, error or None when delivered)."""
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        ID_HEADER: delivery.id,
        SIGNATURE_HEADER: signature(secret, int(time.time()), body),
    }
    try:
        answer = await client.post(delivery.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= answer.status_code < 300:
        return answer.status_code, None
    return answer.status_code, f"the receiver answered {answer.status_code}"


class Sender:
    """Sends due deliveries in batches until shut down."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.worker_id = f"{socket.gethostname()}/webhooks:{os.getpid()}"
        # Longer than any request can take: a live sender never loses its lease.
        self.lease_seconds = settings.webhook_timeout_seconds * 2 + 30

    async def run_once(self) -> int:
        """Send every delivery due now (one batch); return how many were attempted."""
        claimed = await asyncio.to_thread(self._claim)
        await asyncio.gather(*(self._deliver(d) for d in claimed))
        return len(claimed)

    def _claim(self) -> list[Outgoing]:
        with session_scope(self.settings) as session:
            return claim_due(session, worker_id=self.worker_id, lease_seconds=self.lease_seconds)

    async def _deliver(self, delivery: Outgoing) -> None:
        if delivery.url not in self.settings.webhook_url_list():
            # Only URLs the operator configures are ever sent to; this one was removed.
            await asyncio.to_thread(
                self._record, delivery, None, "the URL is no longer in WEBHOOK_URLS", False
            )
            return
        code, error = await post(self.client, self.settings.webhook_secret, delivery)
        await asyncio.to_thread(self._record, delivery, code, error, True)

    def _record(self, delivery: Outgoing, code: int | None, error: str | None, retry: bool) -> None:
        with session_scope(self.settings) as session:
            outcome = record_attempt(
                session,
                delivery_id=delivery.id,
                worker_id=self.worker_id,
                status_code=code,
                error=error,
                settings=self.settings,
                retry=retry,
            )
        log.info("webhook %s to %s: %s (%s)", delivery.id, delivery.url, outcome, error or code)


async def deliver_forever(settings: Settings, shutdown: asyncio.Event) -> None:
    """Send webhooks until `shutdown` is set (the admin service runs this in the background)."""
    # Redirects are not followed: a delivery goes to the configured URL or nowhere.
    async with httpx.AsyncClient(
        timeout=settings.webhook_timeout_seconds, follow_redirects=False
    ) as client:
        sender = Sender(settings, client)
        while not shutdown.is_set():
            try:
                sent = await sender.run_once()
            except Exception:
                # A locked database or a bug in one batch must not end the sending: log, go on.
                log.exception("webhook sender: a batch raised")
                sent = 0
            if sent < BATCH:
                await sleep_unless(shutdown, settings.webhook_poll_seconds)
