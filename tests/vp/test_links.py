from vp.links import links

ID = "0123456789abcdef0123456789abcdef"


def test_links_are_the_watch_page_the_embed_and_the_master_playlist():
    assert links("http://example.test:8000", ID) == {
        "watch": f"http://example.test:8000/watch/{ID}",
        "embed": f"http://example.test:8000/embed/{ID}",
        "master": f"http://example.test:8000/stream/{ID}/master.m3u8",
    }


def test_a_playback_token_opens_each_link():
    signed = links("https://videos.example", ID, "1893456000." + "a" * 64)
    assert all(url.endswith("?token=1893456000." + "a" * 64) for url in signed.values())
    assert signed["watch"] == f"https://videos.example/watch/{ID}?token=1893456000.{'a' * 64}"
