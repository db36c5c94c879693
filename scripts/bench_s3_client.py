"""Which S3 client the S3 store uses: boto3 against obstore, measured on the same server.

    .venv/bin/python scripts/bench_s3_client.py [--mib 64] [--part-mib 8] [--small 300]
                                                [--small-kib 16] [--rounds 3]

Starts SeaweedFS (`weed mini`, the test suite's server: tests/s3server.py) in a temporary
folder and, with each client, puts a MIB-sized object in PART-MIB parts (one part at a time,
then four at once), reads it back as a stream, then puts and gets SMALL objects of SMALL-KIB
one after the other (playlists, segments). Prints the median of ROUNDS rounds in MB/s (and
objects/s for the small ones) and obstore's figure over boto3's.
"""

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import obstore  # noqa: E402
from obstore.store import S3Store as ObStore  # noqa: E402

from services.core.storage.parts import content_md5  # noqa: E402
from services.core.storage.s3 import S3Store  # noqa: E402
from tests.s3server import S3Server, start_s3_server  # noqa: E402

MIB = 1024 * 1024
READ_PIECE = MIB


def boto3_client(server: S3Server) -> Any:
    """The boto3 client the store itself makes (its timeouts, retries, pool and checksums)."""
    store = S3Store(
        server.bucket,
        endpoint_url=server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        region=server.region,
    )
    return store._client


def obstore_client(server: S3Server) -> ObStore:
    """obstore on the same server."""
    return ObStore(
        server.bucket,
        endpoint=server.endpoint,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        region=server.region,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


class Boto3Bench:
    """The operations measured, with boto3 (multipart by hand, as the store does it)."""

    name = "boto3"

    def __init__(self, server: S3Server) -> None:
        self.client = boto3_client(server)
        self.bucket = server.bucket

    def put_big(self, key: str, parts: list[bytes], concurrency: int) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]

        def one(numbered: tuple[int, bytes]) -> dict[str, Any]:
            number, data = numbered
            digest = hashlib.md5(data, usedforsecurity=False).digest()
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload,
                PartNumber=number,
                Body=data,
                ContentMD5=content_md5(digest),
            )
            return {"PartNumber": number, "ETag": answer["ETag"]}

        with ThreadPoolExecutor(concurrency) as pool:
            done = list(pool.map(one, enumerate(parts, 1)))
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done}
        )

    def get_big(self, key: str) -> int:
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        return sum(len(piece) for piece in body.iter_chunks(READ_PIECE))

    def put_small(self, key: str, data: bytes) -> None:
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentMD5=content_md5(digest)
        )

    def get_small(self, key: str) -> int:
        return len(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())


class ObstoreBench:
    """The same operations with obstore (its own multipart writer: no upload id of ours)."""

    name = "obstore"

    def __init__(self, server: S3Server) -> None:
        self.store = obstore_client(server)

    def put_big(self, key: str, parts: list[bytes], concurrency: int) -> None:
        obstore.put(
            self.store,
            key,
            iter(parts),
            use_multipart=True,
            chunk_size=len(parts[0]),
            max_concurrency=concurrency,
        )

    def get_big(self, key: str) -> int:
        result = obstore.get(self.store, key)
        return sum(len(piece) for piece in result.stream(min_chunk_size=READ_PIECE))

    def put_small(self, key: str, data: bytes) -> None:
        obstore.put(self.store, key, data, use_multipart=False)

    def get_small(self, key: str) -> int:
        return len(obstore.get(self.store, key).bytes())


def timed(action: Callable[[], object]) -> float:
    """Seconds `action` took."""
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def one_round(bench: Any, args: argparse.Namespace, tag: str) -> dict[str, float]:
    """Each measurement once: MB/s for the big object, objects/s for the small ones."""
    parts = [os.urandom(args.part_mib * MIB) for _ in range(args.mib // args.part_mib)]
    total = sum(len(p) for p in parts)
    small = os.urandom(args.small_kib * 1024)
    keys = [f"bench/{tag}/small/{i:05d}" for i in range(args.small)]
    figures = {}
    for concurrency in (1, 4):
        seconds = timed(lambda c=concurrency: bench.put_big(f"bench/{tag}/big{c}", parts, c))
        figures[f"put {args.mib} MiB, {args.part_mib} MiB parts x{concurrency}"] = (
            total / seconds / 1e6
        )
    seconds = timed(lambda: bench.get_big(f"bench/{tag}/big1"))
    figures[f"get {args.mib} MiB (stream)"] = total / seconds / 1e6
    seconds = timed(lambda: [bench.put_small(k, small) for k in keys])
    figures[f"put {args.small} x {args.small_kib} KiB (objects/s)"] = args.small / seconds
    seconds = timed(lambda: [bench.get_small(k) for k in keys])
    figures[f"get {args.small} x {args.small_kib} KiB (objects/s)"] = args.small / seconds
    return figures


def run(args: argparse.Namespace) -> None:
    """Start the server, measure both clients in alternating order, print the medians."""
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as folder:
        server = start_s3_server(Path(folder) / "weed")
        try:
            benches = [Boto3Bench(server), ObstoreBench(server)]
            results: dict[str, dict[str, list[float]]] = {b.name: {} for b in benches}
            for round_number in range(args.rounds):
                order = benches if round_number % 2 == 0 else benches[::-1]
                for bench in order:
                    figures = one_round(bench, args, f"{bench.name}-{round_number}")
                    for label, value in figures.items():
                        results[bench.name].setdefault(label, []).append(value)
        finally:
            server.stop()
    print_table(results)


def print_table(results: dict[str, dict[str, list[float]]]) -> None:
    """Medians per client and obstore/boto3."""
    print(f"{'measurement':<44}{'boto3':>10}{'obstore':>10}{'obstore/boto3':>15}")
    for label, values in results["boto3"].items():
        boto = statistics.median(values)
        obs = statistics.median(results["obstore"][label])
        print(f"{label:<44}{boto:>10.1f}{obs:>10.1f}{obs / boto:>15.2f}")


def main() -> None:
    """Parse the command line and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="size of the big object (MiB)")
    parser.add_argument("--part-mib", type=int, default=8, help="its part size (MiB)")
    parser.add_argument("--small", type=int, default=300, help="how many small objects")
    parser.add_argument("--small-kib", type=int, default=16, help="size of each (KiB)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are printed")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
