"""The test clips' cache (TEST_CLIP_CACHE): a clip is rendered once per recipe, copies are
byte for byte what ffmpeg wrote, and another recipe is rendered anew."""

import threading

from tests.clips import make_clip


def test_a_clip_is_rendered_once_and_copied_after(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("TEST_CLIP_CACHE", str(cache))
    made: list = []

    def one(i: int) -> None:
        made.append(make_clip(tmp_path / f"a{i}.mp4", width=64, height=48, seconds=1))

    # Two at once, as make test's two lanes ask: one renders, the other waits for it.
    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(made) == 2
    assert len(list(cache.glob("*.mp4"))) == 1, "rendered once, no partial left"
    rendered = next(cache.glob("*.mp4")).read_bytes()
    assert made[0].read_bytes() == made[1].read_bytes() == rendered
    (tmp_path / "a0.mp4").write_bytes(b"changed")  # a copy, not the cached file itself
    assert next(cache.glob("*.mp4")).read_bytes() == rendered

    other = make_clip(tmp_path / "b.mp4", width=64, height=48, seconds=2)
    assert len(list(cache.glob("*.mp4"))) == 2
    assert other.read_bytes() != rendered


def test_without_the_setting_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_CLIP_CACHE", raising=False)
    clip = make_clip(tmp_path / "c.mp4", width=64, height=48, seconds=1)
    assert clip.stat().st_size > 0
    assert list(tmp_path.iterdir()) == [clip]
