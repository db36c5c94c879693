"""Text made fit to show the public: no server path, bounded length.

Whatever the platform says about a failure (a job's `error`, an event's reason, a webhook
payload, an HTTP error's `detail`) may have come from ffmpeg's stderr, an OSError or our own
messages, which name the files they were working on: absolute paths below the storage folder
(or anywhere else on the server). Those tell a stranger how the server is laid out, so every
such text goes through `public_text` on its way out. The service log keeps the full text:
log it before it is made public.

A path counts as the server's when it lies below the storage folder, is a file: URL, or starts
with a folder that exists at this machine's root (/tmp, /srv, /home, ...); the API's own paths
(/stream/..., /upload/init) that messages point clients to are kept.

On object storage, ffmpeg reads the original through a presigned URL and names it when it
fails: a URL that carries a signature (X-Amz-Signature, X-Amz-Credential, ...: a key to the
object until it expires) or points at the bucket's private endpoint (AWS_ENDPOINT_URL) becomes
its object's base name too.
"""

import functools
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

# Long enough for ffmpeg's last lines and our own explanation; a page, not a log.
PUBLIC_TEXT_LIMIT = 2000
# What stands in for a path whose last part says nothing (the root itself, "/").
PLACEHOLDER = "<path>"
# What stands in for the storage folder itself.
ROOT_NAME = "<storage>"
# Between the head and the tail of a text cut to its limit.
ELISION = " … "

# An absolute path, or a file: URL, as a token of the text. The slash must start the token
# (after a space, a quote, a bracket, `=`, `:`...): "30000/1001", "kb/s", "and/or" and
# relative paths are not server paths, nor is the "//host/..." of an http:// URL. The token
# runs to a space or a quote.
_PATH = re.compile(
    r"""(?:(?<![\w./~:-])|(?<=:)(?!//))(?:file:(?://)?)?/[^\s'"`<>|]*""", re.IGNORECASE
)
# A quoted absolute path, which may hold spaces (ffmpeg and OSError quote the names they give).
_QUOTED_PATH = re.compile(r"""(?P<quote>['"`])(?P<path>(?:file:(?://)?)?/[^'"`\n]*)(?P=quote)""")
# Punctuation that ends a sentence rather than a path ("...: /a/b: No such file").
_TRAILING = ":.,;!?)]}"
# An http(s) URL as a token of the text, up to a space, a quote or a bracket.
_URL = re.compile(r"""https?://[^\s'"`<>|]+""", re.IGNORECASE)
# Query parameters that make a URL a credential (AWS SigV4 and SigV2 presigned URLs, and the
# session token a temporary key adds).
_SIGNING = re.compile(
    r"[?&](?:x-amz-(?:signature|credential|security-token)|signature|awsaccesskeyid)=",
    re.IGNORECASE,
)
# Control characters other than newline and tab: kept out of JSON, logs and terminals.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def public_text(
    message: str,
    *,
    roots: Iterable[str | Path] | None = None,
    limit: int = PUBLIC_TEXT_LIMIT,
    every_path: bool = False,
    private_urls: Iterable[str] | None = None,
) -> str:
    """`message` without server paths (each becomes its file's base name) and at most `limit`
    characters (the head and the tail kept, the middle elided).

    `roots` are folders to remove even where a path has spaces in it (the storage folder);
    by default the configured storage folder. `every_path`: cut every absolute path, not only
    those on this server (for a tool's own output, such as ffprobe's, which names no API path).
    `private_urls`: bases whose URLs are cut to their object's name (by default the configured
    AWS_ENDPOINT_URL); a signed URL is cut wherever it points.
    """
    text = _CONTROL.sub(" ", message)
    private = tuple(
        base.strip().rstrip("/")
        for base in (_default_private_urls() if private_urls is None else private_urls)
        if base.strip()
    )
    text = _URL.sub(functools.partial(_url_name, private=private), text)
    for root in _root_spellings(_default_roots() if roots is None else roots):
        text = _without_root(text, root)
    server = _any_path if every_path else _on_this_server
    text = _QUOTED_PATH.sub(functools.partial(_quoted_base_name, server=server), text)
    text = _PATH.sub(functools.partial(_base_name, server=server), text)
    return _bounded(text, limit)


