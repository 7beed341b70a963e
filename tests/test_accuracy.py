"""The accuracy harness (``nimbus.models.accuracy``) on a tiny checkpoint: secure results are
checked against the fixed-point semantics, and ``--resume`` reuses and re-checks earlier work."""

from __future__ import annotations

import json

import numpy as np

import pytest

from nimbus.models import accuracy
from nimbus.models.synthetic import save_tiny_checkpoint
from nimbus.spec import model as M

FAST = M.SecureConfig(ot_kind="iknp")


def test_secure_runs_match_the_semantics_and_resume_rechecks_them(tmp_path, monkeypatch):
    ck = save_tiny_checkpoint(tmp_path / "ck", labels=2)
    out, cache = tmp_path / "out", tmp_path / "cache"
    kw = dict(cache_dir=cache, model_dir=ck, progress=False, config=FAST)
    r1 = accuracy.run(out, n=2, secure=1, **kw)
    assert r1["secure"]["n"] == 1 and r1["secure"]["bit_exact_with_fixed_point_semantics"] == 1
    assert r1["fixed_point_semantics"]["n"] == 2
    assert len(json.loads((out / "fixed_point.json").read_text())["rows"]) == 2

    calls = []
    real = M.ideal_forward
    monkeypatch.setattr(M, "ideal_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    r2 = accuracy.run(out, n=3, secure=2, resume=True, **kw)
    assert len(calls) == 1  # snippets 0 and 1 came from fixed_point.json; only snippet 2 is new
    assert r2["secure"]["n"] == 2 and r2["secure"]["bit_exact_with_fixed_point_semantics"] == 2
    assert r2["fixed_point_semantics"]["n"] == 3

    prog = out / "progress.jsonl"  # a tampered earlier result no longer matches the semantics
    rows = [json.loads(x) for x in prog.read_text().splitlines()]
    rows[0]["secure"][0] += 1.0
    prog.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match="does not match"):
        accuracy.run(out, n=3, secure=3, resume=True, **kw)


def test_two_processes_give_the_same_results(tmp_path):
    ck = save_tiny_checkpoint(tmp_path / "ck", labels=2)
    kw = dict(n=2, secure=2, cache_dir=tmp_path / "cache", model_dir=ck, progress=False, config=FAST)
    local = accuracy.run(tmp_path / "a", **kw)
    tcp = accuracy.run(tmp_path / "b", tcp=True, **kw)
    assert tcp["transport"].startswith("tcp") and tcp["secure"]["bit_exact_with_fixed_point_semantics"] == 2
    rows = [[json.loads(x)["secure"] for x in (d / "progress.jsonl").read_text().splitlines()]
            for d in (tmp_path / "a", tmp_path / "b")]
    assert rows[0] == rows[1]


def test_shards_share_the_work_and_a_resume_gathers_them(tmp_path):
    ck = save_tiny_checkpoint(tmp_path / "ck", labels=2)
    out = tmp_path / "out"
    kw = dict(cache_dir=tmp_path / "cache", model_dir=ck, progress=False, config=FAST)
    with pytest.raises(SystemExit, match="set it up first"):  # shards never set up a cache themselves
        accuracy.run(out, n=3, secure=3, shard=(0, 2), **kw)
    accuracy.run(out, n=3, secure=0, **kw)
    accuracy.run(out, n=3, secure=1, **kw)  # snippet 0, unsharded; sets up the cache
    r = accuracy.run(out, n=3, secure=3, shard=(1, 2), resume=True, **kw)
    assert [json.loads(x)["i"] for x in (out / "progress-1-of-2.jsonl").read_text().splitlines()] == [1]
    assert r["secure"]["n"] == 2  # snippet 0 from the earlier run, and its own snippet 1
    r = accuracy.run(out, n=3, secure=3, shard=(0, 2), resume=True, **kw)
    assert [json.loads(x)["i"] for x in (out / "progress-0-of-2.jsonl").read_text().splitlines()] == [2]
    full = accuracy.run(out, n=3, secure=3, resume=True, **kw)  # gathers all three files, runs nothing new
    assert full["secure"]["n"] == 3 and full["secure"]["bit_exact_with_fixed_point_semantics"] == 3
    assert not (out / "progress.jsonl").read_text().count("\n") > 1

    dup = out / "progress-0-of-2.jsonl"  # a result recorded twice is refused
    dup.write_text(dup.read_text() + (out / "progress-1-of-2.jsonl").read_text())
    with pytest.raises(SystemExit, match="recorded twice"):
        accuracy.run(out, n=3, secure=3, resume=True, **kw)
    dup.write_text('{"i": 2, "tokens"\n')  # a truncated line
    with pytest.raises(SystemExit, match="unreadable result line"):
        accuracy.run(out, n=3, secure=3, resume=True, **kw)
    with pytest.raises(ValueError, match="shard"):
        accuracy.run(out, n=3, secure=3, shard=(2, 2), resume=True, **kw)


def test_shared_preload_maps_one_verified_copy(tmp_path):
    from nimbus.api import Client, Server

    ck = save_tiny_checkpoint(tmp_path / "ck", labels=2)
    server = Server(ck, key_file=tmp_path / "k", config=FAST)
    cache = tmp_path / "cache"
    Client(cache).setup_local(server, progress=False)
    ids = [np.array([1, 7, 8, 2])]
    want = Client(cache, preload=False).infer_local(server, ids).predictions[0].output
    a = Client(cache, preload="shared")
    assert a.infer_local(server, ids).predictions[0].output.tolist() == want.tolist()
    folder = next(cache.glob("expanded-*"))
    files = sorted(folder.glob("*.npy"))
    assert files and all(isinstance(m, np.memmap) for m in _store(a))
    stamp = {f: f.stat().st_mtime_ns for f in files}
    b = Client(cache, preload="shared")  # a second client maps the same files
    assert b.infer_local(server, ids).predictions[0].output.tolist() == want.tolist()
    assert {f: f.stat().st_mtime_ns for f in files} == stamp
    b.close()
    raw = bytearray(files[0].read_bytes())  # a damaged copy fails its digest and is rebuilt
    raw[-1] ^= 1
    files[0].write_bytes(bytes(raw))
    c = Client(cache, preload="shared")
    assert c.infer_local(server, ids).predictions[0].output.tolist() == want.tolist()
    assert files[0].stat().st_mtime_ns != stamp[files[0]]
    with pytest.raises(ValueError, match="preload"):
        Client(cache, preload="yes")


def _store(client):
    st = client.state()
    return [st.matrix(s.name) for s in st.arch.shapes()[1:]]
