"""Linear layers (COP setup, COP online, embedding lookup): ideal functionality, declared =
measured cost, reference = optimized (outputs and transcript digests), packing relation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from nimbus.conformance.assertions import assert_same
from nimbus.conformance.harness import run_pair
from nimbus.spec import he as H
from nimbus.spec import linear as S
from nimbus.spec.errors import ProtocolError, ShapeError
from nimbus.spec.params import ParamSet, Ring
from nimbus.spec.prg import PRG
from nimbus.spec.protocols import get_protocol

#: Tiny, INSECURE parameter sets (N = 16 / 32) for exhaustive differential runs.
P16 = ParamSet(name="tiny-he16", linear=Ring(bits=16, frac=6), nonlinear=Ring(bits=12, frac=4), he=H.TINY16)
_W12 = (("cop", H.cop_workload(8, 4, 12, 2)),)
_F12 = H.analyze(H.HEParams("t", 32, H.TINY32.primes, 12, eta=3, response_level=2, stat_bits=12,
                            insecure_test_only=True), _W12[0][1]).required_flood
TINY32_L12 = H.HEParams("lin-test-n32-l12", 32, H.TINY32.primes, 12, eta=3, response_level=2, flood_bound=_F12,
                        stat_bits=12, workloads=_W12, insecure_test_only=True).validate()
P12 = ParamSet(name="tiny-he12", linear=Ring(bits=12, frac=4), nonlinear=Ring(bits=10, frac=3), he=TINY32_L12)
PARAMS = [P16, P12]


def _rand(rng, shape, bits):
    return rng.integers(0, 1 << bits, size=shape, dtype=np.uint64)


def _setup(impl, params, weights, shapes, seed="lin"):
    return run_pair(_fn(impl, "client_setup"), _fn(impl, "server_setup"), params, impl,
                    client_args=(shapes,), server_args=(weights, shapes), seed=seed, label="setup")


def _fn(impl, name):
    return getattr(impl.linear, name)


def _cop(impl, params, setup, name, x_c, x_s, W, b, seed="lin"):
    store, (sk, pk) = setup.client, setup.server
    return run_pair(_fn(impl, "cop_client"), _fn(impl, "cop_server"), params, impl,
                    client_args=(x_c, store["weights"][name], pk, W.shape[1]),
                    server_args=(x_s, W, b, sk), seed=seed, label="cop")


def _case(params, n, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    bits = params.linear.bits
    W = _rand(rng, (d_in, d_out), bits)
    b = _rand(rng, (d_out,), bits)
    x_c, x_s = _rand(rng, (n, d_in), bits), _rand(rng, (n, d_in), bits)
    return W, b, x_c, x_s


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.name)
@settings(max_examples=6)
@given(n=st.integers(1, 5), d_in=st.integers(1, 4), d_out=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_cop_is_the_ideal_functionality(impl, params, n, d_in, d_out, seed):
    W, b, x_c, x_s = _case(params, n, d_in, d_out, seed)
    shapes = (S.WeightShape("w", d_in, d_out),)
    st_ = _setup(impl, params, {"w": W}, shapes)
    assert st_.transcript.cost() == S.setup_cost(params, shapes)
    res = _cop(impl, params, st_, "w", x_c, x_s, W, b)
    u, y_s = S.ideal_linear(x_c, x_s, W, b, res.client, params.linear.bits)
    assert_same((res.client, res.server), (u, y_s), {"n": n, "d_in": d_in, "d_out": d_out, "seed": seed})
    assert res.transcript.cost() == S.cop_cost(params, n, d_in, d_out)


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.name)
@pytest.mark.parametrize("shape", [(3, 4, 5), (4, 2, 37), (2, 3, 16)])
def test_reference_and_optimized_identical(ref, opt, params, shape):
    n, d_in, d_out = shape
    W, b, x_c, x_s = _case(params, n, d_in, d_out, 7)
    shapes = (S.WeightShape("w", d_in, d_out),)
    out = {}
    for im in (ref, opt):
        s = _setup(im, params, {"w": W}, shapes)
        r = _cop(im, params, s, "w", x_c, x_s, W, b)
        out[im.name] = (s.client["weights"]["w"], s.server[1], r.client, r.server,
                        s.transcript.digest(), r.transcript.digest())
    assert_same(out["reference"], out["optimized"], {"params": params.name, "shape": shape})


@given(widths=st.lists(st.integers(1, 16), min_size=1, max_size=9), extra=st.integers(0, 7),
       seed=st.integers(0, 2**32))
def test_packing_relation_is_invertible(widths, extra, seed):
    n = 16
    w = max(widths)
    lay = S.pack_layout(n, tuple(widths), w + extra)
    rng = np.random.default_rng(seed)
    v = _rand(rng, (lay.count, n), 64)
    assert_same(S.solve_relation(S.mask_relation(v, lay, 64), lay, 64), v)


@pytest.mark.parametrize("impl_pair", ["x"])
def test_mac_blas_matches_integer_kernel(ref, opt, impl_pair):
    from nimbus.optimized import _linear_kernels as K

    rng = np.random.default_rng(3)
    for he, n, k in [(H.TINY16, 9, 8), (TINY32_L12, 8, 5), (H.COP64, 8, 20), (H.COP40, 8, 20)]:
        cts = np.stack([np.stack([rng.integers(0, p, size=(2, he.n), dtype=np.uint64) for p in he.primes], axis=1)
                        for _ in range(k)])
        x = _rand(rng, (n, k), he.plain_bits)
        x[0, :] = np.uint64((1 << he.plain_bits) - 1)  # extreme scalars: -1 and -2^(l-1)
        x[1, :] = np.uint64(1 << (he.plain_bits - 1))
        got = K.mac(he, cts, x, blas_min_rows=1)
        want = ref.linear.mac(he, cts, x) if he.n <= 32 else opt.rlwe.mac_scalar(he, cts, x)
        assert_same(got, want, {"he": he.name})


def test_pack_matches_reference(ref, opt):
    he = H.TINY16
    rng = np.random.default_rng(5)
    lay = S.pack_layout(he.n, (5, 5, 5, 5, 5, 5, 5), 6)
    res = np.stack([np.stack([rng.integers(0, p, size=(2, he.n), dtype=np.uint64) for p in he.primes], axis=1)
                    for _ in range(7)])
    assert_same(ref.linear.pack(he, res, lay), opt.linear.pack(he, res, lay))


def test_stale_setup_header_refused(impl):
    W, b, x_c, x_s = _case(P16, 2, 2, 3, 1)
    shapes = (S.WeightShape("w", 2, 3),)
    c, s = _ctx_pair(impl, P12, P16)
    from nimbus.runtime import run_local
    with pytest.raises(ProtocolError):
        run_local(impl.linear.client_setup(c, shapes), impl.linear.server_setup(s, {"w": W}, shapes))


def _ctx_pair(impl, pc, ps):
    from nimbus.spec.prg import PRG
    from nimbus.spec.proto import CLIENT, SERVER, Ctx
    return (Ctx(CLIENT, pc, PRG.for_tests("c"), impl), Ctx(SERVER, ps, PRG.for_tests("s"), impl))


def test_bad_shapes(impl):
    W, b, x_c, x_s = _case(P16, 2, 3, 4, 1)
    shapes = (S.WeightShape("w", 3, 4),)
    s = _setup(impl, P16, {"w": W}, shapes)
    with pytest.raises(ShapeError):
        _cop(impl, P16, s, "w", x_c[:, :2], x_s, W, b)
    with pytest.raises(ShapeError):
        _cop(impl, P16, s, "w", x_c, x_s, W, b[:2])


def test_registered():
    for name in ("linear.cop", "linear.setup", "linear.embedding"):
        get_protocol(name)


# -- embedding lookup -----------------------------------------------------------------------------
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.name)
@pytest.mark.parametrize("n_tokens", [1, 5])
def test_embedding_is_the_ideal_functionality(impl, params, n_tokens):
    rng = np.random.default_rng(n_tokens)
    bits, vocab, hidden = params.linear.bits, 9, 7
    E = _rand(rng, (vocab, hidden), bits)
    extra = _rand(rng, (n_tokens, hidden), bits)
    tokens = rng.integers(0, vocab, size=n_tokens)
    shapes = (S.WeightShape("embed", vocab, hidden),)
    st_ = _setup(impl, params, {"embed": E}, shapes)
    store, (sk, pk) = st_.client, st_.server
    res = run_pair(impl.linear.embed_client, impl.linear.embed_server, params, impl,
                   client_args=(tokens, store["weights"]["embed"], pk, hidden), server_args=(n_tokens, extra, sk),
                   label="embed")
    want = S.ideal_embedding(tokens, E, res.client, bits, extra)
    assert_same((res.client, res.server), want, {"params": params.name, "n": n_tokens})
    assert res.transcript.cost() == S.embedding_cost(params, n_tokens, vocab, hidden)


def test_embedding_reference_and_optimized_identical(ref, opt):
    rng = np.random.default_rng(11)
    E = _rand(rng, (6, 5), 16)
    extra = _rand(rng, (4, 5), 16)
    tokens = np.array([5, 0, 5, 2])
    shapes = (S.WeightShape("embed", 6, 5),)
    out = {}
    for im in (ref, opt):
        s = _setup(im, P16, {"embed": E}, shapes)
        r = run_pair(im.linear.embed_client, im.linear.embed_server, P16, im,
                     client_args=(tokens, s.client["weights"]["embed"], s.server[1], 5),
                     server_args=(4, extra, s.server[0]), label="embed")
        out[im.name] = (r.client, r.server, r.transcript.digest())
    assert_same(out["reference"], out["optimized"])


def test_embedding_rejects_bad_tokens(impl):
    E = _rand(np.random.default_rng(0), (6, 5), 16)
    shapes = (S.WeightShape("embed", 6, 5),)
    s = _setup(impl, P16, {"embed": E}, shapes)
    with pytest.raises(ShapeError):
        run_pair(impl.linear.embed_client, impl.linear.embed_server, P16, impl,
                 client_args=(np.array([6]), s.client["weights"]["embed"], s.server[1], 5),
                 server_args=(1, E[:1], s.server[0]), label="embed")


# -- flooding: what the key owner sees is independent of the client's share ----------------------
def _noise(he, sk, ct, m):
    """Signed noise 2^l v - Q' m (scaled by 2^l) of every coefficient (exact, Python ints)."""
    L = ct.shape[-2]
    primes, q, l, n = he.primes[:L], he.q(L), he.plain_bits, he.n
    s = [int(v) for v in sk.s]
    out = []
    for c, mm in zip(ct.reshape(-1, 2, L, n), np.asarray(m).reshape(-1, n)):
        res = []
        for i, p in enumerate(primes):
            c0, c1 = [int(v) for v in c[0, i]], [int(v) for v in c[1, i]]
            prod = [0] * n
            for a, x in enumerate(c1):
                for b, y in enumerate(s):
                    if a + b < n:
                        prod[a + b] += x * y
                    else:
                        prod[a + b - n] -= x * y
            res.append([(u + w) % p for u, w in zip(c0, prod)])
        for t in range(n):
            v = sum(r[t] * (q // p) * pow(q // p, -1, p) for r, p in zip(res, primes)) % q
            e = ((v << l) - q * int(mm[t])) % (q << l)
            out.append(e - (q << l) if e > (q << l) // 2 else e)
    return np.array(out, dtype=np.float64)


def _ks(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def test_flooding_hides_the_client_share(opt):
    """With the secret key, the response noise for X_c = 0 and for X_c = -2^(l-1) (the largest
    scalar) is indistinguishable by a two-sample KS test at 1e-3, while the same test tells the
    two apart before flooding (the test has power)."""
    from nimbus.spec.prg import PRG
    from nimbus.spec.proto import CLIENT, Ctx

    he, params = H.TINY16, P16
    d_in, d_out, n = 4, 16, 2
    W = _rand(np.random.default_rng(2), (d_in, d_out), 16)
    shapes = (S.WeightShape("w", d_in, d_out),)
    st_ = _setup(opt, params, {"w": W}, shapes)
    enc, (sk, pk) = st_.client["weights"]["w"], st_.server
    lay = S.cop_layout(he, n, d_in, d_out)
    shares = {"zero": np.zeros((n, d_in), np.uint64), "max": np.full((n, d_in), 1 << 15, np.uint64)}
    flooded, raw = {}, {}
    for name, x in shares.items():
        pre = opt.rlwe.mod_switch(he, opt.linear.pack(he, opt.linear.mac(he, enc[0], x), lay), 2)
        raw[name] = _noise(he, sk, pre, opt.rlwe.decrypt(he, sk, pre))
        samples = []
        for t in range(60):
            ctx = Ctx(CLIENT, params, PRG.for_tests(f"flood/{name}/{t}"), opt)
            req = next(opt.linear.cop_client(ctx, x, enc, pk, d_out))
            ct = req.msg.ct
            samples.append(_noise(he, sk, ct, opt.rlwe.decrypt(he, sk, ct)))
        flooded[name] = np.concatenate(samples)
    size = flooded["zero"].size
    crit = 1.95 * np.sqrt(2 / size)  # alpha = 1e-3
    assert _ks(flooded["zero"], flooded["max"]) < crit
    assert np.all(raw["zero"] == 0) and np.any(raw["max"] != 0)  # without flooding: tells them apart
    assert _ks(np.tile(raw["zero"], 60), np.tile(raw["max"], 60)) > crit



# -- products of two shared matrices ----------------------------------------------------------------
def _negacyclic(a, b, n, mod):
    out = [0] * n
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            k = i + j
            if k < n:
                out[k] += int(x) * int(y)
            else:
                out[k - n] -= int(x) * int(y)
    return [v % mod for v in out]


@given(r=st.integers(1, 6), d=st.integers(1, 5), c=st.integers(1, 6), blocks=st.tuples(*[st.sampled_from([1, 2, 4])] * 3),
       seed=st.integers(0, 2**32))
def test_block_encoding_computes_the_product(r, d, c, blocks, seed):
    """Cheetah's encoding, any block sizes with rb db cb <= N: the target coefficients of
    sum_kb s(ib, kb) * c(kb, jb) are exactly S C (the rest is garbage, masked in the protocol)."""
    n, mod = 16, 1 << 16
    rb, db, cb = (min(b, v) for b, v in zip(blocks, (r, d, c)))
    if rb * db * cb > n:
        return
    plan = S.MatmulPlan(r, d, c, rb, db, cb)
    rng = np.random.default_rng(seed)
    Sm, Cm = _rand(rng, (r, d), 16), _rand(rng, (d, c), 16)
    sp, cp = S.encode_s(Sm, plan, n), S.encode_c(Cm, plan, n)
    prod = np.zeros((plan.nr, plan.nc, n), np.uint64)
    for ib in range(plan.nr):
        for jb in range(plan.nc):
            acc = [0] * n
            for kb in range(plan.nd):
                acc = [(x + y) % mod for x, y in zip(acc, _negacyclic(sp[ib, kb], cp[kb, jb], n, mod))]
            prod[ib, jb] = acc
    want = (Sm.astype(object).dot(Cm.astype(object)) % mod).astype(np.uint64)
    assert_same(S.decode_targets(prod, plan), want, {"r": r, "d": d, "c": c, "blocks": blocks, "seed": seed})


#: A tiny (INSECURE) products set whose flooding width covers packing 2^4 responses, with two
#: 61-bit response primes (so the cost model's key-switch weight is below a response's bytes and
#: the N = 16 plans below pack) and a 30-bit prime dropped: the packed path on the tiny sets.
#: derivation: ntt_primes(61, 16, 2) + (TINY16.primes[2],)
TINY16_PACK = H._sized("lin-test-pack-n16-l16", 16, (2305843009213693921, 2305843009213693153, 1073739937), 16, 2,
                       (("mm", H.matmul_workload(16, 16, 2, 16, 2, fresh="sk", pack=4)),), eta=2, stat_bits=12,
                       insecure_test_only=True).validate()
P16P = ParamSet(name="tiny-he16-pack", linear=Ring(bits=16, frac=6), nonlinear=Ring(bits=12, frac=4), he=H.TINY16,
                extra=(("matmul", TINY16_PACK),))


def _matmul(impl, params, ac, as_, bc, bs, seed="mm", sk=None):
    """The session's key step (label ``keys``), then one product (label ``mm``)."""
    from nimbus.conformance.harness import contexts
    from nimbus.runtime import run_local

    if sk is None:
        sk, _pk = _setup(impl, params, {}, ()).server
    c, s = contexts(params, impl, seed)

    def client(ctx):
        keys = yield from impl.linear.matmul_keys_client(ctx.sub("keys"))
        return (yield from impl.linear.matmul_client(ctx.sub("mm"), ac, bc, keys))

    def server(ctx):
        yield from impl.linear.matmul_keys_server(ctx.sub("keys"), sk)
        return (yield from impl.linear.matmul_server(ctx.sub("mm"), as_, bs, sk))

    return run_local(client(c), server(s))


def _check_costs(res, params, h, m, d, p):
    assert res.transcript.cost("mm") == S.matmul_cost(params, h, m, d, p)
    assert res.transcript.cost("keys") == S.matmul_keys_cost(params)


@pytest.mark.parametrize("params", PARAMS + [P16P], ids=lambda p: p.name)
@settings(max_examples=4)
@given(h=st.integers(1, 2), m=st.integers(1, 4), d=st.integers(1, 3), p=st.integers(1, 5), seed=st.integers(0, 2**32))
def test_matmul_is_the_ideal_functionality(impl, params, h, m, d, p, seed):
    rng = np.random.default_rng(seed)
    bits = params.linear.bits
    ac, as_ = _rand(rng, (h, m, d), bits), _rand(rng, (h, m, d), bits)
    bc, bs = _rand(rng, (h, d, p), bits), _rand(rng, (h, d, p), bits)
    res = _matmul(impl, params, ac, as_, bc, bs)
    assert_same((res.client, res.server), S.ideal_matmul(ac, as_, bc, bs, res.client, bits),
                {"h": h, "m": m, "d": d, "p": p, "seed": seed})
    _check_costs(res, params, h, m, d, p)


def test_matmul_reference_and_optimized_identical(ref, opt):
    rng = np.random.default_rng(4)
    ac, as_, bc, bs = (_rand(rng, s, 16) for s in ((2, 4, 3), (2, 4, 3), (2, 3, 6), (2, 3, 6)))
    r, o = _matmul(ref, P16, ac, as_, bc, bs), _matmul(opt, P16, ac, as_, bc, bs)
    assert_same((r.client, r.server, r.transcript.digest()), (o.client, o.server, o.transcript.digest()))


#: (heads, m, d, p) whose plans pack with TINY16_PACK (strides 2, 4 and 8, mixed strides and
#: unpacked products in one call, groups across heads and cross terms, partial last groups).
PACKED_SHAPES = [(3, 3, 4, 4), (2, 2, 3, 5), (3, 1, 8, 3)]


@pytest.mark.parametrize("shape", PACKED_SHAPES, ids=str)
def test_packed_matmul_reference_and_optimized_identical(ref, opt, shape):
    """Output packing (automorphisms, key switching, pack_trace): reference == optimized bit for
    bit (shares and transcript), the reconstruction is the ideal product, declared bytes ==
    measured for the key step and the product, and fewer responses than products."""
    h, m, d, p = shape
    he = S.matmul_he(P16P)
    p1, p2 = S.matmul_plan(he, m, d, p), S.matmul_plan(he, p, d, m)
    packing = S.matmul_packing(p1, p2, h)
    assert max(p1.pack, p2.pack) > 1 and packing.count < packing.products, (p1, p2)
    rng = np.random.default_rng(sum(shape))
    ac, as_, bc, bs = (_rand(rng, s, 16) for s in ((h, m, d), (h, m, d), (h, d, p), (h, d, p)))
    r, o = _matmul(ref, P16P, ac, as_, bc, bs), _matmul(opt, P16P, ac, as_, bc, bs)
    assert_same((r.client, r.server, r.transcript.digest()), (o.client, o.server, o.transcript.digest()), shape)
    assert_same((r.client, r.server), S.ideal_matmul(ac, as_, bc, bs, r.client, 16), shape)
    _check_costs(r, P16P, h, m, d, p)


def _matmul_response(impl, params, ac, bc, as_, bs, sk, keys, seed):
    """The client's (packed, switched, flooded, masked) response ciphertexts of one product."""
    from nimbus.conformance.harness import contexts

    c, s = contexts(params, impl, seed)
    blocks = next(impl.linear.matmul_server(s.sub("mm"), as_, bs, sk)).msg  # 1. the server's blocks
    gc = impl.linear.matmul_client(c.sub("mm"), ac, bc, keys)
    next(gc)  # the client waits for them
    return gc.send(blocks).msg.ct  # 2. its response


def test_packed_matmul_flooding_hides_the_client_share(opt, monkeypatch):
    """With the secret key, the noise of the packed responses (key-switching noise included) for
    client shares 0 and -2^(l-1) everywhere is indistinguishable by a two-sample KS test at 1e-3;
    with the flooding switched off the same test tells them apart (the test has power)."""
    from nimbus.conformance.harness import contexts
    from nimbus.runtime import run_local

    params, (h, m, d, p) = P16P, PACKED_SHAPES[0]
    he = S.matmul_he(params)
    p1, p2 = S.matmul_plan(he, m, d, p), S.matmul_plan(he, p, d, m)
    assert max(p1.pack, p2.pack) > 1
    sk, _pk = _setup(opt, params, {}, ()).server
    c, s = contexts(params, opt, "flood-keys")
    keys = run_local(opt.linear.matmul_keys_client(c.sub("keys")), opt.linear.matmul_keys_server(s.sub("keys"), sk)).client
    rng = np.random.default_rng(11)
    as_, bs = _rand(rng, (h, m, d), 16), _rand(rng, (h, d, p), 16)
    shares = {"zero": (np.zeros((h, m, d), np.uint64), np.zeros((h, d, p), np.uint64)),
              "max": (np.full((h, m, d), 1 << 15, np.uint64), np.full((h, d, p), 1 << 15, np.uint64))}

    def noise_samples(name, trials):
        ac, bc = shares[name]
        out = []
        for t in range(trials):
            ct = _matmul_response(opt, params, ac, bc, as_, bs, sk, keys, f"flood/{name}/{t}")
            out.append(_noise(he, sk, ct, opt.rlwe.decrypt(he, sk, ct)))
        return np.concatenate(out)

    flooded = {name: noise_samples(name, 40) for name in shares}
    crit = 1.95 * np.sqrt(2 / flooded["zero"].size)  # alpha = 1e-3
    assert _ks(flooded["zero"], flooded["max"]) < crit
    monkeypatch.setattr(opt.rlwe, "flood", lambda he_, pk, ct, prg, label, bound=None: ct)
    raw = {name: noise_samples(name, 40) for name in shares}  # (incl. the masks' encoding rounding)
    assert _ks(raw["zero"], raw["max"]) > crit


def test_pack_responses_matches_reference(ref, opt):
    """The linear-layer packing kernel on random ciphertexts (mixed strides, partial groups)."""
    he = TINY16_PACK
    p1, p2 = S.MatmulPlan(4, 4, 4, 2, 4, 2, 4), S.MatmulPlan(4, 4, 4, 4, 2, 2, 2)
    packing = S.matmul_packing(p1, p2, 3)
    g = PRG.for_tests("pack-responses")
    res = np.stack([np.stack([g.uniform_mod(f"r{i}", (packing.products, 2, he.n), p) for i, p in enumerate(he.primes)],
                             axis=2)]).reshape(packing.products, 2, he.levels, he.n)
    sk = ref.rlwe.keygen(he, g, "k")
    sd = g.child_seed("gk")
    keys = ref.rlwe.expand_galois(he, sd, ref.rlwe.galois_keygen(he, sk, S.matmul_galois(he), sd, g, "gk"))
    assert_same(ref.linear.pack_responses(he, res, packing, keys), opt.linear.pack_responses(he, res, packing, keys))


def test_unpack_responses_inverts_the_slot_layout():
    """Group of stride D: member i's coefficient D u + D - 1 sits at D u + i of the packed plaintext."""
    p1 = S.MatmulPlan(4, 4, 4, 2, 4, 2, 4)
    packing = S.matmul_packing(p1, S.MatmulPlan(4, 4, 4, 4, 1, 4, 1), 1)
    n = 16
    z = np.arange(packing.count * n, dtype=np.uint64).reshape(packing.count, n)
    u = S.unpack_responses(z, packing, n)
    for c, (D, members) in enumerate(packing.groups):
        for i, t in enumerate(members):
            assert_same(u[t, D - 1::D], z[c, i::D])


def test_matmul_key_messages_are_checked(impl):
    """A key message of the wrong shape is a ProtocolError; a tampered encoding (a residue >= p,
    a truncated or extended message) a DecodeError."""
    from nimbus.conformance.harness import contexts
    from nimbus.runtime import run_local
    from nimbus.spec.errors import DecodeError
    from nimbus.spec.messages import Message

    he = S.matmul_he(P16P)
    G = len(S.matmul_galois(he))
    z = np.zeros
    good = S.MatmulKeys(pk=z((2, he.levels, he.n), np.uint64), seed=b"\x01" * 32,
                        gk=z((G, he.levels, he.levels, he.n), np.uint64))
    for bad in (S.MatmulKeys(pk=good.pk, seed=good.seed, gk=good.gk[:-1]),
                S.MatmulKeys(pk=good.pk[:1], seed=good.seed, gk=good.gk),
                S.MatmulKeys(pk=good.pk, seed=good.seed, gk=good.gk[:, :, :1])):
        c, s = contexts(P16P, impl, "badkeys")

        def server(ctx, msg=bad):
            yield ctx.send(msg)

        with pytest.raises(ProtocolError):
            run_local(impl.linear.matmul_keys_client(c.sub("keys")), server(s.sub("keys")))
    raw = bytearray(good.encode(P16P))
    assert len(raw) == S.matmul_keys_cost(P16P).s2c
    Message.decode(bytes(raw), P16P, S.MatmulKeys)
    with pytest.raises(DecodeError):
        Message.decode(bytes(raw[:-1]), P16P, S.MatmulKeys)
    with pytest.raises(DecodeError):
        Message.decode(bytes(raw) + b"\x00", P16P, S.MatmulKeys)
    tampered = bytearray(raw)
    tampered[-4:] = b"\xff" * 4  # the last residue of gk becomes 2^30 - 1 >= its prime
    with pytest.raises(DecodeError):
        Message.decode(bytes(tampered), P16P, S.MatmulKeys)
    with pytest.raises(ShapeError):  # the client refuses key material that is not the session's
        run_pair(impl.linear.matmul_client, impl.linear.matmul_server, P16P, impl,
                 client_args=(z((1, 2, 2), np.uint64), z((1, 2, 2), np.uint64), None),
                 server_args=(z((1, 2, 2), np.uint64), z((1, 2, 2), np.uint64), None), label="mm")


def test_matmul_with_its_own_he_set(ref, opt):
    """A parameter set with a ("matmul", HEParams) component runs the products in that set (its
    own flooding budget), keyed by the same secret; reference = optimized."""
    mm = H.HEParams("lin-test-mm-n16-l16", 16, H.TINY16.primes[:2] + (1073739937,), 16, eta=2, response_level=2,
                    flood_bound=H.TINY16.flood_bound, stat_bits=12, insecure_test_only=True)
    P = ParamSet(name="tiny-he16-mm", linear=Ring(bits=16, frac=6), nonlinear=Ring(bits=12, frac=4), he=H.TINY16,
                 extra=(("matmul", mm),))
    assert S.matmul_he(P) is mm and S.matmul_he(P16) is H.TINY16
    rng = np.random.default_rng(8)
    ac, as_, bc, bs = (_rand(rng, s, 16) for s in ((1, 3, 2), (1, 3, 2), (1, 2, 4), (1, 2, 4)))
    r, o = _matmul(ref, P, ac, as_, bc, bs), _matmul(opt, P, ac, as_, bc, bs)
    assert_same((r.client, r.server, r.transcript.digest()), (o.client, o.server, o.transcript.digest()))
    assert_same((r.client, r.server), S.ideal_matmul(ac, as_, bc, bs, r.client, 16))
    _check_costs(r, P, 1, 3, 2, 4)


@pytest.mark.parametrize("he", [H.TINY16, TINY32_L12], ids=lambda h: h.name)
def test_plain_mac_matches_reference(ref, opt, he):
    rng = np.random.default_rng(9)
    cts = np.stack([np.stack([rng.integers(0, p, size=(2, he.n), dtype=np.uint64) for p in he.primes], axis=1)
                    for _ in range(3)])
    polys = _rand(rng, (3, 2, he.n), he.plain_bits)
    polys[0, 0, :4] = np.uint64((1 << he.plain_bits) - 1)
    assert_same(ref.linear.plain_mac(he, cts, polys), opt.linear.plain_mac(he, cts, polys))


def test_setup_flow_control(impl):
    """More row messages than a window: the client acknowledges every window but the last, and
    the measured cost (bytes and rounds) is the declared one."""
    d_in, d_out = 5 * S.SETUP_CHUNK_ROWS + 3, 40  # 6 blocks x 3 column chunks = 18 > SETUP_WINDOW
    W, b, x_c, x_s = _case(P16, 2, d_in, d_out, 12)
    shapes = (S.WeightShape("w", d_in, d_out),)
    assert S.setup_acks(P16.he, shapes) == 1
    st_ = _setup(impl, P16, {"w": W}, shapes)
    cost = st_.transcript.cost()
    assert cost == S.setup_cost(P16, shapes) and cost.c2s > 0 and cost.rounds == 3


def test_bert_base_budgets():
    """Declared costs at BERT-base shapes (128 tokens) stay within the issue's budgets: the H1
    product <= 16 MB, the embedding lookup <= 20 MB, dense packing (100 %) for every weight shape,
    and the client's cache within 2x of the information-theoretic size of its ciphertexts."""
    from nimbus.spec import get_preset

    P = get_preset("bert-base")
    assert S.cop_cost(P, 128, 768, 3072).c2s <= 16_000_000
    assert S.embedding_cost(P, 128, 30522, 768).c2s <= 20_000_000
    for s in S.bert_shapes()[1:5]:
        assert S.cop_layout(P.he, 128, s.d_in, s.d_out).utilisation == 1.0, s
    shapes = S.bert_shapes()
    cache = sum(S.setup_bytes(P.he, s) for s in shapes)
    assert cache <= 2 * sum(S.cache_it_bytes(P.he, s) for s in shapes)


# -- the per-query flooding budget: the parties refuse longer queries ------------------------------
def test_parties_refuse_queries_beyond_the_flooding_budget(impl):
    """M2: with the bert-base preset (M = 2^26), every linear party function of both
    implementations refuses max_query_tokens + 1 tokens with the same ParameterError, before any
    encryption work (256 since the attention responses are packed: 128 tokens flood 2^24.2)."""
    from nimbus.spec.errors import ParameterError
    from nimbus.spec.params import PRESETS
    params = PRESETS["bert-base"]
    he = params.he
    limit = S.max_query_tokens(he)
    assert limit == S.max_query_tokens(S.matmul_he(params)) == 256
    n, d = limit + 1, 4
    x = np.zeros((n, d), np.uint64)
    enc = np.zeros((1, d, 2, he.levels, he.n), np.uint64)
    msg = f"{n} tokens exceed the per-query flooding budget"
    with pytest.raises(ParameterError, match=msg):
        run_pair(impl.linear.cop_client, impl.linear.cop_server, params, impl,
                 client_args=(x, enc, None, d), server_args=(x, np.zeros((d, d), np.uint64), None, None),
                 label="cop")
    with pytest.raises(ParameterError, match=msg):
        run_pair(impl.linear.embed_client, impl.linear.embed_server, params, impl,
                 client_args=(np.zeros(n, np.int64), enc[:, :1], None, d),
                 server_args=(n, x, None), label="embed")
    a, b = np.zeros((1, n, 64), np.uint64), np.zeros((1, 64, n), np.uint64)
    with pytest.raises(ParameterError, match=msg):
        run_pair(impl.linear.matmul_client, impl.linear.matmul_server, params, impl,
                 client_args=(a, b, None), server_args=(a, b, None), label="mm")


@settings(max_examples=25, deadline=None)
@given(he=st.sampled_from([H.TINY16, TINY32_L12, H.MATMUL64]),
       vals=st.lists(st.one_of(st.integers(0, (1 << 64) - 1),
                               st.sampled_from([0, 1, 2, (1 << 63) - 1, 1 << 63, (1 << 63) + 1,
                                                (1 << 64) - 1, (1 << 31), (1 << 32) - 1, (1 << 15)])),
                     min_size=1, max_size=24))
def test_plain_lift_is_the_centred_residue(he, vals):
    """The optimized plaintext lift of ``plain_mac`` (numba, Shoup reduction) against its
    definition in integers: v in Z_2^l as the centred value in [-2^(l-1), 2^(l-1)), mod each prime
    (incl. the most negative value and the ends of every width, at the real attention set)."""
    from nimbus.optimized import _linear_kernels as K

    l = he.plain_bits
    xs = [v % (1 << l) for v in vals][:he.n]  # at most one polynomial (TINY16 has N = 16)
    x = np.zeros((1, he.n), np.uint64)
    x[0, :len(xs)] = xs
    got = K._lift_polys(he, x, he.levels)
    for i, p in enumerate(he.primes):
        want = [((v - (1 << l) if v >= 1 << (l - 1) else v) % p) for v in xs]
        assert got[0, i, :len(xs)].tolist() == want
