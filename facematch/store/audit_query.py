"""The audit trail as a supervisor reads it: filtered in SQL, newest first, one page at a time.

Every filter is a condition on indexed columns or expressions (schema v9: ``actor``, ``action``, ``at``
and the ``search_id`` / ``case_ref`` of an entry's details), so a page costs the same whether the log
holds a thousand entries or millions; nothing is read into Python to be thrown away. Pages are keyset
pages: ``before`` is the id of the last entry of the previous page (stable while new entries arrive).

An agency's trail is the entries its users made. The case filter takes the entries of the searches run
in that case of the agency (each entry naming one by ``search_id``: the search, its consultations,
reviews, decisions, exports, image views) and any entry naming the case by ``case_ref``.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass

from facematch.errors import InvalidArgument
from facematch.store.schema import AUDIT_CASE_REF, AUDIT_SEARCH_ID

__all__ = ["MAX_PAGE", "AuditFilter", "parse_bound", "audit_page", "reading_details"]

#: the most entries one page returns (an export pages through everything with pages of this size)
MAX_PAGE = 1000


@dataclass(frozen=True)
class AuditFilter:
    """Which entries: those of ``agency_id``'s users, optionally by one ``actor``, of one ``action``, about
    one ``case`` (a reference of that agency), made from ``since`` (inclusive) to ``until`` (inclusive).

    ``since``/``until``: ``YYYY-MM-DD`` (a whole day: ``until`` includes it) or an ISO date and time
    (naive: UTC). ``InvalidArgument`` for anything else (checked when the filter is made).
    """

    agency_id: int
    actor: str | None = None
    action: str | None = None
    case: str | None = None
    since: str | None = None
    until: str | None = None

    def __post_init__(self):
        parse_bound(self.since, "since")
        parse_bound(self.until, "until")

    def to_dict(self) -> dict:
        """The filters given, for the audit entry that records the reading."""
        return {k: v for k, v in (("actor", self.actor), ("action", self.action), ("case", self.case),
                                  ("since", self.since), ("until", self.until)) if v}

    def where(self, conn: sqlite3.Connection) -> tuple[str, list]:
        """The SQL condition and its arguments (the case's searches read from ``conn``)."""
        # "+actor": the agency check filters rows found by the other conditions (it would pick the actor index
        # and sort all the agency's entries for every page); with no other filter, the log is read newest first
        clauses = ["+actor IN (SELECT actor FROM users WHERE agency_id = ?)"]
        args: list = [self.agency_id]
        if self.actor:  # a login of the agency (unique within it) stands for the name it is recorded under
            member = conn.execute("SELECT actor FROM users WHERE agency_id = ? AND username = ?",
                                  (self.agency_id, self.actor)).fetchone()
            clauses.append("actor = ?")
            args.append(member[0] if member else self.actor)
        if self.action:
            clauses.append("action = ?")
            args.append(self.action)
        if self.case:  # the ids come from the expression indexes (a scan in id order could read the whole log);
            # the case's searches are looked up first: SQLite uses an expression index with values, not in a join
            searches = [r[0] for r in conn.execute(
                """SELECT o.search_id FROM search_owners o JOIN cases k ON k.id = o.case_id
                   WHERE k.agency_id = ? AND k.reference = ?""", (self.agency_id, self.case))]
            clauses.append(f"""id IN (SELECT id FROM audit_log WHERE {AUDIT_SEARCH_ID} IN
                                        ({','.join('?' * len(searches)) or 'NULL'})
                                      UNION SELECT id FROM audit_log WHERE {AUDIT_CASE_REF} = ?)""")
            args += [*searches, self.case]
        if self.since or self.until:  # likewise from the index on the time
            bounds = [("at >= ?", parse_bound(self.since, "since")), ("at < ?", parse_bound(self.until, "until"))]
            clauses.append("id IN (SELECT id FROM audit_log WHERE "
                           + " AND ".join(cond for cond, value in bounds if value) + ")")
            args += [value for _, value in bounds if value]
        return " AND ".join(clauses), args


def parse_bound(text: str | None, which: str) -> str | None:
    """A date range bound as the ``at`` text it compares with (ISO UTC, seconds): ``since`` is the first
    instant included, ``until`` the first instant after the range (the next day, or the next second)."""
    if not text:
        return None
    value = text.strip()
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            when = dt.datetime.combine(day, dt.time(), dt.timezone.utc) + dt.timedelta(days=which == "until")
        else:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            when = (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
            when = when.replace(microsecond=0) + dt.timedelta(seconds=which == "until")
    except ValueError:
        raise InvalidArgument(f"{which} must be a date (YYYY-MM-DD) or an ISO date and time, got {value[:40]!r}") from None
    return when.isoformat()


def audit_page(conn: sqlite3.Connection, where: AuditFilter, *, before: int | None = None, limit: int = 100
               ) -> tuple[list[dict], int | None]:
    """Up to ``limit`` entries matching ``where`` with id < ``before``, newest first, and the ``before`` of
    the next page (None on the last page)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be 1 to {MAX_PAGE}, got {limit}")
    sql, args = where.where(conn)
    if before is not None:
        sql, args = sql + " AND id < ?", args + [before]
    rows = conn.execute(f"SELECT id, at, actor, action, details FROM audit_log WHERE {sql} ORDER BY id DESC LIMIT ?",
                        (*args, limit + 1)).fetchall()
    page = [dict(r) | {"details": _details(r["details"])} for r in rows[:limit]]
    return page, (page[-1]["id"] if len(rows) > limit else None)


def _details(text: str):
    """An entry's details; one written outside facematch may not be JSON: shown as it is, never an error."""
    try:
        return json.loads(text)
    except ValueError:
        return {"not_json": text}


def reading_details(conn: sqlite3.Connection, entry_id: int, *, user: str, since: str) -> dict | None:
    """The details (reason, filters, before, limit) of entry ``entry_id`` when it records ``user`` reading
    the audit trail (``audit.read``) at or after ``since`` (ISO UTC), else None."""
    row = conn.execute("SELECT actor, action, at, details FROM audit_log WHERE id = ?", (entry_id,)).fetchone()
    if row is None or row[0] != user or row[1] != "audit.read" or row[2] < since:
        return None
    details = _details(row[3])
    return details if isinstance(details, dict) and details.get("reason") else None
