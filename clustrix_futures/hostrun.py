"""Kept for jobs launched by an older client: ``python -m clustrix_futures.hostrun`` is now
``python -m clustrix_futures.node.host_supervisor``."""

import sys

from clustrix_futures.node.host_supervisor import main

if __name__ == "__main__":
    main(sys.argv[1:])
