"""oEmbed's pure parts: which URLs name a video of this site, and how the frame is sized."""

import pytest

from services.core.errors import InvalidInput, NotFound
from services.metadata import oembed
from services.metadata.oembed import Target, Video, answer, frame_size, parse_target, pixels

BASE = "https://videos.example.com"
VIDEO_ID = "0123456789abcdef0123456789abcdef"
TOKEN = "1900000000." + "ab" * 32


def video(**fields: object) -> Video:
    defaults: dict[str, object] = {
        "video_id": VIDEO_ID,
        "title": "clip.mp4",
        "width": 1920,
        "height": 1080,
        "has_poster": True,
    }
    return Video(**(defaults | fields))  # type: ignore[arg-type]


# ---------------------------------------------------------------- which URL names which video


@pytest.mark.parametrize(
    "url",
    [
        f"{BASE}/watch/{VIDEO_ID}",
        f"{BASE}/watch/{VIDEO_ID}/",
        f"{BASE}/embed/{VIDEO_ID}",
        f"{BASE}/#/watch/{VIDEO_ID}",  # the page's own hash link
        f"{BASE}#/watch/{VIDEO_ID}",
        f"HTTPS://Videos.Example.com/watch/{VIDEO_ID}",  # scheme and host are case-blind
        f"https://videos.example.com:443/watch/{VIDEO_ID}",  # the default port, spelt out
        f"http://videos.example.com/watch/{VIDEO_ID}",  # the same site over plain HTTP
    ],
)
def test_watch_and_embed_urls_of_this_site_name_their_video(url: str) -> None:
    assert parse_target(url, BASE) == Target(VIDEO_ID)


@pytest.mark.parametrize(
    "url",
    [
        f"{BASE}/watch/{VIDEO_ID}?token={TOKEN}",
        f"{BASE}/embed/{VIDEO_ID}?token={TOKEN}",
        f"{BASE}/#/watch/{VIDEO_ID}?token={TOKEN}",
    ],
)
def test_a_signed_link_brings_its_token(url: str) -> None:
    assert parse_target(url, BASE).token == TOKEN


def test_a_token_that_is_not_one_is_dropped() -> None:
    assert parse_target(f'{BASE}/watch/{VIDEO_ID}?token="><script>', BASE).token is None


def test_an_embed_url_keeps_its_valid_player_options_only() -> None:
    url = f"{BASE}/embed/{VIDEO_ID}?autoplay=1&muted=1&start=12.5&loop=yes&colour=red"
    assert parse_target(url, BASE).options == {"autoplay": "1", "muted": "1", "start": "12.5"}


def test_a_watch_url_brings_no_player_options() -> None:
    assert parse_target(f"{BASE}/watch/{VIDEO_ID}?autoplay=1", BASE).options == {}


def test_a_site_below_a_path_accepts_urls_below_that_path_only() -> None:
    base = "https://example.com/videos"
    assert parse_target(f"{base}/watch/{VIDEO_ID}", base).video_id == VIDEO_ID
    with pytest.raises(NotFound):
        parse_target(f"https://example.com/watch/{VIDEO_ID}", base)
    with pytest.raises(NotFound):
        parse_target(f"https://example.com/videosx/watch/{VIDEO_ID}", base)


@pytest.mark.parametrize(
    "url",
    [
        f"https://elsewhere.example/watch/{VIDEO_ID}",
        f"https://videos.example.com.evil.example/watch/{VIDEO_ID}",
        f"https://videos.example.com:8443/watch/{VIDEO_ID}",
        f"ftp://videos.example.com/watch/{VIDEO_ID}",
        f"https://videos.example.com:port/watch/{VIDEO_ID}",
        f"//videos.example.com/watch/{VIDEO_ID}",
        f"/watch/{VIDEO_ID}",
        "not a url at all",
    ],
)
def test_a_url_of_another_site_is_not_found(url: str) -> None:
    with pytest.raises(NotFound, match="not an address of this site"):
        parse_target(url, BASE)


@pytest.mark.parametrize(
    "path",
    ["/", "/console", f"/stream/{VIDEO_ID}/master.m3u8", f"/watch/{VIDEO_ID}/more", "/watch/"],
)
def test_a_page_of_this_site_that_is_no_video_is_not_found(path: str) -> None:
    with pytest.raises(NotFound, match="not a video's page"):
        parse_target(BASE + path, BASE)


def test_an_id_that_is_not_one_is_not_found() -> None:
    with pytest.raises(NotFound, match="32 lowercase hex"):
        parse_target(f"{BASE}/watch/NOT-AN-ID", BASE)


