"""
Starting the workers of a run, on one machine or several: Detectron2's `launch`, with a wait for
the other machines that is announced, bounded (`join_timeout`) and ends with a message naming the
address and the ranks that did not join. User errors in a worker end the run with their message
(ltm_d2/errors.py); Ctrl-C ends the workers quietly and reaches the caller of `launch` as a
KeyboardInterrupt, once they have ended.
"""

import os
import signal
import sys
import time
from datetime import timedelta
from urllib.parse import urlparse

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detectron2.engine import launch as detectron2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT, _find_free_port
from detectron2.utils import comm

from ..errors import INTERRUPTED_EXIT, USER_ERROR_EXIT, UserError, report_and_exit, run_main

# Seconds a worker waits for every worker of every machine to join, unless told otherwise.
DEFAULT_JOIN_TIMEOUT = DEFAULT_TIMEOUT.total_seconds()
JOINED = "ltm_d2/joined"  # store key: the number of workers that joined
POLL_SECONDS = 0.2
# Seconds the workers have after Ctrl-C to end (their hooks' after_train) before they are killed.
INTERRUPT_GRACE_SECONDS = 30


class JoinError(UserError):
    """Not every machine of the run joined within the join timeout."""


def launch(
    main_func,
    num_workers_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args=(),
    join_timeout: float = DEFAULT_JOIN_TIMEOUT,
):
    """
    Run `main_func(*args)` in `num_workers_per_machine` processes on each of `num_machines`
    machines (GPUs, or CPU workers with gloo), as :func:`detectron2.engine.launch` does. With a
    tcp:// `dist_url` (or "auto" on one machine), the workers first meet at that address: the
    first worker of each machine says once what it waits for, and if some worker has not joined
    after `join_timeout` seconds, every machine ends with a message naming the address and the
    missing ranks (a :class:`JoinError`, exit status 2). Ctrl-C (SIGINT to this process, or to
    a worker) interrupts every worker, waits for them to end, then raises KeyboardInterrupt here.
    Other URLs (file://, env://) are passed to Detectron2 unchanged, with `join_timeout` as its
    timeout.
    """
    world_size = num_machines * num_workers_per_machine
    if world_size == 1:
        return main_func(*args)
    if dist_url == "auto":
        if num_machines > 1:
            raise UserError("--dist-url auto works on one machine only: give tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if not dist_url.startswith("tcp://"):
        return detectron2_launch(
            main_func,
            num_workers_per_machine,
            num_machines,
            machine_rank,
            dist_url,
            args,
            timedelta(seconds=join_timeout),
        )
    layout = (world_size, num_workers_per_machine, num_machines, machine_rank)
    workers = mp.start_processes(
        _worker,
        nprocs=num_workers_per_machine,
        args=(main_func, layout, dist_url, args, join_timeout),
        daemon=False,
        join=False,
    )
    try:
        while not workers.join():
            pass
    except KeyboardInterrupt:
        _interrupt(workers.processes)
        raise
    except mp.ProcessExitedException as e:
        if e.exit_code == INTERRUPTED_EXIT:  # a worker alone was sent SIGINT
            raise KeyboardInterrupt from None
        if e.exit_code != USER_ERROR_EXIT:
            raise
        sys.exit(USER_ERROR_EXIT)  # the worker printed its message


def share_cpu_cores() -> None:
    """On the CPU: share the cores this process may run on (`taskset`) between the workers of
    this machine, as torch's threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, (cores or 1) // comm.get_local_size()))


def _interrupt(processes) -> None:
    """
    Pass Ctrl-C on to the workers (typed in a terminal it has reached them already, sent to this
    process alone it has not), give them INTERRUPT_GRACE_SECONDS to end, then kill those left,
    also when Ctrl-C comes again meanwhile.
    """
    running = [p for p in processes if p.is_alive()]
    try:
        for p in running:
            os.kill(p.pid, signal.SIGINT)
        deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
        for p in running:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:
        for p in running:
            if p.is_alive():
                p.kill()
                p.join()


def _worker(local_rank, main_func, layout, dist_url, args, join_timeout):
    """
    One worker. Once interrupted, it ends quietly with INTERRUPTED_EXIT whatever it raises (a
    collective fails when the peers it waits for have ended first), and the main process says
    what to do. Only the first SIGINT interrupts it: Ctrl-C typed in a terminal reaches a worker
    twice, from the terminal and passed on by the main process. A SIGINT ignored (SIG_IGN) when
    the run started stays ignored.
    """
    interrupted = False

    def interrupt_once(signum, frame):
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, interrupt_once)
    try:
        run_worker(local_rank, main_func, layout, dist_url, args, join_timeout)
    except BaseException:
        if not interrupted:
            raise
        sys.exit(INTERRUPTED_EXIT)


def run_worker(local_rank, main_func, layout, dist_url, args, join_timeout):
    """
    The worker of local rank `local_rank` on machine `machine_rank` of `layout` (world size,
    workers per machine, machines, machine rank): join the others at `dist_url`
    (:func:`join`), start the process group (NCCL on a GPU, gloo on the CPU), run
    `main_func(*args)` ending on a user error with its message, and return what it returned.
    """
    world_size, per_machine, num_machines, machine_rank = layout
    rank = machine_rank * per_machine + local_rank
    try:
        store = join(dist_url, rank, layout, join_timeout)
    except JoinError as e:
        if local_rank == 0:  # one message per machine
            report_and_exit(e)
        sys.exit(USER_ERROR_EXIT)
    has_gpu = torch.cuda.is_available()
    dist.init_process_group(
        "nccl" if has_gpu else "gloo",
        store=store,
        rank=rank,
        world_size=world_size,
        timeout=DEFAULT_TIMEOUT,
    )
    comm.create_local_process_group(per_machine)
    if has_gpu:
        torch.cuda.set_device(local_rank)
    comm.synchronize()
    result = run_main(main_func, *args)
    # Leave together: a worker that exits while its peers still talk to its connections (rank 0
    # also serves the store) can end them with SIGABRT.
    comm.synchronize()
    dist.destroy_process_group()
    return result


def join(dist_url: str, rank: int, layout, join_timeout: float) -> dist.TCPStore:
    """
    Meet every other worker at the TCPStore of `dist_url` (served by rank 0), waiting at most
    `join_timeout` seconds. Returns the store, for the process group, once all have joined;
    raises :class:`JoinError` otherwise.
    """
    world_size, per_machine, num_machines, machine_rank = layout
    address = urlparse(dist_url)
    first_of_machine = rank == machine_rank * per_machine
    if first_of_machine and num_machines > 1:
        what = (
            f"{num_machines} machines ({world_size} workers) to join at {dist_url}"
            if machine_rank == 0
            else f"machine 0 at {dist_url} and the other machines"
        )
        print(
            f"Machine {machine_rank} of {num_machines}: waiting up to {join_timeout:g} s for "
            f"{what} (--join-timeout).",
            flush=True,
        )
    deadline = time.monotonic() + join_timeout
    try:
        store = dist.TCPStore(
            address.hostname,
            address.port,
            world_size,
            is_master=rank == 0,
            timeout=timedelta(seconds=join_timeout),
            wait_for_workers=False,
        )
        store.set(f"{JOINED}/{rank}", "")
        joined = store.add(JOINED, 1)
        while joined < world_size and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            joined = store.add(JOINED, 0)
    except (RuntimeError, dist.DistError) as e:  # rank 0 unreachable, or gone after its timeout
        raise JoinError(
            f"machine {machine_rank} could not reach machine 0 at {dist_url} within "
            f"{join_timeout:g} s ({e}). Start machine 0 (--machine-rank 0) with this --dist-url, "
            "check the address and that the port is open, or raise --join-timeout."
        ) from e
    if joined < world_size:
        raise JoinError(_missing_message(store, dist_url, layout, joined, join_timeout))
    store.set_timeout(DEFAULT_TIMEOUT)
    return store


def _missing_message(store, dist_url: str, layout, joined: int, join_timeout: float) -> str:
    world_size, per_machine, num_machines, _ = layout
    missing = [r for r in range(world_size) if not store.check([f"{JOINED}/{r}"])]
    machines = sorted({r // per_machine for r in missing})
    return (
        f"{world_size - joined} of the {world_size} workers did not join at {dist_url} within "
        f"{join_timeout:g} s: ranks {', '.join(map(str, missing))} (machine "
        f"{', '.join(map(str, machines))} of {num_machines}). Start each machine with its "
        "--machine-rank, the same --num-machines and --dist-url, or raise --join-timeout."
    )
