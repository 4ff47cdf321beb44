"""Commands over SSH never depend on the login shell's quoting: over the real sshd, as the test account
``cftcsh`` whose login shell is Debian's tcsh (tests/infra/sshd.sh).

csh/tcsh end a quoted word at a newline and expand ``!`` even inside single quotes, so with ``shlex.join``
a newline in any word ran the rest as a command there. Every hostile string below would, if any shell along
the way parsed it, create the marker file; each test checks that the strings reach the command intact and
that the marker never appears.
"""

from __future__ import annotations

import asyncio
import json
import pwd
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from support.infra import INFRA, ssh_options

from clustrix_futures import ClusterPoolExecutor, config
from clustrix_futures.remote.ssh import SSHTransport

MARKER = f"/tmp/cf-csh-injected-{secrets.token_hex(4)}"
HOSTILE = [
    f"a\ntouch {MARKER}\n", f"'; touch {MARKER}; '", f'"; touch {MARKER}; "', f"`touch {MARKER}`",
    f"$(touch {MARKER})", f"; touch {MARKER}", f"| touch {MARKER}", "!!", "!touch", "a!b", "$HOME", "$shell",
    "\\", "\\\n", "{a,b}", "~", "*", "%1", "x\r\ny", "é ☃", "", " ", "\t",
]
PRINT_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"


@pytest.fixture(scope="module")
def tcsh(sshd: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Executor options reaching the sshd as the tcsh account (creating it if this sshd predates it)."""
    name = sshd.get("CF_SSH_TCSH_USER", "cftcsh")
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["bash", str(INFRA / "sshd.sh"), "up"], check=True, capture_output=True, timeout=120)
    entry = pwd.getpwnam(name)
    assert entry.pw_shell.endswith("/tcsh"), f"{name}'s login shell is {entry.pw_shell}, not tcsh"
    options = {**ssh_options(sshd), "username": name, "work_dir": f"{entry.pw_dir}/cf-test-runs"}
    yield options
    assert not _exists(MARKER), "an injected command ran"


def _exists(path: str) -> bool:
    import os

    return os.path.lexists(path)


def transport_for(options: dict[str, Any]) -> SSHTransport:
    return SSHTransport(config.resolve(None, "ssh", None, options))


def test_the_login_shell_really_is_tcsh_and_breaks_plain_quoting(tcsh):
    """The precondition: through this account's login shell, shlex quoting of '!' or a newline fails."""
    import shlex

    base = ["ssh", "-p", str(tcsh["port"]), "-i", tcsh["client_keys"][0], "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={tcsh['known_hosts']}", f"{tcsh['username']}@{tcsh['host']}"]
    shell = subprocess.run([*base, "echo $shell"], capture_output=True, text=True, timeout=60)
    assert shell.stdout.strip().endswith("tcsh"), shell
    broken = subprocess.run([*base, shlex.join(["echo", "a!b", "x\ny"])], capture_output=True, text=True, timeout=60)
    assert broken.stdout != "a!b x\ny\n", "tcsh passed shlex quoting intact: this test would prove nothing"


def test_hostile_words_reach_the_command_intact_and_nothing_else_runs(tcsh):
    async def scenario() -> tuple[Any, Any, Any]:
        transport = transport_for(tcsh)
        await transport.connect()

        def run(argv: list[str], data: Any = None) -> Any:  # bounded: a shell left waiting on a quote hangs
            return asyncio.wait_for(transport.run(argv, input=data), 60)

        try:
            echoed = await run(["/usr/bin/python3", "-c", PRINT_ARGV, *HOSTILE])
            piped = await run(["/usr/bin/python3", "-c", "import sys; print(repr(sys.stdin.read()))"],
                              "".join(HOSTILE).encode())
            with pytest.raises(ValueError, match="NUL"):
                await run(["echo", "a\0b"])
            shell = await run(["sh", "-c", 'printf "%s|" "$@"', "sh", *HOSTILE])
            return echoed, piped, shell
        finally:
            await transport.close()

    echoed, piped, shell = asyncio.run(scenario())
    assert echoed.ok, echoed.describe()
    assert json.loads(echoed.stdout) == HOSTILE
    assert piped.stdout.strip() == repr("".join(HOSTILE))
    assert shell.stdout == "".join(f"{word}|" for word in HOSTILE)
    assert not _exists(MARKER)


HOSTILE_NAME = f"d\n'\"!$`;$(touch {MARKER.replace('/', '_')})"


def test_ex_files_work_with_hostile_paths(tcsh):
    root = f"/home/{tcsh['username']}/files {HOSTILE_NAME}"
    names = sorted(["f 1!.txt", f"g\n`touch {MARKER.replace('/', '_')}`.txt", "h'$x;.dat"])

    async def plant() -> None:
        transport = transport_for(tcsh)
        await transport.connect()
        try:
            await transport.remove_tree(root)
            await transport.makedirs(f"{root}/sub!dir")
            for name in names:
                await transport.write(f"{root}/{name}", b"12345")
            await transport.write(f"{root}/sub!dir/deep.txt", b"")
        finally:
            await transport.close()

    asyncio.run(plant())
    with ClusterPoolExecutor(backend="ssh", **tcsh) as ex:
        assert ex.files.ls(root) == sorted([*names, "sub!dir"])
        assert ex.files.exists(f"{root}/{names[0]}") and not ex.files.exists(f"{root}/nothing!")
        info = ex.files.stat(f"{root}/{names[1]}")
        assert info["size"] == 5 and info["path"] == f"{root}/{names[1]}" and not info["is_dir"]
        assert ex.files.glob("*.txt", root=root) == sorted(f"{root}/{n}" for n in names if n.endswith(".txt"))
        assert ex.files.find(root, "*.txt") == sorted([*(f"{root}/{n}" for n in names if n.endswith(".txt")),
                                                       f"{root}/sub!dir/deep.txt"])
    assert not _exists(MARKER) and not _exists(MARKER.replace("/", "_"))


def echo_environment(words: list[str]) -> list[str]:
    return words


@pytest.mark.parametrize("backend", ["ssh", "slurm"])
def test_a_run_works_over_tcsh_with_hostile_work_dir_and_job_name(tcsh, backend, request):
    if backend == "slurm":
        request.getfixturevalue("slurm")
    hostile_dir = f"{tcsh['work_dir']}/w '!$`;\"(touch {MARKER.replace('/', '_')})"
    options = {**tcsh, "work_dir": hostile_dir, "job_name": f"n'!$`;\"{HOSTILE[0]}"}
    if backend == "slurm":
        options["scheduler_args"] = [f"--comment=c'!$`;\"touch {MARKER}"]
    with ClusterPoolExecutor(backend=backend, **options) as ex:
        assert ex.submit(echo_environment, HOSTILE).result(timeout=240) == HOSTILE
        assert list(ex.map(pow, [2, 3], [5, 2], timeout=240)) == [32, 9]
    assert not _exists(MARKER)
