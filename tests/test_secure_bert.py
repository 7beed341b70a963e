"""The secure BERT graph end to end (nimbus.models.secure, nimbus.api) on small random models.

Properties: every query reconstructs to ``spec.model.ideal_forward`` bit for bit (cls + pooler +
head, mean pooling, an embedding model, with and without the client's private padding), which
in turn tracks the float64 model; reference == optimized (same seeds: same outputs and transcript
digests); TCP (and TLS) == in-process; stale caches, bad input and unsupported models fail clearly.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import nimbus
from nimbus.api import Client, Server
from nimbus.models import plain, synthetic
from nimbus.models.fixed import to_fixed
from nimbus.models import secure as SG
from nimbus.runtime import run_local
from nimbus.spec import PRG, Ctx, get_preset
from nimbus.spec import model as M
from nimbus.spec.errors import CacheError, ParameterError, ShapeError

PARAMS = get_preset("bert-base")
#: IKNP sessions: no Ferret bootstrap per session (the graph is the same; test_ferret_session runs Ferret)
FAST = M.SecureConfig(ot_kind="iknp")
SMALL = dict(hidden=32, heads=2, ffn=64, layers=2, vocab=40, max_positions=24, perturb=True)


@pytest.fixture(scope="module")
def cls_model():
    return synthetic.random_bert(**SMALL, labels=3, pooling="cls", seed=1)


@pytest.fixture(scope="module")
def cls_pair(cls_model, tmp_path_factory):
    srv = Server(cls_model, secret=b"\x11" * 32, config=FAST)
    cl = Client(tmp_path_factory.mktemp("cls-cache"))
    cl.setup_local(srv)
    return srv, cl


def _float_logits(w, tokens):
    return plain.forward(w, np.asarray(tokens)[None]).logits[0]


def test_fixed_model_folds_are_exact_over_the_reals(cls_model):
    """ideal_forward at high precision would be the float model: check the fixed-point one is close
    (the folds of 1/sqrt(d_head) and of the last LayerNorm into the pooler change nothing)."""
    srv = Server(cls_model, secret=b"\x01" * 32)
    toks = np.array([2, 5, 9, 11, 3])
    got = M.decode_output(srv.arch, PARAMS, M.ideal_forward(srv.fixed, PARAMS, toks))
    np.testing.assert_allclose(got, _float_logits(cls_model, toks), atol=0.02)


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          phases=(Phase.explicit, Phase.generate))  # no shrinking: each example is a whole secure session
@given(data=st.data())
def test_queries_equal_the_fixed_point_semantics_bit_for_bit(cls_pair, cls_model, data):
    srv, cl = cls_pair
    n = data.draw(st.integers(1, 9))
    toks = np.array(data.draw(st.lists(st.integers(0, 39), min_size=n, max_size=n)))
    pad = data.draw(st.sampled_from([None, n + 3]))
    run = cl.infer_local(srv, [toks], pad_to=pad)
    (q,) = cl.encode([toks], pad_to=pad)
    ideal = M.ideal_forward(srv.fixed, PARAMS, q.tokens, q.valid)
    assert np.array_equal(run.predictions[0].output, ideal)
    # the padded query answers for the real tokens: close to the float model on them
    np.testing.assert_allclose(run.predictions[0].logits, _float_logits(cls_model, toks), atol=0.05)


def test_padding_is_private_and_changes_nothing_but_rounding(cls_pair):
    srv, cl = cls_pair
    toks = np.array([2, 7, 7, 30, 3])
    a, b = cl.infer_local(srv, [toks, toks], pad_to=None), cl.infer_local(srv, [toks], pad_to=12)
    np.testing.assert_allclose(a.predictions[0].logits, b.predictions[0].logits, atol=5e-3)
    # the server sees only the public length: the header says 12 tokens, padded
    heads = [e for e in b.transcript.entries if e.msg_type == "QueryHeader"]
    assert len(heads) == 2 and all(e.direction == "c2s" for e in heads)


@pytest.mark.parametrize("labels", [2, 0])
def test_mean_pooling_and_embedding_models(labels, tmp_path):
    w = synthetic.random_bert(**SMALL, labels=labels, pooling="mean", seed=2)
    srv = Server(w, secret=b"\x22" * 32, config=FAST)
    cl = Client(tmp_path)
    cl.setup_local(srv)
    queries = [np.array([2, 4, 6, 8, 3]), np.array([2, 9, 3])]
    run = cl.infer_local(srv, queries, pad_to=7)
    for q, p in zip(cl.encode(queries, pad_to=7), run.predictions):
        assert np.array_equal(p.output, M.ideal_forward(srv.fixed, PARAMS, q.tokens, q.valid))
    for toks, p in zip(queries, run.predictions):
        f = plain.forward(w, toks[None])
        if labels:
            np.testing.assert_allclose(p.logits, f.logits[0], atol=0.05)
        else:
            cos = float(p.embedding @ f.pooled[0] / np.linalg.norm(p.embedding) / np.linalg.norm(f.pooled[0]))
            assert cos > 0.999, cos


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("NIMBUS_REFERENCE_GRAPH"), reason="opt-in (NIMBUS_REFERENCE_GRAPH=1): > 15 min")
def test_reference_equals_optimized_bit_for_bit():
    """Same seeds, same model: identical outputs and transcript digests for both implementations
    (slow: the reference's attention products are schoolbook negacyclic products in Python; each
    protocol's own reference = optimized check is in conformance/, at every commit)."""
    w = synthetic.random_bert(hidden=16, heads=2, ffn=32, layers=1, vocab=12, max_positions=8, labels=2,
                              pooling="cls", seed=3, perturb=True)
    results = {}
    for name in ("reference", "optimized"):
        impl = nimbus.implementation(name)
        st_ = SG.ServerState(to_fixed(w, PARAMS), b"\x33" * 32, PARAMS, impl, FAST)
        setup = run_local(SG.client_run_setup(Ctx("client", PARAMS, PRG.for_tests("c-setup"), impl)),
                          SG.server_connection(Ctx("server", PARAMS, PRG.for_tests("s-setup"), impl), st_))
        wts = setup.client["weights"]
        cs = SG.ClientState(setup.client["arch"], setup.client["fingerprint"], setup.client["pk"],
                            lambda n: wts[n], lambda t: wts["embed"][:, t])
        toks = np.array([2, 5, 7, 3])
        r = run_local(SG.client_session(Ctx("client", PARAMS, PRG.for_tests("c"), impl), cs, [toks]),
                      SG.server_connection(Ctx("server", PARAMS, PRG.for_tests("s"), impl), st_))
        results[name] = (setup.transcript.digest(), r.transcript.digest(), r.client[0].output)
    assert results["reference"][0] == results["optimized"][0]
    assert results["reference"][1] == results["optimized"][1]
    assert np.array_equal(results["reference"][2], results["optimized"][2])


@pytest.mark.net
def test_tcp_with_tls_equals_in_process(cls_pair, tmp_path):
    from nimbus.runtime.certs import self_signed
    from nimbus.runtime.tcp import TlsConfig

    srv, cl = cls_pair
    cert, key = self_signed(tmp_path / "s.crt", tmp_path / "s.key", "localhost")
    ready = threading.Event()
    addr = {}

    def serve():
        srv.serve("127.0.0.1", 0, tls=TlsConfig.server(cert, key), max_connections=1, log=lambda s: None,
                  ready=lambda a: (addr.update(a=a), ready.set()), tune=False)  # pytest keeps its settings

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    assert ready.wait(30)
    texts = [np.array([2, 4, 3]), np.array([2, 8, 8, 9, 3])]
    remote = cl.infer(texts, "127.0.0.1", addr["a"][1], tls=TlsConfig.client(cafile=cert, server_hostname="localhost"),
                      tune=False)
    th.join(60)
    local = cl.infer_local(srv, texts)
    for a, b in zip(remote.predictions, local.predictions):
        assert np.array_equal(a.output, b.output)
    assert remote.transcript.cost() == local.transcript.cost()


def test_a_stale_cache_is_refused(cls_pair, cls_model):
    _, cl = cls_pair
    other_key = Server(cls_model, secret=b"\x99" * 32, config=FAST)  # same model, another server key
    with pytest.raises(CacheError, match="server's key"):
        cl.infer_local(other_key, [np.array([2, 3])])
    w2 = synthetic.random_bert(**SMALL, labels=3, pooling="cls", seed=7)
    other_model = Server(w2, secret=b"\x11" * 32, config=FAST)
    with pytest.raises(CacheError, match="does not match"):
        cl.infer_local(other_model, [np.array([2, 3])])


def test_a_corrupted_cache_description_is_refused(cls_pair, tmp_path):
    import shutil

    _, cl = cls_pair
    d = tmp_path / "copy"
    shutil.copytree(cl.dir, d)
    (d / "model.json").write_text("{not json")
    with pytest.raises(CacheError, match="corrupted"):
        Client(d).state()
    meta = json.loads((cl.dir / "model.json").read_text())
    meta["linear_fingerprint"] = "00" * 32
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="stale"):
        Client(d).state()
    with pytest.raises(CacheError, match="run setup first"):
        Client(tmp_path / "empty").state()


