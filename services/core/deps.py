"""FastAPI dependencies shared by every service, as `Annotated` aliases."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from services.core.db import session_scope
from services.core.settings import Settings, get_settings
from services.core.storage import Storage
from services.core.storage.factory import store_of, uses_object_storage
from services.core.storage.interface import Store


def _session(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Session]:
    with session_scope(settings) as session:
        yield session


def _storage(settings: Annotated[Settings, Depends(get_settings)]) -> Storage:
    return Storage(settings.storage_dir)


def _objects(settings: Annotated[Settings, Depends(get_settings)]) -> Store | None:
    # None on the local folder, whose files keep being served as files (sendfile, pathsend).
    return store_of(settings) if uses_object_storage(settings) else None


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": the transaction commits before the response is sent, so a client that is
# told "done" can rely on it (the next request sees the row), and a failed commit is an error
# response rather than a write silently lost after a 200.
SessionDep = Annotated[Session, Depends(_session, scope="function")]
StorageDep = Annotated[Storage, Depends(_storage)]
# The bucket (STORAGE_URL=s3://...) media are read from, or None on the local folder.
ObjectsDep = Annotated[Store | None, Depends(_objects)]
