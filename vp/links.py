"""The public URLs of a video: where to watch it, embed it and play it in any HLS player.

Every URL the client prints is built here, and only here, from the server's base URL.
"""

from urllib.parse import quote


def links(server: str, video_id: str, token: str | None = None) -> dict[str, str]:
    """watch (the page's player), embed (for an <iframe>) and master (the HLS playlist);
    with a playback `token` (private playback), each opens the video until it expires."""
    query = f"?token={quote(token, safe='')}" if token else ""
    return {
        # The clean watch link (it carries the oEmbed discovery link); the token in its query.
        "watch": f"{server}/watch/{video_id}{query}",
        "embed": f"{server}/embed/{video_id}{query}",
        "master": f"{server}/stream/{video_id}/master.m3u8{query}",
    }
