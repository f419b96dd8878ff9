"""`make sandboxes`: both sandboxes in the foreground on the ports local.settings.json.example names."""
from __future__ import annotations

import argparse
import sys
import threading

from sandbox.basware import BaswareSandbox
from sandbox.bc import BcSandbox
from sandbox.common import SandboxServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--basware-port", type=int, default=7081)
    parser.add_argument("--bc-port", type=int, default=7082)
    args = parser.parse_args(argv)
    basware, bc = BaswareSandbox(seed_broken=True), BcSandbox()
    servers = [SandboxServer(basware, args.basware_port).start(), SandboxServer(bc, args.bc_port).start()]
    basware.base_url, bc.base_url = servers[0].base_url, servers[1].base_url
    print(f"Basware sandbox: {servers[0].base_url}  (BASWARE_API_URL)")
    print(f"BC sandbox:      {servers[1].base_url}  (BC_API_URL and BC_AUTHORITY_URL)")
    print("Credentials and ids: local.settings.json.example. Operator surface: /_sandbox/ on each. Ctrl+C stops.")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.stop()
        bc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
