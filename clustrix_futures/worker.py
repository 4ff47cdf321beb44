"""Kept for jobs queued by an older client: ``python -m clustrix_futures.worker`` is now
``python -m clustrix_futures.node.worker``. The names those jobs' pickled map chunks refer to here stay too."""

import sys

from clustrix_futures.node.calls import apply_chunk as apply_chunk
from clustrix_futures.node.worker import main
from clustrix_futures.runfiles.outcomes import ChunkResult as ChunkResult

if __name__ == "__main__":
    main(sys.argv[1:])
