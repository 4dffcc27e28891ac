"""The raylet process's entry point: start the worker zygote first, then import and run the raylet.

Owns: the order of the raylet process's start-up, so that the zygote's
imports (a worker's modules) run beside the raylet's own instead of after
them: this module imports only the light ``zygote``/``processes`` modules
before the zygote starts. Must not: do anything else (``raylet.serve`` does).
"""

from __future__ import annotations

import signal

from detray.real.processes import ChildContext
from detray.real.zygote import Zygote


def main(context: ChildContext) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    zygote = None
    if not context.payload.get("no_zygote"):
        zygote = Zygote(context.token or b"", context.payload["cwd"], context.payload["sys_path"])
    from detray.real import raylet  # the heavy part: the core, the store, Redis

    raylet.serve(context, zygote)
