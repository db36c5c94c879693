"""The audio encode gives way to the video's: it costs a few percent of the video and runs
far ahead of it, and the first publish waits for the opening chunk's video encode."""

from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from services.core.settings import Settings
from services.media import runner
from services.transcoding import worker as worker_module
from services.transcoding.worker import AUDIO_NICE_EXTRA, Worker
from tests.clips import make_clip
from tests.transcoding.conftest import queue_video, run_until_idle


@pytest.mark.parametrize("encode_nice", [0, 10, 17])
def test_the_audio_runs_below_the_video_at_the_encode_priority(
    settings: Settings, tmp_path: Path, encode_nice: int
) -> None:
    settings = settings.model_copy(update={"encode_nice": encode_nice})
    queue_video(settings, make_clip(tmp_path / "clip.mp4", width=320, height=240, seconds=2))
    seen: dict[str, set[int]] = {"audio": set(), "video": set()}
    real = runner.run_ffmpeg

    async def recording(argv: list[str], **kwargs: Any) -> None:
        seen["audio" if "0:a:0" in argv and "-vn" in argv else "video"].add(kwargs["nice"])
        await real(argv, **kwargs)

    with mock.patch.object(worker_module, "run_ffmpeg", recording):
        run_until_idle(Worker(settings, kinds=("audio", "video")))
    assert seen == {
        "audio": {min(19, encode_nice + AUDIO_NICE_EXTRA)},
        "video": {encode_nice},
    }
