"""A video's captions: `POST /videos/{id}/captions` adds a WebVTT or SRT file, `GET` lists
them, `DELETE /videos/{id}/captions/{caption_id}` removes one (services.media.video_captions)."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.core import ids
from services.core.auth import AdminOnly
from services.core.bodies import streamed_body
from services.core.deps import SessionDep, SettingsDep
from services.core.errors import InvalidInput
from services.core.models import Caption, as_utc
from services.core.schemas import Deleted
from services.media import video_captions
from services.metadata import caption_body

router = APIRouter(tags=["captions"])

TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")


class CaptionOut(BaseModel):
    """One caption of a video, as the master lists it (a SUBTITLES rendition)."""

    id: str = Field(description="16 lowercase hex characters")
    video_id: str
    language: str = Field(description="BCP 47 language tag (LANGUAGE in the master)")
    label: str = Field(description="What players show in their menu (NAME in the master)")
    default: bool = Field(description="Shown without the viewer choosing it (DEFAULT=YES)")
    origin: Literal["upload", "embedded"] = Field(
        description="Uploaded through the API, or extracted from the video's own file"
    )
    format: str = Field(description="What it was: vtt, srt, or the embedded stream's codec")
    cues: int
    playlist: str = Field(description="Its WebVTT media playlist, under /stream")
    created_at: datetime | None = None

    @classmethod
    def of(cls, row: Caption) -> "CaptionOut":
        return cls(
            id=row.id,
            video_id=row.video_id,
            language=row.language,
            label=row.label,
            default=row.is_default,
            origin="embedded" if row.origin == "embedded" else "upload",
            format=row.source_format,
            cues=row.cues,
            playlist=f"/stream/{row.video_id}/captions/{row.id}/playlist.m3u8",
            created_at=as_utc(row.created_at),
        )


CAPTION_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "The WebVTT or SRT file (UTF-8)",
                    },
                    "language": {"type": "string", "maxLength": 64},
                    "label": {"type": "string", "maxLength": 64},
                    "default": {"type": "boolean"},
                },
            }
        },
        "text/vtt": {"schema": {"type": "string"}},
        "application/x-subrip": {"schema": {"type": "string"}},
    },
}


def _flag(value: str | bool | None) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = value.strip().lower()
    if text not in TRUE + FALSE:
        raise InvalidInput(f"default must be true or false, not {value[:20]!r}")
    return text in TRUE


@router.post(
    "/videos/{hash}/captions",
    response_model=CaptionOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=AdminOnly,
    openapi_extra={"requestBody": CAPTION_BODY},
)
@streamed_body(caption_body.body_limit, "CAPTION_MAX_BYTES plus the form's framing")
async def add_caption(
    hash: str,
    request: Request,
    settings: SettingsDep,
    language: Annotated[
        str | None, Query(max_length=64, description="BCP 47 tag (raw body; or a form field)")
    ] = None,
    label: Annotated[
        str | None, Query(max_length=256, description="Menu label; default: the language's name")
    ] = None,
    default: Annotated[bool, Query(description="Show it without the viewer choosing")] = False,
) -> CaptionOut:
    """Add a WebVTT or SRT caption file to the video (SRT is converted to WebVTT).

    A file that is not valid WebVTT or SRT is refused with a 400 naming the line at fault.
    Once the video plays, the master lists the caption at once as a SUBTITLES rendition.
    """
    ids.video_id(hash)
    upload = await caption_body.read(request, settings)
    given = upload.fields
    tag = given.get("language", language)
    if not tag:
        raise InvalidInput(
            "language is needed: a BCP 47 tag such as en or pt-BR, as the form field "
            "'language' or ?language=..."
        )
    row = await run_in_threadpool(
        lambda: video_captions.add(
            settings,
            video_id=hash,
            data=upload.data,
            language=tag,
            label=given.get("label", label),
            default=_flag(given.get("default", default)),
        )
    )
    return CaptionOut.of(row)


@router.get("/videos/{hash}/captions", response_model=list[CaptionOut])
def list_captions(hash: str, session: SessionDep) -> list[CaptionOut]:
    """The video's captions, in the order the master lists them."""
    return [CaptionOut.of(row) for row in video_captions.list_captions(session, video_id=hash)]


@router.delete(
    "/videos/{hash}/captions/{caption_id}", response_model=Deleted, dependencies=AdminOnly
)
def delete_caption(hash: str, caption_id: str, settings: SettingsDep) -> Deleted:
    """Delete one caption: the master stops listing it, then its files go."""
    video_captions.remove(settings, video_id=hash, caption_id=caption_id)
    return Deleted(deleted=caption_id)
