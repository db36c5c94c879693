"""The caption reader: WebVTT and SRT read strictly, faults named by line, text sanitised,
SRT converted to WebVTT."""

import pytest

from services.media.captions import (
    MAX_CUE_LINES,
    CaptionError,
    Cue,
    read_captions,
    shifted,
    timestamp,
    to_webvtt,
)

LIMITS = {"max_bytes": 1024 * 1024, "max_cues": 100}


def read(text: str, **limits: int) -> list[Cue]:
    captions = read_captions(text.encode("utf-8"), **{**LIMITS, **limits})
    return captions.cues


def fault(data: str | bytes, **limits: int) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with pytest.raises(CaptionError) as caught:
        read_captions(raw, **{**LIMITS, **limits})
    assert caught.value.status == 400 and caught.value.code == "invalid_captions"
    return caught.value.detail


def test_srt_is_converted_to_webvtt():
    srt = (
        '1\r\n00:00:01,500 --> 00:00:02,000\r\n{\\an8}<I>Top</I> <font color="red">red</font>\r\n'
        "\r\n2\r\n00:01:02,003 --> 01:00:00,000 X1:10 X2:20 Y1:30 Y2:40\r\n"
        "Fish & chips\r\nline two\r\n"
    )
    captions = read_captions(srt.encode(), **LIMITS)
    assert captions.format == "srt"
    assert to_webvtt(captions.cues) == (
        "WEBVTT\n\n"
        "00:00:01.500 --> 00:00:02.000\n<i>Top</i> red\n\n"
        "00:01:02.003 --> 01:00:00.000\nFish &amp; chips\nline two\n\n"
    )


def test_webvtt_cue_text_keeps_only_what_webvtt_allows():
    text = (
        "WEBVTT\n\n00:01.000 --> 00:02.000\n"
        '<script>alert("x")</script><b.loud.x>B</b> <v Bob & "Al">Hi</v> <c.a$b>c</c>\n'
        "<00:00:01.500>late 1 < 2 > 0 &lt;ok&gt; &#x41; &bogus &\x07\n"
    )
    (cue,) = read(text)
    assert cue.text == (
        'alert("x")<b.loud.x>B</b> <v Bob &amp; "Al">Hi</v> <c>c</c>\n'
        "<00:00:01.500>late 1 &lt; 2 &gt; 0 &lt;ok&gt; &#x41; &amp;bogus &amp;"
    )


def test_notes_styles_regions_identifiers_and_region_settings_are_not_carried_over():
    text = (
        "\ufeffWEBVTT\nKind: captions\n\nSTYLE\n::cue { color: red }\n\n"
        "REGION\nid:r1 width:40%\n\nNOTE a note\nover lines\n\n"
        "cue-1\n00:00:01.000 --> 00:00:02.000 region:r1 align:start\nOne\n"
    )
    assert read(text) == [Cue(1000, 2000, "One", "align:start")]


