"""`python -m sandbox.bc [--port N] [--vendors N]`: serve the BC sandbox in the foreground."""
from __future__ import annotations

import argparse

from sandbox import seed
from sandbox.common import SandboxServer

from . import BcSandbox


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.bc", description=__doc__)
    parser.add_argument("--port", type=int, default=7082)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--vendors", type=int, default=50, help="number of vendors to seed (default 50)")
    parser.add_argument("--notification-delay", type=float, default=0.0,
                        help="seconds BC waits before sending notifications (real BC: 30)")
    args = parser.parse_args(argv)
    app = BcSandbox(vendor_count=args.vendors, notification_delay=args.notification_delay)
    server = SandboxServer(app, port=args.port, host=args.host)
    base = f"http://{args.host}:{server.port}"
    app.base_url = base
    api = f"{base}/v2.0/{seed.TENANT_ID}/{seed.ENVIRONMENT}/api/v2.0"
    print(f"BC sandbox listening on {base}", flush=True)
    print(f"  token URL     POST {base}/{seed.TENANT_ID}/oauth2/v2.0/token", flush=True)
    print(f"  API           {api}", flush=True)
    print(f"  company       {api}/companies({seed.COMPANY_ID})", flush=True)
    print(f"  tenant        {seed.TENANT_ID}", flush=True)
    print(f"  environment   {seed.ENVIRONMENT}", flush=True)
    print(f"  company id    {seed.COMPANY_ID}", flush=True)
    print(f"  client id     {seed.BC_CLIENT_ID}", flush=True)
    print(f"  client secret {seed.BC_CLIENT_SECRET}", flush=True)
    print("  scope         https://api.businesscentral.dynamics.com/.default", flush=True)
    print(f"  settings      BC_API_URL={base} BC_AUTHORITY_URL={base}", flush=True)
    print(f"  control       {base}/_sandbox/ (calls, faults, config, documents, stats...)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        app.close()


if __name__ == "__main__":
    main()
