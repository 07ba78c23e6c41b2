"""Multi-host set-up: which process this is, of how many, and where process 0 listens.

A multi-host sweep is the same ``iclsim run`` command started once per host (or per
process); :func:`jax.distributed.initialize` joins them, and :func:`iclsim.engine.sweep.
run_sweep` then holds on every process the runs of its own devices and writes its own
files (``result.p<process>.nc`` …).  Three values say how the processes meet, each taken
from the first of these that gives it:

1. the arguments of :func:`initialize` (the CLI's ``--coordinator HOST:PORT``,
   ``--num-processes N``, ``--process-id I``);
2. the environment: ``JAX_COORDINATOR_ADDRESS`` (read by JAX itself),
   ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (read here: the installed JAX reads only
   the first);
3. a cluster JAX detects (SLURM, Open MPI, Kubernetes, Cloud TPU: its
   ``jax._src.clusters``), which also restricts each process to its local device(s).

:func:`resolve` does all of it without touching JAX's runtime and raises
:class:`DistributedSetupError` (a :class:`~iclsim.engine.config.ConfigError`: one line,
exit status 2 in the CLI) naming what is missing or out of range, so that a bad set-up
stops before anything is written.  :func:`initialize` resolves, then joins.

After the sweep, :func:`wait_for_all` is a barrier over the processes (JAX's
coordination service, no device collective), so that every shard is on disk before a
process reads the merged result (:func:`iclsim.engine.store.load_result`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from iclsim.engine.config import ConfigError

__all__ = ["DistributedSetupError", "Setup", "resolve", "initialize", "wait_for_all",
           "ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID"]

#: Process 0's ``HOST:PORT`` (JAX reads it too).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
#: The number of processes (read here; the installed JAX does not).
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
#: This process, ``0..N-1`` (read here; the installed JAX does not).
ENV_PROCESS_ID = "JAX_PROCESS_ID"

#: The CLI flag of each value (named in the error messages).
FLAG = {"coordinator": "--coordinator", "num_processes": "--num-processes",
        "process_id": "--process-id"}
#: The environment variable of each value.
ENV = {"coordinator": ENV_COORDINATOR, "num_processes": ENV_NUM_PROCESSES,
       "process_id": ENV_PROCESS_ID}


class DistributedSetupError(ConfigError):
    """The multi-host set-up is missing a value or has one out of range (one line)."""


@dataclass(frozen=True)
class Setup:
    """A complete, checked multi-host set-up: process 0's ``HOST:PORT``, the number of
    processes and this process's id (``0 <= process_id < num_processes``)."""

    coordinator: str
    num_processes: int
    process_id: int
    source: dict
    """Where each value came from: a flag (``--process-id``), an environment variable
    (``JAX_PROCESS_ID``) or a detected cluster (``cluster:SlurmCluster``)."""


def _detect_cluster(coordinator, num_processes, process_id):
    """What JAX's cluster detection fills in for the unset values: (values, cluster name);
    (the same values, None) when no cluster is detected."""
    try:
        from jax._src import clusters
    except ImportError:  # pragma: no cover - a JAX without cluster detection
        return (coordinator, num_processes, process_id), None
    env = next((e for e in clusters.ClusterEnv._cluster_types
                if not e.opt_in_only_method and _present(e)), None)
    if env is None:
        return (coordinator, num_processes, process_id), None
    try:
        if coordinator is None:
            coordinator = env.get_coordinator_address(
                timeout_secs=300, override_coordinator_port=os.environ.get("JAX_COORDINATOR_PORT"))
        if num_processes is None:
            num_processes = env.get_process_count()
        if process_id is None:
            process_id = env.get_process_id()
    except Exception as exc:  # an incomplete cluster environment
        raise DistributedSetupError(
            f"--distributed: {env.__name__} detected but it does not say how the processes "
            f"meet ({type(exc).__name__}: {exc}); give --coordinator, --num-processes and "
            "--process-id") from None
    return (coordinator, num_processes, process_id), env.__name__


def _present(env) -> bool:
    try:
        return bool(env.is_env_present())
    except Exception:
        return False


def _integer(value, source: str, lo: int, allowed: str) -> int:
    text = str(value).strip()
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is None or number < lo:
        raise DistributedSetupError(f"{source}: {text!r} is not allowed; give {allowed}")
    return number


def _check_address(address: str, source: str) -> str:
    host, sep, port = address.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    ok = bool(sep) and bool(host) and port.isdigit() and 1 <= int(port) <= 65535 \
        and not any(c.isspace() for c in host)
    if not ok:
        raise DistributedSetupError(
            f"{source}: {address!r} is not HOST:PORT; give the address of process 0 and a "
            "free port 1..65535, e.g. 10.0.0.1:1234")
    return address.strip()


