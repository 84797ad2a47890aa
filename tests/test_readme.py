"""The README's Python API block runs as written: here on tiny data, with tiny configs swapped in for the
defaults (the default generator alone trains for minutes)."""

import dataclasses
import re
from pathlib import Path

import fairforget
from fairforget.components.dataset import make_toy_dataset, save_dataset
from fairforget.components.generator import tiny_config
from fairforget.components.mia import AuditConfig
from fairforget.components.sisa.model import SisaConfig
from fairforget.components.training import TrainConfig

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_block() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    save_dataset(make_toy_dataset(per_class_other=80), tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fairforget, "GeneratorConfig", tiny_config)
    monkeypatch.setattr(fairforget, "SisaConfig", lambda: SisaConfig(
        num_shards=2, num_slices=2, executor="serial", train=TrainConfig(epochs=2, batch_size=16)))
    monkeypatch.setattr(fairforget, "LoopConfig", lambda **kw: fairforget.components.forgetting.LoopConfig(
        **{**kw, "iterations": 2, "forget_rate": 0.15}))
    tiny_audit = dataclasses.replace(AuditConfig(), num_augmentations=2, num_bootstrap=10, show_progress=False,
                                     reference_models=1)
    original_loop = fairforget.ForgettingLoop
    monkeypatch.setattr(fairforget, "ForgettingLoop", lambda **kw: original_loop(**kw, audit_config=tiny_audit))
    monkeypatch.setattr(fairforget, "train_reference_ensembles", lambda *a, **kw: fairforget.components.mia.reference
                        .train_reference_ensembles(*a, **{**kw, "num_models": 1}))

    namespace: dict = {}
    exec(compile(python_api_block(), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "bias/kl/superclass" in printed and "iteration 0: acc/test" in printed
    result = namespace["result"]
    assert [outcome.iteration for outcome in result.outcomes] == [1, 2]
    assert result.outcomes[-1].originals_forgotten > 0 and result.outcomes[-1].canaries is not None
    assert (tmp_path / "outputs" / "api" / "sisa" / "plan.csv").is_file()


def test_the_public_api_is_importable_and_listed():
    assert fairforget.__all__ and len(set(fairforget.__all__)) == len(fairforget.__all__)
    for name in fairforget.__all__:
        assert getattr(fairforget, name).__doc__, f"{name} has no docstring"


def test_the_entry_point_table_is_the_one_the_parsers_write_and_the_readme_stays_short():
    """``python -m tools.entry_points --write`` regenerates the table from MLproject and the parsers; a parameter or
    a help text changed without it fails here."""
    from tools.entry_points import END, START, table

    text = README.read_text()
    assert text.split(START, 1)[1].split(END, 1)[0].strip() == table()
    assert len(text.splitlines()) <= 200
