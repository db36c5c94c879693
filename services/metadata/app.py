"""Metadata service: the REST face of the video records."""

from services.core.app import create_app
from services.metadata.routes import router

app = create_app("metadata", [router], description=__doc__ or "")
