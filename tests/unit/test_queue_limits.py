"""The queue limits Grid Engine and PBS report, for ``retry_policy``'s right-sizing (``Backend.limits_argv`` and
``parse_limits``), and the unit conversions they need (no infrastructure).

The Grid Engine output is in the form this project's Son of Grid Engine 8.1.9 prints (``qconf -sq``, its
values as written, ``sge_queue_conf(5)`` and ``sge_types(5)`` for the rest); tests/test_sge.py reads a live one.
The PBS output follows the ``qmgr -c "list queue Q"`` listings of the PBS Professional and Torque
documentation: no PBS server runs on this project's machines, so it is not checked against a live one.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from clustrix_futures.remote.transport import LocalTransport
from clustrix_futures.schedulers.base import BackendContext, Limits
from clustrix_futures.schedulers.command import CommandScheduler
from clustrix_futures.schedulers.pbs import PbsBackend
from clustrix_futures.schedulers.sge import SgeBackend
from clustrix_futures.schedulers.units import clock_seconds, size_megabytes

CONTEXT = BackendContext("/usr/bin/python3", "/runs/r1")


# ------------------------------------------------------------------------ units


@pytest.mark.parametrize("text,seconds", [
    ("3600", 3600), ("01:00:00", 3600), ("1:0:1", 3601), ("1::1", 3601), ("::30", 30), ("90:00", 5400),
    ("720:00:00", 720 * 3600), ("24:00:00.500", 86400), ("0", 0),
])
def test_clock_seconds_reads_grid_engine_and_pbs_times(text: str, seconds: int) -> None:
    assert clock_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "INFINITY", "1:2:3:4", "1h", "-5", "1:x:3"])
def test_clock_seconds_refuses_other_forms(text: str) -> None:
    with pytest.raises(ValueError):
        clock_seconds(text)


def test_size_megabytes_takes_the_scheduler_s_units_and_rounds_down() -> None:
    units = {"": 1, "K": 1024, "M": 1024 ** 2, "k": 1000}
    assert size_megabytes("300M", units) == 300
    assert size_megabytes("1048576", units) == 1  # a bare number is what "" says: bytes here
    assert size_megabytes("2047K", units) == 1  # never above the limit it converts
    assert size_megabytes("2000000k", units) == 1907
    for bad in ("300G", "INFINITY", "1.5M", "M"):
        with pytest.raises(ValueError):
            size_megabytes(bad, units)


# ------------------------------------------------------------------------ Grid Engine


def sge_queue(name: str = "all.q", hostlist: str = "vm", h_vmem: str = "INFINITY", h_rt: str = "INFINITY",
              qtype: str = "BATCH INTERACTIVE") -> str:
    """``qconf -sq NAME`` as Son of Grid Engine 8.1.9 prints it (the lines that matter, in its order)."""
    return (f"qname                 {name}\nhostlist              {hostlist}\nseq_no                0\n"
            f"load_thresholds       NONE\nqtype                 {qtype}\npe_list               smp\n"
            f"slots                 16\ns_rt                  INFINITY\nh_rt                  {h_rt}\n"
            f"s_vmem                INFINITY\nh_vmem                {h_vmem}\n")


def test_sge_reads_the_named_queue_or_else_every_queue() -> None:
    backend = SgeBackend(CONTEXT)
    assert backend.limits_argv("short.q") == ["qconf", "-sq", "short.q"]
    assert backend.limits_argv(None) == ["qconf", "-sq", "*"]  # Grid Engine puts such a job in any queue


def test_sge_infinity_is_no_limit() -> None:
    assert SgeBackend(CONTEXT).parse_limits(sge_queue()) == Limits()


def test_sge_h_vmem_and_h_rt_are_the_limits_and_what_an_element_asking_for_none_gets() -> None:
    limits = SgeBackend(CONTEXT).parse_limits(sge_queue(h_vmem="300M", h_rt="01:00:00"))
    assert limits == Limits(mem_mb=300, seconds=3600, default_mem_mb=300, default_seconds=3600)


@pytest.mark.parametrize("h_vmem,mem_mb", [
    ("2G", 2048), ("1g", 953), ("1000000000", 953), ("512000K", 500), ("500000k", 476), ("1T", 1024 ** 2),
])
def test_sge_memory_units_are_grid_engine_s(h_vmem: str, mem_mb: int) -> None:
    """K, M, G, T are powers of 1024, k, m, g, t of 1000; a bare number is bytes (sge_types(5))."""
    assert SgeBackend(CONTEXT).parse_limits(sge_queue(h_vmem=h_vmem)).mem_mb == mem_mb


@pytest.mark.parametrize("h_rt,seconds", [("3600", 3600), ("1::1", 3601), ("00:00:06", 6), ("48:00:00", 172800)])
def test_sge_times_are_seconds_or_hours_minutes_seconds(h_rt: str, seconds: int) -> None:
    assert SgeBackend(CONTEXT).parse_limits(sge_queue(h_rt=h_rt)).seconds == seconds


def test_sge_a_value_it_cannot_read_is_no_limit_known() -> None:
    assert SgeBackend(CONTEXT).parse_limits(sge_queue(h_vmem="lots", h_rt="soon")) == Limits()
    assert SgeBackend(CONTEXT).parse_limits("") == Limits()


def test_sge_host_values_count_where_their_hosts_are_in_the_queue() -> None:
    backend = SgeBackend(CONTEXT)
    grown = sge_queue(hostlist="@allhosts @bigmem", h_vmem="4G,[@bigmem=64G]")
    assert backend.parse_limits(grown).mem_mb == 64 * 1024  # an element fits on the big hosts
    only_host = sge_queue(hostlist="vm", h_vmem="INFINITY,[vm=2G]", h_rt="INFINITY, [vm=1:00:00]")
    assert (backend.parse_limits(only_host).mem_mb, backend.parse_limits(only_host).seconds) == (2048, 3600)
    wrapped = sge_queue(hostlist="vm other", h_vmem="1G,[vm=2G], \\\n                      [other=3G]")
    assert backend.parse_limits(wrapped).mem_mb == 3072  # a long value continues on the next line


def test_sge_the_largest_over_the_batch_queues_listed() -> None:
    backend = SgeBackend(CONTEXT)
    two = sge_queue("short.q", h_vmem="1G", h_rt="1:00:00") + sge_queue("long.q", h_vmem="8G", h_rt="168:00:00")
    assert backend.parse_limits(two) == Limits(mem_mb=8192, seconds=168 * 3600, default_mem_mb=8192,
                                               default_seconds=168 * 3600)
    assert backend.parse_limits(sge_queue("short.q", h_rt="1:00:00") + sge_queue("long.q")).seconds is None
    interactive = sge_queue("short.q", h_rt="1:00:00") + sge_queue("login.q", qtype="INTERACTIVE")
    assert backend.parse_limits(interactive).seconds == 3600  # a batch job never goes to login.q


# ------------------------------------------------------------------------ PBS

PBSPRO_QUEUE = """\
Queue workq
    queue_type = Execution
    total_jobs = 0
    state_count = Transit:0 Queued:0 Held:0 Waiting:0 Running:0 Exiting:0 Begun:0
    resources_max.mem = 4gb
    resources_max.ncpus = 16
    resources_max.walltime = 24:00:00
    resources_default.mem = 500mb
    resources_default.walltime = 01:00:00
    resources_assigned.mem = 0kb
    resources_assigned.ncpus = 0
    enabled = True
    started = True