def resolve(coordinator: str | None = None, num_processes: int | str | None = None,
            process_id: int | str | None = None, *, environ=None,
            detect: bool = True) -> Setup:
    """The complete, validated set-up from arguments, environment and a detected cluster
    (in that order); :class:`DistributedSetupError` names what is missing or wrong."""
    environ = os.environ if environ is None else environ
    given = {"coordinator": coordinator, "num_processes": num_processes,
             "process_id": process_id}
    values, source = {}, {}
    for key, value in given.items():
        if value is not None:
            values[key], source[key] = value, FLAG[key]
        elif environ.get(ENV[key], "").strip():
            values[key], source[key] = environ[ENV[key]], ENV[key]
        else:
            values[key] = None
    if detect and None in values.values():
        filled, cluster = _detect_cluster(values["coordinator"], values["num_processes"],
                                          values["process_id"])
        for key, value in zip(("coordinator", "num_processes", "process_id"), filled):
            if values[key] is None and value is not None:
                values[key], source[key] = value, f"cluster:{cluster}"

    def where(key):
        return _named(source, key)

    n = None
    if values["num_processes"] is not None:
        n = _integer(values["num_processes"], where("num_processes"), 1,
                     "an integer >= 1 (the number of processes in the run)")
    missing = [key for key, value in values.items() if value is None]
    if missing:
        ids = f"0..{n - 1}" if n is not None else "0..N-1"
        fix = {"coordinator": f"give HOST:PORT of process 0 or set {ENV_COORDINATOR}",
               "num_processes": f"give an integer >= 1 or set {ENV_NUM_PROCESSES}",
               "process_id": f"give {ids} or set {ENV_PROCESS_ID}"}
        if len(missing) == 3:
            raise DistributedSetupError(
                "--distributed: no cluster detected (SLURM, Open MPI, Kubernetes, Cloud TPU); "
                "give --coordinator HOST:PORT, --num-processes N and --process-id 0..N-1, or "
                f"set {ENV_COORDINATOR}, {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID}")
        raise DistributedSetupError("; ".join(f"{FLAG[k]}: missing; {fix[k]}" for k in missing))
    address = _check_address(str(values["coordinator"]), where("coordinator"))
    text = str(values["process_id"]).strip()
    pid = int(text) if text.lstrip("-").isdigit() else None
    if pid is None or not 0 <= pid < n:
        what = f"{text!r} is not allowed" if pid is None else f"{pid} is out of range"
        raise DistributedSetupError(f"{where('process_id')}: {what}; give 0..{n - 1} "
                                    f"({n} process{'es' if n != 1 else ''})")
    return Setup(address, n, pid, source)


def initialize(coordinator: str | None = None, num_processes: int | str | None = None,
               process_id: int | str | None = None, *, setup: Setup | None = None) -> Setup:
    """Resolve the set-up (:func:`resolve`) and join the processes
    (:func:`jax.distributed.initialize`); call before any other JAX work.  A cluster JAX
    detects still chooses each process's local devices."""
    import jax

    setup = setup or resolve(coordinator, num_processes, process_id)
    try:
        jax.distributed.initialize(coordinator_address=setup.coordinator,
                                   num_processes=setup.num_processes,
                                   process_id=setup.process_id)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        port = setup.coordinator.rpartition(":")[2]
        if setup.process_id == 0 and "RPC server" in first:
            # process 0 hosts the coordinator: its port is taken (or not this host's)
            raise DistributedSetupError(
                f"{where(setup, 'coordinator')}: process 0 cannot listen on port {port} "
                f"({first}); is the port in use? choose another free port") from None
        raise DistributedSetupError(
            f"{where(setup, 'coordinator')}: cannot join {setup.coordinator} as process "
            f"{setup.process_id} of {setup.num_processes} ({first})") from None
    return setup


def where(setup: Setup, key: str) -> str:
    """How the user gave ``key`` of ``setup``: its flag, environment variable, or the flag
    it stands for with the detected cluster it came from."""
    return _named(setup.source, key)


def _named(source: dict, key: str) -> str:
    src = source.get(key, FLAG[key])
    return f"{FLAG[key]} (from {src.partition(':')[2]})" if src.startswith("cluster:") else src


def wait_for_all(name: str, timeout_s: float = 7 * 24 * 3600) -> None:
    """Barrier: return once every process has called ``wait_for_all(name)`` (JAX's
    coordination service; no device collective, so any backend).  No-op on one process."""
    import jax

    if jax.process_count() == 1:
        return
    from jax._src import distributed

    distributed.global_state.client.wait_at_barrier(name, int(timeout_s * 1000))


def merged_outcome(outcome, setting, formats=("png", "pdf")):
    """After a multi-host :func:`~iclsim.engine.sweep.run_sweep`: wait until every process
    has written its shard, then the outcome with the merged result of all shards
    (:func:`iclsim.engine.store.load_result`) and, on process 0, the figures drawn from it.

    Returns ``(outcome, missing)``: ``missing`` lists the shard files this host cannot see
    (hosts without a shared output folder); the outcome then keeps this host's shard.
    """
    import dataclasses

    import jax

    from iclsim.engine import store

    if jax.process_count() == 1:
        return outcome, []
    wait_for_all(f"iclsim:result:{outcome.path}")
    shards = [outcome.path / f"result.p{i}.nc" for i in range(jax.process_count())]
    missing = [p for p in shards if not p.exists()]
    if missing:
        return outcome, missing
    ds = store.load_result(outcome.path)  # what 'iclsim show' reads, on any host
    figures, figure_error = [], ""
    if jax.process_index() == 0:
        try:
            figures = setting.figures(ds, outcome.path, tuple(formats))
        except Exception as exc:  # a figure bug must not lose or hide the stored result
            figure_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return dataclasses.replace(outcome, dataset=ds, figures=figures,
                               figure_error=figure_error), []
