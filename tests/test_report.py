"""Per-step report tables (nimbus.report): label folding and the per-party CPU column."""

from __future__ import annotations

from nimbus.report import category_table, step, step_table
from nimbus.runtime.transcript import Transcript
from nimbus.spec.proto import CLIENT, SERVER


def test_step_folds_query_and_layer_indices():
    assert step("q0/layer3/GELU/gelu/poly1/tr1/cmp") == "layer*/GELU/gelu/poly1"
    assert step("q1/layer11/GELU/down", 2) == "layer*/GELU"
    assert step("q0/layer11/GELU/down", 2, fold=False) == "layer11/GELU"
    assert step("q0/LayerNorm_emb/dc/cmp") == "LayerNorm_emb/dc/cmp"
    assert step("OT/c2s/ferret2") == "OT/c2s/ferret2"
    assert step("qkv/layerx/a") == "qkv/layerx/a"  # only q<digits> and layer<digits> are indices


def test_step_table_sums_layers_per_party_and_kind():
    tr = Transcript()
    for i in range(3):
        tr.add_compute(CLIENT, f"q0/layer{i}/GELU/down", 1.0)
        tr.add_cpu(CLIENT, f"q0/layer{i}/GELU/down", 2.0)
        tr.add_waiting(CLIENT, f"q0/layer{i}/GELU/down", 0.5)
    tr.add_compute(SERVER, "q0/layer0/GELU/down", 4.0)
    t = step_table(tr)
    assert list(t) == ["layer*/GELU/down"]
    row = t["layer*/GELU/down"]
    assert row["compute_s"] == {CLIENT: 3.0, SERVER: 4.0}
    assert row["cpu_s"] == {CLIENT: 6.0, SERVER: 0.0}
    assert row["waiting_s"] == {CLIENT: 1.5, SERVER: 0.0}
    by_layer = step_table(tr, 2, fold=False)
    assert list(by_layer) == ["layer0/GELU", "layer1/GELU", "layer2/GELU"]
    assert by_layer["layer0/GELU"]["compute_s"] == {CLIENT: 1.0, SERVER: 4.0}
    # the category table carries the same CPU seconds
    cats = category_table(tr)
    assert cats["GELU"]["cpu_s"][CLIENT] == 6.0 == cats["total"]["cpu_s"][CLIENT]
