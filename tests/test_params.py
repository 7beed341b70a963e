"""Parameter sets: validation, fingerprints, the registry."""

from __future__ import annotations

import pytest

from nimbus.spec import PRESETS, get_preset
from nimbus.spec.errors import ParameterError
from nimbus.spec.params import ParamSet, Ring, register_preset


def test_presets_validate_and_have_distinct_ids():
    ids = {p.id for p in PRESETS.values()}
    assert len(ids) == len(PRESETS) >= 2
    for p in PRESETS.values():
        p.validate()
        assert len(p.id) == 32


@pytest.mark.parametrize("bits,frac", [(1, 0), (65, 10), (16, 15), (16, -1), (64, 63)])
def test_bad_rings(bits, frac):
    with pytest.raises(ParameterError):
        Ring(bits, frac).validate()


def test_inconsistent_paramset():
    with pytest.raises(ParameterError, match="larger than the linear ring"):
        ParamSet("x", Ring(16, 4), Ring(32, 8)).validate()


def test_id_changes_with_any_field():
    p = get_preset("bert-base")
    q = ParamSet(p.name, Ring(64, 17), p.nonlinear, p.he, p.ot, p.extra)
    assert p.id != q.id


def test_registry_refuses_conflicting_redefinition_and_unknown_names():
    p = get_preset("tiny")
    with pytest.raises(ParameterError, match="already registered"):
        register_preset(ParamSet("tiny", Ring(20, 4), p.nonlinear))
    with pytest.raises(ParameterError, match="unknown parameter preset"):
        get_preset("nope")


def test_test_presets_are_flagged_and_refused_by_production_entry_points():
    assert get_preset("tiny").test_only and not get_preset("bert-base").test_only
    with pytest.raises(ParameterError, match="tests only"):
        get_preset("tiny").require_secure()
    assert get_preset("bert-base").require_secure() is get_preset("bert-base")
