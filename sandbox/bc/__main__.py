"""`python -m sandbox.bc [--port N] [--vendors N]`: serve the BC sandbox in the foreground."""
from __future__ import annotations

import argparse

from sandbox import seed
from sandbox.common import SandboxServer, serve_in_foreground

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
    serve_in_foreground(server, app, f"BC sandbox listening on {base}", [
        ("token URL", f"POST {base}/{seed.TENANT_ID}/oauth2/v2.0/token"),
        ("API", api),
        ("company", f"{api}/companies({seed.COMPANY_ID})"),
        ("tenant", seed.TENANT_ID),
        ("environment", seed.ENVIRONMENT),
        ("company id", seed.COMPANY_ID),
        ("client id", seed.BC_CLIENT_ID),
        ("client secret", seed.BC_CLIENT_SECRET),
        ("scope", "https://api.businesscentral.dynamics.com/.default"),
        ("settings", f"BC_API_URL={base} BC_AUTHORITY_URL={base}"),
        ("control", f"{base}/_sandbox/ (calls, faults, config, documents, stats...)"),
    ])


if __name__ == "__main__":
    main()
