"""Caption files in, clean WebVTT out: a strict reader of WebVTT and SRT.

A caption file is read line by line and every fault is refused with its line number and
what is wrong there (`CaptionError`, a 400): a missing `WEBVTT` header, a cue timing that
is not one, a cue that ends before it starts or starts before the cue above it, a cue that
runs into the next without a blank line, text that is not UTF-8. The PyPI readers were
tried first: webvtt-py drops a malformed cue without a word, pysubs2 reads almost anything,
and srt names a character offset of unmatched text rather than the fault; the reading
here *is* the validation, so it is written out.

What comes out is the file's cues (`Cue`), written back as WebVTT by `to_webvtt`: SRT is
converted (commas become points, `<font>` and `{\\an8}`-style tags go), and every cue's
text is sanitised to what WebVTT cue text may hold: the tags c, i, b, u, ruby, rt, v and
lang (classes and annotations reduced to plain names and text), timestamps, and character
references; any other `<`, `>` or `&` is escaped, control characters are dropped. NOTE,
STYLE and REGION blocks are not carried over. Browsers render cue text with their own
WebVTT parser, which builds no HTML element but those; the sanitising keeps the stored
file as plain as that.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass

from services.core.errors import InvalidInput

WEBVTT = "vtt"
SRT = "srt"
# Most characters of one cue's text, and most lines: a subtitle is a line or two.
MAX_CUE_CHARS = 2000
MAX_CUE_LINES = 32
# Shown of an offending line in a message: enough to find it.
QUOTE_CHARS = 40
# 100 hours: far past any video the platform accepts, and no number overflows.
MAX_MILLIS = 100 * 3600 * 1000

_VTT_TIME = re.compile(r"(?:(\d{2,3}):)?([0-5]\d):([0-5]\d)\.(\d{3})")
_SRT_TIME = re.compile(r"(\d{1,3}):([0-5]\d):([0-5]\d)[,.](\d{3})")
_ARROW = re.compile(r"[ \t]+-->[ \t]+")
_TIMING_ATTEMPT = re.compile(r"\s*(\d+:)?\d+:\d+[.,]\d+\s*[-=>\u2013\u2014]+")
# SRT writers put display coordinates after the end time: "X1:100 X2:600 Y1:50 Y2:80".
_SRT_COORDINATES = re.compile(r"([ \t]+[XY][12]:\d+)+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
# ASS override blocks that SRT files carry ({\an8}, {\i1}): styling WebVTT has no word for.
_ASS_OVERRIDE = re.compile(r"\{\\[^{}]*\}")
_TAG = re.compile(r"<(/?)([A-Za-z]+)((?:\.[^\s.<>]+)*)(?:[ \t]+([^<>]*))?>")
_TIMESTAMP_TAG = re.compile(r"<(\d{2,3}:[0-5]\d:[0-5]\d\.\d{3}|[0-5]\d:[0-5]\d\.\d{3})>")
_REFERENCE = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]{1,31}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});")
_CLASS = re.compile(r"[A-Za-z0-9_-]{1,32}")
CUE_TAGS = frozenset(("c", "i", "b", "u", "ruby", "rt", "v", "lang"))
ANNOTATED_TAGS = frozenset(("v", "lang"))

# The cue settings WebVTT defines, and the values each takes.
_PERCENT = r"\d{1,3}(?:\.\d+)?%"
_SETTINGS = {
    "vertical": re.compile(r"rl|lr"),
    "line": re.compile(rf"(?:-?\d{{1,4}}|{_PERCENT})(?:,(?:start|center|end))?"),
    "position": re.compile(rf"{_PERCENT}(?:,(?:line-left|center|line-right))?"),
    "size": re.compile(_PERCENT),
    "align": re.compile(r"start|center|end|left|right"),
    "region": re.compile(r"[^\s]{1,64}"),
}


class CaptionError(InvalidInput):
    """A caption file that cannot be accepted; the message names the line and the fault."""

    code = "invalid_captions"


@dataclass(frozen=True)
class Cue:
    """One cue: from `start` to `end` (milliseconds), its sanitised text and cue settings."""

    start: int
    end: int
    text: str
    settings: str = ""


@dataclass(frozen=True)
class Captions:
    """A caption file as read: the format it was in ("vtt" or "srt") and its cues, in order."""

    format: str
    cues: list[Cue]


def read_captions(data: bytes, *, max_bytes: int, max_cues: int) -> Captions:
    """Read a WebVTT or SRT file (told apart by their first line), strictly; CaptionError
    names the first line at fault."""
    if len(data) > max_bytes:
        raise CaptionError(f"the caption file has {len(data)} bytes; at most {max_bytes} are taken")
    lines = _decode(data).split("\n")
    if _is_webvtt(lines[0]):
        captions = Captions(WEBVTT, _read_webvtt(lines))
    elif _looks_like_srt(lines):
        captions = Captions(SRT, _read_srt(lines))
    else:
        raise CaptionError(
            "line 1: this is neither WebVTT (its first line is 'WEBVTT') nor SRT (it starts "
            "with a cue number, then a timing such as 00:00:01,000 --> 00:00:04,000): "
            f"{_quote(lines[0])}"
        )
    if len(captions.cues) > max_cues:
        raise CaptionError(f"the file has {len(captions.cues)} cues; at most {max_cues} are taken")
    return captions


def shifted(cues: list[Cue], millis: int) -> list[Cue]:
    """The cues `millis` earlier (a cue cut at time 0; one that ends by then is dropped)."""
    moved = [
        Cue(max(0, cue.start - millis), cue.end - millis, cue.text, cue.settings)
        for cue in cues
        if cue.end - millis > 0
    ]
    return [cue for cue in moved if cue.end > cue.start]


def to_webvtt(cues: list[Cue]) -> str:
    """The cues as a WebVTT file (what is stored, and what the HLS segments are cut from)."""
    return "WEBVTT\n\n" + "".join(cue_block(cue) for cue in cues)


def cue_block(cue: Cue) -> str:
    """One cue as a WebVTT block, its blank line included."""
    settings = f" {cue.settings}" if cue.settings else ""
    return f"{timestamp(cue.start)} --> {timestamp(cue.end)}{settings}\n{cue.text}\n\n"


def timestamp(millis: int) -> str:
    """Milliseconds as a WebVTT timestamp, hours always written: 01:02:03.456."""
    seconds, ms = divmod(millis, 1000)
    minutes, s = divmod(seconds, 60)
    hours, m = divmod(minutes, 60)
    return f"{hours:02d}:{m:02d}:{s:02d}.{ms:03d}"


# ---- text ------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    """UTF-8 text (a BOM dropped) with every line break made "\\n"."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CaptionError(
            f"line {line}: the file is not UTF-8 text (save it as UTF-8 and send it again)"
        ) from None
    if "\x00" in text:
        raise CaptionError(f"line {text[: text.index(chr(0))].count(chr(10)) + 1}: a NUL character")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _quote(line: str) -> str:
    """A line as a message shows it: bounded, control characters out."""
    shown = _CONTROL.sub("", line)
    return repr(shown[:QUOTE_CHARS] + ("…" if len(shown) > QUOTE_CHARS else ""))


