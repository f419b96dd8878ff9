"""A local Azure Functions host for this project (`python -m devhost`): serves the same
`function_app.py` that `func start` would, where Core Tools cannot be installed.

In-process: `Host(app, environ=..., app_dir=..., port=0).start()` ... `host.stop()`.
As a subprocess: `HostProcess(app_dir, env).start()` (see devhost/process.py).
"""
from devhost.errors import HostError
from devhost.host import Host
from devhost.process import HostProcess

__all__ = ["Host", "HostError", "HostProcess"]
