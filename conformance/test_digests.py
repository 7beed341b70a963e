"""Every implementation reproduces the recorded transcript digests exactly."""

from __future__ import annotations

import json

import pytest

from nimbus.conformance.digests import CASES, DIGEST_FILE, case_record

RECORDED = json.loads(DIGEST_FILE.read_text())["cases"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_transcript_digest(impl, name):
    got = case_record(name, impl)
    assert got == RECORDED[name], f"{name} with {impl.name}: {got} != recorded {RECORDED[name]}"


def test_every_case_is_recorded():
    assert sorted(RECORDED) == sorted(CASES)
