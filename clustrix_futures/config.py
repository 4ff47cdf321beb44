"""Options and profiles.

A profile is a named set of options in YAML::

    profiles:
      hpc:
        backend: slurm
        host: login.hpc.edu
        work_dir: /scratch/me/clustrix
        partition: short
        time: "01:00:00"

Profiles are read from ``$CLUSTRIX_FUTURES_CONFIG`` if set, else from ``./clustrix-futures.yaml`` and
``~/.config/clustrix-futures/config.yaml`` (the first file that defines a profile wins); a file is read only if
it is the user's own, and ``./clustrix-futures.yaml`` only once trusted (:mod:`clustrix_futures.config_files`).
``CLUSTRIX_FUTURES_PROFILE`` selects a profile when the code names none. Keyword options override the
profile. Every unknown name — backend, profile, option, top-level key — is a :class:`ConfigError` that
names it and lists the valid ones; a bad value in a profile names the file and the profile. The secret
options (:data:`SECRET_OPTIONS`) are never shown in a message nor written to a run's manifest.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from clustrix_futures.config_files import CONFIG_ENV as CONFIG_ENV
from clustrix_futures.config_files import config_files, load_profiles
from clustrix_futures.errors import ConfigError
from clustrix_futures.retry_policy import retry_policy

BACKENDS = ("local", "debug", "slurm", "ssh", "sge", "pbs", "kubernetes")
PBS_FLAVORS = ("pbspro", "torque")
PROFILE_ENV = "CLUSTRIX_FUTURES_PROFILE"
SECRET_OPTIONS = ("passphrase", "env")  # never written to a manifest, never shown in a message

Check = Callable[[str, Any], Any]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"option {name!r} must be a positive integer, not {value!r}")
    return value


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"option {name!r} must be a non-negative integer, not {value!r}")
    return value


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"option {name!r} must be a positive (finite) number, not {value!r}")
    return float(value)


def _pbs_flavor(name: str, value: Any) -> str:
    if value not in PBS_FLAVORS:
        raise ConfigError(f"option {name!r} must be one of {', '.join(PBS_FLAVORS)}, not {value!r}")
    return str(value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"option {name!r} must be a non-empty string, not {value!r}")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"option {name!r} must be true or false, not {value!r}")
    return value


def _text_list(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"option {name!r} must be a list of strings, not {value!r}")
    return list(value)


def _memory(name: str, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return f"{value}M"
    if isinstance(value, str) and re.fullmatch(r"0*[1-9]\d*[KMGT]?B?", value.upper()):
        return value.upper().rstrip("B") or value
    raise ConfigError(f"option {name!r} must be megabytes as a positive integer or a size like '8G', "
                      f"not {value!r}")


def _walltime(name: str, value: Any) -> str:
    """SLURM's forms: minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]; an integer means minutes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    if isinstance(value, str) and re.fullmatch(r"(\d+-)?\d+(:\d\d){0,2}", value) and re.search(r"[1-9]", value):
        return value
    raise ConfigError(f"option {name!r} must be a time limit longer than zero like '01:30:00', '2-00:00:00' or "
                      f"minutes, not {value!r}")


