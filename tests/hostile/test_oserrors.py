"""A full disk, a read-only folder, a permission error, in every writer and at each stage (while the files are
written and flushed, at the commit): one `regraft CMD: error:` line, exit 2, no output and no temporary file left,
inputs unchanged. `regraft index` leaves no partial store when its first run fails."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hostile._files import tree_hashes

WRITERS = {
    "port-lora": ["port", "lora", "{lora}", "--to", "{sib}", "--runtime", "vllm", "--no-drift", "--out", "{out}"],
    "port-lora-gguf": ["port", "lora", "{v4}", "--to", "{moe}", "--runtime", "llama.cpp", "--no-drift", "--out",
                       "{out}.gguf"],
    "port-config": ["port", "config", "{vllm}", "--to", "{sib}", "--out", "{out}.yaml"],
    "port-rag": ["port", "rag", "{rag}", "--to", "{sib}", "--out", "{out}.yaml"],
    "drift-plot": ["drift", "{dense}", "{sib}", "--plot", "{out}.html"],
}
ERRNOS = [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT]
STAGES = ["flush", "commit"]


def _inject(monkeypatch, stage: str, code: int) -> None:
    def fail(*a, **kw):
        raise OSError(code, os.strerror(code), str(a[-1]) if a and not isinstance(a[-1], int) else None)

    if stage == "flush":
        monkeypatch.setattr(os, "fsync", fail)
    else:
        monkeypatch.setattr(os, "replace", fail)
        monkeypatch.setattr(os, "rename", fail)


@settings(max_examples=10 if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci" else settings().max_examples)
@given(name=st.sampled_from(sorted(WRITERS)), stage=st.sampled_from(STAGES), code=st.sampled_from(ERRNOS))
def test_write_errors_are_one_line_and_leave_nothing(world, tmp_path_factory, capsys, name, stage, code):
    from regraft.cli.main import main

    d = tmp_path_factory.mktemp("oserr")
    argv = [a.format(out=d / "out", **{k: str(v) for k, v in world.items()}) for a in WRITERS[name]]
    before = tree_hashes(world["root"])
    with pytest.MonkeyPatch.context() as mp:
        _inject(mp, stage, code)
        rc = main(argv)
    _, err = capsys.readouterr()
    assert tree_hashes(world["root"]) == before
    if rc == 0:  # this writer does not reach the injected call at this stage (e.g. no fsync): it must be complete
        assert stage == "flush", (argv, err)
        return
    assert rc == 2, (argv, err)
    assert err.strip().startswith("regraft ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert os.strerror(code) in err, err
    assert sorted(os.listdir(d)) == [], f"{name} left {os.listdir(d)} after {os.strerror(code)} at {stage}"


def test_index_first_run_failure_leaves_no_store(world, tmp_path, capsys, monkeypatch):
    pytest.importorskip("lancedb")
    from regraft.cli.main import main
    from regraft.hybrid import embed

    real = embed.get_embedder

    def failing(name):
        e = real(name)

        class Full:
            def __getattr__(self, k):
                return getattr(e, k)

            def embed(self, *a, **kw):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "kb"))

        return Full()

    monkeypatch.setattr(embed, "get_embedder", failing)
    rc = main([str(a) for a in ["index", world["docs"], "--store", tmp_path / "kb", "--embedder", "hashing-16",
                                "--no-progress"]])
    _, err = capsys.readouterr()
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "No space left" in err, err
    assert not (tmp_path / "kb").exists(), "a failed first run left a partial store"
