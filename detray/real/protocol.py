"""The messages between the raylet and its clients (the driver, workers), and how values travel.

Owns: the message tags, the wire form of a value (``Wire``), and turning a
serialized value into its wire form and back. Must not: do I/O or decide
anything (``raylet`` and ``client`` do).

Every channel message is a *list* of messages (a batch), each a tuple whose
first item is a tag below. Batching is how reference-count changes ride
along with the call that follows them, in order, with no extra round trip.

User data is opaque to the raylet: task payloads and inline values travel
as ``bytes`` pickled by the client, so the raylet never imports user
modules and never unpickles user code; it only unpickles the core's specs
and this module's tuples, from authenticated peers.

Wire form of a value a ``get`` or a task argument receives:

* ``("i", inband, buffers, is_error)``: inline (small values, at most
  ``settings.INLINE_THRESHOLD_BYTES``), the bytes themselves;
* ``("s", is_error)``: in the node's shared-memory store under its id (read
  with ``StoreClient``, zero copy);
* ``("f", failure, cause)``: the core failed it (lost, owner died, actor
  died...); ``cause`` is the wire form of an actor's constructor error when
  there is one, else ``None``.
"""

from __future__ import annotations

from typing import Any, Union

from detray.serialization import SerializedObject

# client -> raylet
HELLO = "hello"  # (HELLO, req, kind "driver"|"worker", pid); a driver is answered with the store location
SUBMIT = "submit"  # (SUBMIT, spec, payload bytes, held refs, held actors, parent task|None, inherit actor retries)
ACTOR = "actor"  # (ACTOR, req|None, spec, payload, meta, held refs, held actors, get_if_exists, parent)
PUT = "put"  # (PUT, obj, owner, wire|None, size, contained refs, contained actors)
REQUEST = "request"  # (REQUEST, req, kind "get"|"wait"|"await", objects, num_required, fetch)
UNREQUEST = "unrequest"  # (UNREQUEST, req, kind): a timed-out get/wait; a wait is answered with what is ready
REFS = "refs"  # (REFS, added objs, removed objs, added actors, removed actors, escaped objs)
KILL = "kill"  # (KILL, actor, no_restart)
CANCEL = "cancel"  # (CANCEL, task, force, recursive)
LOOKUP = "lookup"  # (LOOKUP, req, name, namespace)
INFO = "info"  # (INFO, req, what "cluster"|"available"|"nodes")
DONE = "done"  # (DONE, task, attempt, results, error_types|None, cancelled, init_error wire|None)
EXITING = "exiting"  # (EXITING, task, attempt): the actor call called exit_actor() (no result)
PRINT = "print"  # (PRINT, text, stream) worker output; raylet -> driver: (PRINT, line, stream)
LOST = "lost"  # (LOST, objects): their store files are gone (a get found them missing)
SHUTDOWN = "shutdown"  # (SHUTDOWN, req): the driver ends the cluster

# raylet -> client
REPLY = "reply"  # (REPLY, req, data)
ASSIGN = "assign"  # (ASSIGN, worker_id, node_id, env vars, job)
RUN = "run"  # (RUN, spec, attempt, payload, gpu_ids, args {obj: wire}, meta|None)
#   meta of an actor creation: (class meta, max_concurrency, actor name|None)
INTERRUPT = "interrupt"  # (INTERRUPT, task, attempt): a non-forced cancel (the worker applies Ray's rule)
EXIT = "exit"  # (EXIT,): the worker exits (after an EXITING it runs its atexit handlers first)

Wire = tuple[Any, ...]
Message = tuple[Any, ...]
Buffers = list[Union[bytes, memoryview]]


def inline(serialized: SerializedObject, is_error: bool = False) -> Wire:
    """The inline wire form of a small serialized value (buffers copied to bytes once)."""
    return ("i", serialized.inband, [bytes(buffer) for buffer in serialized.buffers], is_error)


def from_inline(wire: Wire) -> SerializedObject:
    """The ``SerializedObject`` of an inline wire value (``("i", ...)``)."""
    return SerializedObject(inband=wire[1], buffers=list(wire[2]))


def wire_size(wire: Wire) -> int:
    """Bytes of an inline wire value."""
    return len(wire[1]) + sum(len(buffer) for buffer in wire[2])


IN_STORE: Wire = ("s", False)
IN_STORE_ERROR: Wire = ("s", True)
