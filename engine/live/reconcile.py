"""What a start finds at the exchange, made to agree with the run: positions, orders, protection.

A new run (:func:`adopt`) takes the exchange's positions into its book (a fee-free entry at
the exchange's entry price) and cancels the entry orders earlier runs left (client ids
``e-...``); their protective stop/target orders stay until this run has placed its own for
the position (:func:`protect_held`, after the warm-up), so a held position is never left
without them.

A resumed run (:func:`resume_orders`) looks up, by client order id, every order its log
left without a final state (plain or algo): one the exchange has is completed (its final
state journaled; a resting stop or target is kept), one it never received is journaled
``canceled`` with the reason. Protective orders the checkpoint says rest are checked
against the exchange's open algo orders; our other open orders are canceled; a position
the book does not hold is adopted. Finally every held position gets the protective orders
its strategy asks for, re-placed (new client ids) when missing, never just canceled. Every
difference is a ``reconcile`` event in ``system_events``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.binance import AccountView
from engine.decisions.records import OrderEvent
from engine.live.book import Book
from engine.live.journal import Journal
from engine.live.orders import STATUS, TRIGGER_TYPES, OrderManager

OURS = "e-"  # every client order id of the engine starts so (engine.decisions.client_order_id)


async def adopt(orders: OrderManager, book: Book, journal: Journal, now: int) -> dict[str, list[str]]:
    """A new run: the exchange's positions into the book, other runs' entry orders
    canceled. Returns the protective (algo) orders of ours resting for held positions,
    per symbol: :func:`protect_held` replaces them after the warm-up."""
    v = orders.venue
    acc = await v.account()
    held = {s: float(q) for s, q in zip(book.symbols, acc.qty, strict=True) if q != 0.0}
    for j, s in enumerate(book.symbols):
        book.adopt(s, float(acc.qty[j]), float(acc.entry_price[j]), now)
    book.drain()  # an adopted position is not a fill of this run
    canceled: list[dict[str, str]] = []
    kept: dict[str, list[str]] = {}
    for s in book.symbols:
        for o in await v.open_orders(s):
            cid = str(o.get("clientOrderId") or "")
            if cid.startswith(OURS):
                await v.cancel(s, str(o["id"]))
                canceled.append({"symbol": s, "client_order_id": cid})
        for a in await v.open_algo_orders(s):
            if not a.client_order_id.startswith(OURS):
                continue
            if s in held:
                kept.setdefault(s, []).append(a.client_order_id)
            else:
                await v.cancel_by_client_id(s, a.client_order_id, algo=True)
                canceled.append({"symbol": s, "client_order_id": a.client_order_id})
    journal.event("info", "reconcile",
                  f"start: wallet {acc.wallet:.8f}, positions {held or 'none'}, "
                  f"{len(canceled)} stale open order(s) canceled"
                  + (f", protective orders of {sorted(kept)} kept until replaced" if kept else ""),
                  {"wallet": acc.wallet, "positions": held, "canceled": canceled, "kept": kept})
    return kept


async def protect_held(orders: OrderManager, journal: Journal, t: int, atr: dict[str, float],
                       *, tag: str, replace: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Every held position ends with the protective orders its strategy asks for: for a
    symbol without ours resting (in ``orders.protect``), they are placed as orders of bar
    ``t`` (client ids made new by ``tag``); ``replace``: other runs' protective orders,
    canceled once ours rest. Returns what was placed, per symbol."""
    acc = await orders.venue.account()
    placed: dict[str, Any] = {}
    for j, s in enumerate(orders.symbols):
        q = float(acc.qty[j])
        if q == 0.0 or orders.protect.get(s) or not orders.has_exits:
            continue
        got = await orders.place_protection(s, t, q, float(acc.entry_price[j]), atr.get(s, np.nan),
                                            tag=tag)
        placed[s] = [(ev.leg, ev.price) for ev in got]
    for s, cids in (replace or {}).items():
        if not orders.protect.get(s) and orders.has_exits:
            continue  # ours could not be placed: theirs stay
        for cid in cids:
            await orders.venue.cancel_by_client_id(s, cid, algo=True)
    if placed or replace:
        journal.event("warning" if placed else "info", "reconcile",
                      f"protective orders placed for held positions: {placed or 'none needed'}",
                      {"placed": placed, "replaced": replace or {}})
    return placed


async def resume_orders(orders: OrderManager, book: Book, journal: Journal,
                        prior: dict[str, OrderEvent], last: int, now: int) -> dict[str, Any]:
    """A resumed run's orders and positions made to agree with the exchange (see the module
    docstring); ``last``: the last bar it decided. Returns the differences found (also
    journaled)."""
    found = {"resolved": await _resolve_intents(orders, journal, prior, now),
             "protect": await _check_protect(orders, journal, now),
             "canceled": await _cancel_strays(orders)}
    acc = await orders.venue.account()
    if any(orders.protect.get(s) and acc.qty[j] == 0.0 for j, s in enumerate(book.symbols)):
        # a stop or target that filled while the process was down: booked now, in the bar
        # that triggered it (as the next bar would)
        acc = await orders.check_exits(last, acc)
    found["positions"] = _positions(book, acc, orders, now)
    journal.event("warning" if any(found.values()) else "info", "reconcile",
                  f"resume: {sum(len(v) for v in found.values())} difference(s) with the exchange",
                  {**found, "wallet": acc.wallet,
                   "held": {s: float(q) for s, q in zip(book.symbols, acc.qty, strict=True) if q}})
    return found


