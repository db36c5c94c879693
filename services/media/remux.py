"""Pure builder of the remux that turns a rung into one downloadable MP4; runs nothing.

The rung's MPEG-TS segments and the audio rendition's are copied as they are (no decoding,
no encoding: it costs disk reads, not CPU) into an MP4 whose index sits before the media, so a
player starts a download before it has all of it.
"""

from pathlib import Path

from services.media.demuxers import HLS_FORMATS, input_args


def rung_mp4_command(
    *, ffmpeg: str, video_playlist: Path, audio_playlist: Path | None, out: Path
) -> list[str]:
    """One ffmpeg run copying a rung (and the audio, if any) from their playlists into `out`."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
    # -i before absolute paths: a name is never read as an option or a protocol. Input options
    # hold for the one input they precede: each playlist reads our own segments and no more.
    argv += [*input_args(HLS_FORMATS), "-i", str(video_playlist.absolute())]
    if audio_playlist is not None:
        argv += [*input_args(HLS_FORMATS), "-i", str(audio_playlist.absolute())]
        argv += ["-map", "0:v:0", "-map", "1:a:0"]
    else:
        argv += ["-map", "0:v:0"]
    argv += ["-c", "copy", "-sn", "-dn"]
    if audio_playlist is not None:
        # ADTS headers (how MPEG-TS carries AAC) become the MP4's AudioSpecificConfig.
        argv += ["-bsf:a", "aac_adtstoasc"]
    # faststart: a second pass moves the index (moov) before the media (mdat), so a browser
    # plays a download while it arrives and a Range request for the start is enough to seek.
    argv += ["-movflags", "+faststart"]
    return [*argv, "-f", "mp4", str(out.absolute())]
