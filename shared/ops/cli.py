"""Operators' command line: `python -m shared.ops.cli ...`.

    python -m shared.ops.cli records list [--kind invoice] [--status failed] [--limit 200]
    python -m shared.ops.cli records show KIND ID
    python -m shared.ops.cli records replay KIND ID
    python -m shared.ops.cli masterdata sync [--force]
    python -m shared.ops.cli health
    python -m shared.ops.cli retention run            (directly against storage only)

Two ways to reach the connector, the same plain functions underneath:
- against a running app: `--url http://127.0.0.1:7071 --key <function key>` (or the environment
  variable ML_CONNECTOR_FUNCTION_KEY) calls the records routes of shared/functions/operations.py;
- directly against storage and the APIs (no `--url`): settings come from the environment, with
  `local.settings.json` (`--settings PATH`, else ./local.settings.json) filling in what is unset.

Add `--json` for machine-readable output. Exit status: 0 done, 1 refused/failed/unhealthy, 2 usage.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from urllib.parse import quote
from pathlib import Path
from typing import Any, Mapping, Sequence

KEY_VARIABLE = "ML_CONNECTOR_FUNCTION_KEY"
RECORDS_ROUTE = "manage/records"  # shared/functions/operations.py: "manage/" works on the Azure host too
MASTERDATA_ROUTE = "manage/masterdata/sync"


class Failed(Exception):
    """A refusal or failure already explained to the user; exit status 1."""


# -- the two back ends ---------------------------------------------------------------------------------
class Remote:
    """The connector's HTTP routes on a running app."""

    def __init__(self, url: str, key: str | None, timeout: float = 300.0) -> None:
        import httpx

        headers = {"x-functions-key": key} if key else {}
        self._http = httpx.Client(base_url=url.rstrip("/") + "/api", headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, params: dict | None = None) -> tuple[int, Any]:
        import httpx

        try:
            response = self._http.request(method, path, params={k: v for k, v in (params or {}).items()
                                                                if v is not None})
        except httpx.HTTPError as exc:
            raise Failed(f"the app at {self._http.base_url} did not answer ({type(exc).__name__})") from None
        if response.status_code in (401, 403):
            raise Failed(f"the app refused the function key ({response.status_code}); pass --key")
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500] or response.reason_phrase}
        return response.status_code, body

    def list_records(self, kind, status, limit) -> list[dict]:
        code, body = self._call("GET", RECORDS_ROUTE, {"kind": kind, "status": status, "limit": str(limit)})
        if code != 200:
            raise Failed(body.get("error") or f"HTTP {code}")
        return body["records"]

    def show_record(self, kind, id) -> tuple[int, dict]:
        code, body = self._call("GET", f"{RECORDS_ROUTE}/{kind}/{quote(id, safe='')}")
        if code not in (200, 300, 404):
            raise Failed(body.get("error") or f"HTTP {code}")
        return code, body

    def replay_record(self, kind, id) -> tuple[int, dict]:
        return self._call("POST", f"{RECORDS_ROUTE}/{kind}/{quote(id, safe='')}/replay")

    def masterdata_sync(self, force: bool) -> tuple[int, dict]:
        return self._call("POST", MASTERDATA_ROUTE, {"force": "true" if force else "false"})

    def health(self) -> tuple[int, dict]:
        return self._call("GET", "health")

    def retention(self) -> dict:
        raise Failed("retention runs on the app's timer; run it directly against storage (without --url)")


