"""Benchmark: invoice images travelling with the invoice, Basware -> BC. Prints figures; asserts nothing.

    python -m bench.invoice_images                       # 50 + 50 invoices; a 20 MB image; 300 + 300 throttled
    python -m bench.invoice_images --count 50 --big-mb 20 --throttled 300 --window-seconds 20

The same stack as bench/invoices.py (the real function_app.py under devhost in its own process, a
fresh Azurite, both sandboxes in this process), default settings (ATTACHMENT_CATEGORIES =
ORIGINALIMAGE: each invoice's image, a generated PDF of about 1 KB, is copied; delivery notes and
confidential files stay in Basware).

1. Requests per invoice without and with the image: `count` invoices without `attachments[]`, then
   `count` with them, every HTTP request both sandboxes saw counted by endpoint (goal: at most 2
   more BC requests with the image).
2. Peak memory attaching a big image: the app process's peak resident set (VmHWM) after the runs
   above, then after one invoice whose image is `--big-mb` MB of random bytes (goal: flat, a few
   MB at most above the run without); the bytes BC stored are compared with Basware's.
3. Throughput with images against BC's limits: bench/invoices.py's throttled run (5 concurrent,
   20 requests/s in a scaled window, 150 ms per BC request), without and then with images; the
   fraction is invoices/min with images over invoices/min without.
"""
from __future__ import annotations

import argparse
import os
import re
from collections import Counter

from bench.common import Stack, Timer, api_calls, header, last_seq, mb, proc_memory
from bench.invoices import classify, documents, throttled, transfer


def by_endpoint(calls) -> Counter:
    """bench.invoices.classify's per-invoice endpoints, attachment codes folded into one name."""
    per_invoice, _, _ = classify(calls)
    out: Counter = Counter()
    for name, n in per_invoice.items():
        out[re.sub(r"/attachments/[^/]+$", "/attachments/{attachmentExternalCode}", name)] += n
    return out


def count_requests(stack: Stack, docs: list[dict], label: str, out=print) -> dict:
    bc_mark, bw_mark = last_seq(stack.bc), last_seq(stack.basware)
    done, seconds = transfer(stack, docs, max(120, len(docs) * 3), out)
    bc_inv = by_endpoint(api_calls(stack.bc, bc_mark))
    bw_inv = by_endpoint(api_calls(stack.basware, bw_mark))
    n = len(docs)
    redirect = sum(v for k, v in bw_inv.items() if k.startswith("GET /_presigned/"))
    figures = {"invoices": n, "seconds": round(seconds, 2), "all_transferred": done,
               "bc_per_invoice": round(sum(bc_inv.values()) / n, 3),
               "basware_api_per_invoice": round((sum(bw_inv.values()) - redirect) / n, 3),
               "basware_presigned_per_invoice": round(redirect / n, 3),
               "bc_endpoints": dict(bc_inv), "basware_endpoints": dict(bw_inv)}
    out(f"   {label}: {n} invoices in {seconds:.1f}s; BC {figures['bc_per_invoice']:.2f} requests per invoice, "
        f"Basware API {figures['basware_api_per_invoice']:.2f} + {figures['basware_presigned_per_invoice']:.2f} "
        f"pre-signed GETs")
    for name, k in sorted({**bc_inv, **bw_inv}.items(), key=lambda kv: -kv[1]):
        out(f"      {k / n:5.2f}  {name}")
    return figures


def big_image(stack: Stack, size_mb: float, offset: int, out=print) -> dict:
    (doc,) = documents(1, offset, images=True)
    doc["attachments"] = doc["attachments"][:1]  # the image only
    stack.basware.add_document(doc)
    data = os.urandom(int(size_mb * 1024 * 1024))
    stack.basware.set_attachment_content(doc["invoiceId"], doc["attachments"][0]["externalCode"], data)
    before = proc_memory(stack.app_pid)
    with Timer() as t:
        stack.deliver([doc["invoiceId"]])
        done, _ = stack.wait_transferred([doc["invoiceId"]], 300)
    after = proc_memory(stack.app_pid)
    posted = next((d for d in stack.bc.documents.values() if d.vendor_document_number == doc["invoiceNumber"].upper()),
                  None)
    stored = stack.bc.attachments_of(posted.id) if posted is not None else []
    same = len(stored) == 1 and stored[0].content == data
    return {"size_bytes": len(data), "seconds": round(t.seconds, 2), "transferred": done, "bytes_equal": same,
            "rss_before": before.get("VmRSS"), "hwm_before": before.get("VmHWM"), "hwm_after": after.get("VmHWM")}


