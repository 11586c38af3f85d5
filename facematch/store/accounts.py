"""People and permissions: agencies, users and roles, tokens and sessions, collections, cases and sharing.

The service (facematch/service) asks this module who a request comes from and what that person may see.
Secrets are never stored: passwords as argon2id hashes, API tokens and session cookies as SHA-256 of a
256-bit random value (shown once). Visibility is an allow-list: a custody image is seen only by its
collection's agency and by agencies holding a valid sharing agreement; a crime-scene image and a search
only by the agency of their case. Images without an owner (ingested before accounts existed, or by a
command line ingest without ``--collection``) are seen by nobody through the service.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
import sqlite3
from dataclasses import dataclass

import numpy as np
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from facematch.errors import AuthenticationFailed, Conflict, InvalidArgument, NotFound
from facematch.store.catalogue import Catalogue, utc_now

__all__ = ["ROLES", "User", "SearchScope", "Accounts", "normalise_until"]

log = logging.getLogger(__name__)

#: operator: ingests; investigator: searches for the cases of their agency; reviewer: records decisions;
#: supervisor: reads the audit trail of their agency; admin: the users of their own agency and the sharing
#: agreements of its collections (facematch/store/administration.py). Agencies come from the command line.
ROLES = ("operator", "investigator", "reviewer", "supervisor", "admin")
_HASHER = PasswordHasher()
_MIN_PASSWORD = 8


@dataclass(frozen=True)
class User:
    """An authenticated person: who, which agency, which roles.

    ``username`` is the name the user is *recorded* under (audit actor, searches, reviews, ingest runs),
    unique in the whole catalogue: ``login@agency`` (users made since schema 10), or the bare login of a
    user made before, when logins were unique across agencies (their past entries name them so).
    ``login`` is the name they log in with, unique only within their agency.
    """

    id: int
    username: str
    agency_id: int
    agency: str
    roles: frozenset[str]
    login: str = ""

    def has(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class SearchScope:
    """What one search may rank: face ids allowed per kind, and the size of that visible gallery."""

    custody_face_ids: np.ndarray
    scene_face_ids: np.ndarray
    collections: tuple[str, ...]
    gallery_subjects: int
    gallery_faces: int


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalise_until(value: str | None) -> str | None:
    """An ISO date or date-time (UTC when no zone is given) in the catalogue's timestamp form."""
    if value is None or value == "":
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidArgument(f"not an ISO date or date-time: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat()


class Accounts:
    """Accounts and visibility over one catalogue connection (writes are audited there)."""

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue
        self.conn = catalogue.conn

    # -- agencies, users, roles -------------------------------------------------------------------

    def add_agency(self, name: str, *, actor: str) -> int:
        """Create an agency and its default custody collection ``<name>-custody``."""
        if not name or not name.strip():
            raise InvalidArgument("an agency needs a name")
        if "@" in name:
            raise InvalidArgument("an agency name cannot contain '@' (users log in as username@agency)")
        if self._one("SELECT id FROM agencies WHERE name = ?", name):
            raise Conflict(f"agency {name!r} already exists")
        with self.catalogue.atomic():
            agency_id = self.conn.execute("INSERT INTO agencies (name, created_at) VALUES (?, ?)",
                                          (name, utc_now())).lastrowid
            self.conn.execute("INSERT INTO collections (name, agency_id, created_at) VALUES (?, ?, ?)",
                              (f"{name}-custody", agency_id, utc_now()))
            self.catalogue.audit(actor, "admin.agency_add", {"agency": name})
        return agency_id

    def agency_id(self, name: str) -> int:
        row = self._one("SELECT id FROM agencies WHERE name = ?", name)
        if row is None:
            raise NotFound(f"no agency {name!r}")
        return row[0]

    def agencies(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM agencies ORDER BY name")]

    def add_user(self, username: str, password: str, *, agency: str, roles: list[str], actor: str,
                 reason: str | None = None) -> User:
        """Create a user of ``agency`` holding ``roles`` (the password is stored as an argon2id hash)."""
        if not username or not username.strip() or any(c.isspace() for c in username):
            raise InvalidArgument("a username is one word without spaces")
        if "@" in username:
            raise InvalidArgument("a username cannot contain '@' (users log in as username@agency)")
        if len(password or "") < _MIN_PASSWORD:
            raise InvalidArgument(f"a password needs at least {_MIN_PASSWORD} characters")
        bad = sorted(set(roles) - set(ROLES))
        if bad or not roles:
            raise InvalidArgument(f"roles must be some of {', '.join(ROLES)}; got {', '.join(roles) or 'none'}")
        agency_id = self.agency_id(agency)
        # unique within the agency only: whether the name exists in another agency is never consulted
        if self._one("SELECT id FROM users WHERE agency_id = ? AND username = ?", agency_id, username):
            raise Conflict(f"user {username!r} already exists in {agency}")
        recorded = f"{username}@{agency}"
        with self.catalogue.atomic():
            try:
                user_id = self.conn.execute(
                    "INSERT INTO users (username, agency_id, password_hash, created_at, actor) VALUES (?, ?, ?, ?, ?)",
                    (username, agency_id, _HASHER.hash(password), utc_now(), recorded)).lastrowid
            except sqlite3.IntegrityError as exc:  # a concurrent add of the same name, or a pre-v10 login "x@y"
                raise Conflict(f"user {username!r} already exists in {agency}") from exc
            self.conn.executemany("INSERT INTO user_roles VALUES (?, ?)", [(user_id, r) for r in set(roles)])
            self.catalogue.audit(actor, "admin.user_add", {"user": recorded, "agency": agency,
                                                          "roles": sorted(set(roles)), "reason": reason})
        return self.user(user_id)

    def user(self, user_id: int) -> User:
        row = self._one("""SELECT u.id, u.actor, u.agency_id, a.name, u.username FROM users u
                           JOIN agencies a ON a.id = u.agency_id WHERE u.id = ? AND u.active = 1""", user_id)
        if row is None:
            raise AuthenticationFailed("unknown or disabled user")
        roles = frozenset(r[0] for r in self.conn.execute("SELECT role FROM user_roles WHERE user_id = ?",
                                                          (user_id,)))
        return User(row[0], row[1], row[2], row[3], roles, login=row[4])

    def users(self, agency_id: int | None = None) -> list[User]:
        sql = "SELECT id FROM users WHERE active = 1" + (" AND agency_id = ?" if agency_id else "")
        return [self.user(r[0]) for r in self.conn.execute(sql + " ORDER BY username",
                                                           (agency_id,) if agency_id else ())]

    def authenticate(self, username: str, password: str, agency: str | None = None) -> User:
        """The user with this password; ``AuthenticationFailed`` (one message for every cause) otherwise.

        A user is named within an agency: ``username`` with ``agency``, or without it the recorded name
        (``login@agency``; a user made before schema 10 may still give their bare login, unique then).
        Nothing is looked up across agencies, so a login never depends on who exists elsewhere.
        """
        username, agency = (username or "").strip(), (agency or "").strip()
        if agency:
            login = username[:-len(agency) - 1] if username.endswith(f"@{agency}") else username
            row = self._one("""SELECT u.id, u.password_hash FROM users u JOIN agencies a ON a.id = u.agency_id
                               WHERE a.name = ? AND u.username = ? AND u.active = 1""", agency, login)
        else:
            row = self._one("SELECT id, password_hash FROM users WHERE actor = ? AND active = 1", username)
        try:
            if row is None:
                _HASHER.hash(password or "x")  # same cost whether or not the user exists
                raise VerificationError()
            _HASHER.verify(row[1], password or "")
        except (VerificationError, InvalidHashError):
            raise AuthenticationFailed("wrong agency, username or password") from None
        return self.user(row[0])

    # -- API tokens and sessions -----------------------------------------------------------------------

    def create_token(self, user: User, label: str) -> tuple[int, str]:
        """A new API token for ``user``: ``(token id, the secret)``; the secret is shown only this once."""
        secret = "fm_" + secrets.token_urlsafe(32)
        with self.catalogue.atomic():
            token_id = self.conn.execute(
                "INSERT INTO api_tokens (user_id, token_sha256, label, created_at) VALUES (?, ?, ?, ?)",
                (user.id, _sha(secret), label or "api", utc_now())).lastrowid
            self.catalogue.audit(user.username, "token.create", {"token_id": token_id, "label": label})
        return token_id, secret

    def tokens(self, user: User) -> list[dict]:
        """``user``'s own API tokens, revoked ones included (never the secrets), with ``last_used_at``: the
        day (UTC) each last authenticated a request, None when never since it was recorded (schema 11)."""
        return [dict(r) for r in self.conn.execute(
            "SELECT id, label, created_at, revoked_at, last_used_at FROM api_tokens WHERE user_id = ? ORDER BY id",
            (user.id,))]

    def revoke_token(self, user: User, token_id: int) -> None:
        with self.catalogue.atomic():
            n = self.conn.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND user_id = ? "
                                  "AND revoked_at IS NULL", (utc_now(), token_id, user.id)).rowcount
            if not n:
                raise NotFound(f"no active token {token_id} of yours")
            self.catalogue.audit(user.username, "token.revoke", {"token_id": token_id})

    def token_user(self, secret: str) -> User:
        """The user of a live API token; records the day it was used (``last_used_at``)."""
        row = self._one("SELECT id, user_id, last_used_at FROM api_tokens WHERE token_sha256 = ? AND revoked_at IS NULL",
                        _sha(secret or ""))
        if row is None:
            raise AuthenticationFailed("unknown or revoked API token")
        self._note_token_use(row["id"], row["last_used_at"])
        return self.user(row["user_id"])

    def _note_token_use(self, token_id: int, last: str | None) -> None:
        """Record today as the token's last use: at most one write per token per day (day precision is what
        an admin needs to spot a stale token, and a write per request would contend with ingests). Best
        effort: a busy catalogue never fails the request; the next day's first use records it."""
        today = utc_now()[:10]
        if last == today:
            return
        try:
            self.conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND "
                              "(last_used_at IS NULL OR last_used_at < ?)", (today, token_id, today))
        except sqlite3.OperationalError as exc:  # e.g. locked for longer than the busy timeout
            log.warning("API token %d: last use not recorded (%s)", token_id, exc)

    def create_session(self, user: User, *, hours: float) -> tuple[str, str]:
        """A web session: ``(cookie value, CSRF token)``."""
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours)).replace(microsecond=0)
        with self.catalogue.atomic():
            self.conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                              (_sha(cookie), user.id, csrf, utc_now(), expires.isoformat()))
            self.catalogue.audit(user.username, "login", {"agency": user.agency})
        return cookie, csrf

    def session(self, cookie: str) -> tuple[User, str]:
        """The user and CSRF token of a live session."""
        row = self._one("SELECT user_id, csrf_token FROM sessions WHERE token_sha256 = ? AND expires_at > ?",
                        _sha(cookie or ""), utc_now())
        if row is None:
            raise AuthenticationFailed("not logged in, or the session has expired")
        return self.user(row[0]), row[1]

    def end_session(self, cookie: str) -> None:
        with self.catalogue.atomic():
            self.conn.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_sha(cookie or ""),))

    # -- collections, cases, sharing ----------------------------------------------------------------------

    def collection(self, name: str) -> dict:
        row = self._one("""SELECT c.id, c.name, c.agency_id, a.name AS agency FROM collections c
                           JOIN agencies a ON a.id = c.agency_id WHERE c.name = ?""", name)
        if row is None:
            raise NotFound(f"no collection {name!r}")
        return dict(row)

    def default_collection(self, agency_id: int) -> dict:
        name = self._one("SELECT name FROM agencies WHERE id = ?", agency_id)[0]
        return self.collection(f"{name}-custody")

    def add_collection(self, name: str, *, agency: str, actor: str) -> int:
        agency_id = self.agency_id(agency)
        if self._one("SELECT id FROM collections WHERE name = ?", name):
            raise Conflict(f"collection {name!r} already exists")
        with self.catalogue.atomic():
            cid = self.conn.execute("INSERT INTO collections (name, agency_id, created_at) VALUES (?, ?, ?)",
                                    (name, agency_id, utc_now())).lastrowid
            self.catalogue.audit(actor, "admin.collection_add", {"collection": name, "agency": agency})
        return cid

    def share(self, collection: str, agency: str, *, actor: str, until: str | None = None,
              reason: str | None = None) -> int:
        """Let ``agency`` search ``collection`` (until ``until``, ISO, or until revoked); audited."""
        coll, grantee, until = self.collection(collection), self.agency_id(agency), normalise_until(until)
        if coll["agency_id"] == grantee:
            raise InvalidArgument(f"{agency!r} owns {collection!r} already")
        with self.catalogue.atomic():
            share_id = self.conn.execute(
                "INSERT INTO shares (collection_id, agency_id, granted_by, granted_at, valid_until) "
                "VALUES (?, ?, ?, ?, ?)", (coll["id"], grantee, actor, utc_now(), until)).lastrowid
            self.catalogue.audit(actor, "share.grant", {"share_id": share_id, "collection": collection,
                                                       "owner": coll["agency"], "agency": agency, "until": until,
                                                       "reason": reason})
        return share_id

    def revoke_share(self, share_id: int, *, actor: str, reason: str | None = None) -> None:
        with self.catalogue.atomic():
            n = self.conn.execute("UPDATE shares SET revoked_at = ?, revoked_by = ? WHERE id = ? "
                                  "AND revoked_at IS NULL", (utc_now(), actor, share_id)).rowcount
            if not n:
                raise NotFound(f"no active sharing agreement {share_id}")
            self.catalogue.audit(actor, "share.revoke", {"share_id": share_id, "reason": reason})

    def shares(self) -> list[dict]:
        now = utc_now()
        rows = self.conn.execute("""SELECT s.*, c.name AS collection, o.name AS owner, a.name AS agency
            FROM shares s JOIN collections c ON c.id = s.collection_id JOIN agencies o ON o.id = c.agency_id
            JOIN agencies a ON a.id = s.agency_id ORDER BY s.id""")
        return [dict(r) | {"valid": r["revoked_at"] is None and (r["valid_until"] is None or r["valid_until"] > now)}
                for r in rows]

    def visible_collections(self, user: User) -> list[dict]:
        """Collections ``user`` may search: their agency's, and those shared with it by a valid agreement."""
        rows = self.conn.execute("""SELECT c.id, c.name, a.name AS agency, c.agency_id = ? AS own
            FROM collections c JOIN agencies a ON a.id = c.agency_id
            WHERE c.agency_id = ? OR c.id IN (SELECT collection_id FROM shares WHERE agency_id = ?
                AND revoked_at IS NULL AND (valid_until IS NULL OR valid_until > ?)) ORDER BY c.name""",
                                 (user.agency_id, user.agency_id, user.agency_id, utc_now()))
        return [dict(r) for r in rows]

    def case_id(self, agency_id: int, reference: str, *, create: bool = False) -> int:
        """The id of ``agency_id``'s case ``reference``; with ``create``, made if it does not exist yet.

        Two processes (the service's search workers) may create the same case at once: the insert is
        ``OR IGNORE`` and the row is read back, so both get the one case instead of a UNIQUE error.
        """
        if not reference or not reference.strip():
            raise InvalidArgument("a case reference is required")
        row = self._one("SELECT id FROM cases WHERE agency_id = ? AND reference = ?", agency_id, reference)
        if row:
            return row[0]
        if not create:
            raise NotFound(f"no case {reference!r}")
        self.conn.execute("INSERT OR IGNORE INTO cases (agency_id, reference, created_at) VALUES (?, ?, ?)",
                          (agency_id, reference, utc_now()))
        return self._one("SELECT id FROM cases WHERE agency_id = ? AND reference = ?", agency_id, reference)[0]

    def cases(self, agency_id: int) -> list[dict]:
        return [dict(r) for r in self.conn.execute(
            "SELECT * FROM cases WHERE agency_id = ? ORDER BY reference", (agency_id,))]

    def assign_run(self, run_id: int, *, collection_id: int) -> int:
        """Give every image of ingest run ``run_id`` that has no owner yet to a collection (adopting images
        ingested without one; an ingest with a collection owns its images as it stores them). Each image
        also enters the collection's agency's dedupe scope, unless that agency stores the same file already."""
        with self.catalogue.atomic():
            agency_id = self._one("SELECT agency_id FROM collections WHERE id = ?", collection_id)[0]
            n = self.conn.execute(
                "INSERT OR IGNORE INTO image_owners (image_id, collection_id) "
                "SELECT id, ? FROM images WHERE run_id = ?", (collection_id, run_id)).rowcount
            adopted = [r[0] for r in self.conn.execute(
                "SELECT id FROM images WHERE run_id = ? AND owner_agency = 0 "
                "AND id IN (SELECT image_id FROM image_owners WHERE collection_id = ?)", (run_id, collection_id))]
            self.conn.execute("UPDATE OR IGNORE images SET owner_agency = ? WHERE run_id = ? AND owner_agency = 0 "
                              "AND id IN (SELECT image_id FROM image_owners WHERE collection_id = ?)",
                              (agency_id, run_id, collection_id))
            self._subjects_follow(adopted, agency_id)
            self.conn.execute("UPDATE ingest_runs SET agency_id = ?, collection_id = ? WHERE id = ? AND agency_id = 0",
                              (agency_id, collection_id, run_id))  # the run is listed as the agency's now
            return n

    def _subjects_follow(self, image_ids: list[int], agency_id: int) -> None:
        """Images that joined ``agency_id`` move to that agency's subject of their reference (a subject
        belongs to one agency); a subject left with no image goes."""
        for image_id in image_ids:
            row = self._one("""SELECT i.subject_id, s.reference FROM images i JOIN subjects s ON s.id = i.subject_id
                               WHERE i.id = ? AND i.owner_agency = ? AND s.agency_id <> ?""",
                            image_id, agency_id, agency_id)
            if row is None:
                continue
            new_sid = self.catalogue.subject_id(row["reference"], create=True, agency_id=agency_id)
            self.conn.execute("UPDATE images SET subject_id = ? WHERE id = ?", (new_sid, image_id))
            self.conn.execute("UPDATE faces SET subject_id = ? WHERE image_id = ?", (new_sid, image_id))
            self.conn.execute("DELETE FROM subjects WHERE id = ? AND NOT EXISTS "
                              "(SELECT 1 FROM images WHERE subject_id = ?)", (row["subject_id"], row["subject_id"]))

    # -- what a search may see --------------------------------------------------------------------------

    def search_scope(self, user: User, collections: list[str] | None = None) -> SearchScope:
        """The faces a search by ``user`` ranks: the chosen visible collections' custody faces (all visible
        ones when ``collections`` is None) and the crime-scene faces of the user's agency's cases."""
        visible = {c["name"]: c["id"] for c in self.visible_collections(user)}
        chosen = list(visible) if not collections else collections
        unknown = [c for c in chosen if c not in visible]
        if unknown:
            raise NotFound(f"no collection {unknown[0]!r} that you may search")
        ids = [visible[c] for c in chosen]
        marks = ",".join("?" * len(ids)) or "NULL"
        custody = self.conn.execute(
            f"""SELECT f.id, f.subject_id FROM faces f JOIN image_owners o ON o.image_id = f.image_id
                WHERE f.kind = 'custody' AND o.collection_id IN ({marks})""", ids).fetchall()
        scene = self.conn.execute(
            """SELECT f.id FROM faces f JOIN image_owners o ON o.image_id = f.image_id
               JOIN cases k ON k.id = o.case_id WHERE f.kind = 'scene' AND k.agency_id = ?""",
            (user.agency_id,)).fetchall()
        return SearchScope(np.array(sorted(r[0] for r in custody), dtype=np.int64),
                           np.array(sorted(r[0] for r in scene), dtype=np.int64), tuple(sorted(chosen)),
                           len({r[1] for r in custody}), len(custody))

    def record_search_owner(self, search_id: int, user: User, case_id: int, collections: tuple[str, ...]) -> None:
        with self.catalogue.atomic():
            self.conn.execute("INSERT INTO search_owners VALUES (?, ?, ?, ?, ?)",
                              (search_id, user.id, user.agency_id, case_id, json.dumps(list(collections))))

    def search_agency(self, search_id: int) -> int | None:
        row = self._one("SELECT agency_id FROM search_owners WHERE search_id = ?", search_id)
        return row[0] if row else None

    def agency_searches(self, agency_id: int, *, case: str | None = None, limit: int = 200) -> list[dict]:
        sql = """SELECT s.id, s.created_at, s.user, s.case_ref, s.reason FROM searches s
                 JOIN search_owners o ON o.search_id = s.id WHERE o.agency_id = ?"""
        args: list = [agency_id]
        if case:
            sql, args = sql + " AND s.case_ref = ?", args + [case]
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY s.id DESC LIMIT ?", (*args, limit))]

    def agency_search(self, agency_id: int, search_id: int) -> dict | None:
        """Who ran a search of ``agency_id``, in which case and why; None for another agency's or none."""
        row = self._one("""SELECT s.id, s.created_at, s.user, s.case_ref, s.reason FROM searches s
                           JOIN search_owners o ON o.search_id = s.id WHERE s.id = ? AND o.agency_id = ?""",
                        search_id, agency_id)
        return dict(row) if row else None

    def search_shows_face(self, search_id: int, face_id: int) -> bool:
        """Whether ``face_id`` is among the candidates of ``search_id`` (an image its consultation covers)."""
        return self._one("SELECT 1 FROM candidates WHERE search_id = ? AND face_id = ? LIMIT 1",
                         search_id, face_id) is not None

    def search_used_probe(self, search_id: int, sha256: str) -> bool:
        return self._one("SELECT 1 FROM search_probes WHERE search_id = ? AND sha256 = ? LIMIT 1",
                         search_id, sha256) is not None

    def face_visible(self, user: User, face_id: int) -> bool:
        """Whether ``user`` may see this face's image (custody: a visible collection; scene: own case)."""
        row = self._one("""SELECT o.collection_id, k.agency_id FROM faces f JOIN image_owners o
                           ON o.image_id = f.image_id LEFT JOIN cases k ON k.id = o.case_id WHERE f.id = ?""",
                        face_id)
        if row is None:
            return False
        if row[0] is not None:
            return row[0] in {c["id"] for c in self.visible_collections(user)}
        return row[1] == user.agency_id

    def probe_visible(self, user: User, sha256: str) -> bool:
        """Probe images are seen only by the agency whose searches used them."""
        return self._one("""SELECT 1 FROM search_probes p JOIN search_owners o ON o.search_id = p.search_id
                            WHERE p.sha256 = ? AND o.agency_id = ? LIMIT 1""", sha256, user.agency_id) is not None

    def face_location(self, face_id: int) -> tuple[str, tuple[int, int, int, int]]:
        """The image file of a stored face and its box (x, y, w, h), for showing it to a reviewer."""
        row = self._one("""SELECT i.original_path, f.box_left, f.box_top, f.box_right, f.box_bottom FROM faces f
                           JOIN images i ON i.id = f.image_id WHERE f.id = ?""", face_id)
        if row is None:
            raise NotFound(f"no face {face_id}")
        return row[0], (row[1], row[2], row[3] - row[1], row[4] - row[2])

    def face_collections(self, face_ids: list[int]) -> dict[int, str]:
        """``{face_id: name of the collection holding its image}``: two agencies' subjects of one reference
        are told apart by their collection when a shared search lists both."""
        ids = [int(i) for i in face_ids if i is not None]
        marks = ",".join("?" * len(ids)) or "NULL"
        return {r[0]: r[1] for r in self.conn.execute(
            f"""SELECT f.id, c.name FROM faces f JOIN image_owners o ON o.image_id = f.image_id
                JOIN collections c ON c.id = o.collection_id WHERE f.id IN ({marks})""", ids)}

    def probe_location(self, search_id: int, probe_no: int) -> tuple[str, tuple[int, int, int, int] | None, str]:
        """The stored probe image of one probe face of a search: ``(path, box or None, sha256)``."""
        row = self._one("SELECT path, box, sha256 FROM search_probes WHERE search_id = ? AND probe_no = ?",
                        search_id, probe_no)
        if row is None:
            raise NotFound(f"search {search_id} has no probe face {probe_no}")
        box = json.loads(row[1]) if row[1] else None
        return row[0], tuple(box) if box else None, row[2]

    def agency_usernames(self, agency_id: int) -> list[str]:
        """The names ``agency_id``'s users are recorded under (``User.username``)."""
        return [r[0] for r in self.conn.execute("SELECT actor FROM users WHERE agency_id = ?", (agency_id,))]

    def _one(self, sql: str, *args):
        return self.conn.execute(sql, args).fetchone()
