"""What streaming a running element's results costs on S3: the numbered journal pieces of ``node/s3.py``.

Run from the repository root, with the test S3 up (``tests/infra/s3.sh``) or any S3 the environment's
credentials reach::

    python benchmarks/bench_s3_pieces.py [--endpoint-url URL] [--bucket B] [--rounds N]

A running element puts at most one piece every ``SEGMENT_SECONDS``, each holding what its journal gained since
the last one (a running chunk's finished items), and deletes them with one request per thousand at its end. This
times the PUT of a piece of several sizes (median of ``N``) through the node's own client and prints each as a
share of the element's time: the piece's PUT blocks the chunk's reporting thread, not the chunk's items, so it
is an upper bound of what streaming takes from the element.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

from clustrix_futures.node.s3 import SEGMENT_SECONDS, s3_client

SIZES = (1_000, 100_000, 1_000_000)


def test_s3() -> dict[str, str]:
    """The test S3's endpoint, bucket and credentials (``tests/infra/s3.sh env``)."""
    script = Path(__file__).resolve().parent.parent / "tests" / "infra" / "s3.sh"
    out = subprocess.run(["bash", str(script), "env"], capture_output=True, text=True, check=True).stdout
    return dict(line.replace("export ", "", 1).split("=", 1) for line in out.splitlines() if "=" in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint-url")
    parser.add_argument("--bucket")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if args.endpoint_url is None:
        env = test_s3()
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        args.endpoint_url, args.bucket = env["CF_S3_ENDPOINT"], args.bucket or env["CF_S3_BUCKET"]
    client = s3_client(args.endpoint_url)
    prefix = f"bench-pieces-{os.urandom(3).hex()}"
    print(f"one piece every {SEGMENT_SECONDS:g} s at most; PUT of one piece, median of {args.rounds}:")
    keys = []
    for size in SIZES:
        body = os.urandom(size)
        seconds = []
        for _ in range(args.rounds):
            key = f"{prefix}/results/0-0.{len(keys)}.seg"
            start = time.perf_counter()
            client.put_object(Bucket=args.bucket, Key=key, Body=body)
            seconds.append(time.perf_counter() - start)
            keys.append(key)
        median = statistics.median(seconds)
        print(f"  {size:>9,} bytes  {median * 1000:7.1f} ms  = {median / SEGMENT_SECONDS:6.2%} of the element's time")
    start = time.perf_counter()
    for first in range(0, len(keys), 1000):
        client.delete_objects(Bucket=args.bucket, Delete={"Objects": [{"Key": k} for k in keys[first:first + 1000]],
                                                          "Quiet": True})
    print(f"deleting {len(keys)} pieces at the end: {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
