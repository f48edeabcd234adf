"""`reffection-ari tokenize` (CSV of cookie,phone -> cookie,token) and `reffection-ari resolve`.

``tokenize`` streams in fixed-size chunks (constant memory whatever the file size), writes rows it
cannot take to a rejects file with their line number and reason (never the number itself), prints
a summary on stderr, and exits 1 when rows were rejected unless ``--allow-rejects``. Duplicates are
numbers seen earlier in the same file (checked through the vault, so memory stays flat); a number
already in the vault from an earlier import is not a duplicate and gets its existing subscriber id.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import IO, Any, TextIO

from ..errors import NumberError, ReffectionError
from ..phone import PhoneNumber
from ..routing import Route, RouteTable
from ..tokens import BulkItem, TokenService, validate_audience
from ._common import add_keyring_arg, add_vault_arg, open_service

CHUNK_ROWS = 5000


def register(sub: Any) -> None:
    p = sub.add_parser("tokenize", help="CSV cookie,phone -> cookie,token (streaming)")
    p.add_argument("input", metavar="INPUT_CSV", help="CSV with a header row; - for stdin")
    p.add_argument("-o", "--output", default="-", metavar="OUT_CSV", help="cookie,token CSV (default stdout)")
    p.add_argument("--audience", required=True, help="platform id, or platform/campaign")
    p.add_argument("--default-region", metavar="CC", help="ISO region for national-format numbers, e.g. GB")
    p.add_argument("--rejects", metavar="FILE", help="rejected rows (default: OUT_CSV.rejects.csv, or stderr)")
    p.add_argument("--allow-rejects", action="store_true", help="exit 0 even when rows were rejected")
    p.add_argument("--cookie-column", default="cookie")
    p.add_argument("--phone-column", default="phone")
    p.add_argument("--consent-source-column", default="consent_source")
    p.add_argument("--consent-at-column", default="consent_at", help="ISO 8601 or epoch seconds")
    p.add_argument("--ttl-days", type=int, default=None, help="token validity (default 90, see docs/tokens.md)")
    add_keyring_arg(p)
    add_vault_arg(p)
    p.set_defaults(func=cmd_tokenize)

    r = sub.add_parser("resolve", help="show what a token resolves to (masked; never the digits)")
    r.add_argument("token")
    r.add_argument("--audience", required=True, help="platform id, or platform/campaign")
    r.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="MATCH=TEMPLATE",
        help="route, e.g. +44=PJSIP/{e164}@uk-trunk or GB=...; repeatable",
    )
    r.add_argument("--default-route", metavar="TEMPLATE")
    add_keyring_arg(r)
    add_vault_arg(r)
    r.set_defaults(func=cmd_resolve)


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def _chunks(reader: Iterator[list[str]], size: int) -> Iterator[list[tuple[int, list[str]]]]:
    chunk: list[tuple[int, list[str]]] = []
    for row in reader:
        chunk.append((reader.line_num, row))  # type: ignore[attr-defined]
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Tokenizer:
    def __init__(self, service: TokenService, args: argparse.Namespace, out: Any, rejects: Any) -> None:
        self.service = service
        self.audience = args.audience
        self.region = args.default_region
        self.ttl = args.ttl_days
        self.out = out
        self.rejects = rejects
        self.run_id = uuid.uuid4().hex
        self.ok = 0
        self.rejected: Counter[str] = Counter()

    def reject(self, line: int, reason: str, cookie: str) -> None:
        self.rejected[reason] += 1
        self.rejects.writerow([line, reason, cookie])

    def process(self, chunk: list[tuple[int, list[str]]], cols: tuple[int, int, int | None, int | None]) -> None:
        ci, pi, si, ti = cols
        parse = PhoneNumber.parse
        region = self.region
        consent = si is not None or ti is not None
        accepted: list[tuple[int, str]] = []
        items: list[BulkItem] = []
        add_accepted = accepted.append
        add_item = items.append
        for line, row in chunk:
            try:
                cookie = row[ci].strip()
                phone = row[pi]
            except IndexError:
                self.reject(line, "short_row", row[ci].strip() if len(row) > ci else "")
                continue
            if not cookie or not phone or phone.isspace():
                self.reject(line, "empty", cookie)
                continue
            try:
                number = parse(phone, region)
            except NumberError:
                self.reject(line, "invalid_number", cookie)
                continue
            if consent:
                source = row[si].strip() or None if si is not None and si < len(row) else None
                at = None
                if ti is not None and ti < len(row) and row[ti].strip():
                    try:
                        at = _parse_time(row[ti].strip())
                    except ValueError:
                        self.reject(line, "bad_consent_at", cookie)
                        continue
                add_item(BulkItem(number, source, at))
            else:
                add_item(BulkItem(number))
            add_accepted((line, cookie))
        tokens = self.service.issue_many(items, self.audience, self.run_id, ttl_days=self.ttl)
        out_rows = []
        for (line, cookie), token in zip(accepted, tokens, strict=True):
            if token is None:
                self.reject(line, "duplicate", cookie)
            else:
                out_rows.append((cookie, token))
        self.out.writerows(out_rows)
        self.ok += len(out_rows)


def _open(stack: ExitStack, path: str, mode: str, std: TextIO) -> IO[str]:
    if path == "-":
        return std
    return stack.enter_context(open(path, mode, newline="", encoding="utf-8"))


def _bulk_session(service: TokenService) -> AbstractContextManager[object]:
    """The vault's batched-import session when it has one (SqliteVault), else nothing."""
    session = getattr(service.vault, "bulk_import", None)
    return session() if callable(session) else nullcontext()


