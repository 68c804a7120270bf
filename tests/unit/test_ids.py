"""UUIDv7 ids: version and variant bits, strictly increasing within a process, unique across threads."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

from luminai_actors.domain.ids import uuid7


def test_ids_are_version_7_rfc_variant_and_carry_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after + 1


def test_ids_increase_strictly_and_never_repeat_across_threads() -> None:
    per_thread: dict[int, list[uuid.UUID]] = {}

    def make(n: int) -> None:
        per_thread[n] = [uuid7() for _ in range(5_000)]  # far more than one block of randomness

    threads = [threading.Thread(target=make, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    everything = [value for values in per_thread.values() for value in values]
    assert len(set(everything)) == len(everything) == 20_000
    for values in per_thread.values():
        assert all(a < b for a, b in itertools.pairwise(values))
    assert len({value.int & ((1 << 62) - 1) for value in everything}) == 20_000  # the random part differs