def test_a_cue_with_no_text_is_dropped_and_overlapping_cues_are_kept():
    text = "WEBVTT\n\n00:01.000 --> 00:05.000\n<font></font>\n\n00:01.000 --> 00:03.000\na\n\n"
    text += "00:02.000 --> 00:04.000\nb\n"
    assert [(c.start, c.end) for c in read(text)] == [(1000, 3000), (2000, 4000)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("WEBVT\n\n00:01.000 --> 00:02.000\nx\n", "line 1: this is neither WebVTT"),
        ("WEBVTTX\n\n00:01.000 --> 00:02.000\nx\n", "line 1: this is neither WebVTT"),
        ("WEBVTT\n00:01.000 --> 00:02.000\nx\n", "line 2: a cue right under the header"),
        ("WEBVTT\n\n00:01.000 --> 00:02.0\nx\n", "line 3: '00:02.0' is not a timestamp"),
        ("WEBVTT\n\n00:01.000 --> 00:60.000\nx\n", "line 3: '00:60.000' is not a timestamp"),
        ("WEBVTT\n\n00:01.000-->00:02.000\nx\n", "line 3: a cue timing is 'start --> end'"),
        ("WEBVTT\n\n00:02.000 --> 00:02.000\nx\n", "line 3: the cue ends (00:00:02.000) before"),
        ("WEBVTT\n\nid\nnot a timing\nx\n", "line 4: expected a cue timing"),
        ("WEBVTT\n\njust one line\n", "line 3: expected a cue timing"),
        ("WEBVTT\n\n00:01.000 -> 00:02.000\nx\n", "line 3: expected a cue timing"),
        ("WEBVTT\n\n00:01.000 --> 00:02.000 size:120 \nx\n", "line 3: the cue setting 'size:120'"),
        ("WEBVTT\n\n00:01.000 --> 00:02.000 color:red\nx\n", "line 3: unknown cue setting"),
        ("WEBVTT\n\n00:01.000 --> 00:02.000 align:end align:start\nx\n", "given twice"),
        ("WEBVTT\n\n00:01.000 --> 00:02.000\nx\n00:03.000 --> 00:04.000\ny\n", "line 5: '-->'"),
        (
            "WEBVTT\n\n00:03.000 --> 00:04.000\nx\n\n00:01.000 --> 00:02.000\ny\n",
            "line 6: this cue",
        ),
        (
            "WEBVTT\n\n00:01.000 --> 00:02.000\nx\n\nSTYLE\n::cue {}\n",
            "line 6: a STYLE block after",
        ),
        ("WEBVTT\n\nNOTE a\n00:01.000 --> 00:02.000\n", "line 4: '-->' inside a NOTE block"),
        ("1\n00:00:01,000 --> 00:00:02,000\nx\n\n00:00:0a,000 --> 00:00:03,000\n", "line 5:"),
        ("1\n00:00:01,000 --> 00:00:02,000\nx\n\n2\nno timing here\n", "line 6: expected a cue"),
        ("1\n00:00:01,000 --> 00:00:02,000 trailing\nx\n", "line 2: unexpected text after"),
        ("1\n00:00:01,00 --> 00:00:02,000\nx\n", "line 2: '00:00:01,00' is not a timestamp"),
        ("WEBVTT\n\n00:01.000 --> 99999:00:00.000\nx\n", "line 3: '99999:00:00.000' is not"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_line(text, expected):
    assert expected in fault(text)
    assert fault(text).startswith("line ")


def test_text_that_is_not_utf8_is_refused_at_its_line():
    data = "WEBVTT\n\n00:01.000 --> 00:02.000\nol\xe1\n".encode("latin-1")
    assert fault(data).startswith("line 4: the file is not UTF-8 text")
    assert fault(b"WEBVTT\n\n00:01.000 --> 00:02.000\na\x00b\n").startswith("line 4: a NUL")


def test_sizes_and_counts_are_bounded():
    many = "WEBVTT\n\n" + "".join(
        f"00:00:{s:02d}.000 --> 00:00:{s:02d}.500\nx\n\n" for s in range(5)
    )
    assert len(read(many, max_cues=5)) == 5
    assert "at most 4 are taken" in fault(many, max_cues=4)
    assert "at most 10 are taken" in fault(many, max_bytes=10)
    tall = "WEBVTT\n\n00:01.000 --> 00:02.000\n" + "x\n" * (MAX_CUE_LINES + 1)
    assert fault(tall).startswith("line 4: a cue of")
    wide = "WEBVTT\n\n00:01.000 --> 00:02.000\n" + "x" * 3000 + "\n"
    assert "characters; at most" in fault(wide)


def test_timestamps_without_hours_and_past_a_day_are_read():
    (cue,) = read("WEBVTT\n\n59:59.999 --> 100:00:00.000\nx\n")
    assert (cue.start, cue.end) == (3599999, 360000000)
    assert timestamp(cue.end) == "100:00:00.000"


def test_shifted_moves_cues_earlier_cutting_at_zero():
    cues = [Cue(10, 20, "gone"), Cue(15, 40, "cut"), Cue(50, 60, "moved")]
    assert shifted(cues, 20) == [Cue(0, 20, "cut"), Cue(30, 40, "moved")]
    assert shifted(cues, -5) == [Cue(15, 25, "gone"), Cue(20, 45, "cut"), Cue(55, 65, "moved")]