def _blocks(lines: list[str], start: int) -> Iterator[tuple[int, list[str]]]:
    """The blocks of non-blank lines from `start` on, each with its first line's number."""
    block: list[str] = []
    first = 0
    for index in range(start, len(lines)):
        line = lines[index]
        if line.strip():
            if not block:
                first = index + 1
            block.append(line)
        elif block:
            yield first, block
            block = []
    if block:
        yield first, block


# ---- WebVTT ----------------------------------------------------------------------------


def _is_webvtt(first: str) -> bool:
    return first == "WEBVTT" or (first.startswith("WEBVTT") and first[6] in " \t")


def _read_webvtt(lines: list[str]) -> list[Cue]:
    header_end = _header_end(lines)
    cues: list[Cue] = []
    for number, block in _blocks(lines, header_end):
        keyword = _keyword(block[0])
        if keyword is not None:
            _check_non_cue(number, block, keyword, after_cues=bool(cues))
            continue
        cue = _webvtt_cue(number, block)
        if cue is not None:
            _check_order(number, cues, cue)
            cues.append(cue)
    return cues


def _keyword(line: str) -> str | None:
    """NOTE, STYLE or REGION when `line` opens such a block, else None (a cue)."""
    for keyword in ("NOTE", "STYLE", "REGION"):
        if line == keyword or line.startswith((keyword + " ", keyword + "\t")):
            return keyword
    return None


def _header_end(lines: list[str]) -> int:
    """The index of the first line after the header (WEBVTT and its metadata lines)."""
    index = 1
    while index < len(lines) and lines[index].strip():
        if "-->" in lines[index]:
            raise CaptionError(
                f"line {index + 1}: a cue right under the header: put a blank line after "
                "the WEBVTT line (and its header lines)"
            )
        index += 1
    return index


