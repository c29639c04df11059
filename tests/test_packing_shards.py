"""The shard rule of `tasks.dataset.packing`, measured on real tar files: no shard file exceeds
`shard_bytes` unless it holds a single unit that alone is larger; a shard is closed only when the next unit
would not fit; units keep their order and never straddle two shards."""

from __future__ import annotations

import tarfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.dataset.packing import Member, plan_shards, write_tar

# names up to ~160 characters: past 100 a member needs a pax header of its own
_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=160)
_unit = st.lists(st.tuples(_names, st.integers(0, 30_000)), min_size=1, max_size=3)


def _units(spec: list[list[tuple[str, int]]]) -> list[list[Member]]:
    return [[Member(f"u{i}/{k}/{name}", data=bytes([i % 251]) * size) for k, (name, size) in enumerate(unit)]
            for i, unit in enumerate(spec)]


def _tar_bytes(tmp, members: list[Member]) -> int:
    path = tmp / "probe.tar"
    write_tar(path, members)
    return path.stat().st_size


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.lists(_unit, min_size=1, max_size=6), shard_bytes=st.integers(10_240, 120_000))
def test_no_shard_file_exceeds_shard_bytes_unless_one_unit_alone_is_larger(tmp_path, spec, shard_bytes):
    units = _units(spec)
    shards = plan_shards(units, shard_bytes)
    # the units in order, each whole inside one shard
    assert [m for s in shards for m in s] == [m for u in units for m in u]
    starts = {id(u[0]): u for u in units}
    for shard in shards:
        grouped, k = [], 0
        while k < len(shard):
            unit = starts[id(shard[k])]  # every shard starts a unit, and units follow whole
            assert shard[k:k + len(unit)] == unit
            grouped.append(unit)
            k += len(unit)
        size = _tar_bytes(tmp_path, shard)
        assert size <= shard_bytes or len(grouped) == 1, (size, shard_bytes, len(grouped))
    # closed only when needed: the next unit added to a shard's tar would exceed shard_bytes
    for shard, nxt in zip(shards, shards[1:]):
        first_of_next = starts[id(nxt[0])]
        assert _tar_bytes(tmp_path, shard + first_of_next) > shard_bytes


def test_the_issue_case_a_shard_of_629000_bytes_stays_within(tmp_path):
    """Units of four files as a clip has: with 1,024 bytes counted for the tar end instead of the
    10,240-byte record padding, the first shard came out at 634,880 bytes."""
    units = [[Member(f"SingingHead/{d}/{i:03d}.bin", data=b"x" * 1000) for d in "abcd"] for i in range(110)]
    shards = plan_shards(units, 629_000)
    assert len(shards) >= 2
    for shard in shards:
        assert _tar_bytes(tmp_path, shard) <= 629_000


def test_tar_sizes_match_tarfile_for_long_and_empty_names(tmp_path):
    """A 150-character name takes a pax header; the plan must count it."""
    members = [Member("n" * 150, data=b"a" * 10_000), Member("short", data=b"")]
    one = plan_shards([[m] for m in members], _tar_bytes(tmp_path, members))
    assert len(one) == 1
    two = plan_shards([[m] for m in members], _tar_bytes(tmp_path, members) - 1)
    assert len(two) == 2
    with tarfile.open(tmp_path / "probe.tar") as t:
        assert [m.name for m in t.getmembers()] == ["n" * 150, "short"]
