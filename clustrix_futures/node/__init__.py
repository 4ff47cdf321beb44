"""The node side: what runs tasks in a local pool process or on a compute node.

* :mod:`~clustrix_futures.node.worker` — the entry point (``python -m clustrix_futures.node.worker``);
* :mod:`~clustrix_futures.node.calls` — running one task, or one chunk of a map;
* :mod:`~clustrix_futures.node.s3` — an array element of a run whose storage is S3 (boto3, imported only then);
* :mod:`~clustrix_futures.node.host_supervisor` — the supervisor of the plain-SSH-host backend's elements.

It imports only :mod:`clustrix_futures.runfiles`, :mod:`clustrix_futures.errors`, the standard library and
cloudpickle (and boto3 in ``s3``), so a compute node needs nothing else and a job starts fast; a test keeps it so.
"""