def cmd_tokenize(args: argparse.Namespace) -> int:
    validate_audience(args.audience)
    service = open_service(args)
    started = time.monotonic()
    progress = sys.stderr.isatty()
    # The output file is written under a temporary name and renamed after the vault's last
    # commit: a run that dies leaves no OUT_CSV holding tokens the vault never committed.
    partial = f"{args.output}.partial" if args.output != "-" else "-"
    with ExitStack() as stack:
        src = _open(stack, args.input, "r", sys.stdin)
        dst = _open(stack, partial, "w", sys.stdout)
        rej_path = args.rejects or (f"{args.output}.rejects.csv" if args.output != "-" else "-")
        rej = _open(stack, rej_path, "w", sys.stderr)
        reader = csv.reader(src)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise ReffectionError("input CSV is empty (no header row)", code="bad_input") from None
        names = (args.cookie_column, args.phone_column, args.consent_source_column, args.consent_at_column)
        missing = [n for n in names[:2] if n.lower() not in header]
        if missing:
            raise ReffectionError(f"input CSV lacks column(s) {missing}", code="bad_input")
        idx = [header.index(n.lower()) if n.lower() in header else None for n in names]
        cols = (idx[0], idx[1], idx[2], idx[3])
        assert cols[0] is not None and cols[1] is not None
        writer = csv.writer(dst, lineterminator="\n")
        writer.writerow(["cookie", "token"])
        rejects = csv.writer(rej, lineterminator="\n")
        rejects.writerow(["line", "reason", "cookie"])
        tok = _Tokenizer(service, args, writer, rejects)
        try:
            with _bulk_session(service):
                for chunk in _chunks(reader, CHUNK_ROWS):
                    tok.process(chunk, (cols[0], cols[1], cols[2], cols[3]))
                    if progress:
                        done = tok.ok + sum(tok.rejected.values())
                        print(f"\rtokenize: {done} rows", end="", file=sys.stderr, flush=True)
        except BaseException:
            if partial != "-":
                dst.close()
                os.unlink(partial)
            raise
        finally:
            service.vault.close()
        if progress:
            print(file=sys.stderr)
    if partial != "-":
        os.replace(partial, args.output)
    elapsed = time.monotonic() - started
    total_rej = sum(tok.rejected.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(tok.rejected.items())) or "none"
    rate = (tok.ok + total_rej) / elapsed if elapsed > 0 else 0.0
    print(
        f"tokenize: {tok.ok} tokens, {total_rej} rejected ({detail}) in {elapsed:.1f}s ({rate:,.0f} rows/s)"
        + (f"; rejects in {rej_path}" if total_rej and rej_path != "-" else ""),
        file=sys.stderr,
    )
    return 1 if total_rej and not args.allow_rejects else 0


def _route_table(args: argparse.Namespace) -> RouteTable | None:
    if not args.route and not args.default_route:
        return None
    routes = []
    for spec in args.route:
        match, sep, template = spec.partition("=")
        if not sep:
            raise ReffectionError(f"--route {spec!r}: expected MATCH=TEMPLATE", code="bad_route")
        if match.startswith("+"):
            routes.append(Route(template, prefix=match))
        else:
            routes.append(Route(template, region=match.upper()))
    return RouteTable(routes, Route(args.default_route) if args.default_route else None)


def cmd_resolve(args: argparse.Namespace) -> int:
    service = open_service(args)
    try:
        platform, _, campaign = args.audience.partition("/")
        sub = service.resolve(args.token, platform, campaign=campaign or None)
    finally:
        service.vault.close()
    expiry = dt.date(1970, 1, 1) + dt.timedelta(days=sub.expiry_day)
    print(f"status:     ok (bound to {sub.audience}, valid through {expiry.isoformat()})")
    print(f"subscriber: {sub.subscriber_ref}")
    print(f"number:     {sub.number}")
    print(f"region:     {sub.region}")
    print(f"time zones: {', '.join(sub.time_zones) or 'unknown'}")
    print(f"dnc:        {'yes' if sub.dnc else 'no'}")
    table = _route_table(args)
    if table is not None:
        target = table.resolve(sub.number)
        print(f"route:      {target.masked} (trunk {target.trunk})")
    return 0
