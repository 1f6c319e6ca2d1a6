"""The method table and the one request: every option honoured or refused for every method, dry runs write nothing,
bad paths are one line and exit 2 (real tiny models, the CLI as users call it)."""

from __future__ import annotations

import json
import warnings

import pytest

from regraft.cli.main import main
from regraft.port.methods import COMMON, METHODS, get, names

warnings.filterwarnings("ignore")

TRAINING = ("project", "distill", "auto")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("methods")
    (d / "seeds.jsonl").write_text("\n".join(json.dumps({"prompt": p}) for p in ("q: abc = ", "q: hello = ")))
    (d / "calib.txt").write_text("the cat sat on the mat\nsome generic text here\n")
    return d


def _base(tiny, method):
    """(adapter, --to, extra) for a method: copy/relayout on the MoE adapter, the others across shapes."""
    if method in ("copy", "relayout"):
        return [str(tiny["v4"]), "--to", str(tiny["moe"])]
    return [str(tiny["lora"]), "--to", str(tiny["other"]), "--from", str(tiny["dense"])]


def _options(tiny, files):
    # option dest -> (argv, check of the dry-run JSON when the method honours it)
    steps = lambda d: " ".join(d["plan"]["steps"])  # noqa: E731
    return {
        "runtime": (["--runtime", "vllm"], lambda d: d["plan"]["runtime"] == "vllm"),
        "layout": (["--layout", "v5"], lambda d: d["plan"]["layout_out"] == "moe-v5-fused"),
        "allow_lossy": (["--allow-lossy"], None),
        "revision": (["--revision", "r1"], None),
        "no_drift": (["--no-drift"], None),
        "all_modules": (["--all-modules"], None),
        "source": (["--from", str(tiny["dense"])], None),
        "calib": (["--calib", str(files / "calib.txt")], lambda d: "--calib" in steps(d)),
        "prompts": (["--prompts", str(files / "seeds.jsonl")], lambda d: "2 seeds" in steps(d)),
        "template": (["--template", "q: {letters:3-5} = "], lambda d: "template" in steps(d)),
        "n_prompts": (["--n-prompts", "8"], lambda d: d["plan"]["cost"]["prompts"]["trained"] == 8),
        "steps": (["--steps", "7"], lambda d: d["plan"]["cost"]["steps"] == 7),
        "loss": (["--loss", "seq"], lambda d: "seq loss" in steps(d)),
        "mlp": (["--mlp", "skip"], lambda d: "MLP skipped" in steps(d)),
        "keep_generic": (["--keep-generic", "0.5"], None),
        "sample_frac": (["--sample-frac", "0.5"], lambda d: "50% sampled" in steps(d)),
        "teacher_url": (["--teacher-url", "http://127.0.0.1:9/v1"], lambda d: "endpoint http://127.0.0.1:9" in steps(d)),
        "teacher_model": (["--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "a"], None),
        "teacher_base_model": (["--teacher-url", "http://127.0.0.1:9/v1", "--teacher-base-model", "b"], None),
    }


def test_the_table_has_the_five_methods_and_every_option_is_known():
    from regraft.cli.port_lora import METHOD_OPTIONS

    assert {"copy", "relayout", "project", "distill", "auto"} <= set(names())
    for m in METHODS.values():
        assert m.reads <= set(METHOD_OPTIONS), (m.name, m.reads - set(METHOD_OPTIONS))
    assert not COMMON & set(METHOD_OPTIONS)


OPTION_NAMES = ["runtime", "layout", "allow_lossy", "revision", "no_drift", "all_modules", "source", "calib", "prompts",
                "template", "n_prompts", "steps", "loss", "mlp", "keep_generic", "sample_frac", "teacher_url",
                "teacher_model", "teacher_base_model"]


@pytest.mark.parametrize("method", ["copy", "relayout", "project", "distill", "auto"])
@pytest.mark.parametrize("option", OPTION_NAMES)
def test_every_option_is_honoured_or_refused_naming_the_method(tiny, files, tmp_path, capsys, method, option):
    argv, check = _options(tiny, files)[option]
    out = tmp_path / "X"
    base = _base(tiny, method)
    if option == "source" and "--from" in base:
        base = base[:base.index("--from")]
    # distill always needs prompts; auto distils (and reads the training options) only with them
    extra = ["--prompts", str(files / "seeds.jsonl")] if method in ("distill", "auto") and option not in (
        "prompts", "template") else []
    if option == "keep_generic" and method in TRAINING:
        extra += ["--calib", str(files / "calib.txt")]
    rc = main(["port", "lora", *base, *extra, *argv, "--method", method, "--dry-run", "--out", str(out),
               "--format", "json"])
    cap = capsys.readouterr()
    assert not out.exists()
    if option in get(method).reads:
        assert rc == 0, cap.err
        d = json.loads(cap.out)
        assert d["dry_run"] is True and d["method"] == method
        if method in TRAINING:
            assert d["plan"]["method"] == method
        if check is not None and (method in TRAINING) == (option not in ("runtime", "layout")):
            assert check(d), (option, method, d)
    else:
        assert rc == 2 and cap.out == ""
        err = cap.err.strip()
        assert "\n" not in err and f"--method {method}" in err and "not apply" in err, err


def test_auto_dry_run_prints_plan_and_cost_and_writes_nothing(tiny, files, tmp_path, capsys):
    out = tmp_path / "X"
    rc = main(["port", "lora", str(tiny["lora"]), "--from", str(tiny["dense"]), "--to", str(tiny["other"]),
               "--method", "auto", "--prompts", str(files / "seeds.jsonl"), "--dry-run", "--out", str(out)])
    txt = capsys.readouterr().out
    assert rc == 0 and not out.exists()
    assert "decision: project+distill" in txt and "cost (estimated)" in txt and "wall time: CPU" in txt
    assert "dry run: nothing written" in txt


def test_auto_decides_copy_for_a_sibling_without_training_cost(tiny, tmp_path, capsys):
    rc = main(["port", "lora", str(tiny["lora"]), "--from", str(tiny["dense"]), "--to", str(tiny["sib"]),
               "--method", "auto", "--dry-run", "--format", "json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["plan"]["decision"]["method"] == "copy" and d["plan"]["decision"]["sigma"] < 0.15
    assert d["plan"]["cost"] is None  # a copy without prompts trains nothing


def test_distill_dry_run_estimates_cost_for_catalog_models(tmp_path, capsys, tiny, files):
    """Real model sizes from the catalog, no weights here: the plan says what is missing and still estimates."""
    rc = main(["port", "lora", str(tiny["lora"]), "--from", "Qwen/Qwen3-30B-A3B", "--to", "Qwen/Qwen3-32B",
               "--method", "distill", "--prompts", str(files / "seeds.jsonl"), "--steps", "100", "--dry-run",
               "--format", "json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0
    c = d["plan"]["cost"]
    assert 30e9 < c["models"]["source"]["params"] < 31e9 and 32e9 < c["models"]["target"]["params"] < 33.5e9
    assert c["steps"] == 100 and c["prompts"] == {"labelled": 512, "trained": 256, "mean_prompt_tokens": 3}
    assert c["tokens"]["train"] == 100 * 32 * (3 + 24)
    # the target resident in float32 (4 bytes x 32.8B = 131 GB) plus the batch's activations and logits
    assert 4 * c["models"]["target"]["params"] / 1e9 < c["peak_memory_gb"]["gpu"] < 170 and c["warnings"]
    assert c["wall_s"]["gpu"] < c["wall_s"]["cpu"] and c["assumptions"]
    assert any("local folder" in n for n in d["plan"]["needs"])
    # and without --dry-run it refuses in one line (no weights), before anything is written
    rc = main(["port", "lora", str(tiny["lora"]), "--from", "Qwen/Qwen3-30B-A3B", "--to", "Qwen/Qwen3-32B",
               "--method", "distill", "--prompts", str(files / "seeds.jsonl"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot run" in err and not (tmp_path / "o").exists()


def test_copy_run_honours_revision_and_no_drift(tiny, tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(["port", "lora", str(tiny["lora"]), "--to", str(tiny["sib"]), "--from", str(tiny["dense"]),
               "--revision", "r7", "--no-drift", "--out", str(out), "--format", "json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["drift"] is None and d["method"] == "copy"
    assert json.loads((out / "adapter_config.json").read_text())["revision"] == "r7"


def test_relayout_converts_and_refuses_what_it_does_not_do(tiny, tmp_path, capsys):
    out = tmp_path / "v5"
    assert main(["port", "lora", str(tiny["v4"]), "--to", str(tiny["moe"]), "--method", "relayout", "--out",
                 str(out), "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["method"] == "relayout" and d["plan"]["layout_out"] == "moe-v5-fused"
    assert json.loads((out / "adapter_config.json").read_text())["target_parameters"]
    # a dense adapter has no layout to convert
    assert main(["port", "lora", str(tiny["lora"]), "--to", str(tiny["dense"]), "--method", "relayout",
                 "--dry-run"]) == 2
    assert "no MoE expert LoRA" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["copy", "project", "distill", "auto"])
@pytest.mark.parametrize("bad", ["--calib", "--prompts", "adapter", "--to"])
def test_bad_paths_are_one_line_exit_2(tiny, tmp_path, capsys, method, bad):
    argv = [str(tiny["lora"]), "--to", str(tiny["other"])] + (["--from", str(tiny["dense"])] if method != "copy"
                                                                else [])
    if bad == "adapter":
        argv[0] = str(tmp_path / "nonexistent")
    elif bad == "--to":
        argv[2] = str(tmp_path / "nonexistent-model")
    else:
        argv += [bad, "/nonexistent"]
    rc = main(["port", "lora", *argv, "--method", method, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("regraft port: error:") and "\n" not in err, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("content,what", [("not json\n", "invalid JSON"), ('{"x": 1}\n', "'prompt'"), ("", "no prompts")])
def test_bad_seed_files_are_named(tiny, tmp_path, capsys, content, what):
    seeds = tmp_path / "s.jsonl"
    seeds.write_text(content)
    rc = main(["port", "lora", str(tiny["lora"]), "--from", str(tiny["dense"]), "--to", str(tiny["other"]),
               "--method", "distill", "--prompts", str(seeds), "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and str(seeds) in err and what in err, err


@pytest.mark.parametrize("argv,what", [
    (["--method", "auto", "--steps", "5"], "distils only with prompts"),
    (["--method", "auto", "--teacher-url", "http://127.0.0.1:9/v1"], "distils only with prompts"),
    (["--method", "distill", "--prompts", "SEEDS", "--keep-generic", "2"], "needs generic text"),
    (["--method", "distill", "--prompts", "SEEDS", "--sample-frac", "0.5", "--teacher-url", "http://127.0.0.1:9"],
     "in-process teacher"),
])
def test_options_that_would_be_unused_in_this_case_are_refused(tiny, files, capsys, argv, what):
    argv = [str(files / "seeds.jsonl") if a == "SEEDS" else a for a in argv]
    rc = main(["port", "lora", str(tiny["lora"]), "--from", str(tiny["dense"]), "--to", str(tiny["other"]), *argv,
               "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and what in err and "\n" not in err.strip(), err


@pytest.mark.parametrize("method", TRAINING)
def test_training_methods_refuse_an_unwritable_output_before_any_work(tiny, files, tmp_path, capsys, method):
    """--out over the input or in a missing folder: refused at once (not after the training), one line, exit 2."""
    argv = ["port", "lora", str(tiny["lora"]), "--from", str(tiny["dense"]), "--to", str(tiny["other"]),
            "--method", method] + (["--prompts", str(files / "seeds.jsonl")] if method != "project" else [])
    for out, what in ((tmp_path / "missing" / "o", "does not exist"), (tiny["lora"] / "o", "Refusing")):
        assert main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert what in err and "\n" not in err.strip(), err


def test_producer_layouts_are_the_relayout_method(tiny, tmp_path, capsys):
    """--layout FROM:TO alone is --method relayout (dry run: nothing written); with another method it is refused."""
    out = tmp_path / "o"
    assert main(["port", "lora", str(tiny["lora"]), "--to", str(tiny["dense"]), "--layout", "peft:mlx-lm",
                 "--dry-run", "--out", str(out), "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["method"] == "relayout" and d["from_layout"] == "peft" and d["to_layout"] == "mlx-lm"
    assert not out.exists()
    assert main(["port", "lora", str(tiny["lora"]), "--to", str(tiny["dense"]), "--layout", "peft:mlx-lm",
                 "--method", "copy", "--out", str(out)]) == 2
    assert "--method relayout" in capsys.readouterr().err and not out.exists()
