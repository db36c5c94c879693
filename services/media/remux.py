"""Pure builder of the remux that turns a rung into one downloadable MP4; runs nothing.

The rung's MPEG-TS segments and the audio rendition's are copied as they are (no decoding,
no encoding: it costs disk reads, not CPU) into an MP4 whose index sits before the media, so a
player starts a download before it has all of it.
"""

from pathlib import Path

from services.media.demuxers import HLS_FORMATS, input_args


def rung_mp4_command(
    *, ffmpeg: str, video_playlist: Path | None, audio_playlist: Path | None, out: Path
) -> list[str]:
    """One ffmpeg run copying a rung (and the audio, if any) from their playlists into `out`;
    with no rung (an audio-only video), the audio alone (an .m4a)."""
    playlists = [p for p in (video_playlist, audio_playlist) if p is not None]
    if not playlists:
        raise ValueError("a download needs a rung or the audio to copy")
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
    # -i before absolute paths: a name is never read as an option or a protocol. Input options
    # hold for the one input they precede: each playlist reads our own segments and no more.
    for playlist in playlists:
        argv += [*input_args(HLS_FORMATS), "-i", str(playlist.absolute())]
    # The maps follow every input: placed before an -i, ffmpeg would take them as its options.
    for index, playlist in enumerate(playlists):
        argv += ["-map", f"{index}:{'v' if playlist is video_playlist else 'a'}:0"]
    argv += ["-c", "copy", "-sn", "-dn"]
    if audio_playlist is not None:
        # ADTS headers (how MPEG-TS carries AAC) become the MP4's AudioSpecificConfig.
        argv += ["-bsf:a", "aac_adtstoasc"]
    # faststart: a second pass moves the index (moov) before the media (mdat), so a browser
    # plays a download while it arrives and a Range request for the start is enough to seek.
    argv += ["-movflags", "+faststart"]
    return [*argv, "-f", "mp4", str(out.absolute())]