# ---------------------------------------------------------------- sizes


def test_without_limits_the_frame_is_640_wide_in_the_videos_shape() -> None:
    assert frame_size((1920, 1080), None, None) == (640, 360)
    assert frame_size((720, 1280), None, None) == (640, 1138)


def test_the_frame_is_maxwidth_wide() -> None:
    assert frame_size((1920, 1080), 400, None) == (400, 225)
    # Wider than the video itself: the player scales the picture up.
    assert frame_size((320, 240), 1000, None) == (1000, 750)


def test_maxheight_makes_the_frame_smaller_keeping_its_shape() -> None:
    assert frame_size((1920, 1080), 1000, 300) == (533, 300)
    assert frame_size((720, 1280), None, 400) == (225, 400)
    # A maxheight the frame already fits changes nothing.
    assert frame_size((1920, 1080), 400, 1000) == (400, 225)


def test_the_frame_is_never_zero_pixels() -> None:
    assert frame_size((10000, 2), 1, 1) == (1, 1)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "16385", "1.5", "١٢", " 12"])
def test_a_bad_maxwidth_says_what_is_wanted(value: str) -> None:
    with pytest.raises(InvalidInput, match="whole number of pixels from 1 to 16384"):
        pixels(value, "maxwidth")


def test_no_maxwidth_is_no_limit() -> None:
    assert pixels(None, "maxwidth") is None
    assert pixels("", "maxwidth") is None
    assert pixels("480", "maxwidth") == 480


# ---------------------------------------------------------------- the answer


def test_the_answer_is_an_oembed_video_with_the_embed_iframe() -> None:
    result = answer(video(), Target(VIDEO_ID), base=BASE, maxwidth=480, maxheight=None)
    assert result == {
        "version": "1.0",
        "type": "video",
        "provider_name": oembed.PROVIDER_NAME,
        "provider_url": f"{BASE}/",
        "title": "clip.mp4",
        "html": (
            f'<iframe src="{BASE}/embed/{VIDEO_ID}" width="480" height="270" title="clip.mp4" '
            'frameborder="0" allow="autoplay; fullscreen; picture-in-picture" '
            "allowfullscreen></iframe>"
        ),
        "width": 480,
        "height": 270,
        # The poster is the top rung's size (1080p), its long side capped at 1280.
        "thumbnail_url": f"{BASE}/stream/{VIDEO_ID}/poster.jpg",
        "thumbnail_width": 1280,
        "thumbnail_height": 720,
    }


def test_a_signed_link_puts_its_token_in_the_iframe_and_the_thumbnail() -> None:
    target = Target(VIDEO_ID, TOKEN, {"autoplay": "1", "muted": "1"})
    result = answer(video(), target, base=BASE, maxwidth=None, maxheight=None)
    src = f"{BASE}/embed/{VIDEO_ID}?token={TOKEN}&amp;autoplay=1&amp;muted=1"
    assert f'src="{src}"' in str(result["html"])
    assert result["thumbnail_url"] == f"{BASE}/stream/{VIDEO_ID}/poster.jpg?token={TOKEN}"


def test_the_title_cannot_break_out_of_the_iframe() -> None:
    hostile = 'a"><script>alert(1)</script>'
    result = answer(
        video(title=hostile), Target(VIDEO_ID), base=BASE, maxwidth=None, maxheight=None
    )
    assert "<script>" not in str(result["html"])
    assert 'title="a&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in str(result["html"])
    assert result["title"] == hostile  # JSON carries the name as it is


def test_a_portrait_video_gets_a_portrait_poster() -> None:
    result = answer(
        video(width=720, height=1280), Target(VIDEO_ID), base=BASE, maxwidth=None, maxheight=None
    )
    assert (result["thumbnail_width"], result["thumbnail_height"]) == (720, 1280)


def test_an_audio_only_video_gets_a_16_9_frame_and_no_thumbnail() -> None:
    result = answer(
        video(width=None, height=None), Target(VIDEO_ID), base=BASE, maxwidth=320, maxheight=None
    )
    assert (result["width"], result["height"]) == (320, 180)
    assert "thumbnail_url" not in result


def test_a_video_without_a_poster_yet_has_no_thumbnail() -> None:
    result = answer(
        video(has_poster=False), Target(VIDEO_ID), base=BASE, maxwidth=None, maxheight=None
    )
    assert not {"thumbnail_url", "thumbnail_width", "thumbnail_height"} & result.keys()