"""

TORQUE_QUEUE = """\
Queue batch
\tqueue_type = Execution
\ttotal_jobs = 0
\tstate_count = Transit:0 Queued:0 Held:0 Waiting:0 Running:0 Exiting:0 Complete:0
\tresources_max.mem = 4194304kb
\tresources_max.walltime = 720:00:00
\tresources_default.nodes = 1
\tresources_default.walltime = 3600
\tenabled = True
\tstarted = True
"""


@pytest.mark.parametrize("flavor", ["pbspro", "torque"])
def test_pbs_reads_the_named_queue_with_qmgr(flavor: str) -> None:
    backend = PbsBackend(BackendContext("/usr/bin/python3", "/runs/r1", pbs_flavor=flavor))
    assert backend.limits_argv("short") == ["qmgr", "-c", "list queue short"]


def test_pbspro_queue_maximum_and_default() -> None:
    limits = PbsBackend(CONTEXT).parse_limits(PBSPRO_QUEUE)
    assert limits == Limits(mem_mb=4096, seconds=86400, default_mem_mb=500, default_seconds=3600)


def test_torque_queue_maximum_and_default() -> None:
    limits = PbsBackend(CONTEXT).parse_limits(TORQUE_QUEUE)
    assert limits == Limits(mem_mb=4096, seconds=720 * 3600, default_seconds=3600)


@pytest.mark.parametrize("mem,mem_mb", [
    ("4gb", 4096), ("4GB", 4096), ("500mb", 500), ("1024kb", 1), ("1048576", 1), ("1048576b", 1), ("1tb", 1024 ** 2),
    ("128mw", 1024), ("1048575", 0),
])
def test_pbs_memory_units(mem: str, mem_mb: int) -> None:
    """PBS sizes: b, kb, mb, gb, tb, pb in powers of 1024 (any case), w for an 8-byte word; a bare number is
    bytes. A limit is rounded down, never above what the queue allows."""
    listing = f"Queue q\n    resources_max.mem = {mem}\n"
    assert PbsBackend(CONTEXT).parse_limits(listing).mem_mb == mem_mb


def test_pbs_a_queue_without_limits_or_an_unreadable_value_has_none() -> None:
    backend = PbsBackend(CONTEXT)
    assert backend.parse_limits("Queue workq\n    queue_type = Execution\n    enabled = True\n") == Limits()
    assert backend.parse_limits("Queue q\n    resources_max.mem = lots\n    resources_max.walltime = 1d\n") == Limits()
    assert backend.parse_limits("") == Limits()


FAKE_QMGR = """\
#!/bin/sh
case "$2" in
  "list server") printf 'Server pbs01\\n    server_state = Active\\n    default_queue = workq\\n' ;;
  "list queue workq") cat "$(dirname "$0")/workq" ;;
  *) echo "qmgr obj=$2 svr=default: Unknown queue" >&2; exit 1 ;;