async def _resolve_intents(orders: OrderManager, journal: Journal, prior: dict[str, OrderEvent],
                           now: int) -> list[dict[str, Any]]:
    """Every logged order still ``new`` that the checkpoint does not track, looked up."""
    tracked = {ev.client_order_id for evs in orders.protect.values() for ev in evs}
    tracked |= {ev.client_order_id for ev in orders.resting.values()}
    out = []
    for cid, ev in prior.items():
        if ev.status != "new" or cid in tracked or cid not in orders.known:
            continue
        del orders.known[cid]
        r = await orders.venue.lookup(ev.symbol, cid, algo=ev.type in TRIGGER_TYPES)
        if r is None:
            journal.order(ev.to("canceled", now, message="not at the exchange: the process "
                                "ended before sending it (found at restart)"))
            out.append({"client_order_id": cid, "found": "never sent"})
            continue
        if ev.type in TRIGGER_TYPES and r.status in ("open", "closed"):
            # resting, or filled: the next bar books it (check_exits)
            orders.protect.setdefault(ev.symbol, []).append(
                ev.to("new", ev.updated_at, exchange_order_id=r.exchange_order_id))
        elif r.status == "open":
            r = await orders.venue.cancel_by_client_id(ev.symbol, cid) or r
        if ev.type not in TRIGGER_TYPES or r.status not in ("open", "closed"):
            journal.order(ev.to(STATUS.get(r.status, r.status), max(r.update_ms or now, ev.created_at),
                                exchange_order_id=r.exchange_order_id, filled_quantity=r.filled,
                                avg_price=r.average or None))
        out.append({"client_order_id": cid, "found": r.status})
    return out


async def _check_protect(orders: OrderManager, journal: Journal, now: int) -> list[dict[str, Any]]:
    """The stop/target orders the run tracks, against the exchange's open algo orders: one
    that is gone is dropped (canceled) unless it filled (the next bar books that)."""
    out = []
    for s, evs in list(orders.protect.items()):
        open_ids = {a.client_order_id for a in await orders.venue.open_algo_orders(s)}
        keep = []
        for ev in evs:
            if ev.client_order_id in open_ids:
                keep.append(ev)
                continue
            r = await orders.venue.lookup(s, ev.client_order_id, algo=True)
            if r is not None and r.status == "closed" and r.filled > 0:
                keep.append(ev)
                out.append({"client_order_id": ev.client_order_id, "found": "filled"})
                continue
            journal.order(ev.to("canceled", now, message="no longer at the exchange (found at restart)"))
            out.append({"client_order_id": ev.client_order_id, "found": "gone"})
        if keep:
            orders.protect[s] = keep
        else:
            del orders.protect[s]
    return out


async def _cancel_strays(orders: OrderManager) -> list[dict[str, Any]]:
    """Open orders of ours the run does not track (another run's, or one it gave up)."""
    v = orders.venue
    tracked = {ev.client_order_id for evs in orders.protect.values() for ev in evs}
    tracked |= {ev.client_order_id for ev in orders.resting.values()}
    out = []
    for s in orders.symbols:
        for o in await v.open_orders(s):
            cid = str(o.get("clientOrderId") or "")
            if cid.startswith(OURS) and cid not in tracked:
                await v.cancel(s, str(o["id"]))
                out.append({"symbol": s, "client_order_id": cid})
        for a in await v.open_algo_orders(s):
            cid = a.client_order_id
            if cid.startswith(OURS) and cid not in tracked:
                await v.cancel_by_client_id(s, cid, algo=True)
                out.append({"symbol": s, "client_order_id": cid})
    return out


def _positions(book: Book, acc: AccountView, orders: OrderManager, now: int) -> list[dict[str, Any]]:
    """Positions the book and the exchange disagree on. A position the book does not hold
    is adopted (a fee-free entry at the exchange's entry price); any other difference is
    reported and the exchange's position taken at the next bar."""
    out = []
    for j, s in enumerate(book.symbols):
        mine, theirs = float(book.acct.qty[j]), float(acc.qty[j])
        if abs(mine - theirs) <= 1e-12:
            continue
        note = "kept the exchange's"
        if mine == 0.0:
            book.adopt(s, theirs, float(acc.entry_price[j]), now)
            book.drain()
            note = "adopted"
        out.append({"symbol": s, "book": mine, "exchange": theirs, "resolution": note})
    return out
