"""`python -m sandbox.basware [--port N] [--with-broken]`: serve the Basware sandbox in the foreground."""
from __future__ import annotations

import argparse

from sandbox import seed
from sandbox.common import SandboxServer, serve_in_foreground

from . import BaswareSandbox


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.basware", description=__doc__)
    parser.add_argument("--port", type=int, default=7081)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--with-broken", action="store_true",
                        help="also seed seed.broken_invoices() (unknown vendor, blocked account, bad dimension, vendor dimension rule)")
    parser.add_argument("--invoices", type=int, default=24, help="approved invoices to seed (default 24)")
    parser.add_argument("--no-documents", action="store_true", help="start without accounting documents")
    parser.add_argument("--auto-notify", action="store_true",
                        help="notify webhook subscribers when a document becomes WaitingForTransfer")
    parser.add_argument("--signature-encoding", choices=["hex", "base64", "sha256="], default="hex")
    args = parser.parse_args(argv)
    app = BaswareSandbox(seed_documents=not args.no_documents, seed_broken=args.with_broken,
                         invoice_count=args.invoices, auto_notify=args.auto_notify,
                         signature_encoding=args.signature_encoding)
    server = SandboxServer(app, port=args.port, host=args.host)
    base = f"http://{args.host}:{server.port}"
    app.base_url = base
    serve_in_foreground(server, app, f"Basware sandbox listening on {base}", [
        ("token URL", f"POST {base}/v1/tokens  (HTTP Basic client id/secret; form grant_type, scope)"),
        ("API", f"{base}/v1/accountingDocuments?ProcessingStatus=WaitingForTransfer"),
        ("client id", f"{seed.BASWARE_CLIENT_ID}"),
        ("client secret", f"{seed.BASWARE_CLIENT_SECRET}"),
        ("webhook secret", f"{app.webhook_secret}  (X-BWAPI-Signature-256, {args.signature_encoding})"),
        ("documents", f"{len(app.documents)} (company {seed.COMPANY_CODE})"),
        ("settings", f"BASWARE_API_URL={base} BASWARE_CLIENT_ID={seed.BASWARE_CLIENT_ID} "
                     f"BASWARE_CLIENT_SECRET={seed.BASWARE_CLIENT_SECRET} BASWARE_WEBHOOK_SECRET={app.webhook_secret}"),
        ("control", f"{base}/_sandbox/ (documents, notify, deliveries, masterdata, requests, stats, "
                    "faults, config, calls...)"),
    ])


if __name__ == "__main__":
    main()
