"""Streaming service: serves HLS playlists, segments and originals from the storage folder."""

from services.core import hls_fastpath
from services.core.app import create_app
from services.streaming.media_routes import router as media_router
from services.streaming.routes import router

# The media routes first: the generic /stream/{id}/{asset} route would answer their paths too.
api = create_app("streaming", [media_router, router], description=__doc__ or "")
# What the server runs: playlists and segments answered in front of the API (the fast path the
# gateway runs too: services.core.hls_fastpath).
app = hls_fastpath.wrap(api, service="streaming")
