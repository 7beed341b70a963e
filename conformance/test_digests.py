"""Every implementation reproduces the recorded transcript digests exactly."""

from __future__ import annotations

import json

import pytest

from nimbus.conformance.digests import CASES, DIGEST_FILE

RECORDED = json.loads(DIGEST_FILE.read_text())["cases"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_transcript_digest(impl, name):
    tr = CASES[name](impl).transcript
    c = tr.cost()
    got = {"digest": tr.digest(), "bytes_c2s": c.c2s, "bytes_s2c": c.s2c, "rounds": tr.rounds}
    assert got == RECORDED[name], f"{name} with {impl.name}: {got} != recorded {RECORDED[name]}"


def test_every_case_is_recorded():
    assert sorted(RECORDED) == sorted(CASES)
