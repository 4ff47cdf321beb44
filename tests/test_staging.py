"""Staging over the real sshd (user cfuser, whose /usr/bin/python3 has neither cloudpickle nor this package):
the node's code travels as ONE archive write and one unpack command, and a real element then runs from it."""

from __future__ import annotations

import asyncio
import posixpath
import secrets
from collections.abc import Sequence
from typing import Any, Optional

import cloudpickle
import pytest
from support.infra import REMOTE_WORK_DIR, ssh_options

from clustrix_futures import config
from clustrix_futures.engine.staging import stage
from clustrix_futures.remote.ssh import SSHTransport
from clustrix_futures.remote.transport import Completed
from clustrix_futures.runfiles.batches import encode_batch
from clustrix_futures.runfiles.journal import read_journal
from clustrix_futures.runfiles.layout import SUBDIRECTORIES, RunDir
from clustrix_futures.runfiles.outcomes import loads_outcome

pytestmark = pytest.mark.ssh
REMOTE_PYTHON = "/usr/bin/python3"


class Counted:
    """A real transport whose writes and commands are counted (and otherwise left alone)."""

    def __init__(self, transport: SSHTransport) -> None:
        self.transport = transport
        self.writes: list[str] = []
        self.commands: list[Sequence[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    async def write(self, path: str, data: bytes, mode: int = 0o600) -> None:
        self.writes.append(path)
        await self.transport.write(path, data, mode)

    async def run(self, argv: Sequence[str], input: Optional[bytes] = None) -> Completed:
        self.commands.append(argv)
        return await self.transport.run(argv, input)


def test_staging_is_one_write_and_one_command_and_an_element_runs_from_it(sshd):
    async def scenario() -> tuple[Counted, list[str], list[tuple[int, Any]], str]:
        transport = SSHTransport(config.resolve(None, "slurm", None, ssh_options(sshd)))
        await transport.connect()
        run_dir = RunDir(posixpath.join(REMOTE_WORK_DIR, f"staging-{secrets.token_hex(4)}"))
        try:
            for sub in ("", *SUBDIRECTORIES):
                await transport.makedirs(run_dir.path(sub) if sub else run_dir.root)
            counted = Counted(transport)
            await stage(counted, run_dir.code, REMOTE_PYTHON)
            left = await transport.listdir(run_dir.root)
            calls = [(0, (pow, (7, 2), {})), (1, (int, ("seven",), {}))]
            await transport.write(run_dir.batch_file(0), encode_batch([[(t, cloudpickle.dumps(c)) for t, c in calls]]))
            ran = await transport.run(["env", f"PYTHONPATH={run_dir.code}", REMOTE_PYTHON, "-m",
                                       "clustrix_futures.node.worker", "element", run_dir.root, "0", "0"])
            assert ran.ok, ran.describe()
            data = (await transport.read_many([run_dir.result(0, 0)]))[run_dir.result(0, 0)] or b""
            outcomes = [(task_id, loads_outcome(body)) for task_id, body in read_journal(data)]
            where = await transport.run(["env", f"PYTHONPATH={run_dir.code}", REMOTE_PYTHON, "-c",
                                         "import cloudpickle; print(cloudpickle.__file__)"])
            return counted, left, outcomes, where.stdout.strip()
        finally:
            await transport.remove_tree(run_dir.root)
            await transport.close()

    counted, left, outcomes, pickler = asyncio.run(scenario())
    assert len(counted.writes) == 1 and len(counted.commands) == 1
    assert counted.commands[0][0] == REMOTE_PYTHON
    assert sorted(left) == sorted(["code", *SUBDIRECTORIES])  # the archive is gone
    assert pickler.startswith(REMOTE_WORK_DIR) and "/code/cloudpickle/" in pickler
    assert [(task_id, ok, value if ok else type(value)) for task_id, (ok, value, _, _) in outcomes] == [
        (0, True, 49), (1, False, ValueError)]