def _gpus(name: str, value: Any) -> Any:
    """A count (``2``), or a type and a count (``"a100:2"``: how each scheduler writes it is its own)."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.\-]+:[1-9]\d*", value):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"option {name!r} must be a positive integer or 'TYPE:COUNT' like 'a100:2', "
                          f"not {value!r}")
    return value


def _tasks_per_element(name: str, value: Any) -> Any:
    return value if value == "auto" else _positive_int(name, value)


def _port(name: str, value: Any) -> int:
    value = _positive_int(name, value)
    if value > 65535:
        raise ConfigError(f"option {name!r} must be a TCP port, not {value!r}")
    return value


def _known_hosts(name: str, value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"option {name!r} must be a path to a known_hosts file (host keys are always "
                      f"verified), not {value!r}")


def _storage(name: str, value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?", value):
        return value.rstrip("/")
    raise ConfigError(f"option {name!r} must be an S3 location like 's3://bucket/prefix' (leave it unset for "
                      f"the filesystem of work_dir), not {value!r}")


def _env(name: str, value: Any) -> dict[str, Any]:
    """NAME -> a string, or NAME -> {"secret": SECRET, "key": KEY} (a Kubernetes secret reference)."""
    if isinstance(value, Mapping) and all(isinstance(k, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)
                                          for k in value):
        checked: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(item, str):
                checked[key] = item
            elif isinstance(item, Mapping) and set(item) == {"secret", "key"} and all(
                    isinstance(v, str) and v for v in item.values()):
                checked[key] = {"secret": item["secret"], "key": item["key"]}
            else:
                break
        else:
            return checked
    raise ConfigError(f"option {name!r} must map variable names to strings or to {{'secret': NAME, 'key': KEY}}, "
                      f"not {value!r}")


@dataclass(frozen=True)
class Option:
    """One option: ``check(name, value)`` returns the value normalised or raises ``ConfigError``; ``help``
    is shown by the CLI and the docs; ``default`` applies when the option is unset (None)."""

    check: Check
    help: str
    default: Any = None


OPTIONS: dict[str, Option] = {
    "work_dir": Option(_text, "Directory the compute nodes see; each executor makes a run directory in it.",
                       "~/.cache/clustrix-futures/runs"),
    "python": Option(_text, "Absolute path of the interpreter on the compute nodes (default: the local "
                            "sys.executable for local schedulers, python3 over SSH)."),
    "setup": Option(_text_list, "Shell lines run before the worker starts, e.g. 'module load python'."),
    "keep_files": Option(_flag, "Keep the run directory after shutdown even when every task succeeded.",
                         False),
    "cpus": Option(_positive_int, "CPUs per task (array element)."),
    "mem": Option(_memory, "Memory per task, e.g. '8G' (an integer means megabytes)."),
    "time": Option(_walltime, "Time limit per array element, e.g. '01:00:00'."),
    "partition": Option(_text, "Scheduler partition or queue."),
    "account": Option(_text, "Account to charge."),
    "gpus": Option(_gpus, "GPUs per task: a count, or 'TYPE:COUNT' (e.g. 'a100:2'; SLURM only: "
                          "--gres=gpu:TYPE:COUNT)."),
    "nodes": Option(_positive_int, "Nodes per task."),
    "job_name": Option(_text, "Job name shown by the scheduler.", "clustrix"),
    "scheduler_args": Option(_text_list, "Extra submission flags, passed as separate arguments."),
    "pe": Option(_text, "Grid Engine parallel environment for 'cpus' (qsub -pe PE cpus), e.g. 'smp'; "
                        "without it a Grid Engine task gets one slot."),
    "flavor": Option(_pbs_flavor, "PBS flavour: 'pbspro' (PBS Professional, OpenPBS: qsub -J) or 'torque' "
                                  "(qsub -t).", "pbspro"),
    "forward_output": Option(_flag, "Write what tasks print to this process's stdout and stderr (default: on for "
                              "the local backend, off on clusters, where each line is then read from the "
                              "element's log and prefixed with its task id when the run has several tasks)."),
    "tasks_per_element": Option(_tasks_per_element, "Tasks packed into one array element: an integer, or "
                                "'auto' to pack from measured task durations.", "auto"),
    "element_seconds": Option(_positive_number, "With tasks_per_element='auto', the run time to aim for "
                              "per array element.", 5.0),
    "batch_window": Option(_positive_number, "Seconds the batcher waits for more submits before it "
                           "submits an array.", 0.01),
    "poll_interval": Option(_positive_number, "Longest pause between two monitor cycles, seconds.", 2.0),
    "grace_period": Option(_positive_number, "Seconds to wait for a result file after its element left "
                           "the queue before failing its tasks (shared filesystems lag).", 5.0),
    "retries": Option(_count, "How many times an element that ended in one of retry_states is run again.", 1),
    "retry_states": Option(_text_list, "Scheduler states after which an element is run again (a task's own "
                           "exception never is).", ["PREEMPTED", "NODE_FAIL", "BOOT_FAIL"]),
    "retry_policy": Option(retry_policy, "What an element that ended in a state runs again with: "
                           "{'OUT_OF_MEMORY': {'mem': 'x2'}, 'TIMEOUT': {'time': 'x2'}} doubles its memory (time), "
                           "up to the partition's limit; its states are retried like retry_states, up to retries."),
    "signal_before_end": Option(_positive_int, "SLURM: seconds before an element's time limit to send it "
                                "SIGUSR1; a task with a checkpoint hook then checkpoints and resumes in a new run "
                                "(clustrix_futures.checkpoint)."),
    "checkpoint_reruns": Option(_count, "How many times an element runs again from its tasks' checkpoints "
                                "(signal_before_end); these runs do not count against retries.", 8),
    "host": Option(_text, "SSH host (a ~/.ssh/config alias works); unset means this machine."),
    "port": Option(_port, "SSH port."),
    "username": Option(_text, "SSH user name."),
    "client_keys": Option(_text_list, "SSH private key files."),
    "known_hosts": Option(_known_hosts, "known_hosts file used to verify the host key (default ~/.ssh/known_hosts)."),
    "passphrase": Option(_text, "Passphrase of the SSH keys (a secret: never written to the run directory nor "
                                "shown in a message)."),
    "connect_timeout": Option(_positive_number, "Seconds to wait for the SSH connection.", 20.0),
    "reconnect_give_up": Option(_positive_number, "Seconds of failed reconnection after which live "
                                "futures fail with CONNECTION_LOST.", 300.0),
    "storage": Option(_storage, "Where payloads and results live: unset for the filesystem of work_dir, or "
                                "'s3://bucket/prefix' for S3 (boto3's credential chain, here and on the nodes)."),
    "endpoint_url": Option(_text, "S3 endpoint of an S3-compatible store (MinIO, Ceph...), used here and by "
                                  "the workers."),
    "image": Option(_text, "Kubernetes: the container image the tasks run in (with this client's Python "
                           "major.minor, cloudpickle, boto3 and clustrix-futures)."),
    "namespace": Option(_text, "Kubernetes namespace (default: the kubeconfig context's, else 'default')."),
    "service_account": Option(_text, "Kubernetes service account of the pods (e.g. one bound to an IAM role "
                                     "for S3)."),
    "env": Option(_env, "Kubernetes: environment of the pods, NAME: value or NAME: {secret: S, key: K} (a "
                        "reference to a key of a Secret, e.g. for S3 credentials). Only the names are recorded in "
                        "the run's manifest: attach with env=... again."),
    "kubeconfig": Option(_text, "Kubernetes: kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the "
                                "in-cluster service account)."),
}
"""Every option, by name: what ``ClusterPoolExecutor(**options)``, ``ex.options(**resources)``, a profile and
the CLI's ``--option NAME=VALUE`` accept. An unknown name is a ``ConfigError`` listing the valid ones; a
value is checked (and normalised, e.g. ``mem=8192`` to ``"8192M"``) by its ``Option.check``. The Configuration
page (``docs/config.md``) is generated from it by ``docs/gen_config.py``."""


@dataclass
class Settings:
    """An executor's resolved configuration: its backend, ``max_workers`` and validated options.

    ``settings[name]`` reads an option, falling back to its default. Mutable only so that attaching to a run
    directory can adopt the run's manifest (:func:`adopt_manifest`) before the engine starts.
    """

    backend: str
    max_workers: Optional[int]
    options: dict[str, Any]
    max_tasks_per_child: Optional[int] = None

    def __getitem__(self, name: str) -> Any:
        value = self.options.get(name)
        return OPTIONS[name].default if value is None else value

    def __repr__(self) -> str:  # secrets shown as '***' (a repr ends up in logs and tracebacks)
        options = {k: "***" if k in SECRET_OPTIONS and v is not None else v for k, v in self.options.items()}
        return f"Settings(backend={self.backend!r}, max_workers={self.max_workers!r}, options={options!r})"


def check_max_tasks_per_child(value: Any) -> Optional[int]:
    """``max_tasks_per_child`` checked as ``ProcessPoolExecutor`` checks it: None, or an integer >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_tasks_per_child must be an integer, not {value!r}")
    if value < 1:
        raise ValueError("max_tasks_per_child must be >= 1")
    return value