def _check_non_cue(number: int, block: list[str], keyword: str, *, after_cues: bool) -> None:
    """A NOTE, STYLE or REGION block: checked, and not carried over."""
    for offset, line in enumerate(block):
        if "-->" in line:
            raise CaptionError(
                f"line {number + offset}: '-->' inside a {keyword} block: end the block "
                "with a blank line before the next cue"
            )
    if keyword != "NOTE" and after_cues:
        raise CaptionError(
            f"line {number}: a {keyword} block after the first cue; WebVTT allows it only "
            "before the cues"
        )


def _webvtt_cue(number: int, block: list[str]) -> Cue | None:
    """A cue block: an optional identifier line, the timing line, the text lines."""
    timing_at = 0 if "-->" in block[0] or _timing_attempt(block[0]) else 1
    if timing_at >= len(block) or "-->" not in block[timing_at]:
        raise CaptionError(
            f"line {number + timing_at if timing_at < len(block) else number}: expected a cue "
            f"timing such as 00:00:01.000 --> 00:00:04.000, found "
            f"{_quote(block[min(timing_at, len(block) - 1)])}"
        )
    line = number + timing_at
    start, end, rest = _timing(line, block[timing_at], _VTT_TIME, "hh:mm:ss.ttt or mm:ss.ttt")
    settings = _settings(line, rest)
    text = _cue_text(line + 1, block[timing_at + 1 :], srt=False)
    return Cue(start, end, text, settings) if text else None


def _timing_attempt(line: str) -> bool:
    """Whether a line that has no '-->' was still meant as a timing ("00:01.000 -> 00:02.000"),
    not as a cue identifier: the fault is then on this line."""
    return _TIMING_ATTEMPT.match(line) is not None


def _settings(line: int, text: str) -> str:
    """The cue settings, each checked; `region` is dropped with the REGION blocks."""
    kept: dict[str, str] = {}
    for setting in text.split():
        name, colon, value = setting.partition(":")
        pattern = _SETTINGS.get(name)
        if pattern is None or not colon:
            raise CaptionError(
                f"line {line}: unknown cue setting {_quote(setting)}; WebVTT's are "
                f"{', '.join(_SETTINGS)} (as name:value)"
            )
        if not pattern.fullmatch(value):
            raise CaptionError(f"line {line}: the cue setting {_quote(setting)} has a wrong value")
        if name in kept:
            raise CaptionError(f"line {line}: the cue setting '{name}' is given twice")
        kept[name] = value
    return " ".join(f"{name}:{value}" for name, value in kept.items() if name != "region")


# ---- SRT -------------------------------------------------------------------------------


def _looks_like_srt(lines: list[str]) -> bool:
    """SRT starts with a cue number (or, from lax writers, the first timing)."""
    first = next((line.strip() for line in lines if line.strip()), "")
    return first.isdigit() or "-->" in first


def _read_srt(lines: list[str]) -> list[Cue]:
    cues: list[Cue] = []
    for number, block in _blocks(lines, 0):
        cue = _srt_cue(number, block)
        if cue is not None:
            _check_order(number, cues, cue)
            cues.append(cue)
    return cues


def _srt_cue(number: int, block: list[str]) -> Cue | None:
    """A cue block: the cue number (lax writers leave it out), the timing, the text lines."""
    timing_at = 1 if block[0].strip().isdigit() else 0
    if timing_at >= len(block) or "-->" not in block[timing_at]:
        at = min(timing_at, len(block) - 1)
        raise CaptionError(
            f"line {number + at}: expected "
            + ("a cue timing" if timing_at else "a cue number, then its timing")
            + f" such as 00:00:01,000 --> 00:00:04,000, found {_quote(block[at])}"
        )
    line = number + timing_at
    timing = _SRT_COORDINATES.sub("", block[timing_at].strip())
    start, end, rest = _timing(line, timing, _SRT_TIME, "hh:mm:ss,ttt")
    if rest:
        raise CaptionError(f"line {line}: unexpected text after the end time: {_quote(rest)}")
    text = _cue_text(line + 1, block[timing_at + 1 :], srt=True)
    return Cue(start, end, text) if text else None


# ---- what both formats share ---------------------------------------------------------------


