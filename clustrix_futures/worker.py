"""Kept for jobs queued by an older client: ``python -m clustrix_futures.worker`` is now
``python -m clustrix_futures.node.worker``."""

import sys

from clustrix_futures.node.worker import main

if __name__ == "__main__":
    main(sys.argv[1:])
