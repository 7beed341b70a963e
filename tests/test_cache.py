"""The client's cache file of encrypted weights: round trip, and refusal of stale, truncated,
tampered or unfinished files with a clear CacheError."""

from __future__ import annotations

import numpy as np
import pytest

from nimbus.cache import CacheReader, CacheWriter
from nimbus.conformance.harness import contexts, run_pair
from nimbus.registry import implementation
from nimbus.runtime import run_local
from nimbus.spec import he as H
from nimbus.spec import linear as S
from nimbus.spec.errors import CacheError
from nimbus.spec.params import ParamSet, Ring

P16 = ParamSet(name="tiny-he16", linear=Ring(bits=16, frac=6), nonlinear=Ring(bits=12, frac=4), he=H.TINY16)
SHAPES = (S.WeightShape("a", 3, 20), S.WeightShape("b", 70, 5))
IMPL = implementation("optimized")


def _weights():
    rng = np.random.default_rng(0)
    return {s.name: rng.integers(0, 1 << 16, size=(s.d_in, s.d_out), dtype=np.uint64) for s in SHAPES}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    W = _weights()
    path = tmp_path_factory.mktemp("cache") / "model.nlc"
    c, s = contexts(P16, IMPL, "cache")
    w = CacheWriter(path, P16, SHAPES, row_index=("b",))
    res = run_local(IMPL.linear.client_setup(c.sub("setup"), SHAPES, sink=w),
                    IMPL.linear.server_setup(s.sub("setup"), W, SHAPES))
    w.close()
    mem = run_pair(IMPL.linear.client_setup, IMPL.linear.server_setup, P16, IMPL, client_args=(SHAPES,),
                   server_args=(W, SHAPES), seed="cache", label="setup")
    return path, W, res, mem


def test_round_trip_equals_in_memory_setup(made):
    path, W, res, mem = made
    fp = S.model_fingerprint(W, SHAPES)
    with CacheReader(path, P16, expected_fingerprint=fp, shapes=SHAPES) as r:
        assert r.fingerprint == fp and sorted(r.names) == ["a", "b"]
        np.testing.assert_array_equal(r.pk(), mem.client["pk"])
        buf = np.empty(10**6, np.uint64)
        for s in SHAPES:
            np.testing.assert_array_equal(r.load(s.name, IMPL), mem.client["weights"][s.name])
            np.testing.assert_array_equal(r.load(s.name, IMPL, out=buf), mem.client["weights"][s.name])
    assert res.client["weights"] == {}


def test_cop_from_the_cache(made):
    path, W, res, _ = made
    sk, pk = res.server
    rng = np.random.default_rng(1)
    x_c = rng.integers(0, 1 << 16, size=(4, 3), dtype=np.uint64)
    x_s = rng.integers(0, 1 << 16, size=(4, 3), dtype=np.uint64)
    with CacheReader(path, P16) as r:
        enc = r.load("a", IMPL)
    out = run_pair(IMPL.linear.cop_client, IMPL.linear.cop_server, P16, IMPL,
                   client_args=(x_c, enc, pk, 20), server_args=(x_s, W["a"], None, sk))
    u, ys = S.ideal_linear(x_c, x_s, W["a"], None, out.client, 16)
    np.testing.assert_array_equal(out.server, ys)


def test_load_rows_matches_full_load(made):
    path, W, res, mem = made
    rows = [69, 0, 64, 5, 69]
    with CacheReader(path, P16) as r:
        got = r.load_rows("b", rows, IMPL)
    np.testing.assert_array_equal(got[0], mem.client["weights"]["b"][0][rows])


def test_embedding_from_cached_rows(made):
    """The client loads only its tokens' rows and remaps the ids (the server's view is the same)."""
    path, W, res, _ = made
    sk, pk = res.server
    tokens = np.array([7, 64, 7, 3])
    uniq, local = np.unique(tokens, return_inverse=True)
    with CacheReader(path, P16) as r:
        sub = r.load_rows("b", uniq, IMPL)
    extra = np.zeros((4, 5), np.uint64)
    out = run_pair(IMPL.linear.embed_client, IMPL.linear.embed_server, P16, IMPL,
                   client_args=(local, sub, pk, 5), server_args=(4, extra, sk), label="embed")
    want = S.ideal_embedding(tokens, W["b"], out.client, 16)
    np.testing.assert_array_equal(out.server, want[1])


def _copy(path, tmp_path, edit=None):
    data = bytearray(path.read_bytes())
    if edit:
        data = edit(data)
    p = tmp_path / "bad.nlc"
    p.write_bytes(bytes(data))
    return p


@pytest.mark.parametrize("what, edit, match", [
    ("truncated", lambda d: d[: len(d) - 7], "truncated"),
    ("truncated-to-header", lambda d: d[:10], "truncated"),
    ("extended", lambda d: d + b"\0", "truncated or extended"),
    ("section byte", lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:], "digest mismatch"),
    ("index byte", lambda d: d[:-40] + bytes([d[-40] ^ 1]) + d[-39:], "digest mismatch"),
    ("magic", lambda d: b"X" + d[1:], "not a nimbus"),
    ("unfinished", lambda d: d[:12] + bytes(8) + d[20:], "unfinished"),
])
def test_damaged_cache_refused(made, tmp_path, what, edit, match):
    bad = _copy(made[0], tmp_path, edit)
    with pytest.raises(CacheError, match=match):
        CacheReader(bad, P16, verify_all=True)


def test_tampered_record_refused_on_load(made, tmp_path):
    path = made[0]
    with CacheReader(path, P16) as r:
        off = r.sections["b"]["records"][1][0] + 4 + 47 + 10  # in row 64's residues mod p_0
    bad = _copy(path, tmp_path, lambda d: d[:off] + bytes([d[off] ^ 4]) + d[off + 1:])
    with CacheReader(bad, P16) as r:  # structure intact: opens; every load verifies what it reads
        r.load_rows("b", [0, 63], IMPL)
        with pytest.raises(CacheError, match="digest mismatch"):
            r.load_rows("b", [64, 65, 66, 67, 68, 69], IMPL)
        with pytest.raises(CacheError, match="digest mismatch"):
            r.load("b", IMPL)


def test_stale_cache_refused(made, tmp_path):
    path, W, _, _ = made
    other = ParamSet(name="tiny-he16-other", linear=Ring(bits=16, frac=5), nonlinear=Ring(bits=12, frac=4),
                     he=H.TINY16)
    with pytest.raises(CacheError, match="stale: made for parameter set"):
        CacheReader(path, other)
    W2 = dict(W)
    W2["a"] = W["a"] ^ np.uint64(1)
    with pytest.raises(CacheError, match="stale: cache is for model"):
        CacheReader(path, P16, expected_fingerprint=S.model_fingerprint(W2, SHAPES))
    with pytest.raises(CacheError, match="no matrix"):
        CacheReader(path, P16, shapes=(S.WeightShape("a", 3, 21),))
    with pytest.raises(CacheError, match="cannot open"):
        CacheReader(tmp_path / "missing.nlc", P16)
