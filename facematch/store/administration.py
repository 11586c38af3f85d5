"""Agency-scoped administration: what an agency's admin may do to its own people and sharing agreements.

The service has no system-wide account. An ``admin`` administers the users of their own agency (add,
set roles, disable, enable, issue and revoke API tokens) and the sharing agreements of the collections
their agency owns (grant to another agency, revoke). Another agency's users, collections and agreements
answer ``NotFound``, as everything of another agency does in the service (their existence is not
revealed). Creating agencies and their first admin is left to the command line (facematch/cli), run by
whoever runs the server. Every change is audited with the admin as actor and the reason they gave.
"""

from __future__ import annotations

import secrets

from facematch.errors import Conflict, InvalidArgument, NotFound
from facematch.store.accounts import ROLES, Accounts, User, _sha
from facematch.store.catalogue import utc_now

__all__ = ["AgencyAdmin"]


def _reason(reason: str | None) -> str:
    if not reason or not reason.strip():
        raise InvalidArgument("a reason is required for every administrative change (it is audited)")
    return reason.strip()


class AgencyAdmin:
    """The administration of ``admin``'s agency, over one ``Accounts`` (one catalogue connection)."""

    def __init__(self, accounts: Accounts, admin: User):
        if not admin.has("admin"):
            raise InvalidArgument(f"{admin.username} does not hold the admin role")
        self.accounts, self.admin = accounts, admin
        self.catalogue, self.conn = accounts.catalogue, accounts.conn

    def _audit(self, action: str, reason: str, details: dict) -> None:
        self.catalogue.audit(self.admin.username, action, {"agency": self.admin.agency, **details, "reason": reason})

    # -- users ----------------------------------------------------------------------------------------

    def users(self) -> list[dict]:
        """Every user of the agency, disabled ones included, with roles and live token count."""
        rows = self.conn.execute("""SELECT u.id, u.username, u.actor, u.active, u.created_at,
            (SELECT group_concat(role) FROM user_roles r WHERE r.user_id = u.id) AS roles,
            (SELECT COUNT(*) FROM api_tokens t WHERE t.user_id = u.id AND t.revoked_at IS NULL) AS tokens
            FROM users u WHERE u.agency_id = ? ORDER BY u.username""", (self.admin.agency_id,))
        return [{"username": r["username"], "recorded_as": r["actor"], "active": bool(r["active"]),
                 "created_at": r["created_at"],
                 "roles": sorted((r["roles"] or "").split(",")) if r["roles"] else [], "tokens": r["tokens"]}
                for r in rows]

    def _member(self, username: str) -> tuple[int, bool, str]:
        """``(user id, active, recorded name)`` of a user of this agency (``username``: their login, unique
        within it); ``NotFound`` for anyone else's."""
        row = self.conn.execute("SELECT id, active, actor FROM users WHERE username = ? AND agency_id = ?",
                                (username, self.admin.agency_id)).fetchone()
        if row is None:
            raise NotFound(f"no user {username!r} in {self.admin.agency}")
        return row[0], bool(row[1]), row[2]

    def add_user(self, username: str, password: str, roles: list[str], *, reason: str) -> User:
        return self.accounts.add_user(username, password, agency=self.admin.agency, roles=roles,
                                      actor=self.admin.username, reason=_reason(reason))

    def set_roles(self, username: str, roles: list[str], *, reason: str) -> list[str]:
        """Replace ``username``'s roles; the agency keeps at least one active admin."""
        reason = _reason(reason)
        bad = sorted(set(roles) - set(ROLES))
        if bad or not roles:
            raise InvalidArgument(f"roles must be some of {', '.join(ROLES)}; got {', '.join(roles) or 'none'}")
        user_id, _, recorded = self._member(username)
        with self.catalogue.atomic():
            before = sorted(r[0] for r in self.conn.execute("SELECT role FROM user_roles WHERE user_id = ?",
                                                            (user_id,)))
            self.conn.execute("DELETE FROM user_roles WHERE user_id = ?", (user_id,))
            self.conn.executemany("INSERT INTO user_roles VALUES (?, ?)", [(user_id, r) for r in set(roles)])
            self._keep_an_admin()
            self._audit("admin.user_roles", reason, {"user": recorded, "before": before, "roles": sorted(set(roles))})
        return sorted(set(roles))

    def set_active(self, username: str, active: bool, *, reason: str) -> dict:
        """Disable (sessions ended, API tokens revoked) or enable again a user of the agency."""
        reason = _reason(reason)
        user_id, _, recorded = self._member(username)
        with self.catalogue.atomic():
            self.conn.execute("UPDATE users SET active = ? WHERE id = ?", (int(active), user_id))
            ended = revoked = 0
            if not active:
                ended = self.conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)).rowcount
                revoked = self.conn.execute("UPDATE api_tokens SET revoked_at = ? WHERE user_id = ? AND "
                                            "revoked_at IS NULL", (utc_now(), user_id)).rowcount
                self._keep_an_admin()
            self._audit("admin.user_enable" if active else "admin.user_disable", reason,
                        {"user": recorded, "sessions_ended": ended, "tokens_revoked": revoked})
        return {"user": username, "active": active, "sessions_ended": ended, "tokens_revoked": revoked}

    def _keep_an_admin(self) -> None:
        """Inside a transaction: refuse (rolling back) a change that leaves the agency without an active admin."""
        left = self.conn.execute("""SELECT COUNT(*) FROM users u JOIN user_roles r ON r.user_id = u.id
            WHERE u.agency_id = ? AND u.active = 1 AND r.role = 'admin'""", (self.admin.agency_id,)).fetchone()[0]
        if not left:
            raise Conflict(f"{self.admin.agency} would have no active admin left; make another admin first")

    # -- API tokens -----------------------------------------------------------------------------------

    def tokens(self, username: str) -> list[dict]:
        user_id, _, _ = self._member(username)
        return [dict(r) for r in self.conn.execute(
            "SELECT id, label, created_at, revoked_at, last_used_at FROM api_tokens WHERE user_id = ? ORDER BY id",
            (user_id,))]

    def create_token(self, username: str, label: str, *, reason: str) -> tuple[int, str]:
        """A new API token for an active user of the agency: ``(id, secret)``, the secret shown only this once."""
        reason = _reason(reason)
        user_id, active, recorded = self._member(username)
        if not active:
            raise Conflict(f"user {username!r} is disabled: enable them first")
        secret = "fm_" + secrets.token_urlsafe(32)
        with self.catalogue.atomic():
            token_id = self.conn.execute(
                "INSERT INTO api_tokens (user_id, token_sha256, label, created_at) VALUES (?, ?, ?, ?)",
                (user_id, _sha(secret), label or "api", utc_now())).lastrowid
            self._audit("admin.token_create", reason, {"user": recorded, "token_id": token_id, "label": label})
        return token_id, secret

    def revoke_token(self, token_id: int, *, reason: str) -> None:
        reason = _reason(reason)
        with self.catalogue.atomic():
            row = self.conn.execute("""SELECT u.actor FROM api_tokens t JOIN users u ON u.id = t.user_id
                WHERE t.id = ? AND t.revoked_at IS NULL AND u.agency_id = ?""",
                                    (token_id, self.admin.agency_id)).fetchone()
            if row is None:
                raise NotFound(f"no active token {token_id} of a user of {self.admin.agency}")
            self.conn.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?", (utc_now(), token_id))
            self._audit("admin.token_revoke", reason, {"user": row[0], "token_id": token_id})

    # -- sharing agreements ---------------------------------------------------------------------------

    def agencies(self) -> list[str]:
        """Names of the other agencies (to grant a share to)."""
        return [r[0] for r in self.conn.execute("SELECT name FROM agencies WHERE id != ? ORDER BY name",
                                                (self.admin.agency_id,))]

    def collections(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM collections WHERE agency_id = ? ORDER BY name",
                                                (self.admin.agency_id,))]

    def shares(self) -> list[dict]:
        """Agreements on the agency's collections ("granted") and those letting it search others' ("received")."""
        mine = self.admin.agency
        return [s | {"direction": "granted" if s["owner"] == mine else "received"}
                for s in self.accounts.shares() if mine in (s["owner"], s["agency"])]

    def grant(self, collection: str, agency: str, *, until: str | None, reason: str) -> int:
        reason = _reason(reason)
        if collection not in self.collections():
            raise NotFound(f"no collection {collection!r} of {self.admin.agency}")
        return self.accounts.share(collection, agency, actor=self.admin.username, until=until, reason=reason)

    def revoke(self, share_id: int, *, reason: str) -> None:
        """End an agreement on one of the agency's collections (a received one answers NotFound)."""
        reason = _reason(reason)
        owned = self.conn.execute("""SELECT 1 FROM shares s JOIN collections c ON c.id = s.collection_id
            WHERE s.id = ? AND c.agency_id = ?""", (share_id, self.admin.agency_id)).fetchone()
        if owned is None:
            raise NotFound(f"no active sharing agreement {share_id} on a collection of {self.admin.agency}")
        self.accounts.revoke_share(share_id, actor=self.admin.username, reason=reason)
