"""What the tests stand on: the real infrastructure, executors per backend, the scheduler-command shim, the
Kubernetes stand-in, the functions tasks run (:mod:`support.workloads`), wait helpers, and the fake scheduler
of the unit tier. Test modules import from here, never from one another."""
