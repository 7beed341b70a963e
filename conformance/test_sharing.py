"""Sharing protocols: ideal functionality, declared = measured cost, reference = optimized."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from nimbus.conformance.assertions import assert_same
from nimbus.conformance.harness import run_protocol
from nimbus.conformance.strategies import ring_arrays
from nimbus.spec import get_preset
from nimbus.spec.errors import ProtocolError
from nimbus.spec.protocols import get_protocol
from nimbus.spec.sharing import ideal_reconstruct

PARAMS = [get_preset("tiny"), get_preset("bert-base")]


def _run(name, impl, params, ring, c_args, s_args):
    res = run_protocol(name, params, impl, client_args=c_args, server_args=s_args, kwargs={"ring": ring})
    declared = get_protocol(name).cost(params, ring, np.shape(c_args[0]) if name != "sharing.input" else np.shape(c_args[0]))
    assert res.transcript.cost() == declared, (res.transcript.cost(), declared)
    return res


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.name)
@pytest.mark.parametrize("ring", ["linear", "nonlinear"])
@given(data=st.data())
def test_input_reshare_open_reveal(impl, params, ring, data):
    R = getattr(params, ring)
    x = data.draw(ring_arrays(R.bits))
    res = _run("sharing.input", impl, params, ring, (x,), (x.shape,))
    xc, xs = res.client, res.server
    assert_same(x, ideal_reconstruct(xc, xs, R))
    res = _run("sharing.reshare", impl, params, ring, (xc,), (xs,))
    yc, ys = res.client, res.server
    assert_same(x, ideal_reconstruct(yc, ys, R))
    if x.size > 4:  # the new client share is fresh
        assert not np.array_equal(yc, xc)
    res = _run("sharing.open", impl, params, ring, (yc,), (ys,))
    assert_same(x, res.client) and assert_same(x, res.server)
    res = _run("sharing.reveal", impl, params, ring, (yc,), (ys,))
    assert_same(x, res.client)
    assert res.server is None


@pytest.mark.parametrize("name", ["sharing.input", "sharing.reshare", "sharing.open", "sharing.reveal"])
def test_reference_and_optimized_transcripts_identical(ref, opt, name):
    P = get_preset("bert-base")
    x = np.arange(24, dtype=np.uint64).reshape(4, 6) * np.uint64(0x9E3779B97F4A7C15)
    args = ((x,), (x.shape,)) if name == "sharing.input" else ((x,), (x,))
    r = run_protocol(name, P, ref, client_args=args[0], server_args=args[1])
    o = run_protocol(name, P, opt, client_args=args[0], server_args=args[1])
    assert_same((r.client, r.server), (o.client, o.server), {"protocol": name})
    assert r.transcript.digest() == o.transcript.digest()


def test_shape_mismatch_is_a_protocol_error(impl):
    P = get_preset("tiny")
    x = np.zeros((2, 3), dtype=np.uint64)
    with pytest.raises(ProtocolError, match="shape"):
        run_protocol("sharing.open", P, impl, client_args=(x,), server_args=(x.reshape(3, 2),))
