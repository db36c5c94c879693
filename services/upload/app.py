"""Upload service: chunked uploads written in place, then registered for transcoding."""

from services.core.app import create_app
from services.upload.routes import router

app = create_app("upload", [router], description=__doc__ or "")