class Local:
    """The same functions, called in this process against storage and the APIs."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        from shared.core.settings import load_settings

        self.settings = load_settings(environ)
        self._rt = None

    @property
    def rt(self):
        if self._rt is None:
            from shared.core.runtime import build_runtime
            self._rt = build_runtime(self.settings)
        return self._rt

    def list_records(self, kind, status, limit) -> list[dict]:
        from shared.ops.admin import list_records
        return list_records(self.rt.jobs, kind, status, limit)

    def show_record(self, kind, id) -> tuple[int, dict]:
        from shared.ops.admin import lookup_record
        from shared.core.secrets import Scrubber
        return lookup_record(self.rt.jobs, self.rt.audit, kind, id, scrub=Scrubber(self.settings.secret_values()))

    def replay_record(self, kind, id) -> tuple[int, dict]:
        from shared.ops.admin import replay_record
        outcome = replay_record(self.rt, kind, id, requested_by="operator (CLI)")
        return outcome.http_status, outcome.as_dict()

    def masterdata_sync(self, force: bool) -> tuple[int, dict]:
        from shared.flows.masterdata.sync import sync_all
        summary = sync_all(self.rt, force=force)
        status = {"busy": 409, "failed": 502}.get(summary.status, 200)
        return status, json.loads(summary.model_dump_json())

    def health(self) -> tuple[int, dict]:
        from shared.ops.health import check_health
        report = check_health(self.rt)
        return (200 if report["status"] == "ok" else 503), report

    def retention(self) -> dict:
        from shared.ops.retention import purge
        return purge(self.rt).as_dict()

    def close(self) -> None:
        if self._rt is not None:
            self._rt.close()


def local_environ(environ: Mapping[str, str], settings_file: str | None) -> dict[str, str]:
    """The environment, with local.settings.json's `Values` filling in what it leaves unset."""
    merged = dict(environ)
    path = Path(settings_file) if settings_file else Path.cwd() / "local.settings.json"
    if settings_file and not path.is_file():
        raise Failed(f"settings file {path} does not exist")
    if path.is_file():
        try:
            values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
        except (OSError, ValueError, AttributeError) as exc:
            raise Failed(f"{path} is not a local.settings.json file ({type(exc).__name__})") from None
        for name, value in values.items():
            if name not in merged and value is not None:
                merged[name] = str(value)
    return merged


# -- output ----------------------------------------------------------------------------------------------
def _short(value: Any, width: int) -> str:
    text = "" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def print_list(records: list[dict], out) -> None:
    if not records:
        print("no records", file=out)
        return
    columns = [("kind", 12), ("state", 14), ("id", 36), ("basware_id", 24), ("bc", 20), ("attempts", 8),
               ("updated", 25), ("last_error", 60)]
    print("  ".join(name.ljust(width) for name, width in columns).rstrip(), file=out)
    for r in records:
        bc = r.get("bc_number") or r.get("bc_id")
        values = [r.get("kind"), r.get("state"), r.get("id"), r.get("basware_id"), bc, r.get("attempts"),
                  r.get("updated"), r.get("last_error")]
        print("  ".join(_short(v, w).ljust(w) for v, (_, w) in zip(values, columns)).rstrip(), file=out)
    print(f"{len(records)} record(s)", file=out)


def print_record(record: dict, out) -> None:
    print(f"{record['kind']} {record['id']}: {record['state']} (attempts {record.get('attempts')}, "
          f"updated {record.get('updated')})", file=out)
    for name in ("basware_id", "bc_id", "bc_number", "bc_company_id", "last_error", "replay_requested_at"):
        if record.get(name):
            print(f"  {name}: {record[name]}", file=out)
    fields = record.get("fields") or {}
    for name in ("queue", "previous_state", "dead_letter_reason"):
        if fields.get(name):
            print(f"  {name}: {fields[name]}", file=out)
    trail = record.get("trail") or []
    print(f"audit trail ({len(trail)} rows, oldest first):", file=out)
    for row in trail:
        extras = " ".join(f"{k}={row[k]}" for k in ("http_status", "correlation_id", "error_code")
                          if row.get(k) not in (None, ""))
        print(f"  {row.get('time')}  {row.get('step')}/{row.get('outcome')}"
              f"{'  ' + extras if extras else ''}  {row.get('message') or ''}".rstrip(), file=out)


