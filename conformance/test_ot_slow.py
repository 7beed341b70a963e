"""OT at the 128-bit parameter sets (slow: ~10^7 COTs per Ferret iteration). ``pytest -m slow``."""

from __future__ import annotations

import numpy as np
import pytest

from nimbus.conformance.assertions import assert_same
from nimbus.conformance.harness import contexts
from nimbus.registry import implementation
from nimbus.runtime import run_local
from nimbus.spec import get_preset
from nimbus.spec import ot as S

P = get_preset("bert-base")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["iknp", "ferret"])
def test_128bit_session_and_one_refill(kind):
    """Setup cost as declared, then one full refill; every COT satisfies t = q xor r Delta."""
    im = implementation("optimized")
    c, s = contexts(P, im, f"slow-{kind}")
    res = run_local(im.ot.ot_setup_client(c.sub("ot"), kind), im.ot.ot_setup_server(s.sub("ot"), kind))
    assert res.transcript.cost() == S.session_cost(P, kind)
    cs, ss = res.client, res.server
    fresh = P.ot.main.n - P.ot.main.reserve if kind == "ferret" else P.ot.iknp_batch
    n = ss.sender.available + fresh  # exactly one refill, all of it consumed
    r = run_local(im.ot.rcot_receiver(c.sub("p"), cs.receiver, n), im.ot.rcot_sender(s.sub("p"), ss.sender, n))
    (rb, t), (q, delta) = r.client, r.server
    assert_same(t, S.ideal_cot(delta, q, rb))
    assert 0.49 < rb.mean() < 0.51
    want = (S.ferret_iteration_cost(P, "main", "server") if kind == "ferret"
            else S.iknp_refill_cost(P, P.ot.iknp_batch, "server"))
    assert r.transcript.cost("ot/s2c") == want
    if kind == "ferret":  # amortised communication below 1 bit per COT
        assert 8 * want.total_bytes / (P.ot.main.n - P.ot.main.reserve) < 1.0
