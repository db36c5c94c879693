"""The `vp` command: its options and subcommands, each a few lines over `vp.api`,
`vp.uploading` and `vp.links`. A failure leaves as one line on stderr and a non-zero exit."""

import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from vp import errors, uploading
from vp.api import DEFAULT_SERVER, Api, Target
from vp.bars import notes, transcode_bars, transfer_bars
from vp.links import links
from vp.resume import ResumeStore
from vp.sizes import parse_size

app = typer.Typer(
    name="vp",
    help="Upload to, follow and manage a video platform from the command line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Results go to stdout; into a pipe, as wide as they are, so scripts read whole lines.
results = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 1000)


class Codec(StrEnum):
    """The ladder codecs a platform encodes."""

    h264 = "h264"
    hevc = "hevc"


Server = Annotated[
    str,
    typer.Option("--server", envvar="VP_SERVER", help="The platform's gateway URL."),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="VP_TOKEN",
        help="The admin token (delete, token, --private); also sent when uploading.",
        show_default=False,
    ),
]
UploadToken = Annotated[
    str | None,
    typer.Option(
        "--upload-token",
        envvar="VP_UPLOAD_TOKEN",
        help="The server's UPLOAD_TOKEN, when it differs from --token.",
        show_default=False,
    ),
]
VideoId = Annotated[str, typer.Argument(help="The video's id (32 hex characters).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Ttl = Annotated[
    int,
    typer.Option("--ttl", min=60, max=7 * 24 * 3600, help="Seconds a signed link stays valid."),
]


def _api(server: str, token: str | None, upload_token: str | None = None) -> Api:
    return Api(Target.of(server, token, upload_token))


def _print_links(server: str, video_id: str, token: str | None = None) -> None:
    for name, url in links(server, video_id, token).items():
        results.print(f"  {name:<8}{url}", markup=False)


def _signed_token(api: Api, video_id: str, ttl: int) -> str:
    grant = api.playback_token(video_id, ttl)
    if grant is None:
        raise errors.CliError(
            f"{api.target.server} plays every video openly (no PLAYBACK_SIGNING_KEY set): "
            "no token is needed, `vp status ID` shows the links"
        )
    return str(grant["token"])


# --- upload ------------------------------------------------------------------------------------


def _check_private(api: Api) -> None:
    """--private: refuse before sending a byte unless this server keeps videos private and the
    admin token (for the signed links) is right."""
    if not api.playback_is_private():
        raise errors.CliError(
            f"--private: {api.target.server} plays every video openly; set "
            "PLAYBACK_SIGNING_KEY on the server so playback needs a signed link"
        )
    if not api.target.token:
        raise errors.CliError(
            "--private prints signed links, which need the admin token: set VP_TOKEN or --token"
        )
    api.check_admin_token()


def _upload_all(
    api: Api, files: list[Path], choices: uploading.Choices, *, quiet: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    """Upload every file; (name, video id) of those that went, why the others did not."""
    store, done, refused = ResumeStore(), [], []
    with transfer_bars(quiet=quiet) as bars:
        for path in files:
            try:
                transfer = uploading.upload(api, store, path, choices, bars)
            except errors.Rejected as exc:
                refused.append(exc.message)
                continue
            done.append((path.name, transfer.video_id))
    return done, refused


def _transfer(
    api: Api, files: list[Path], choices: uploading.Choices, *, quiet: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    """Upload, telling Ctrl-C apart: the next run resumes what this one sent."""
    errors.latch_interrupts()
    try:
        return _upload_all(api, files, choices, quiet=quiet)
    except KeyboardInterrupt:
        raise errors.CliError(
            "interrupted: run the same command again to resume (what the server has is not "
            "sent again)",
            exit_code=errors.INTERRUPTED,
        ) from None


def _follow_all(api: Api, done: list[tuple[str, str]], *, quiet: bool) -> dict[str, str]:
    """Follow each video's transcode to its end; why those that failed did, by id."""
    failed = {}
    try:
        with transcode_bars(quiet=quiet) as bars:
            for name, video_id in done:
                try:
                    uploading.follow(api, video_id, name, bars)
                except errors.Rejected as exc:
                    failed[video_id] = exc.message
    except KeyboardInterrupt:
        ids = " ".join(video_id for _, video_id in done)
        raise errors.CliError(
            f"stopped waiting; uploaded, still transcoding: {ids} (`vp status ID` follows one)",
            exit_code=errors.INTERRUPTED,
        ) from None
    return failed


def _report(api: Api, done: list[tuple[str, str]], state: str, token_ttl: int | None) -> None:
    """Each video's id, name and state, and its links (signed ones for --private)."""
    for name, video_id in done:
        signed = _signed_token(api, video_id, token_ttl) if token_ttl else None
        results.print(f"{video_id}  {name}  {state}", markup=False)
        _print_links(api.target.server, video_id, signed)


@app.command()
def upload(
    files: Annotated[list[Path], typer.Argument(help="Video files to upload.", show_default=False)],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    upload_token: UploadToken = None,
    private: Annotated[
        bool, typer.Option("--private", help="Only signed links play it (prints them).")
    ] = False,
    codec: Annotated[
        Codec | None,
        typer.Option(
            "--codec",
            help="Ladder codec: h264 (plays everywhere) or hevc; default: the server's.",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the transcode to the end, then print links.")
    ] = False,
    chunk_size: Annotated[
        str, typer.Option("--chunk-size", envvar="VP_CHUNK_SIZE", help="Bytes per request.")
    ] = "8M",
    limit_rate: Annotated[
        str | None,
        typer.Option(
            "--limit-rate",
            envvar="VP_LIMIT_RATE",
            help="Upload at most this many bytes a second (e.g. 2M).",
            show_default=False,
        ),
    ] = None,
    ttl: Ttl = 3600,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No bars or notes: results and errors only.")
    ] = False,
) -> None:
    """Upload files over tus with a progress bar (run it again to resume an interrupted one)."""
    choices = uploading.Choices(
        codec=codec.value if codec else None,
        chunk_size=parse_size(chunk_size, what="--chunk-size"),
        rate=parse_size(limit_rate, what="--limit-rate") if limit_rate else None,
    )
    paths = uploading.check_files(files)
    with _api(server, token, upload_token) as api:
        if private:
            _check_private(api)
        done, refused = _transfer(api, paths, choices, quiet=quiet)
        failed = _follow_all(api, done, quiet=quiet) if wait and done else {}
        went = [(name, video_id) for name, video_id in done if video_id not in failed]
        _report(api, went, "ok" if wait else "transcoding", ttl if private else None)
    # Last, after the bars: one line for each file that did not make it.
    for message in [*refused, *failed.values()]:
        notes.print(f"vp: {message}", markup=False)
    if refused or failed:
        raise typer.Exit(1)


# --- list, status, delete, token -----------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


def _size(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def _table(videos: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False)
    table.add_column("ID", no_wrap=True, min_width=32)
    table.add_column("NAME")  # the one column that folds when the terminal is narrow
    for title in ("STATUS", "DURATION", "SIZE", "CREATED"):
        table.add_column(title, no_wrap=True)
    for video in videos:
        created = str(video.get("created_at") or "-")[:16].replace("T", " ")
        table.add_row(
            video["id"],
            video["filename"],
            video["status"],
            _duration(video.get("duration")),
            _size(video.get("size")),
            created,
        )
    return table


@app.command("list")
def list_videos(
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only videos in this state (ok, running, failed, ...)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    as_json: AsJson = False,
) -> None:
    """The newest videos: id, name, status, duration, size."""
    with _api(server, token) as api:
        videos = api.videos(status=status, limit=limit)
    if as_json:
        results.print_json(data=videos)
    elif not videos:
        notes.print("no videos" + (f" with status {status}" if status else ""))
    else:
        results.print(_table(videos))


def _status_lines(video: dict[str, Any], job: dict[str, Any] | None) -> list[str]:
    size = f"{video.get('width')}x{video.get('height')}" if video.get("width") else "-"
    lines = [
        f"name      {video['filename']}",
        f"status    {job['overall'] if job else video['status']}"
        + (f" {job['progress']:.1f} %" if job else ""),
        f"duration  {_duration(video.get('duration'))}   size {_size(video.get('size'))}"
        f"   picture {size}",
        f"qualities {', '.join(video.get('qualities') or []) or '-'}",
    ]
    error = (job or {}).get("error") or video.get("error")
    return [*lines, f"error     {error}"] if error else lines


@app.command()
def status(
    video_id: VideoId, server: Server = DEFAULT_SERVER, token: Token = None, as_json: AsJson = False
) -> None:
    """One video: its record, its transcode's progress and its links."""
    with _api(server, token) as api:
        video = api.video(video_id)
        job = api.job(video_id)
        if as_json:
            results.print_json(data={"video": video, "job": job})
            return
        results.print(f"{video['id']}", markup=False)
        for line in _status_lines(video, job):
            results.print(f"  {line}", markup=False)
        _print_links(api.target.server, video["id"])


@app.command()
def delete(
    video_id: VideoId,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a video: its record, original and every rendition (needs the admin token)."""
    if not yes:
        if not sys.stdin.isatty():
            raise errors.CliError(f"not deleted: pass --yes to delete {video_id} without a prompt")
        typer.confirm(f"Delete video {video_id} and all its files?", abort=True, err=True)
    with _api(server, token) as api:
        api.delete(video_id)
    results.print(f"deleted {video_id}", markup=False)


@app.command()
def token(
    video_id: VideoId, server: Server = DEFAULT_SERVER, token: Token = None, ttl: Ttl = 3600
) -> None:
    """A signed playback link for a private video (needs the admin token)."""
    with _api(server, token) as api:
        signed = _signed_token(api, video_id, ttl)
        expires = datetime.now(UTC) + timedelta(seconds=ttl)
        results.print(f"token    {signed}", markup=False)
        results.print(f"expires  {expires:%Y-%m-%dT%H:%M:%SZ} (in {ttl} s)", markup=False)
        _print_links(api.target.server, video_id, signed)


def main() -> None:
    """The console script: run the app; a `CliError` is one line on stderr and its exit code."""
    try:
        app()
    except errors.CliError as exc:
        notes.print(f"vp: {exc.message}", markup=False)
        sys.exit(exc.exit_code)
