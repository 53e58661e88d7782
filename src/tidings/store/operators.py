"""The dashboard's operators, their sessions and the audit log (``services/operators.py`` decides;
this module reads and writes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings import ids
from tidings.store.db import plain
from tidings.store.tables import audit_log, operator_sessions, operators


@dataclass(frozen=True)
class Operator:
    id: str
    name: str
    password_hash: str
    created_at: datetime
    last_sign_in_at: datetime | None
    disabled_at: datetime | None


@dataclass(frozen=True)
class Session:
    """A signed-in browser and who it is."""

    operator: Operator
    csrf_token: str
    expires_at: datetime


def _operator(row: Any) -> Operator:
    return Operator(
        id=row.id,
        name=row.name,
        password_hash=row.password_hash,
        created_at=row.created_at,
        last_sign_in_at=row.last_sign_in_at,
        disabled_at=row.disabled_at,
    )


class OperatorStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, name: str, password_hash: str, now: datetime) -> Operator | None:
        """A new operator; ``None`` when the name is taken."""
        made = Operator(ids.new_id(), name, password_hash, now, last_sign_in_at=None, disabled_at=None)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(operators).values(
                        id=made.id, name=name, password_hash=password_hash, created_at=now
                    )
                )
        except IntegrityError:
            return None
        return made

    async def named(self, name: str) -> Operator | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(operators).where(operators.c.name == name))).first()
        return _operator(row) if row is not None else None

    async def all(self) -> list[Operator]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(operators).order_by(operators.c.name))).all()
        return [_operator(r) for r in rows]

    async def set_password(self, name: str, password_hash: str) -> bool:
        """A new password hash, and every session of the operator ended."""
        async with self.engine.begin() as conn:
            found = await conn.scalar(select(operators.c.id).where(operators.c.name == name))
            if found is None:
                return False
            await conn.execute(
                update(operators).where(operators.c.id == found).values(password_hash=password_hash)
            )
            await conn.execute(delete(operator_sessions).where(operator_sessions.c.operator_id == found))
        return True

    async def rehash(self, operator_id: str, old: str, new: str) -> None:
        """Replace a hash made with older parameters, unless the password changed meanwhile."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(operators)
                .where(operators.c.id == operator_id, operators.c.password_hash == old)
                .values(password_hash=new)
            )

    async def set_disabled(self, name: str, when: datetime | None) -> bool:
        """Disable (``when``) or enable (``None``) an operator; disabling ends their sessions."""
        async with self.engine.begin() as conn:
            found = await conn.scalar(select(operators.c.id).where(operators.c.name == name))
            if found is None:
                return False
            await conn.execute(update(operators).where(operators.c.id == found).values(disabled_at=when))
            if when is not None:
                await conn.execute(delete(operator_sessions).where(operator_sessions.c.operator_id == found))
        return True

    async def open_session(
        self, operator_id: str, digest: str, csrf_token: str, *, now: datetime, expires_at: datetime
    ) -> None:
        """Record a sign-in: the session and the operator's last sign-in, and drop expired sessions."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(operator_sessions).where(operator_sessions.c.expires_at <= now))
            await conn.execute(
                insert(operator_sessions).values(
                    id=digest,
                    operator_id=operator_id,
                    csrf_token=csrf_token,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires_at,
                )
            )
            await conn.execute(
                update(operators).where(operators.c.id == operator_id).values(last_sign_in_at=now)
            )

    async def session(self, digest: str, now: datetime) -> Session | None:
        """The live session with this digest, of an operator who is not disabled."""
        query = (
            select(operators, operator_sessions.c.csrf_token, operator_sessions.c.expires_at)
            .join(operators, operators.c.id == operator_sessions.c.operator_id)
            .where(
                operator_sessions.c.id == digest,
                operator_sessions.c.expires_at > now,
                operators.c.disabled_at.is_(None),
            )
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return Session(operator=_operator(row), csrf_token=row.csrf_token, expires_at=row.expires_at)

    async def extend(self, digest: str, *, now: datetime, expires_at: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(operator_sessions)
                .where(operator_sessions.c.id == digest)
                .values(last_seen_at=now, expires_at=expires_at)
            )

    async def close_session(self, digest: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(operator_sessions).where(operator_sessions.c.id == digest))

    async def record(
        self,
        *,
        operator: str,
        action: str,
        target: str,
        detail: dict[str, Any],
        address: str | None,
        now: datetime,
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(audit_log).values(
                    occurred_at=now,
                    operator=operator,
                    action=action,
                    target=target,
                    detail=detail,
                    address=address,
                )
            )

    async def audit(self, *, before_id: int | None, limit: int) -> list[dict[str, Any]]:
        """Audit entries, newest first, older than ``before_id`` when given."""
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(audit_log.c.id < before_id)
        async with self.engine.connect() as conn:
            return [plain(r) for r in (await conn.execute(query)).mappings()]
