"""The cluster engine: how submissions become array jobs and their results come back.

``session``     :class:`~clustrix_futures.engine.session.ClusterEngine`, the executor's engine for scheduler
                backends: one run, from start-up to clean-up
``bridge``      the thread <-> loop bridge: the engine's event loop on its own thread
``startup``     before the first submission: probe, staging, run directory, manifest
``records``     what is recorded of each task and array element
``submission``  batching: inbox -> arrays -> reruns
``monitor``     the cycle: observe (status, listings, results) and resolve
``retrying``    whether an ended element runs again, and with what memory or time
"""
