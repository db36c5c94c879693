"""`vp`, the platform's command-line client: upload over tus (resumable), follow transcoding,
list, inspect, delete, sign playback links.

It is a client: it speaks HTTP to a platform and imports none of the services' code, so it
runs on a machine with only its own few packages (httpx, typer, rich, platformdirs).
"""
