"""Identifiers for jobs, tasks, objects, actors, nodes and workers.

Owns: how every id is derived. Ids derive from the job, the submitter and a
counter (as Ray's do), never from uuid4, a clock or randomness, so the same
program submits the same ids in every run and a resubmitted task produces the
same object ids (reconstruction is idempotent).

Ids are plain strings (cheap to hash and compare, readable in traces and in
``redis-cli``); ``NewType`` keeps them apart for mypy. Node ids are zero-padded
so that lexical order is numeric order: tie-breaks "by node id" are stable.
"""

from __future__ import annotations

import hashlib
from typing import NewType

JobID = NewType("JobID", str)
TaskID = NewType("TaskID", str)
ObjectID = NewType("ObjectID", str)
ActorID = NewType("ActorID", str)
NodeID = NewType("NodeID", str)
WorkerID = NewType("WorkerID", str)

TASK_DIGEST_BYTES = 8
_RETURN_MARK = "r"
_PUT_MARK = "p"


def job_id(index: int) -> JobID:
    """The id of the ``index``-th job of a cluster (1-based, as Ray's)."""
    if index < 0:
        raise ValueError(f"job index must be >= 0, got {index}")
    return JobID(f"{index:08x}")


def driver_task_id(job: JobID) -> TaskID:
    """The pseudo-task a driver submits from (Ray gives the driver a task id too)."""
    return TaskID(f"{job}-driver")


def task_id(job: JobID, parent: TaskID, counter: int) -> TaskID:
    """Id of the ``counter``-th task submitted by ``parent`` within ``job``.

    A digest keeps ids short however deep tasks nest; the job prefix keeps
    jobs apart and readable.
    """
    if counter < 0:
        raise ValueError(f"task counter must be >= 0, got {counter}")
    digest = hashlib.blake2b(
        f"{parent}/{counter}".encode(), digest_size=TASK_DIGEST_BYTES
    ).hexdigest()
    return TaskID(f"{job}{digest}")


def return_object_id(task: TaskID, index: int) -> ObjectID:
    """Id of the ``index``-th return value (1-based) of ``task``."""
    if index < 1:
        raise ValueError(f"return index must be >= 1, got {index}")
    return ObjectID(f"{task}.{_RETURN_MARK}{index}")


def put_object_id(task: TaskID, index: int) -> ObjectID:
    """Id of the ``index``-th object ``put`` (1-based) by code running as ``task``."""
    if index < 1:
        raise ValueError(f"put index must be >= 1, got {index}")
    return ObjectID(f"{task}.{_PUT_MARK}{index}")


def is_put(obj: ObjectID) -> bool:
    """True for objects created by ``put`` (they have no lineage)."""
    return obj.rpartition(".")[2].startswith(_PUT_MARK)


def creating_task(obj: ObjectID) -> TaskID:
    """The task that created ``obj`` (for a put: the task that called put)."""
    return TaskID(obj.rpartition(".")[0])


def returning_task(obj: ObjectID) -> TaskID | None:
    """The task ``obj`` is a return value of; None for a put (``is_put`` and
    ``creating_task`` in one step, for the hot path)."""
    task, _, index = obj.rpartition(".")
    return None if index.startswith(_PUT_MARK) else TaskID(task)


def object_index(obj: ObjectID) -> int:
    """The 1-based return or put index of ``obj``."""
    return int(obj.rpartition(".")[2][1:])


def actor_id(creation_task: TaskID) -> ActorID:
    """An actor's id derives from the task that creates it."""
    return ActorID(f"A{creation_task}")


def actor_creation_task(actor: ActorID) -> TaskID:
    return TaskID(actor[1:])


def node_id(index: int) -> NodeID:
    """Id of the ``index``-th node to join the cluster (0-based, zero-padded)."""
    if index < 0:
        raise ValueError(f"node index must be >= 0, got {index}")
    return NodeID(f"node-{index:05d}")


def worker_id(node: NodeID, counter: int) -> WorkerID:
    """Id of the ``counter``-th worker started on ``node``."""
    if counter < 0:
        raise ValueError(f"worker counter must be >= 0, got {counter}")
    return WorkerID(f"{node}/w{counter:05d}")


def node_of_worker(worker: WorkerID) -> NodeID:
    return NodeID(worker.partition("/")[0])
