"""The local backend: :class:`~clustrix_futures.local.pool.LocalPool`, fresh interpreters fed over sockets."""