def test_cache_binds_the_setup_version_not_the_online_one(cls_pair, tmp_path):
    """The cache description records MODEL_SETUP_VERSION: an online-only protocol change keeps a
    cache valid (a description written before the split, model_protocol 3, is read as setup 3), an
    older setup is refused."""
    import shutil

    _, cl = cls_pair
    meta = json.loads((cl.dir / "model.json").read_text())
    assert meta["model_setup"] == M.MODEL_SETUP_VERSION and "model_protocol" not in meta
    d = tmp_path / "copy"
    shutil.copytree(cl.dir, d)
    old = {k: v for k, v in meta.items() if k != "model_setup"}
    (d / "model.json").write_text(json.dumps(dict(old, model_protocol=3)))
    assert M.MODEL_SETUP_VERSION == 3 and Client(d).state() is not None
    (d / "model.json").write_text(json.dumps(dict(meta, model_setup=M.MODEL_SETUP_VERSION - 1)))
    with pytest.raises(CacheError, match="stale cache .model setup version"):
        Client(d).state()


@pytest.mark.parametrize("change, match", [
    (dict(gelu_table="no-such-table"), "gelu_table: table 'no-such-table' has no entry"),
    (dict(exp_table="no-such-table"), "exp_table"),
    (dict(tanh_table="no-such-table"), "tanh_table"),
    (dict(softmax_trunc="sloppy"), "softmax_trunc must be one of"),
    (dict(gelu_trunc=""), "gelu_trunc must be one of"),
    (dict(ot_kind="kos"), "ot_kind must be"),
])
def test_a_bad_configuration_is_refused_when_the_server_is_built(cls_model, change, match):
    """SecureConfig.check: the server refuses a bad choice at construction (the client checks the
    hello's configuration the same way), naming the field, before any query runs."""
    bad = M.SecureConfig(**{**FAST.__dict__, **change})
    with pytest.raises(ParameterError, match=match):
        bad.check(get_preset("bert-base"))
    with pytest.raises(ParameterError, match=match):
        Server(cls_model, secret=b"\x42" * 32, config=bad)
    assert FAST.check(get_preset("bert-base")) is FAST


