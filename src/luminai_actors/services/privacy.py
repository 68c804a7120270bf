"""A person's data (LGPD art. 18, GDPR art. 17): export everything held about one contact, or erase it.

`export_contact` returns one JSON document: the contact (every column), its talks (with their TalkFlow, the
fields collected), every message of those talks (with its metadata, which holds media metadata), and the
messages the person wrote in shared chats (a group's talk belongs to the group's contact, but the person's
own messages there reference them through `from_contact_id`).

`erase_contact` deletes, in one transaction, the contact, its talks, their `talk_agent` rows and messages
(pending AI turns are unprocessed inbound messages; unsettled sends are outbound messages pending or
sending: both are rows of those talks), and the person's messages in shared chats. Queued work carries ids
only: an AI turn or a send queued before the erasure finds nothing and ends (`missing`) without sending.
The erasure takes the inbound path's contact locks (`contact:{org}:{identity}`) and locks the talks' rows,
so a message arriving meanwhile is stored either before (and erased with them) or after, on a fresh contact.

If the person had opted out, a keyed hash (HMAC-SHA256) of each number they were known by is kept in
`suppressed_number`; `SuppressionList.talk_is_suppressed` is the one rule that reads it: the AI turn asks it
before replying, and a suppressed contact's turn stores no reply and marks the contact opted out. The key is
`LUMINAI_SUPPRESSION_KEY` or, when unset, a random key generated once and kept in `service_secret`
(changing the key makes the list unreadable: keep it once set). Phones are hashed in one canonical E.164
spelling (`domain.phone.canonical_phone`), so the national variants of a number share one hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import CursorResult, delete, exists, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from luminai_actors.domain.ids import uuid7
from luminai_actors.domain.inbound import identity_keys
from luminai_actors.domain.phone import canonical_phone, normalize_phone
from luminai_actors.persistence.tables import (
    Contact,
    ServiceSecret,
    SuppressedNumber,
    Talk,
    TalkAgent,
    TalkMessage,
    utcnow,
)
from luminai_actors.persistence.uow import UnitOfWork, UnitOfWorkFactory, session_of
from luminai_actors.services import audit
from luminai_actors.services.api_keys import Principal, visible_row

SECRET_NAME = "suppression_key"  # noqa: S105  # the row's name, not a secret


def _insert(session: Session, table: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING on the database in use."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


# --- the suppression list -----------------------------------------------------------------------------------


def number_identities(phone: str | None, mobile_phone: str | None, lid: str | None) -> list[str]:
    """What is hashed for one person: each phone in its canonical E.164 spelling, and the LID."""
    found = set()
    for raw in (phone, mobile_phone):
        e164 = normalize_phone(raw) if raw else None
        if e164 is not None:
            found.add("phone:" + canonical_phone(e164))
    if lid:
        found.add("lid:" + lid)
    return sorted(found)


def number_hash(key: bytes, identity: str) -> str:
    return hmac.new(key, identity.encode(), hashlib.sha256).hexdigest()


class SuppressionList:
    """The keyed hashes of erased, opted-out numbers, and the key they are made with (cached once read)."""

    def __init__(self, uow_factory: UnitOfWorkFactory, configured_key: str | None) -> None:
        self._uow_factory = uow_factory
        self._key = configured_key.encode() if configured_key else None
        self._lock = threading.Lock()

    def key(self, session: Session | None = None) -> bytes | None:
        """The hashing key: the configured one or the stored one. With `session`, only read in that
        transaction (None when no key was ever made); without, made now when none is (its own transaction,
        race-safe: of two processes making one, the first insert wins and both read it)."""
        with self._lock:
            if self._key is not None:
                return self._key
        if session is not None:
            value = session.scalar(select(ServiceSecret.value).where(ServiceSecret.name == SECRET_NAME))
        else:
            with self._uow_factory() as uow:
                own = session_of(uow)
                own.execute(
                    _insert(own, ServiceSecret.__table__).values(
                        name=SECRET_NAME, value=secrets.token_hex(32), created_at=utcnow()
                    )
                )
                value = own.scalar(select(ServiceSecret.value).where(ServiceSecret.name == SECRET_NAME))
                uow.commit()
        if value is None:
            return None
        with self._lock:
            self._key = value.encode()
            return self._key

    def suppress(self, uow: UnitOfWork, organization_id: uuid.UUID, identities: Iterable[str]) -> int:
        """Add the hashes of `identities` to the organization's list in `uow`'s transaction; how many."""
        session = session_of(uow)
        key = self.key(session)
        assert key is not None, "erase_contact makes the key before its transaction"
        hashes = sorted({number_hash(key, identity) for identity in identities})
        for digest in hashes:
            session.execute(
                _insert(session, SuppressedNumber.__table__).values(
                    id=uuid7(), organization_id=organization_id, number_hash=digest, created_at=utcnow()
                )
            )
        return len(hashes)

    def talk_is_suppressed(self, uow: UnitOfWork, talk_id: uuid.UUID) -> bool:
        """True when the contact of this talk is known by a suppressed number: the agent must not reply.

        One indexed read when the organization suppresses nothing (the usual case), two otherwise."""
        session = session_of(uow)
        row = session.execute(
            select(
                Contact.organization_id,
                Contact.phone,
                Contact.mobile_phone,
                Contact.whatsapp_lid,
                exists().where(SuppressedNumber.organization_id == Contact.organization_id),
            )
            .join(Talk, Talk.contact_id == Contact.id)
            .where(Talk.id == talk_id)
        ).first()
        if row is None or not row[4]:
            return False
        identities = number_identities(row[1], row[2], row[3])
        key = self.key(session)
        if not identities or key is None:
            return False
        hashes = [number_hash(key, identity) for identity in identities]
        found = session.scalar(
            select(func.count())
            .select_from(SuppressedNumber)
            .where(SuppressedNumber.organization_id == row[0], SuppressedNumber.number_hash.in_(hashes))
        )
        return bool(found)


# --- export -------------------------------------------------------------------------------------------------


def _person_messages(talk_ids: list[uuid.UUID], contact_id: uuid.UUID) -> Any:
    """Messages of the contact's talks, and the contact's own messages in other (shared) talks."""
    return or_(TalkMessage.talk_id.in_(talk_ids), TalkMessage.from_contact_id == contact_id)


@dataclass(frozen=True, slots=True)
class PersonData:
    """What `export_contact` found: the contact, its talks (with their agents' ids) and messages."""

    contact: Contact
    talks: list[tuple[Talk, list[uuid.UUID]]]
    messages: list[TalkMessage]  # of those talks, and the person's own in shared chats; oldest first


def export_contact(uow_factory: UnitOfWorkFactory, principal: Principal, contact_id: uuid.UUID) -> PersonData:
    """Everything held about the person (the export is recorded in the audit log, without any data)."""
    with uow_factory() as uow:
        contact = visible_row(uow, principal, Contact, contact_id, "contact")
        session = session_of(uow)
        talks = list(
            session.scalars(
                select(Talk).where(Talk.contact_id == contact_id).order_by(Talk.created_at, Talk.id)
            )
        )
        agents: dict[uuid.UUID, list[uuid.UUID]] = {talk.id: [] for talk in talks}
        for talk_id, agent_id in session.execute(
            select(TalkAgent.talk_id, TalkAgent.agent_id)
            .where(TalkAgent.talk_id.in_(list(agents)))
            .order_by(TalkAgent.created_at, TalkAgent.agent_id)
        ):
            agents[talk_id].append(agent_id)
        messages = list(
            session.scalars(
                select(TalkMessage)
                .where(_person_messages(list(agents), contact_id))
                .order_by(TalkMessage.created_at, TalkMessage.id)
            )
        )
        audit.record(
            uow,
            actor=audit.actor_of(principal.key_id),
            organization_id=contact.organization_id,
            action="contact.export",
            entity_type="contact",
            entity_id=contact_id,
        )
        uow.commit()
    return PersonData(contact, [(talk, agents[talk.id]) for talk in talks], messages)


# --- erasure ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Erased:
    """What an erasure removed: the caller evicts what it cached about these ids."""

    organization_id: uuid.UUID
    contact_id: uuid.UUID
    talk_ids: list[uuid.UUID]
    messages: int
    suppressed: bool


def erase_contact(
    uow_factory: UnitOfWorkFactory,
    suppression: SuppressionList,
    principal: Principal,
    contact_id: uuid.UUID,
) -> Erased:
    """Delete the person's rows in one transaction (see the module docstring); 404 when not visible."""
    suppression.key()  # made (if need be) before: a second write transaction inside would wait on SQLite
    with uow_factory() as uow:
        contact = visible_row(uow, principal, Contact, contact_id, "contact")
        org = contact.organization_id
        lid = contact.whatsapp_lid
        keys = sorted(set(identity_keys(contact.phone, lid)) | set(identity_keys(contact.mobile_phone, lid)))
        for key in keys:  # the inbound path's locks, in its order
            uow.lock(f"contact:{org}:{key}")
        session = session_of(uow)
        session.refresh(contact, with_for_update=True)  # as it is now that no inbound message writes it
        # The talks' rows are locked first: the fast ingest path joins them FOR UPDATE, so a message it
        # is inserting now commits before this erasure reads the messages, or finds no talk afterwards.
        talk_ids = list(
            session.scalars(
                select(Talk.id).where(Talk.contact_id == contact_id).order_by(Talk.id).with_for_update()
            )
        )
        identities = number_identities(contact.phone, contact.mobile_phone, contact.whatsapp_lid)
        opted_out = contact.opted_out_at is not None
        deleted = session.execute(delete(TalkMessage).where(_person_messages(talk_ids, contact_id)))
        assert isinstance(deleted, CursorResult)  # a DELETE's result
        messages = deleted.rowcount
        session.execute(delete(TalkAgent).where(TalkAgent.talk_id.in_(talk_ids)))
        session.execute(delete(Talk).where(Talk.id.in_(talk_ids)))
        session.execute(delete(Contact).where(Contact.id == contact_id))
        suppressed = opted_out and suppression.suppress(uow, org, identities) > 0
        audit.record(
            uow,
            actor=audit.actor_of(principal.key_id),
            organization_id=org,
            action="contact.erase",
            entity_type="contact",
            entity_id=contact_id,
            before={"messages": messages, "talks": len(talk_ids), "suppressed": suppressed},
        )
        uow.commit()
    return Erased(org, contact_id, talk_ids, messages, suppressed)
