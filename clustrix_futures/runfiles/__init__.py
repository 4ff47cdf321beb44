"""The client↔node contract: the files a run is made of, each format written and read in one module.

* :mod:`~clustrix_futures.runfiles.layout` — where everything lies in a run directory (:class:`RunDir`, on a
  filesystem or S3) and the job script that runs an element;
* :mod:`~clustrix_futures.runfiles.batches` — the batch file: the tasks of an array, indexed by element;
* :mod:`~clustrix_futures.runfiles.journal` — the result journal (version 2): one framed outcome per task;
* :mod:`~clustrix_futures.runfiles.outcomes` — what a task's run gives, encoded on the node, decoded on the client;
* :mod:`~clustrix_futures.runfiles.records` — the JSON records (manifest, batch documents).

This is the only code both sides import. It imports only the standard library, cloudpickle and
:mod:`clustrix_futures.errors`: nothing of the client.
"""
