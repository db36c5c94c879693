"""Streaming service: serves HLS playlists, segments and originals from the storage folder."""

from services.core.app import create_app
from services.streaming import fastpath
from services.streaming.media_routes import router as media_router
from services.streaming.routes import router

# The media routes first: the generic /stream/{id}/{asset} route would answer their paths too.
api = create_app("streaming", [media_router, router], description=__doc__ or "")
# What the server runs: playlists and segments answered in front of the API (see fastpath).
app = fastpath.wrap(api, service="streaming")
