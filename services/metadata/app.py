"""Metadata service: the REST face of the video records, and their oEmbed answers."""

from services.core.app import create_app
from services.metadata import oembed_routes
from services.metadata.routes import router

app = create_app("metadata", [router, oembed_routes.router], description=__doc__ or "")