def check_mp_context(context: Any) -> None:
    """``mp_context``: None, or a ``"spawn"`` or ``"forkserver"`` multiprocessing context. Every worker is a fresh
    interpreter (as with "spawn"), so a "fork" context is refused rather than silently not honoured."""
    if context is None:
        return
    from multiprocessing.context import BaseContext

    if not isinstance(context, BaseContext):
        raise TypeError(f"mp_context must be a multiprocessing context such as "
                        f"multiprocessing.get_context('spawn'), not {context!r}")
    if context.get_start_method() == "fork":
        raise ConfigError("mp_context: a 'fork' context cannot be honoured: the workers are fresh interpreters "
                          "(as with 'spawn'), never forks of this process, so what a fork would inherit (module "
                          "state set at run time, open files) is not there. Pass "
                          "multiprocessing.get_context('spawn') or leave mp_context unset.")


def _unknown(kind: str, name: str, valid: Any) -> ConfigError:
    return ConfigError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(valid))}")


def validate_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Check every option (a :class:`ConfigError` names an unknown one); the values normalised, None kept.
    The message about a bad secret (:data:`SECRET_OPTIONS`) does not show its value."""
    checked = {}
    for name, value in options.items():
        if name not in OPTIONS:
            raise _unknown("option", name, OPTIONS)
        try:
            checked[name] = None if value is None else OPTIONS[name].check(name, value)
        except ConfigError as exc:
            if name not in SECRET_OPTIONS:
                raise
            raise ConfigError(str(exc).replace(repr(value), "(value not shown: it is secret)")) from None
    return checked


def manifest_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options as a run's manifest records them: no passphrase; of ``env`` the names (``env_names``) and
    only the Secret references (``{secret, key}``: not secret themselves), never a literal value. Attaching
    takes the literal values from the options given then (:func:`missing_env`)."""
    recorded = {k: v for k, v in options.items() if k not in SECRET_OPTIONS}
    env = options.get("env") or {}
    if env:
        recorded["env_names"] = sorted(env)
    references = {k: v for k, v in env.items() if isinstance(v, Mapping)}
    if references:
        recorded["env"] = references
    return recorded