def test_bad_queries_fail_clearly(cls_pair):
    srv, cl = cls_pair
    with pytest.raises(ShapeError, match="limit is 24"):
        cl.encode([np.arange(30) % 40])
    assert cl.encode([np.arange(30) % 40], truncate=True)[0].tokens.size == 24
    q = cl.encode([np.array([2, 5, 3])], pad_to=3)[0]
    assert q.padded and q.valid.all()  # padded to a public length: flagged even when exact
    with pytest.raises(ShapeError, match="out of the vocabulary"):
        cl.infer_local(srv, [np.array([2, 40, 3])])
    with pytest.raises(ShapeError, match="pad_to"):
        cl.encode([np.array([2, 3])], pad_to=100)


def test_server_refuses_an_inconsistent_fixed_model(cls_model):
    srv = Server(cls_model, secret=b"\x01" * 32)
    fm = srv.fixed
    bad = M.FixedModel(fm.arch, fm.weights, fm.biases, fm.positions, fm.ln[:-1] + ((np.ones(32), None),))
    with pytest.raises(ShapeError, match="folding"):
        SG.ServerState(bad, b"\x01" * 32, PARAMS, nimbus.implementation("optimized"))


def test_category_of_labels():
    assert M.category("q0/layer3/Linear_qkv/x") == "Linear_qkv"
    assert M.category("q1/layer0/QK^T/flood") == "QK^T&PV"
    assert M.category("q1/layer0/LayerNorm2/rsqrt") == "LayerNorm"
    assert M.category("q0/LayerNorm_emb") == "LayerNorm"
    assert M.category("q0/layer1/Trunc_h2") == "Trunc"
    assert M.category("OT/s2c/ferret1") == "OT"
    assert M.category("q0/Head/Linear_head") == "Head"


def test_a_gamma_beyond_the_protocol_bound_is_refused_at_import(cls_model):
    import copy

    w = copy.deepcopy(cls_model)
    w.layers[0].ln1_gamma[3] = -40.0  # applied by protocol on the residual path: |gamma| < 32 only
    with pytest.raises(ShapeError, match="LayerNorm weight"):
        to_fixed(w, PARAMS)
    to_fixed(cls_model, PARAMS)


def test_a_streaming_client_prefetches_each_matrix_once(cls_pair, monkeypatch):
    """preload=False: every matrix is loaded once per query, the next one in a background thread
    while the current one is used; the results equal a preloading client's."""
    from nimbus.cache import CacheReader

    srv, cl = cls_pair
    toks = [np.array([2, 5, 7, 3]), np.array([2, 9, 3])]
    want = [p.output.tolist() for p in Client(cl.dir, preload=True).infer_local(srv, toks).predictions]
    loads, real = [], CacheReader.load
    monkeypatch.setattr(CacheReader, "load", lambda self, name, *a, **k: loads.append(name) or real(self, name, *a, **k))
    s = Client(cl.dir, preload=False)
    got = [p.output.tolist() for p in s.infer_local(srv, toks).predictions]
    assert got == want
    names = [sh.name for sh in cls_pair[1].arch.shapes()[1:]]
    assert loads[:2 * len(names)] == names * 2  # in order, each once per query ...
    assert len(loads) == 2 * len(names) + 1  # ... plus the next query's first, prefetched
    assert s._pool is not None
    s.close()
    assert s._pool is None
