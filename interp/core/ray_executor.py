"""A graph of jobs as Ray tasks: the ``--executor ray`` of ``interp run`` and ``interp sweep``.

:mod:`interp.core.parallel` runs a study's independent jobs on a process pool of one machine;
this module runs the same jobs (module-level functions and their arguments) as Ray tasks, on a
local Ray instance or on a cluster. Every :class:`Job` declares its resources (one CPU; one GPU
when the models run on ``cuda``) and the jobs it comes after, which become Ray dependencies: a
task starts only once the tasks it depends on have finished, wherever they ran.

What the jobs must keep, and do in this package: each writes only its own directory, every
finished file under a temporary name then renamed (:mod:`interp.core.io`), and a job whose
outputs exist reuses them. A task whose worker died (a killed process, a lost node) is run again
by Ray, up to :data:`MAX_RETRIES` times, and resumes from what the dead attempt had finished; a
job that raises is not retried (the error is the job's, and running it again would raise it
again). As with the process pool, a failed job does not stop the others, and the first failure
(in the order the jobs were given) is raised once every job has ended.

Ray is an optional dependency (``pip install -e '.[ray]'``); importing this module does not
need it.
"""

from __future__ import annotations

import argparse
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

EXECUTORS = ("local", "ray")
MAX_RETRIES = 3  # attempts after the first when a task's worker dies (Ray's max_retries)
CONNECT_TIMEOUT_S = 10.0  # how long --ray-address may take to answer before it counts as unreachable
RAY_GCS_PORT, RAY_CLIENT_PORT = 6379, 10001  # Ray's default ports of host:port and ray://host addresses
INSTALL_HINT = "pip install -e '.[ray]'"


def require_ray():
    """The ``ray`` module, or a one-line ``ValueError`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"--executor ray needs Ray, which is not installed here; install it with {INSTALL_HINT} "
                         "(or pip install 'ray[client]')") from None
    return ray


def check_executor(executor: str, ray_address: str | None) -> None:
    """A one-line ``ValueError`` for an unknown executor or a Ray address given without Ray."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r}: choose one of {list(EXECUTORS)}")
    if ray_address is not None and executor != "ray":
        raise ValueError(f"--ray-address {ray_address} is only used with --executor ray")


def _host_port(address: str) -> tuple[str, int]:
    """Host and port of ``host:port`` or ``ray://host[:port]`` (Ray's default port when none is given)."""
    client = address.startswith("ray://")
    rest = address[len("ray://"):] if client else address
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, RAY_CLIENT_PORT if client else RAY_GCS_PORT
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ValueError(f"--ray-address {address}: {port!r} is not a port number; give host:port, ray://host:port "
                         "or auto") from None


def _resolve_auto() -> str:
    """The cluster ``--ray-address auto`` stands for: ``RAY_ADDRESS``, or the one ``ray start`` last
    started on this machine (Ray's own lookup); a one-line ``ValueError`` where there is none."""
    from ray._private.services import canonicalize_bootstrap_address

    address = canonicalize_bootstrap_address("auto")
    if address is None:
        raise ValueError("--ray-address auto: no Ray cluster is known here (neither RAY_ADDRESS nor a cluster started "
                         "with `ray start`); start one, give its address, or leave --ray-address out to start a local "
                         "Ray instance")
    return address


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S, *, shown: str | None = None) -> None:
    """A one-line ``ValueError`` unless something accepts a TCP connection at ``address`` within
    ``timeout`` seconds (``ray.init`` itself would retry for minutes, and `auto` may name a
    cluster that has stopped). ``shown``: the address as the user gave it."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        given = address if shown is None or shown == address else f"{shown} ({address})"
        raise ValueError(f"--ray-address {given}: no Ray cluster answers at {host}:{port} within {timeout:.0f} s "
                         f"({e.strerror or e}); start one with `ray start --head`, or leave --ray-address out to start "
                         "a local Ray instance") from None


def connect(address: str | None = None, *, num_cpus: int | None = None, **init_options: Any) -> bool:
    """Connect this process to Ray: ``address`` None starts a local instance (``num_cpus`` CPUs,
    None: all of them; ``init_options`` are passed to ``ray.init``), ``auto`` joins the cluster
    this machine belongs to (``ray start``), ``host:port`` a cluster's head and ``ray://host:port``
    a Ray Client server. A process already connected keeps its connection. Returns whether this
    call connected (so the caller may disconnect again)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    if address is not None:
        if num_cpus is not None:
            raise ValueError(f"--workers sets the CPUs of a local Ray instance; the cluster at {address} has its own "
                             "(`ray start --num-cpus`): leave --workers out")
        check_reachable(_resolve_auto() if address == "auto" else address, shown=address)
        options = {"address": address, **init_options}
    else:
        # "local": a new instance even where `ray start` left a cluster (or its address file) behind
        options = {"address": "local", "num_cpus": num_cpus, "include_dashboard": False, **init_options}
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, TimeoutError) as e:
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
        hint = "" if address is None else ("; a cluster with token authentication (what `ray start` turns on) needs "
                                           "RAY_AUTH_MODE=token and its token (`ray get-auth-token`) here too")
        raise ValueError(f"could not connect to {where}: {' '.join(str(e).split())}{hint}") from None
    return True


