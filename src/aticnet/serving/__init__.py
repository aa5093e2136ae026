"""Serving models to other programs: ``aticnet serve`` (an Open Inference Protocol v2 server on KServe's model
server, batching on Ray Serve) and batch prediction on Ray Data (``aticnet predict --ray``).

The heavy libraries (kserve, ray) are imported by the modules that use them, not here.
"""

import sys


def import_kserve() -> None:
    """Import kserve with an empty command line: its model_server module parses ``sys.argv`` when imported and
    would read (or reject) ``aticnet serve``'s flags as its own."""
    if "kserve" in sys.modules:
        return
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve  # noqa: F401
    finally:
        sys.argv = argv