def run(count: int = 50, warmup: int = 6, big_mb: float = 20.0, throttled_count: int = 300, window: float = 20.0,
        service_ms: float = 150.0, out=print) -> dict:
    info = header("invoice images: Basware attachments onto the BC invoice, under devhost", out)
    figures: dict = {"machine": info}
    with Stack(name="invoice-images") as stack:
        out(f"1. requests per invoice without and with the invoice image ({count} each, after {warmup} warm-up; "
            "BC unthrottled)")
        transfer(stack, documents(warmup), 120, out)
        figures["without"] = count_requests(stack, documents(count, warmup), "without images", out)
        hwm_without = proc_memory(stack.app_pid).get("VmHWM")
        figures["with"] = count_requests(stack, documents(count, warmup + count, images=True), "with images", out)
        extra_bc = figures["with"]["bc_per_invoice"] - figures["without"]["bc_per_invoice"]
        extra_bw = (figures["with"]["basware_api_per_invoice"] + figures["with"]["basware_presigned_per_invoice"]
                    - figures["without"]["basware_api_per_invoice"] - figures["without"]["basware_presigned_per_invoice"])
        out(f"   the image costs {extra_bc:+.2f} BC requests per invoice (goal <= +2) and {extra_bw:+.2f} Basware HTTP "
            "requests (the attachment GET's 302 and the pre-signed GET)")
        figures["extra_bc_per_invoice"], figures["extra_basware_per_invoice"] = round(extra_bc, 3), round(extra_bw, 3)

        hwm_small = proc_memory(stack.app_pid).get("VmHWM")
        out(f"2. peak memory of the app process attaching a {big_mb:.0f} MB image")
        big = big_image(stack, big_mb, warmup + 2 * count, out)
        figures["big_image"] = {**big, "hwm_without_images": hwm_without, "hwm_with_small_images": hwm_small}
        growth = (big["hwm_after"] or 0) - (hwm_without or 0)
        out(f"   peak RSS after {count} invoices without images {mb(hwm_without)}; after {count} with ~1 KB images "
            f"{mb(hwm_small)}; after the {big_mb:.0f} MB image {mb(big['hwm_after'])} (+{growth / 1048576:.1f} MB over "
            f"the run without; goal: a few MB). Transferred in {big['seconds']:.1f}s; BC holds the same "
            f"{big['size_bytes']} bytes: {big['bytes_equal']}")

        if throttled_count:
            out("3. throughput with images under BC's limits")
            offset = warmup + 2 * count + 1
            plain = throttled(stack, throttled_count, offset, figures["without"]["bc_per_invoice"], window,
                              service_ms, out)
            imaged = throttled(stack, throttled_count, offset + throttled_count, figures["with"]["bc_per_invoice"],
                               window, service_ms, out, images=True)
            figures["throttled_without"], figures["throttled_with"] = plain, imaged
            key = "invoices_per_min" if "invoices_per_min" in plain and "invoices_per_min" in imaged \
                else "invoices_per_min_whole_run"
            if plain.get(key):
                fraction = imaged[key] / plain[key]
                figures["throughput_fraction_with_images"] = round(fraction, 3)
                out(f"   with images {imaged[key]:.0f} invoices/min, without {plain[key]:.0f}: fraction "
                    f"{fraction:.2f} (BC requests per invoice {figures['without']['bc_per_invoice']:.2f} -> "
                    f"{figures['with']['bc_per_invoice']:.2f}: the rate limit alone predicts "
                    f"{figures['without']['bc_per_invoice'] / figures['with']['bc_per_invoice']:.2f})")
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="invoices counted without, then with images")
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--big-mb", type=float, default=20.0, help="size of the big image")
    parser.add_argument("--throttled", type=int, default=300, help="invoices per throttled run (0: skip)")
    parser.add_argument("--window-seconds", type=float, default=20.0)
    parser.add_argument("--service-ms", type=float, default=150.0)
    args = parser.parse_args(argv)
    return run(args.count, args.warmup, args.big_mb, args.throttled, args.window_seconds, args.service_ms)


if __name__ == "__main__":
    main()
