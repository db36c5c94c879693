"""Streaming service: serves HLS playlists, segments and originals from the storage folder."""

from services.core.app import create_app
from services.streaming.routes import router

app = create_app("streaming", [router], description=__doc__ or "")
