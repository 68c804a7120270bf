"""The privacy tests of tests/unit/test_privacy.py on PostgreSQL: the same functions, with the harness on the
session's database (so the fast ingest path and its remembered conversations are in play)."""

from __future__ import annotations

import pytest

from luminai_actors.config import Settings
from tests.unit.test_privacy import (
    test_a_later_message_from_the_number_starts_a_fresh_contact_and_talk,
    test_a_send_queued_before_the_erasure_never_reaches_evolution,
    test_an_erased_person_who_opted_out_is_never_written_to_again,
    test_an_organization_key_exports_and_erases_only_its_own_contacts,
    test_the_configured_key_is_used_and_a_generated_one_is_made_once,
    test_the_erasure_leaves_no_row_referencing_the_person,
    test_the_erasure_removes_the_persons_messages_in_shared_chats,
    test_the_export_is_everything_held_about_the_person_and_is_audited,
)

pytestmark = pytest.mark.integration

__all__ = [
    "test_a_later_message_from_the_number_starts_a_fresh_contact_and_talk",
    "test_a_send_queued_before_the_erasure_never_reaches_evolution",
    "test_an_erased_person_who_opted_out_is_never_written_to_again",
    "test_an_organization_key_exports_and_erases_only_its_own_contacts",
    "test_the_configured_key_is_used_and_a_generated_one_is_made_once",
    "test_the_erasure_leaves_no_row_referencing_the_person",
    "test_the_erasure_removes_the_persons_messages_in_shared_chats",
    "test_the_export_is_everything_held_about_the_person_and_is_audited",
]


@pytest.fixture
def luminai_settings(clean_pg: str) -> Settings:
    return Settings(database_url=clean_pg)