def _timing(line: int, text: str, pattern: re.Pattern[str], form: str) -> tuple[int, int, str]:
    """(start, end, what follows the end) of a timing line `start --> end ...`."""
    parts = _ARROW.split(text.strip(), maxsplit=1)
    if len(parts) != 2:
        raise CaptionError(
            f"line {line}: a cue timing is 'start --> end', with a space on each side of the "
            f"arrow: found {_quote(text)}"
        )
    end_text, *rest = parts[1].split(maxsplit=1)
    start = _millis(line, parts[0], pattern, form)
    end = _millis(line, end_text, pattern, form)
    if end <= start:
        raise CaptionError(
            f"line {line}: the cue ends ({timestamp(end)}) before it starts "
            f"({timestamp(start)}): the end time must be later"
        )
    return start, end, rest[0].strip() if rest else ""


def _millis(line: int, text: str, pattern: re.Pattern[str], form: str) -> int:
    found = pattern.fullmatch(text)
    if found is None:
        raise CaptionError(f"line {line}: {_quote(text)} is not a timestamp ({form})")
    hours, minutes, seconds, millis = (int(group or 0) for group in found.groups())
    value = ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis
    if value > MAX_MILLIS:
        raise CaptionError(f"line {line}: {_quote(text)} is past 100 hours")
    return value


def _check_order(line: int, cues: list[Cue], cue: Cue) -> None:
    """Cues come in the order they start (WebVTT requires it; players rely on it)."""
    if cues and cue.start < cues[-1].start:
        raise CaptionError(
            f"line {line}: this cue starts at {timestamp(cue.start)}, before the cue above it "
            f"({timestamp(cues[-1].start)}): cues must be in time order"
        )


def _cue_text(first_line: int, lines: list[str], *, srt: bool) -> str:
    """A cue's text lines, checked and sanitised, joined by line breaks ("" when empty)."""
    if len(lines) > MAX_CUE_LINES:
        raise CaptionError(
            f"line {first_line}: a cue of {len(lines)} lines; at most {MAX_CUE_LINES}"
        )
    for offset, line in enumerate(lines):
        if "-->" in line:
            raise CaptionError(
                f"line {first_line + offset}: '-->' in a cue's text: a blank line must end "
                "the cue above before the next timing"
            )
    text = "\n".join(_clean_line(line, srt=srt) for line in lines).strip("\n")
    if len(text) > MAX_CUE_CHARS:
        raise CaptionError(
            f"line {first_line}: the cue's text has {len(text)} characters; at most {MAX_CUE_CHARS}"
        )
    return text


def _clean_line(line: str, *, srt: bool) -> str:
    """One line of cue text reduced to what WebVTT cue text may hold (see the module doc)."""
    line = _CONTROL.sub("", line.replace("\t", " ")).rstrip()
    if srt:
        line = _ASS_OVERRIDE.sub("", line)
    out: list[str] = []
    index = 0
    while index < len(line):
        char = line[index]
        if char == "<":
            kept, index = _tag(line, index, srt=srt)
            out.append(kept)
            continue
        if char == "&":
            reference = _REFERENCE.match(line, index)
            out.append(reference.group(0) if reference else "&amp;")
            index = reference.end() if reference else index + 1
            continue
        out.append("&gt;" if char == ">" else char)
        index += 1
    return "".join(out)


def _tag(line: str, index: int, *, srt: bool) -> tuple[str, int]:
    """What becomes of the `<` at `index`: a tag kept (rewritten plainly), a tag dropped,
    or an escaped `<`; and where reading goes on."""
    stamp = _TIMESTAMP_TAG.match(line, index)
    if stamp is not None:
        return stamp.group(0), stamp.end()
    tag = _TAG.match(line, index)
    if tag is None:
        return "&lt;", index + 1
    closing, name, classes, annotation = tag.groups()
    name = name.lower() if srt else name
    if name not in CUE_TAGS:
        return "", tag.end()  # <font color=...>, <span>, <script>: the text stays, the tag goes
    if closing:
        return f"</{name}>", tag.end()
    kept = "".join(f".{c}" for c in classes.split(".")[1:] if _CLASS.fullmatch(c))
    note = _plain(annotation or "") if name in ANNOTATED_TAGS else ""
    return f"<{name}{kept}{' ' + note if note else ''}>", tag.end()


def _plain(text: str) -> str:
    """An annotation (a voice's name, a language) as plain text inside a tag."""
    cleaned = text.strip().replace("&", "&amp;")
    return cleaned[:64]
