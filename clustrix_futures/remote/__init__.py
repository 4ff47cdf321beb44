"""Reaching a cluster: where commands run and where a run's files live.

* :mod:`~clustrix_futures.remote.transport` — the Transport protocol, and this machine's (subprocesses, files);
* :mod:`~clustrix_futures.remote.ssh` — one asyncssh connection (commands and SFTP) that survives drops;
* :mod:`~clustrix_futures.remote.storage` — payloads and results on the transport's filesystem or on S3;
* :mod:`~clustrix_futures.remote.site` — one cluster as this machine reaches it (connect, paths, "where");
* :mod:`~clustrix_futures.remote.files` — ``ex.files``: ls, find, stat, exists, glob where the tasks run.
"""
