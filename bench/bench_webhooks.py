"""What sending webhooks costs: deliveries through the outbox (a row per event, claimed, signed,
POSTed, recorded; what every worker's sender thread runs) against a bare loop that signs and POSTs
the same bodies with one httpx client, to the same loopback receiver, in the same run; and the time
from an event's commit to its arrival with the worker's polling (STRATA_WEBHOOK_POLL_S).

    python bench/bench_webhooks.py                         # embedded SQLite, 500 events, poll 1 s
    python bench/bench_webhooks.py --database-url postgresql+psycopg://127.0.0.1/test --events 1000
    python bench/bench_webhooks.py --events 200 --json r.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from services.cli.run import prepare  # noqa: E402
from services.config import load_settings  # noqa: E402
from services.db.models import DeliveryStatus, WebhookDelivery  # noqa: E402
from services.db.session import make_engine, make_session_factory, session_scope  # noqa: E402
from services.webhooks import delivery, events, signing  # noqa: E402
from services.webhooks.subscriptions import create_webhook  # noqa: E402

SECRET = "bench-secret-0123456789"


class Receiver(ThreadingHTTPServer):
    """A loopback receiver that checks every signature and notes when each event arrived."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.arrived: dict[str, float] = {}
        self.bad = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            signing.verify(SECRET, body, self.headers[signing.HEADER])
            self.server.arrived[self.headers.get("Strata-Delivery") or str(len(self.server.arrived))] = time.monotonic()
        except Exception:
            self.server.bad += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def emit(sessions, n: int) -> list[float]:
    """``n`` events, each committed in its own transaction (as the changes they announce are); their commit times."""
    committed = []
    for i in range(n):
        with session_scope(sessions) as s:
            events.emit(s, events.TASK_QUEUED, None, {"id": f"task-{i}", "status": "queued"})
        committed.append(time.monotonic())
    return committed


def pending(sessions) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(WebhookDelivery).where(
            WebhookDelivery.status != DeliveryStatus.DELIVERED.value))


def through_outbox(sessions, n: int, receiver: Receiver) -> float:
    """Seconds for passes of the deliverer to send ``n`` committed events."""
    emit(sessions, n)
    deliverer = delivery.Deliverer(sessions, delivery.Policy())
    started = time.perf_counter()
    while deliverer.run_once():
        pass
    seconds = time.perf_counter() - started
    deliverer.close()
    assert pending(sessions) == 0, "deliveries left"
    return seconds


def bare(n: int, receiver: Receiver) -> float:
    """Seconds for one client to sign and POST ``n`` bodies of the same size, one after the other."""
    bodies = [events.envelope(events.TASK_QUEUED, None, {"id": f"task-{i}", "status": "queued"}) for i in range(n)]
    with httpx.Client(timeout=10) as client:
        started = time.perf_counter()
        for payload in bodies:
            body = json.dumps(payload, separators=(",", ":")).encode()
            r = client.post(receiver.url, content=body, headers={
                "Content-Type": "application/json", "Strata-Delivery": payload["id"],
                signing.HEADER: signing.sign(SECRET, body, int(time.time()))})
            r.raise_for_status()
        return time.perf_counter() - started


def latency(sessions, receiver: Receiver, poll_s: float, count: int) -> list[float]:
    """Commit-to-arrival seconds of ``count`` events, one at a time, a sender thread polling every ``poll_s``."""
    deliverer = delivery.Deliverer(sessions, delivery.Policy())
    stop = threading.Event()

    def loop() -> None:  # what worker/webhooks.py's thread does
        while not stop.is_set():
            if not deliverer.run_once():
                stop.wait(poll_s)
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    out = []
    for i in range(count):
        before = set(receiver.arrived)
        committed = emit(sessions, 1)[0]
        while not (new := set(receiver.arrived) - before):
            time.sleep(0.002)
        out.append(receiver.arrived[new.pop()] - committed)
        time.sleep(poll_s * (i % 5) / 5)  # commit at different points of the poll cycle
    stop.set()
    thread.join()
    deliverer.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--poll-s", type=float, default=1.0, help="the sender's polling (STRATA_WEBHOOK_POLL_S)")
    parser.add_argument("--latency-events", type=int, default=20)
    parser.add_argument("--database-url", help="default: SQLite in a temporary data dir")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="strata-bench-webhooks-") as tmp:
        settings = load_settings(data_dir=Path(tmp), database_url=args.database_url)
        prepare(settings)
        engine = make_engine(settings)
        sessions = make_session_factory(engine)
        receiver = Receiver()
        with session_scope(sessions) as s:
            create_webhook(s, url=receiver.url, events=["*"], secret=SECRET)
        bare_s = bare(args.events, receiver)
        outbox_s = through_outbox(sessions, args.events, receiver)
        waits = latency(sessions, receiver, args.poll_s, args.latency_events)
        engine.dispose()
        receiver.shutdown()
    db = "PostgreSQL" if args.database_url else "SQLite"
    print(f"{args.events} events to one loopback receiver, every signature checked ({receiver.bad} bad), {db}:")
    print(f"  bare loop (sign + POST):            {bare_s:.2f} s, {args.events / bare_s:.0f} deliveries/s")
    print(f"  through the outbox (claim, send, record): {outbox_s:.2f} s, {args.events / outbox_s:.0f} deliveries/s, "
          f"{outbox_s / bare_s:.2f}x the bare loop")
    q = statistics.quantiles(waits, n=20)
    print(f"  commit to arrival, polling every {args.poll_s:g} s: p50 {statistics.median(waits) * 1000:.0f} ms, "
          f"p95 {q[18] * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms over {len(waits)} events")
    if args.json:
        args.json.write_text(json.dumps({
            "database": db, "events": args.events, "bad_signatures": receiver.bad, "bare_s": round(bare_s, 3),
            "outbox_s": round(outbox_s, 3), "ratio": round(outbox_s / bare_s, 3),
            "bare_per_s": round(args.events / bare_s, 1), "outbox_per_s": round(args.events / outbox_s, 1),
            "poll_s": args.poll_s, "latency_ms": {"p50": round(statistics.median(waits) * 1000, 1),
                                                  "p95": round(q[18] * 1000, 1), "max": round(max(waits) * 1000, 1)},
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