esac
"""


def pbs_limits(partition: str | None) -> Limits:
    """What a PBS scheduler running its commands here (through the local transport) says the limits are."""
    scheduler = CommandScheduler(PbsBackend(CONTEXT), LocalTransport(), lambda batch, index, stream: "")
    return asyncio.run(scheduler.limits(partition))


def only_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, qmgr: bool) -> None:
    """PATH made a directory of the commands the PBS limits query may use (sh and sed; cat and dirname for the
    fake) and, with ``qmgr``, a fake qmgr that knows one queue, ``workq``, the server's default."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sh", "sed", "dirname", "cat"):
        (bin_dir / name).symlink_to(shutil.which(name) or name)
    if qmgr:
        (bin_dir / "qmgr").write_text(FAKE_QMGR)
        (bin_dir / "qmgr").chmod(0o755)
        (bin_dir / "workq").write_text(PBSPRO_QUEUE)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_pbs_without_a_partition_reads_the_server_s_default_queue(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    only_commands(tmp_path, monkeypatch, qmgr=True)
    assert pbs_limits(None) == Limits(mem_mb=4096, seconds=86400, default_mem_mb=500, default_seconds=3600)
    assert pbs_limits("workq").mem_mb == 4096
    assert pbs_limits("nosuch") == Limits()  # qmgr refused: no limits, and the run goes on


def test_pbs_without_qmgr_has_no_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian's Torque-style wrappers over SLURM (tests/infra/pbs.sh) have no qmgr: the query fails."""
    only_commands(tmp_path, monkeypatch, qmgr=False)
    assert pbs_limits(None) == Limits()
    assert pbs_limits("batch") == Limits()


@pytest.mark.parametrize("queue", ["workq; delete queue workq", "a b", "q\nlist server"])
def test_a_pbs_queue_name_qmgr_could_misread_is_not_asked_about(queue: str) -> None:
    assert PbsBackend(CONTEXT).limits_argv(queue) is None
