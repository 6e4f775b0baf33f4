"""Finsta alignment training on finsta shards, and the exported SG-free host.

The public entry point for downstream use is :func:`load_host` (docs/model.md, "Using the exported host")::

    from finsta_model import load_host
    host = load_host("exported/")
"""


def load_host(path, device: str = "cpu"):
    """The exported host in ``path`` (see :func:`finsta_model.export.load_host`)."""
    from finsta_model.export import load_host as _load_host   # torch only when asked for
    return _load_host(path, device)


__all__ = ["load_host"]