def missing_env(settings: Settings, manifest: Mapping[str, Any]) -> list[str]:
    """The ``env`` names a run was started with that the options given now do not set."""
    names = (manifest.get("options") or {}).get("env_names") or []
    return sorted(set(names) - set(settings["env"] or {}))


def adopt_manifest(settings: Settings, manifest: Mapping[str, Any], root: str = "the run") -> None:
    """Take a run directory's backend and options (its manifest); options set in ``settings`` override them.
    A manifest that is not a clustrix-futures one (no known backend, bad options) is a ConfigError naming
    ``root``."""
    given = {k: v for k, v in settings.options.items() if v is not None}
    recorded = manifest.get("options") or {}
    if manifest.get("backend") not in BACKENDS or not isinstance(recorded, dict):
        raise ConfigError(f"the manifest of {root} is not one of ours: it names no known backend "
                          f"({manifest.get('backend')!r}) or its options are not a mapping")
    try:
        options = validate_options({k: v for k, v in recorded.items() if k != "env_names"})
    except ConfigError as exc:
        raise ConfigError(f"the manifest of {root} is not one of ours: {exc}") from None
    settings.backend = manifest["backend"]
    settings.options = {**options, **given}
    if options.get("env") and given.get("env"):  # the recorded Secret references, and the values given now
        settings.options["env"] = {**options["env"], **given["env"]}
    if settings.max_workers is None:
        settings.max_workers = manifest.get("max_workers")


def _profile(profile: Optional[str]) -> tuple[dict[str, Any], str]:
    """The options of ``profile`` and where they come from ("FILE, profile NAME"); ({}, "") for no profile."""
    if profile is None:
        return {}, ""
    profiles = load_profiles()
    if profile not in profiles:
        where = ", ".join(str(p) for p in config_files())
        raise ConfigError(f"unknown profile {profile!r} (looked in {where}); valid profiles: "
                          f"{', '.join(sorted(profiles)) or 'none defined'}")
    path, body = profiles[profile]
    return body, f"{os.path.abspath(path)}, profile {profile!r}"


def resolve(
    profile: Optional[str], backend: Optional[str], max_workers: Optional[int], options: Mapping[str, Any]
) -> Settings:
    """Merge the selected profile with keyword options, validate everything, and pick the backend. A bad value
    in the profile is a ConfigError naming its file and the profile."""
    body, source = _profile(profile or os.environ.get(PROFILE_ENV) or None)
    if source:
        try:
            _settings(dict(body), backend, max_workers)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return _settings({**body, **options}, backend, max_workers)


def _settings(merged: dict[str, Any], backend: Optional[str], max_workers: Optional[int]) -> Settings:
    backend = backend or merged.pop("backend", None) or "local"
    merged.pop("backend", None)
    if backend not in BACKENDS:
        raise _unknown("backend", backend, BACKENDS)
    if max_workers is None:
        max_workers = merged.pop("max_workers", None)
    merged.pop("max_workers", None)
    if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)):
        raise ConfigError(f"max_workers must be an integer, not {max_workers!r}")
    if max_workers is not None and max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")
    return Settings(backend, max_workers, validate_options(merged))
