"""Distillation, auto and the CLI on real tiny models (PEFT outputs loaded back; numbers asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from regraft.port.methods.auto import auto_port, decide
from regraft.port.methods.distill.training import distill_adapter
from regraft.report.port import render_method_report as render

from tests import factories as T

SEEDS = ["q: abc = ", "q: hello = ", "q: zzyx = ", "q: mnop = ", "q: qrstu = "]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("distill")
    S = T.make_dense(d / "S")
    Pk = T.reparametrise(S, d / "Pk")
    Tg = T.make_dense(d / "T", "qwen3", seed=3, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                      num_key_value_heads=2)
    T.save_tokenizer(S, Pk, Tg)
    A = T.random_adapter(S, d / "A", std=0.5)
    return d, S, Pk, Tg, A


def test_distill_to_other_shapes_moves_the_student_to_the_teacher(world):
    d, S, Pk, Tg, A = world
    rep = distill_adapter(A, S, Tg, d / "dist", seeds=SEEDS, n_prompts=48, init=None, steps=60, lr=5e-3,
                          eval_every=20, batch=16, show_progress=False, exclude=["q: hello = "])
    h = rep.details["training"]["history"]
    assert h[0]["kl"] > 0.3
    assert rep.details["training"]["best_val"] < 0.6 * h[0]["kl"]  # teacher KL on synthetic val at least -40%
    assert rep.details["leakage"]["exact"] == 0 and rep.details["selection"]["kept"] == 48
    assert rep.details["prompts"]["pool"] == 96  # keep = 0.5: twice as many labelled, top half by excess
    assert rep.details["selection"]["mean_excess_kept"] >= rep.details["selection"]["mean_excess_all"]
    from peft import PeftModel

    pm = PeftModel.from_pretrained(T.load(Tg), str(d / "dist"))  # loads on the target
    assert sum(1 for n, _ in pm.named_parameters() if "lora_A" in n) == 3 * 7
    cfg = json.loads((d / "dist" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and cfg["base_model_name_or_path"] == str(Tg)
    assert rep.peak_rss_mb > 0
    # the source is streamed (teacher) and freed before the target is loaded; peak RSS reported per phase
    assert rep.details["teacher"]["kind"] == "StreamedTeacher"
    mem = rep.details["memory"]
    assert mem["mode"] == "source streamed, target resident"
    assert {"teacher", "student (target resident, training)"} <= set(mem["peak_rss_mb_by_phase"])
    assert mem["peak_rss_mb"] == rep.peak_rss_mb


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["seq", "delta"])
def test_other_losses_run_and_reduce_the_gap(world, loss):
    d, S, Pk, Tg, A = world
    rep = distill_adapter(A, S, Tg, d / f"dist-{loss}", seeds=SEEDS, n_prompts=24, init=None, steps=30, lr=5e-3,
                          eval_every=10, batch=8, loss=loss, show_progress=False)
    h = rep.details["training"]["history"]
    key = rep.details["training"]["early_stop_metric"]
    assert key == ("teacher_nll" if loss == "seq" else "kl")
    assert min(x[key] for x in h) < h[0][key]


@pytest.mark.slow
def test_projection_init_kept_on_exact_pair_and_already_done(world):
    d, S, Pk, Tg, A = world
    rep = distill_adapter(A, S, Pk, d / "dist-pk", seeds=SEEDS, n_prompts=24, init="project",
                          calib_texts=T.generic_texts(), steps=20, eval_every=10, show_progress=False)
    assert rep.details["init_gate"]["kept"] is True
    assert rep.details["init_gate"]["kl_projection"] < 1e-3
    assert rep.details["training"]["history"][0]["kl"] < 1e-3


@pytest.mark.slow
def test_auto_copies_a_sibling_and_distills_across_shapes(world, tmp_path):
    d, S, Pk, Tg, A = world
    import shutil

    sib = tmp_path / "sib"
    m = T.load(S)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.01)
    m.save_pretrained(sib)
    T.save_tokenizer(sib)
    dec = decide(A, S, sib)
    assert dec["method"] == "copy" and dec["sigma"] < 0.15
    rep = auto_port(A, S, sib, tmp_path / "copy", seeds=SEEDS, calib_texts=T.generic_texts(), show_progress=False,
                    check_prompts=16)
    assert rep.details["decision"]["method"] == "copy"
    assert rep.checks["agreement"] > 0.9 and rep.checks["loads_in_peft"]
    assert rep.checks["generic_kl"] is not None
    assert "decision: copy" in render(rep)
    assert rep.details["copy_check"]["copy_agreement"] >= 0.9
    # a copy that does not follow the teacher closely enough is refreshed by distillation from the copy
    rep = auto_port(A, S, sib, tmp_path / "refresh", seeds=SEEDS, show_progress=False, check_prompts=16,
                    refresh_below=1.01, n_prompts=16, steps=10, eval_every=5)
    assert rep.details["decision"]["method"] == "copy + distillation refresh"
    assert rep.details["init_gate"]["kept"] and rep.checks["loads_in_peft"]
    rep = auto_port(A, S, Tg, tmp_path / "auto", seeds=SEEDS, calib_texts=T.generic_texts(), n_prompts=24,
                    steps=20, eval_every=10, lr=5e-3, show_progress=False)
    assert rep.details["decision"]["method"] == "project+distill"
    assert rep.checks["agreement"] is not None and rep.checks["kl"] < rep.checks["target_base_kl"]
    txt = render(rep)
    assert "decision: project+distill" in txt and "check teacher agreement" in txt and "side effects" in txt
    saved = json.loads((tmp_path / "auto" / "regraft_port.json").read_text())
    assert saved["checks"]["agreement"] == rep.checks["agreement"]
    shutil.rmtree(tmp_path / "auto")


@pytest.mark.slow
def test_cli_project_and_auto(world, tmp_path, capsys):
    from regraft.cli.main import main

    d, S, Pk, Tg, A = world
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(T.generic_texts()))
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("\n".join(json.dumps({"prompt": s}) for s in SEEDS))
    assert main(["port", "lora", str(A), "--from", str(S), "--to", str(Pk), "--method", "project", "--calib",
                 str(calib), "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "flag: initialiser" in out and "loads in PEFT" in out
    assert main(["port", "lora", str(A), "--from", str(S), "--to", str(Tg), "--method", "auto", "--prompts",
                 str(seeds), "--calib", str(calib), "--n-prompts", "16", "--steps", "10", "--out",
                 str(tmp_path / "a"), "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["details"]["decision"]["method"] == "project+distill" and rep["checks"]["loads_in_peft"]
    assert rep["details"]["keep_generic"]["weight"] == 1.0  # the side-effect guard is on by default with --calib
    # --method copy keeps issue 5's behaviour: other shapes are refused
    assert main(["port", "lora", str(A), "--to", str(Tg), "--out", str(tmp_path / "c")]) == 1


def test_keep_generic_guards_side_effects(world):
    """The side-effect guard (KL to the bare target on generic text) keeps the student closer to the target off
    the task, on held-out generic sequences, while it still learns from the teacher."""
    from peft import PeftModel

    from regraft.port.fidelity import _pad

    d, S, Pk, Tg, A = world
    g = torch.Generator().manual_seed(5)
    vocab = T.load(Tg).config.vocab_size
    generic = [torch.randint(3, vocab, (24,), generator=g).tolist() for _ in range(160)]
    calib, held = generic[:128], generic[128:]
    side, learnt = {}, {}
    for w in (0.0, 1.0):
        out = d / f"dist-keep{w}"
        rep = distill_adapter(A, S, Tg, out, seeds=SEEDS, n_prompts=48, init=None, steps=60, lr=5e-3,
                              eval_every=20, batch=16, show_progress=False, calib_texts=calib, keep_generic=w)
        h = rep.details["training"]
        learnt[w] = h["best_val"] / h["history"][0]["kl"]
        base = T.load(Tg).eval()
        pm = PeftModel.from_pretrained(T.load(Tg), str(out)).eval()
        ids, mask = _pad(held)
        with torch.no_grad():
            p = torch.log_softmax(base(input_ids=ids, attention_mask=mask).logits, -1)
            q = torch.log_softmax(pm(input_ids=ids, attention_mask=mask).logits, -1)
        side[w] = float((p.exp() * (p - q)).sum(-1)[mask.bool()].mean())
        if w:
            assert rep.details["keep_generic"] == {"weight": 1.0, "texts": 128}
    assert side[1.0] < 0.5 * side[0.0], side
    assert learnt[1.0] < 0.8, learnt  # still at least -20% teacher KL on synthetic val
