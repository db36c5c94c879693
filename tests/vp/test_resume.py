import os

from vp.resume import ResumeStore, fingerprint


def test_a_remembered_url_is_found_again_until_it_is_forgotten(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x" * 100)
    store = ResumeStore(tmp_path / "state")
    key = fingerprint("http://a.test", clip)
    assert store.get(key) is None
    store.put(key, "http://a.test/files/1", file=clip)
    assert ResumeStore(tmp_path / "state").get(key) == "http://a.test/files/1"
    store.forget(key)
    store.forget(key)  # forgetting twice is harmless
    assert store.get(key) is None
    assert not [p for p in (tmp_path / "state").iterdir() if p.name.endswith(".tmp")]


def test_the_fingerprint_changes_with_the_server_the_size_and_the_time(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x" * 100)
    first = fingerprint("http://a.test", clip)
    assert fingerprint("http://a.test", clip) == first
    assert fingerprint("http://b.test", clip) != first
    os.utime(clip, ns=(0, 10**9))
    touched = fingerprint("http://a.test", clip)
    assert touched != first
    clip.write_bytes(b"x" * 101)
    os.utime(clip, ns=(0, 10**9))
    assert fingerprint("http://a.test", clip) != touched


def test_an_unreadable_entry_counts_as_none(tmp_path):
    store = ResumeStore(tmp_path)
    (tmp_path / "k.json").write_text("{not json")
    (tmp_path / "n.json").write_text('{"url": 5}')
    assert store.get("k") is None and store.get("n") is None


def test_the_store_lives_in_the_users_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ResumeStore().folder == tmp_path / "vp" / "uploads"
