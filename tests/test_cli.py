"""`vp`, the console script installed with the project, run as a subprocess from the venv's
bin against a real platform: uploads over tus with --wait, an upload killed half-way resumed
without resending what the server has (counted on the server), list/status/delete/token,
private playback, and every failure as one line with a non-zero exit."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.clips import make_clip
from tests.harness import Platform, free_ports, sha256_of

VP = Path(sys.executable).with_name("vp")
TUS = {"Tus-Resumable": "1.0.0"}
ID_RE = re.compile(r" as ([0-9a-f]{32})$")
SIGNING_KEY = "cli-test-signing-key-0123456789abcdef"
UPLOAD_TOKEN = "cli-test-upload-token"


@dataclass
class Run:
    """What one `vp` run did."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def vp(*args: str | Path, env: dict[str, str], timeout: float = 300) -> Run:
    """Run the installed console script to its end."""
    done = subprocess.run(
        [str(VP), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def links_in(output: str) -> dict[str, str]:
    """The `  watch URL` / `  embed URL` / `  master URL` lines `vp` prints."""
    found = re.findall(r"^  (watch|embed|master) +(\S+)$", output, re.MULTILINE)
    return dict(found)


def ids_in(output: str) -> list[str]:
    """The video ids at the start of `vp upload`'s result lines."""
    return re.findall(r"^([0-9a-f]{32})  ", output, re.MULTILINE)


def the_one_error(run: Run) -> str:
    """A failed run said exactly one line, no traceback."""
    assert run.code != 0, run
    assert len(run.err_lines) == 1, run.err
    assert run.err_lines[0].startswith("vp: "), run.err
    assert "Traceback" not in run.err
    return run.err_lines[0]


def client_env(platform: Platform, cache: Path, **extra: str) -> dict[str, str]:
    """The environment of a user of `platform`: nothing of the test's own VP_* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VP_")}
    return {
        **env,
        "VP_SERVER": platform.url,
        "VP_TOKEN": platform.admin_token,
        "XDG_CACHE_HOME": str(cache),
        **extra,
    }


def bytes_uploaded(platform: Platform) -> int:
    """The upload service's `upload_bytes_total`: every byte it stored and counted."""
    text = httpx.get(f"{platform.service_url('upload')}/metrics", timeout=30).text
    match = re.search(r"^upload_bytes_total ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, "no upload_bytes_total in /metrics"
    return int(float(match.group(1)))


def settled_offset(platform: Platform, video_id: str) -> int:
    """The upload's offset once no PATCH holds it: an empty PATCH at the offset HEAD gives is
    accepted only when no cut-off body is still being stored (423) or moved it (409)."""
    url = f"{platform.url}/files/{video_id}"
    headers = {**TUS, "Content-Type": "application/offset+octet-stream"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        offset = int(httpx.head(url, headers=TUS).headers["upload-offset"])
        probe = httpx.patch(url, headers={**headers, "Upload-Offset": str(offset)}, content=b"")
        if probe.status_code == 204:
            return offset
        assert probe.status_code in (409, 423), probe.text
        time.sleep(0.1)
    raise AssertionError(f"upload {video_id} still busy after 60 s")


def server_offset(platform: Platform, video_id: str) -> int:
    head = httpx.head(f"{platform.url}/files/{video_id}", headers=TUS)
    return int(head.headers.get("upload-offset", "0"))


def start_upload(path: Path, env: dict[str, str], *options: str) -> tuple[subprocess.Popen, str]:
    """`vp upload path` running in the background, and the video id it announced."""
    process = subprocess.Popen(
        [str(VP), "upload", str(path), *options],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    first = process.stderr.readline().strip()
    match = ID_RE.search(first)
    assert match, f"vp announced no upload: {first!r}"
    return process, match.group(1)


def interrupt_midway(
    platform: Platform, process: subprocess.Popen, video_id: str, size: int, how: int
) -> str:
    """Send `how` to the running upload once the server has a quarter of the file; the rest
    of what it said."""
    deadline = time.monotonic() + 120
    while server_offset(platform, video_id) < size // 4:
        assert process.poll() is None, "the upload ended before it could be interrupted"
        assert time.monotonic() < deadline, "the upload did not progress in 120 s"
        time.sleep(0.05)
    process.send_signal(how)
    _, said = process.communicate(timeout=60)
    return str(said)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform as `make run` starts it: open uploading and playback."""
    running = Platform(tmp_path_factory.mktemp("cli") / "storage").start()
    yield running
    running.drop()


@pytest.fixture(scope="module")
def private_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A locked-down platform: an upload token, and playback only with signed links."""
    running = Platform(
        tmp_path_factory.mktemp("cli-private") / "storage",
        PLAYBACK_SIGNING_KEY=SIGNING_KEY,
        UPLOAD_TOKEN=UPLOAD_TOKEN,
    ).start()
    yield running
    running.drop()


@pytest.fixture(scope="module")
def large_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few MB, so an upload at a limited rate is still running when it is interrupted."""
    folder = tmp_path_factory.mktemp("cli-clips")
    return make_clip(folder / "large.mp4", width=1280, height=720, seconds=8)


@pytest.fixture
def env(open_platform: Platform, tmp_path: Path) -> dict[str, str]:
    return client_env(open_platform, tmp_path / "cache")


# --- the client stays a client -------------------------------------------------------------------


def test_vp_is_installed_and_imports_none_of_the_servers_code():
    probe = (
        "import sys, vp.main, vp.api, vp.tus, vp.uploading; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'services', 'gateway', 'fastapi', 'starlette', 'sqlalchemy', 'uvicorn', 'granian'}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert VP.is_file()


# --- upload --------------------------------------------------------------------------------------


def test_upload_with_wait_prints_watch_embed_and_master_urls_that_work(open_platform, env, clips):
    run = vp("upload", clips["small"], "--wait", env=env)
    assert run.code == 0, run.err
    (video_id,) = ids_in(run.out)
    links = links_in(run.out)
    assert links == {
        "watch": f"{open_platform.url}/watch/{video_id}",
        "embed": f"{open_platform.url}/embed/{video_id}",
        "master": f"{open_platform.url}/stream/{video_id}/master.m3u8",
    }
    master = httpx.get(links["master"])
    assert master.status_code == 200
    assert "#EXT-X-STREAM-INF" in master.text
    for page in ("watch", "embed"):
        answer = httpx.get(links[page])
        assert answer.status_code == 200, (page, answer.status_code)
        assert video_id in answer.text, page  # the page names its video (discovery link)
    record = httpx.get(f"{open_platform.url}/videos/{video_id}").json()
    assert (record["status"], record["sha256"]) == ("ok", sha256_of(clips["small"]))
    # Both bars were drawn, and the transcode's ended at 100 %.
    assert "small.mp4 ok" in run.err and "100%" in run.err


def test_an_upload_killed_half_way_resumes_without_resending_what_the_server_has(
    open_platform, env, large_clip, tmp_path
):
    size = large_clip.stat().st_size
    before = bytes_uploaded(open_platform)
    # Slow enough (about 8 s in all) to be caught half-way; small PATCHes.
    slow = ("--chunk-size", "256K", "--limit-rate", str(size // 8))
    process, video_id = start_upload(large_clip, env, *slow)
    interrupt_midway(open_platform, process, video_id, size, signal.SIGKILL)
    stored = settled_offset(open_platform, video_id)
    assert 0 < stored < size
    assert bytes_uploaded(open_platform) - before == stored

    middle = bytes_uploaded(open_platform)
    second = vp("upload", large_clip, "--wait", env=env)
    assert second.code == 0, second.err
    sent_again = bytes_uploaded(open_platform) - middle
    print(f"killed at {stored} of {size} bytes; the second run sent {sent_again} bytes")
    assert f"resuming at {stored} of {size} bytes as {video_id}" in second.err
    assert sent_again == size - stored
    assert ids_in(second.out) == [video_id]
    record = httpx.get(f"{open_platform.url}/videos/{video_id}").json()
    assert (record["status"], record["sha256"]) == ("ok", sha256_of(large_clip))
    assert httpx.get(links_in(second.out)["master"]).status_code == 200
    # Finished: nothing left to resume.
    assert not list((tmp_path / "cache" / "vp" / "uploads").glob("*.json"))


def test_ctrl_c_says_how_to_resume_and_an_upload_the_server_dropped_starts_over(
    open_platform, env, large_clip
):
    size = large_clip.stat().st_size
    # The server's offset moves at the end of each PATCH: small ones, from the environment.
    env["VP_CHUNK_SIZE"] = "256K"
    process, first_id = start_upload(large_clip, env, "--limit-rate", str(size // 8))
    rest = interrupt_midway(open_platform, process, first_id, size, signal.SIGINT)
    assert process.returncode == 130, rest
    said = [line for line in rest.splitlines() if line.startswith("vp: ")]
    assert said == [
        "vp: interrupted: run the same command again to resume (what the server has is not "
        "sent again)"
    ]
    settled_offset(open_platform, first_id)
    gone = httpx.delete(f"{open_platform.url}/files/{first_id}", headers=TUS)
    assert gone.status_code == 204

    again = vp("upload", large_clip, env=env)
    assert again.code == 0, again.err
    (second_id,) = ids_in(again.out)
    assert second_id != first_id
    assert f"uploading {size} bytes as {second_id}" in again.err


def test_upload_hevc_asks_the_server_for_an_hevc_ladder(open_platform, env, clips):
    run = vp("upload", clips["tiny"], "--codec", "hevc", "--wait", "-q", env=env)
    assert run.code == 0, run.err
    assert run.err == ""
    master = httpx.get(links_in(run.out)["master"])
    assert master.status_code == 200 and "hvc1" in master.text


def test_one_file_refused_does_not_stop_the_others_and_the_exit_says_so(env, clips):
    run = vp("upload", clips["text"], clips["tiny"], env=env)
    assert run.code == 1
    assert len(ids_in(run.out)) == 1
    said = [line for line in run.err_lines if line.startswith("vp: ")]
    assert len(said) == 1 and "is not a playable video" in said[0]
    # The failure is the last thing said, after the bars.
    assert run.err_lines[-1] == said[0]


# --- list, status, delete, token -----------------------------------------------------------------


def test_list_status_and_delete_a_video(open_platform, env, clips):
    uploaded = vp("upload", clips["tiny"], "--wait", "-q", env=env)
    (video_id,) = ids_in(uploaded.out)

    listed = vp("list", env=env)
    assert listed.code == 0 and video_id in listed.out and "tiny.mp4" in listed.out
    as_json = vp("list", "--json", "--status", "ok", env=env)
    assert video_id in [video["id"] for video in json.loads(as_json.out)]

    status = vp("status", video_id, env=env)
    assert status.code == 0
    assert re.search(r"status +ok 100\.0 %", status.out)
    assert links_in(status.out)["master"] == f"{open_platform.url}/stream/{video_id}/master.m3u8"

    deleted = vp("delete", video_id, "--yes", env=env)
    assert (deleted.code, deleted.out.strip()) == (0, f"deleted {video_id}")
    assert httpx.get(f"{open_platform.url}/videos/{video_id}").status_code == 404
    assert "not on this server" in the_one_error(vp("status", video_id, env=env))


def test_delete_without_yes_from_a_script_deletes_nothing(open_platform, env, clips):
    uploaded = vp("upload", clips["tiny"], "-q", env=env)
    (video_id,) = ids_in(uploaded.out)
    assert "pass --yes" in the_one_error(vp("delete", video_id, env=env))
    assert httpx.get(f"{open_platform.url}/videos/{video_id}").status_code == 200


def test_token_on_a_server_without_private_playback_says_none_is_needed(env, clips):
    uploaded = vp("upload", clips["tiny"], "-q", env=env)
    (video_id,) = ids_in(uploaded.out)
    assert "plays every video openly" in the_one_error(vp("token", video_id, env=env))


# --- private playback ----------------------------------------------------------------------------


def test_private_upload_prints_signed_links_and_plain_ones_do_not_play(
    private_platform, clips, tmp_path
):
    env = client_env(private_platform, tmp_path, VP_UPLOAD_TOKEN=UPLOAD_TOKEN)
    run = vp("upload", clips["small"], "--private", "--wait", env=env)
    assert run.code == 0, run.err
    (video_id,) = ids_in(run.out)
    links = links_in(run.out)
    assert all("?token=" in url for url in links.values()), links
    assert httpx.get(links["master"]).status_code == 200
    plain = f"{private_platform.url}/stream/{video_id}/master.m3u8"
    assert httpx.get(plain).status_code == 403

    signed = vp("token", video_id, "--ttl", "600", env=env)
    assert signed.code == 0, signed.err
    assert re.search(r"^expires +\S+ \(in 600 s\)$", signed.out, re.MULTILINE)
    assert httpx.get(links_in(signed.out)["master"]).status_code == 200


def test_private_with_a_wrong_admin_token_is_refused_before_any_byte(
    private_platform, clips, tmp_path
):
    env = client_env(private_platform, tmp_path, VP_UPLOAD_TOKEN=UPLOAD_TOKEN)
    before = bytes_uploaded(private_platform)
    env["VP_TOKEN"] = "not-the-admin-token"
    said = the_one_error(vp("upload", clips["tiny"], "--private", env=env))
    assert "admin token given was refused" in said
    env.pop("VP_TOKEN")
    said = the_one_error(vp("upload", clips["tiny"], "--private", env=env))
    assert "--private prints signed links, which need the admin token" in said
    assert bytes_uploaded(private_platform) == before


def test_private_on_a_server_that_plays_openly_is_refused_before_any_byte(
    open_platform, env, clips
):
    before = bytes_uploaded(open_platform)
    said = the_one_error(vp("upload", clips["tiny"], "--private", env=env))
    assert "plays every video openly" in said and "PLAYBACK_SIGNING_KEY" in said
    assert bytes_uploaded(open_platform) == before


def test_uploading_to_a_closed_server_says_which_token_to_set(private_platform, clips, tmp_path):
    env = client_env(private_platform, tmp_path)  # the admin token is not the upload token
    said = the_one_error(vp("upload", clips["tiny"], env=env))
    assert "upload token given was refused" in said and "VP_UPLOAD_TOKEN" in said
    env.pop("VP_TOKEN")
    said = the_one_error(vp("upload", clips["tiny"], env=env))
    assert "needs a token to upload" in said


# --- failures: one line, non-zero ----------------------------------------------------------------


def test_an_unreachable_server_is_one_line_saying_where_it_looked(env):
    (port,) = free_ports(1)
    env["VP_SERVER"] = f"http://127.0.0.1:{port}"
    said = the_one_error(vp("list", env=env))
    assert said == (
        f"vp: cannot reach the platform at http://127.0.0.1:{port}: is it running? "
        "(point --server or VP_SERVER at its gateway)"
    )


def test_a_wrong_admin_token_is_one_line_and_deletes_nothing(open_platform, env, clips):
    uploaded = vp("upload", clips["tiny"], "-q", env=env)
    (video_id,) = ids_in(uploaded.out)
    env["VP_TOKEN"] = "not-the-token"
    said = the_one_error(vp("delete", video_id, "--yes", env=env))
    assert "admin token given was refused" in said and "VP_TOKEN" in said
    assert httpx.get(f"{open_platform.url}/videos/{video_id}").status_code == 200


@pytest.mark.parametrize("command", ["status", "delete", "token"])
def test_an_unknown_id_is_one_line(env, command):
    extra = ["--yes"] if command == "delete" else []
    said = the_one_error(vp(command, "0" * 32, *extra, env=env))
    assert said == f"vp: video {'0' * 32} is not on this server: `vp list` shows the videos"


def test_a_file_that_is_not_a_video_is_one_line_with_the_platforms_reason(env, clips):
    said = the_one_error(vp("upload", "-q", clips["text"], env=env))
    assert "the server refused clip.mp4" in said and "is not a playable video" in said


def test_a_missing_file_is_one_line_and_nothing_is_sent(open_platform, env, clips, tmp_path):
    before = bytes_uploaded(open_platform)
    missing = tmp_path / "nowhere.mp4"
    said = the_one_error(vp("upload", clips["tiny"], missing, env=env))
    assert said == f"vp: {missing}: no such file"
    assert bytes_uploaded(open_platform) == before