def _default_roots() -> list[Path]:
    from services.core.settings import get_settings

    return [get_settings().storage_dir]


def _default_private_urls() -> tuple[str, ...]:
    from services.core.settings import get_settings

    endpoint = get_settings().aws_endpoint_url.strip().rstrip("/")
    return (endpoint,) if endpoint else ()


def _url_name(match: re.Match[str], private: tuple[str, ...]) -> str:
    """A signed URL, or one on a private endpoint, as its object's base name."""
    token = match.group(0)
    kept = token.rstrip(_TRAILING)
    lowered = kept.lower()
    on_private = any(
        lowered == base.lower() or lowered.startswith(base.lower() + "/") for base in private
    )
    if not on_private and not _SIGNING.search(kept):
        return token
    path = kept.split("?", 1)[0].split("#", 1)[0]
    # The scheme and host alone are not a name: "http://host" → its placeholder.
    name = path.partition("://")[2].partition("/")[2]
    return (_name_of("/" + name) if name else PLACEHOLDER) + token[len(kept) :]


def _root_spellings(roots: Iterable[str | Path]) -> list[str]:
    """Each root as written and resolved, longest first (a root inside another goes first)."""
    spellings = set()
    for root in roots:
        path = Path(root)
        for spelled in (path, path.absolute(), path.resolve()):
            text = str(spelled).rstrip("/")
            if spelled.is_absolute() and text:
                spellings.add(text)
    return sorted(spellings, key=len, reverse=True)


def _without_root(text: str, root: str) -> str:
    """Every path below `root` (which may hold spaces) replaced by its base name, and the root
    itself by ROOT_NAME."""
    pattern = re.compile(
        r"(?:file:(?://)?)?" + re.escape(root) + r"(?=$|[/\s'\"`<>|" + re.escape(_TRAILING) + "])"
        r"""(?P<below>/[^\s'"`<>|]*)?""",
        re.IGNORECASE,
    )
    return pattern.sub(_below_root, text)


def _below_root(match: re.Match[str]) -> str:
    below = match.group("below") or ""
    # The root alone says where the storage is and nothing about the failure.
    if not below.rstrip(_TRAILING).strip("/"):
        token = match.group(0)
        return ROOT_NAME + token[len(token.rstrip(_TRAILING)) :]
    return _base_name(match)


def _base_name(match: re.Match[str], server: Callable[[str], bool] | None = None) -> str:
    token = match.group(0)
    kept = token.rstrip(_TRAILING)
    if not (server or _on_this_server)(kept):
        return token
    return _name_of(kept) + token[len(kept) :]


def _on_this_server(path: str) -> bool:
    """Whether `path` names a place on this machine's file system: a file: URL, or a path
    whose first folder exists at the root ("/tmp/...", "/srv/..."). That keeps the API's own
    paths ("/stream/{id}/download", "/upload/init") that messages point clients to."""
    if path.lower().startswith("file:"):
        return True
    first = path.lstrip("/").partition("/")[0]
    return not first or first in _top_level()


def _any_path(path: str) -> bool:
    """Every absolute path counts (see `public_text`'s every_path)."""
    return True


@functools.cache
def _top_level() -> frozenset[str]:
    """The names at the file system's root, read once."""
    try:
        return frozenset(os.listdir("/"))
    except OSError:
        return frozenset()


def _name_of(path: str) -> str:
    """The last part of `path`; PLACEHOLDER when that says nothing ("/", "file:///")."""
    name = path.rstrip("/").rpartition("/")[2]
    return PLACEHOLDER if not name or name.lower() == "file:" else name


def _quoted_base_name(match: re.Match[str], server: Callable[[str], bool]) -> str:
    path = match.group("path")
    if not server(path):
        return match.group(0)
    return match.group("quote") + _name_of(path) + match.group("quote")


def _bounded(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = max(limit - len(ELISION), 0)
    head = keep // 3
    return text[:head] + ELISION + text[len(text) - (keep - head) :]
