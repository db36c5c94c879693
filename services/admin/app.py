"""Admin service: the operator's view of the platform and control over every job."""

from services.admin.routes import router
from services.core.app import create_app

app = create_app("admin", [router], description=__doc__ or "", job_metrics=True)
