"""Metadata service: the REST face of the video records, their captions and oEmbed answers."""

from services.core.app import create_app
from services.metadata import oembed_routes
from services.metadata.caption_routes import router as caption_router
from services.metadata.routes import router

app = create_app(
    "metadata", [router, caption_router, oembed_routes.router], description=__doc__ or ""
)
