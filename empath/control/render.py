"""empathctl's and mailq's text: a verb's result as the operator reads it (pure).

The queue listing in Postfix's mailq layout, one message in full, and the
daemon's answers (status, connections, stats, breakers, ...). ``--json``
prints the same results as they came, without this.
"""

import json
import time
from collections.abc import Callable
from typing import Any

from empath.config import values
from empath.control.protocol import DEFAULT_LIMIT
from empath.queue.states import PENDING, WAITING


def format_age(seconds: float) -> str:
    """``45s``, ``12m 5s``, ``3h 20m``, ``2d 4h`` (pure)."""
    s = max(0, int(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit} {s % size // sub_size}{sub}"
    return f"{s}s"


def format_time(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(at))


def format_list(rows: list[dict[str, Any]]) -> str:
    """Postfix's mailq layout (pure): ``*`` after the id marks a message being
    delivered, ``!`` one on hold; each reason once, in parentheses, above the
    recipients it holds back: why the last attempt failed, or, not tried yet, what
    holds it (a rate limit, a breaker, a pause). Recipients already done are not shown."""
    if not rows:
        return "Mail queue is empty\n"
    out = ["-Queue ID-        --Size-- ----Arrival Time---- -Sender/Recipient-------"]
    for row in rows:
        mark = "!" if row["held"] else "*" if row["active"] else " "
        arrival = time.strftime("%a %b %d %H:%M:%S", time.localtime(row["received_at"]))
        out.append(f"{row['queue_id']}{mark} {row['size']:>8} {arrival}  {row['sender'] or 'MAILER-DAEMON'}")
        shown = set()
        for r in row["recipients"]:
            if r["state"] not in WAITING:
                continue
            # Deferred: why the last attempt failed; queued: why it waits (a rate limit, a breaker, a pause).
            reason = r["last_reply"] if r["state"] in PENDING else None
            if reason and reason not in shown:
                out.append(f"{'':43}({reason[:200]})")
                shown.add(reason)
            out.append(f"{'':43}{r['address']}")
        out.append("")
    kbytes = (sum(row["size"] for row in rows) + 1023) // 1024
    requests = len(rows)
    out.append(f"-- {kbytes} Kbytes in {requests} Request{'s' if requests != 1 else ''}.")
    return "\n".join(out) + "\n"


def format_show(detail: dict[str, Any]) -> str:
    """One message as ``queue show`` prints it (pure): envelope, recipients, history, body."""
    out = [f"Queue ID:   {detail['queue_id']}"]
    if not detail["in_queue"]:
        out.append("Status:     no longer in the queue")
    else:
        status = "on hold" if detail["held"] else "being delivered" if detail["active"] else "waiting"
        out += [
            f"Status:     {status}",
            f"Sender:     <{detail['sender']}>",
            f"Size:       {detail['size']} bytes ({detail['body_type']}{', SMTPUTF8' if detail['smtputf8'] else ''})",
            f"Received:   {format_time(detail['received_at'])} ({format_age(detail['age'])} ago)",
            f"From:       [{detail['client_address']}] helo={detail['client_helo'] or '-'}"
            f" listener={detail['listener']}" + (f" auth={detail['auth_user']}" if detail["auth_user"] else ""),
            f"Expires:    {format_time(detail['expires_at'])}",
            f"Kind:       {detail['kind']}"
            + (f" (DSN RET={detail['dsn_ret']})" if detail["dsn_ret"] else "")
            + (f" ENVID={detail['dsn_envid']}" if detail["dsn_envid"] else ""),
            f"Trace:      {detail['trace_id']}",
            "",
            "Recipients:",
        ]
        for r in detail["recipients"]:
            # The address the sender wrote, when an alias (or the client's ORCPT) says it was another.
            original = (r.get("orcpt") or "").partition(";")[2]
            given = f" (for <{original}>)" if original and original != r["address"] else ""
            line = (
                f"  <{r['address']}>{given}  {r['state']}, {r['attempts']} attempt{'s' if r['attempts'] != 1 else ''}"
            )
            if r["state"] in WAITING and r["leased_until"] is None:
                line += f", next attempt {format_time(r['next_attempt_at'])}"
            out.append(line)
            out.append(f"      {r['why']}" + (f" (from {r['remote_mta']})" if r["remote_mta"] else ""))
    out += ["", "History:"]
    for e in detail["events"]:
        who = f" <{e['recipient']}>" if e["recipient"] else ""
        out.append(f"  {format_time(e['at'])}  {e['kind']}{who}: {e['detail']}")
    if not detail["events"]:
        out.append("  (none recorded)")
    if "body" in detail:
        out += ["", f"Message ({detail['body_bytes']} bytes):", detail["body"].replace("\r\n", "\n").rstrip("\n")]
    return "\n".join(out) + "\n"


def render(verb: str, result: Any, args: dict[str, Any]) -> str:
    if verb == "queue-list":
        text = format_list(result)
        limit = args.get("limit", DEFAULT_LIMIT)
        return text + (f"(the first {limit} shown: --limit for more)\n" if len(result) >= limit else "")
    if verb == "queue-show":
        return format_show(result)
    renderer = _RENDERERS.get(verb)
    if renderer is not None:
        return renderer(result)
    if isinstance(result, dict) and "messages" in result:
        done = {"queue-delete": "deleted", "queue-hold": "held", "queue-release": "released", "queue-retry": "due now"}
        text = f"{result['messages']} message{'s' if result['messages'] != 1 else ''} {done[verb]}\n"
        closed = result.get("breakers_closed")
        if closed:
            text += f"circuit breaker closed: {', '.join(closed)} (its mail may try to connect again)\n"
        return text
    return json.dumps(result, indent=2) + "\n"


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _delivery(d: dict[str, Any]) -> str:
    if d["paused"]:
        text = "PAUSED (all)"
    elif d["paused_domains"]:
        text = "paused for " + ", ".join(d["paused_domains"])
    else:
        text = "running"
    return text + f", {d['in_flight']} in flight"


def _helpers(helpers: list[dict[str, Any]]) -> list[str]:
    return [
        f"smtp helper {h['helper']}: pid {h['pid']}, {h['sessions']} sessions" + ("" if h["ready"] else " (starting)")
        for h in helpers
    ]


def _status(s: dict[str, Any]) -> str:
    counts = ", ".join(f"{state} {count}" for state, count in s["queue"].items())
    queue = f"{sum(s['queue'].values())} recipients waiting: {counts}"
    lines = [
        f"empath {s['version']}, pid {s['pid']}, up {format_age(s['uptime'])} (since {_when(s['started_at'])})",
        f"config:     {s['config']}",
        f"listeners:  {', '.join(s['listeners'])}" + ("" if s["accepting"] else " (closing)"),
        f"sessions:   {s['sessions']}",
        *_helpers(s.get("smtp_helpers", [])),
        f"queue:      {queue} (oldest {format_age(s['oldest_age'])})",
        f"delivery:   {_delivery(s['delivery'])}",
    ]
    for key, limits in s["delivery"]["overrides"].items():
        lines.append(f"override:   {key}: rate {values.rate_text(limits['rate'])}, concurrency {limits['concurrency']}")
    if s["restart_needed"]:
        lines.append(f"restart needed for: {', '.join(s['restart_needed'])}")
    return "\n".join(lines) + "\n"


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]], empty: str) -> str:
    if not rows:
        return empty + "\n"
    cells = [header, *[tuple("-" if v is None else str(v) for v in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in cells)


def _connections(rows: list[dict[str, Any]]) -> str:
    """One row a session; AUTH FAILS: the passwords its address got wrong lately (across
    sessions), STRESS: it came while strangers' slots were short."""
    return _table(
        ("CLIENT", "LISTENER", "STATE", "TLS", "AGE", "HELO", "USER", "AUTH FAILS", "STRESS"),
        [
            (r["client"], r["listener"], r["state"], r["tls"], format_age(r["age"]), r["helo"], r["user"])
            + (r.get("auth_failures", 0), "yes" if r.get("stressed") else None)
            for r in rows
        ],
        "no SMTP sessions open",
    )


def _breakers(rows: list[dict[str, Any]]) -> str:
    return _table(
        ("DESTINATION", "STATE", "FAILURES", "RETRY AT"),
        [(r["destination"], r["state"], r["failures"], _when(r["retry_at"]) if r["retry_at"] else None) for r in rows],
        "no circuit breakers yet (none until a delivery is tried)",
    )


# What each of the daemon's counters counts, as `stats` prints it.
STATS_LABELS = {
    "received": "messages received",
    "received_bytes": "bytes received",
    "delivered": "recipients delivered",
    "deferred": "deferrals (one a recipient an attempt)",
    "bounced": "recipients bounced",
    "rejected": "commands refused",
    "connections": "connections",
    "connections_refused": "connections refused",
    "auth_failures": "wrong passwords",
    "rate_limited": "deliveries held back by a rate limit",
}


def _stats(s: dict[str, Any]) -> str:
    if s.get("source") == "database":
        return _history(s)
    lines = [f"since the start, {_when(s['since'])} ({format_age(s['uptime'])} ago):"]
    lines += [f"{STATS_LABELS.get(key, key)}: {value}" for key, value in s.items() if key not in ("since", "uptime")]
    return "\n".join(lines) + "\n"


def _history(s: dict[str, Any]) -> str:
    """Stats from the queue's history, when the daemon (and its counters) is down."""
    oldest = "none" if s["oldest_age"] is None else format_age(s["oldest_age"])
    lines = [
        "from the queue database (the daemon is down)",
        "recipients: " + ", ".join(f"{state} {n}" for state, n in s["recipients"].items()),
        f"oldest message: {oldest}",
    ]
    for window in ("last_hour", "last_day"):
        counts = ", ".join(f"{kind} {n}" for kind, n in s[window].items())
        lines.append(f"{window.replace('_', ' ')}: {counts}")
    return "\n".join(lines) + "\n"


def _reload(r: dict[str, Any]) -> str:
    text = f"reloaded {r['config']}\n"
    if r["restart_needed"]:
        text += f"these changes wait for a restart: {', '.join(r['restart_needed'])}\n"
    return text


def _paused(r: dict[str, Any]) -> str:
    text = _delivery({**r, "in_flight": 0}).rsplit(",", 1)[0]
    retried = r.get("retried_domains")
    return f"delivery: {text}\n" + (f"due now: the mail of {', '.join(retried)}\n" if retried else "")


def _verify(r: dict[str, Any]) -> str:
    """``bob@office.test: exists (callout, kept 2h 5m: mx[10.0.0.5]:25 said: 250 2.1.5 Ok)``."""
    address, way, result = r["address"], r["way"], r["result"]
    forgot = {True: "answer kept forgotten; ", False: "no answer was kept; ", None: ""}[r.get("forgot")]
    if way == "relayed":
        why = f"{r['domain']} is not a local domain: its recipients are not ours to verify (relayed for our clients)"
        return f"{address}: {why}\n"
    if way == "postmaster":
        return f"{address}: exists (postmaster is always taken, RFC 5321 §4.5.1)\n"
    if way == "table":
        return f"{address}: {result} (recipients table {r['table']})\n"
    if way == "none":
        return f"{address}: exists ({r['domain']} is not verified: every address is taken)\n"
    if r["source"] == "callout":
        return f"{address}: {result} ({forgot}asked now: {r['reply']})\n"
    if result is None:
        return f"{address}: not known yet ({forgot}{r['source']}: the next RCPT asks the next hop)\n"
    refresh = ", asked again at the next RCPT" if r["refresh_due"] else ""
    return f"{address}: {result} (callout answer kept {format_age(r['age'])}{refresh}: {r['reply']})\n"


_RENDERERS: dict[str, Callable[[Any], str]] = {
    "status": _status,
    "connections": _connections,
    "stats": _stats,
    "reload": _reload,
    "log-level": lambda r: f"log level: {r['level']}\n",
    "domain-set": lambda r: (
        f"{r['destination']}: rate {values.rate_text(r['rate'])}, concurrency {r['concurrency']} (until {r['until']})\n"
    ),
    "breaker-list": _breakers,
    "breaker-reset": lambda r: f"breaker of {r['destination']}: closed (was {r['was']})\n",
    "pause": _paused,
    "resume": _paused,
    "verify": _verify,
}