@dataclass
class Job:
    """``fn(*args)`` once the jobs named in ``after`` have finished. ``key`` names the job in the
    graph (unique); ``name`` is the Ray task's name (shown in the worker's process title, ``ray::NAME``)."""

    key: str
    fn: Callable[..., Any]
    args: tuple = ()
    after: tuple[str, ...] = ()
    name: str = field(default="")


def _execute(fn: Callable[..., Any], args: tuple, device: dict | None, threads: int, *after: Any) -> Any:
    """A job in a Ray worker: the driver's ``--device``/``--dtype`` and one torch thread per CPU,
    as the process pool's workers have (``after``: the finished dependencies, unused)."""
    import torch

    from interp.core.device import DeviceConfig, use

    torch.set_num_threads(threads)
    if device is not None:
        use(DeviceConfig(**device))
    return fn(*args)


def _cause(error: BaseException) -> BaseException:
    """The job's own exception for a task that raised (so a ``ValueError`` stays one), else ``error``."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def run_graph(jobs: Sequence[Job], *, device: dict | None = None, max_retries: int = MAX_RETRIES,
              desc: str = "jobs", progress: bool = True) -> dict[str, Any]:
    """Run ``jobs`` as Ray tasks on the cluster this process is connected to (:func:`connect`);
    returns ``{job.key: result}``. A job's ``after`` names jobs given before it. ``device``
    (:meth:`interp.core.device.DeviceConfig.to_dict`, None: the defaults) is where the jobs place
    their models; with ``cuda`` each task asks Ray for a GPU."""
    ray = require_ray()
    from tqdm.auto import tqdm

    gpus = 1 if device is not None and device.get("device") == "cuda" else 0
    remote = ray.remote(_execute)
    refs: dict[str, Any] = {}
    order = {job.key: i for i, job in enumerate(jobs)}
    for job in jobs:
        if job.key in refs:
            raise ValueError(f"job {job.key!r} is given twice")
        missing = [k for k in job.after if k not in refs]
        if missing:
            raise ValueError(f"job {job.key!r} comes after {missing}, which are not given before it")
        refs[job.key] = remote.options(num_cpus=1, num_gpus=gpus, max_retries=max_retries, retry_exceptions=False,
                                       name=job.name or job.key).remote(job.fn, job.args, device, 1,
                                                                        *[refs[k] for k in job.after])
    pending = {ref: key for key, ref in refs.items()}
    results: dict[str, Any] = {}
    errors: list[tuple[int, BaseException]] = []
    with tqdm(total=len(jobs), desc=f"{desc} (Ray)", disable=not progress) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                key = pending.pop(ref)
                try:
                    results[key] = ray.get(ref)
                except ray.exceptions.RayError as e:  # the others keep running: their work must not be lost
                    errors.append((order[key], _cause(e)))
                bar.update(1)
    if errors:
        errors.sort(key=lambda ie: ie[0])
        raise errors[0][1]
    return results


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor`` and ``--ray-address`` of ``interp run`` and ``interp sweep``."""
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="where the jobs run: local (worker processes of this machine, --workers) or ray (Ray tasks "
                        f"with one CPU each, one GPU each with --device cuda; needs {INSTALL_HINT}) (default: %(default)s)")
    parser.add_argument("--ray-address", default=None,
                        help="--executor ray: the cluster to join (auto: the one `ray start` made this machine part of; "
                        "host:port: its head; ray://host:port: a Ray Client server); not given: start a local Ray "
                        "instance with --workers CPUs (0: all). Every node must see --out and --artifacts at the same "
                        "paths (a shared filesystem)")