# -- the command line ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help="base URL of a running app, e.g. http://127.0.0.1:7071 (default: go to storage directly)")
    common.add_argument("--key", default=argparse.SUPPRESS, help=f"function key (default: ${KEY_VARIABLE})")
    common.add_argument("--settings", default=argparse.SUPPRESS,
                        help="local.settings.json to read settings from (default: ./local.settings.json)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")

    parser = argparse.ArgumentParser(prog="python -m shared.ops.cli", parents=[common],
                                     description="ml-connector operations: records, replay, master data, health.")
    commands = parser.add_subparsers(dest="command", required=True)

    records = commands.add_parser("records", help="jobs and their audit trails").add_subparsers(
        dest="action", required=True)
    listing = records.add_parser("list", parents=[common], help="jobs by flow and state")
    listing.add_argument("--kind", help="invoice, payment, masterdata, purchaseorder, notification")
    listing.add_argument("--status", help="a state: failed, dead_lettered (or dead-lettered), done, received, ...")
    listing.add_argument("--limit", type=int, default=200)
    for action, text in (("show", "one job with its whole audit trail"),
                         ("replay", "re-enqueue a failed or dead-lettered job (safe to repeat)")):
        sub = records.add_parser(action, parents=[common], help=text)
        sub.add_argument("kind")
        sub.add_argument("id", help="the job id, the Basware invoice id or invoice number, or the BC document number or id")

    masterdata = commands.add_parser("masterdata", help="BC -> Basware master data").add_subparsers(
        dest="action", required=True)
    sync = masterdata.add_parser("sync", parents=[common], help="run the master-data import now")
    sync.add_argument("--force", action="store_true", help="re-send every record, changed or not")

    commands.add_parser("health", parents=[common], help="storage, tokens and BC companies reachable?")
    retention = commands.add_parser("retention", help="remove old finished jobs and audit rows").add_subparsers(
        dest="action", required=True)
    retention.add_parser("run", parents=[common], help="one retention run now (directly against storage)")
    return parser


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None, out=None) -> int:
    out = out or sys.stdout
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    as_json = getattr(args, "json", False)
    backend: Remote | Local | None = None
    try:
        if getattr(args, "url", None):
            backend = Remote(args.url, getattr(args, "key", None) or environ.get(KEY_VARIABLE))
        else:
            from shared.core.errors import SettingsError
            try:
                backend = Local(local_environ(environ, getattr(args, "settings", None)))
            except SettingsError as exc:
                raise Failed(f"{exc} (set it in the environment or local.settings.json, or use --url)") from None
        return _run(args, backend, as_json, out)
    except Failed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if isinstance(backend, Local):
            backend.close()


def _emit(body: Any, out) -> None:
    print(json.dumps(body, indent=2, default=str), file=out)


def _run(args, backend, as_json: bool, out) -> int:
    if args.command == "records" and args.action == "list":
        records = backend.list_records(args.kind, args.status, args.limit)
        _emit(records, out) if as_json else print_list(records, out)
        return 0
    if args.command == "records" and args.action == "show":
        status, record = backend.show_record(args.kind, args.id)
        if status == 404:
            raise Failed(record.get("error") or f"no {args.kind} record with id {args.id}")
        if status == 300:  # an invoice number that several invoices carry: list them
            _emit(record, out) if as_json else (print(record["error"], file=out), print_list(record["matches"], out))
            return 1
        _emit(record, out) if as_json else print_record(record, out)
        return 0
    if args.command == "records" and args.action == "replay":
        status, body = backend.replay_record(args.kind, args.id)
        _emit(body, out) if as_json else print(f"{body.get('status', status)}: {body.get('message') or body.get('error')}",
                                                file=out)
        return 0 if status in (200, 202) else 1
    if args.command == "masterdata":
        status, body = backend.masterdata_sync(args.force)
        _emit(body, out)
        return 0 if status in (200, 202) else 1
    if args.command == "health":
        status, body = backend.health()
        if as_json:
            _emit(body, out)
        else:
            print(f"{body.get('status')} ({body.get('ms')} ms)", file=out)
            for name, check in (body.get("checks") or {}).items():
                print(f"  {'ok  ' if check.get('ok') else 'FAIL'} {name} {check.get('ms')} ms"
                      f"{'  ' + check['error'] if check.get('error') else ''}", file=out)
        return 0 if status == 200 else 1
    if args.command == "retention":
        _emit(backend.retention(), out)
        return 0
    raise Failed(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
