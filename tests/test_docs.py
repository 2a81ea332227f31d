"""The docs cannot drift from the code.

Fast checks: docs/reference.md is what ``scripts/gen_docs.py`` generates from the config
schema and the parsers; code excerpts still appear in the source; every ``rollfit``
command, flag and config key the docs name exists; links stay inside the repository; the
docs do not speak of "the seed". The slow check runs every command the README and the
guide show, on the demo data, and compares what they print with what the docs show.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from rollfit.config import load_config

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
gen_docs = importlib.util.module_from_spec(_spec)
sys.modules["gen_docs"] = gen_docs
_spec.loader.exec_module(gen_docs)

HAND_WRITTEN = ["README.md", "docs/guide.md", "docs/design.md", "docs/format.md", "benchmarks/RESULTS.md"]
ALL_DOCS = HAND_WRITTEN + ["docs/reference.md"]


def _text(path: str) -> str:
    return (ROOT / path).read_text()


# ------------------------------------------------------------------ generated and excerpted text

def test_reference_page_is_current():
    assert _text("docs/reference.md") == gen_docs.reference_text(), \
        "docs/reference.md is out of date; run: python scripts/gen_docs.py --no-run"


def test_reference_lists_every_config_key_and_command():
    from rollfit.config import SECTIONS

    page = _text("docs/reference.md")
    for section, cls in SECTIONS.items():
        for name in cls.model_fields:
            assert f"| `{section}.{name}` |" in page
    for name in _subparsers():
        assert f"### `rollfit {name}`" in page


def test_code_excerpts_still_appear_in_the_source():
    assert gen_docs.check_excerpts() == []


def test_excerpt_check_notices_a_changed_excerpt(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / "mod.py").write_text("def f():\n    return 1\n")
    doc = "<!-- source:mod.py:start -->\n```python\ndef f():\n    return {}\n```\n<!-- source:mod.py:end -->\n"
    (tmp_path / "docs" / "design.md").write_text(doc.format(1))
    monkeypatch.setattr(gen_docs, "ROOT", tmp_path)
    monkeypatch.setattr(gen_docs, "EXCERPT_FILES", ["docs/design.md"])
    assert gen_docs.check_excerpts() == []
    (tmp_path / "docs" / "design.md").write_text(doc.format(2))
    [problem] = gen_docs.check_excerpts()
    assert problem.startswith("docs/design.md: source:mod.py: expected the excerpt verbatim in mod.py")


def test_every_doc_has_its_blocks_well_formed():
    for path in ALL_DOCS:
        for block in gen_docs.find_blocks(path):
            code = block.code
            if block.kind == "output":
                steps = gen_docs.parse_output_block(code)
                assert steps and all(s.command.strip() for s in steps), (path, block.name)


# ------------------------------------------------------------------ comparing printed text

def test_numbers_compare_to_the_tolerance_and_text_exactly():
    eq = gen_docs.lines_match
    assert eq("rmse  3.921  r2 0.4797", "rmse 3.95 r2  0.48", 0.05, 1e-6)        # spaces and numbers
    assert not eq("rmse 3.921", "rmse 4.5", 0.05, 1e-6)                         # beyond rtol
    assert not eq("rmse 3.921", "mae 3.921", 0.05, 1e-6)                        # text differs
    assert not eq("trained on 376 rows", "trained on 377 rows", 0.05, 1e-6)     # integers exactly
    assert eq("lhs - rhs 0", "lhs - rhs -2.22045e-16", 0.05, 1e-6)              # atol near zero
    assert not eq("ep_003000.ckpt", "ep_003001.ckpt", 0.05, 1e-6)               # digits inside names are text
    assert eq("cot_ma15 54.95", "cot_ma15 54.97", 0.05, 1e-6)


def test_ellipsis_stands_for_any_lines_and_is_kept_when_regenerating():
    shown = ["first 1.0", "...", "last 2.0"]
    printed = ["first 1.01", "a", "b", "last 2.01"]
    eq = lambda a, b: gen_docs.lines_match(a, b, 0.05, 1e-6)  # noqa: E731
    assert gen_docs.align(shown, printed, eq) == ["first 1.01", "...", "last 2.01"]
    assert gen_docs.align(shown, ["first 1.0", "last 2.0"], eq) is not None
    assert gen_docs.align(shown, ["first 1.0", "a"], eq) is None
    assert gen_docs.align(["only"], ["only", "extra"], eq) is None
    assert gen_docs.align(["x 1.0"], ["x 9.0"], gen_docs.same_shape) == ["x 9.0"]


def test_output_blocks_parse_commands_with_continuations():
    code = "$ rollfit a \\\n    --b c\nout 1\n$ cat f\nline\n"
    steps = gen_docs.parse_output_block(code)
    assert [s.command for s in steps] == ["rollfit a \\\n    --b c", "cat f"]
    assert [s.shown for s in steps] == [["out 1"], ["line"]]
    assert gen_docs.render_output_block(steps) == "```console\n" + code + "```\n"


def test_printed_text_keeps_what_a_terminal_shows_without_progress_bars():
    text = ("\ncv:   0%|          | 0/3 [00:00<?, ?fold/s]\rcv:  33%|###       | 1/3 [00:30<01:01, 30.99s/fold]\n"
            "metrics on 75 rows\n\n50% done | not a bar\nold\rnew\n\n")
    assert gen_docs.printed_lines(text) == ["metrics on 75 rows", "", "50% done | not a bar", "new"]


# ------------------------------------------------------------------ names the docs use

def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from rollfit.cli.main import build_parser, visible_commands

    return visible_commands(build_parser())  # hidden deprecated aliases are not documented


def _command_mentions(text: str) -> list[tuple[str, list[str]]]:
    """(subcommand, flags) of each ``rollfit CMD ...`` in code blocks and inline code."""
    found = []
    fence = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
    shell = [body for lang, body in fence.findall(text) if lang in ("bash", "console", "text", "sh", "")]
    inline = re.findall(r"`([^`\n]+)`", fence.sub("", text))
    code = "\n".join(shell + inline)
    code = code.replace("\\\n", " ")
    for m in re.finditer(r"(?:^|[\s$(])rollfit (?!import\b)([a-z][a-z0-9-]*)([^\n]*)", code, re.M):
        rest = re.sub(r"(\"[^\"]*\"|'[^']*')", "", m.group(2))
        rest = rest.split("#")[0].split("|")[0].split(";")[0].split("&&")[0]
        found.append((m.group(1), re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest)))
    return found


@pytest.mark.parametrize("path", HAND_WRITTEN)
def test_every_command_and_flag_the_docs_name_exists(path):
    parsers = _subparsers()
    wrong = []
    for cmd, flags in _command_mentions(_text(path)):
        if cmd not in parsers:
            wrong.append(f"rollfit {cmd}")
            continue
        known = {o for a in parsers[cmd]._actions for o in a.option_strings}
        wrong += [f"rollfit {cmd} {f}" for f in flags if f not in known]
    assert wrong == []


CONFIG_KEY = re.compile(r"(?<![\w.])(data|model|trainer)\.([a-z_]+)\b(?!\()")  # not method calls


@pytest.mark.parametrize("path", HAND_WRITTEN)
def test_every_config_key_the_docs_name_exists(path):
    from rollfit.config import SECTIONS

    wrong = []
    text = re.sub(r"<!-- output:(\S+):start.*?<!-- output:\1:end -->", "", _text(path), flags=re.S)
    for line in text.splitlines():       # output blocks are run instead (one shows a typo on purpose)
        for section, key in CONFIG_KEY.findall(line):
            if key not in SECTIONS[section].model_fields and "deprecated" not in line:
                wrong.append(f"{section}.{key}")
    assert wrong == []


# ------------------------------------------------------------------ layout, links, wording

def test_docs_layout():
    assert sorted(p.name for p in (ROOT / "docs").glob("*.md")) == ["design.md", "format.md", "guide.md",
                                                                    "reference.md"]
    assert sorted(p.name for p in (ROOT / "benchmarks").glob("*.md")) == ["RESULTS.md"]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@pytest.mark.parametrize("path", ALL_DOCS)
def test_links_point_inside_the_repository_and_resolve(path):
    text = _text(path)
    base = (ROOT / path).parent
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (base / file).resolve() if file else (ROOT / path)
        if ROOT.resolve() not in dest.parents and dest != ROOT.resolve() or not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md":
            slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), re.M)}
            if anchor not in slugs:
                broken.append(target)
    assert broken == []


@pytest.mark.parametrize("path", ALL_DOCS)
def test_every_doc_file_the_docs_name_exists(path):
    """Paths such as docs/speed.md in text (CLI help and config descriptions included)."""
    named = set(re.findall(r"(?<![\w/.])((?:docs|benchmarks)/[\w./-]+\.(?:md|png|py|sh))", _text(path)))
    assert sorted(p for p in named if not (ROOT / p).exists()) == []


def test_benchmark_commands_name_existing_scripts_and_flags():
    """Every ``python benchmarks/X.py --flag`` in RESULTS.md runs a script that takes the flag."""
    commands = re.findall(r"python (benchmarks/[\w]+\.py)([^`\n]*)", _text("benchmarks/RESULTS.md"))
    assert commands
    wrong = []
    for script, rest in commands:
        source = (ROOT / script).read_text() if (ROOT / script).exists() else ""
        wrong += [f"{script} {flag}" for flag in [script] + re.findall(r"--[a-z][a-z-]*", rest)
                  if not source or (flag.startswith("--") and f'"{flag}"' not in source)]
    assert wrong == []


SEED_WORDING = re.compile(r"\bthe seed\b(?! (of|for|to|value|argument))|\bseed's\b|\bSEED\.md\b|\bseed config\b", re.I)


@pytest.mark.parametrize("path", ALL_DOCS)
def test_docs_do_not_speak_of_the_seed(path):
    """The original pipeline's config is "the example config", never "the seed" (the
    reference page included: CLI help and config descriptions are user-facing too)."""
    assert [line for line in _text(path).splitlines() if SEED_WORDING.search(line)] == []


def test_example_config_is_the_original_pipelines_config_and_valid():
    cfg = load_config(ROOT / "examples" / "seed_config.yaml")
    assert cfg.trainer.max_epochs == 10002 and cfg.model.layers == [64, 32] and cfg.data.out_lbl == ["cot_ma15"]


# ------------------------------------------------------------------ the design doc's new activation

ACTIVATION_CHECK = """
import torch
from rollfit.config import load_config
from rollfit.model.network import RegressionNet
from rollfit.model.registry import ACTIVATIONS

act = ACTIVATIONS["softplus"]
z = torch.linspace(-6, 6, 101, dtype=torch.float64, requires_grad=True)
(d1,) = torch.autograd.grad(act.value(z).sum(), z, create_graph=True)
(d2,) = torch.autograd.grad(d1.sum(), z)
value, p1, p2 = act.parts(z.detach(), True)
assert torch.allclose(value, act.value(z.detach())) and torch.allclose(p1, d1) and torch.allclose(p2, d2)
cfg = load_config(None, ["model.activation=softplus"])
assert cfg.model.activation == "softplus"
print("ok")
"""


def test_design_doc_activation_example_is_one_working_entry():
    """The design doc's softplus block, run before anything else: derivatives and config accept it."""
    import subprocess

    block = re.search(r"<!-- example:activation:start -->\n```python\n(.*?)```", _text("docs/design.md"), re.S)
    assert block, "docs/design.md: expected the example:activation block"
    proc = subprocess.run([sys.executable, "-c", block.group(1) + ACTIVATION_CHECK],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


ACTIVATION_END_TO_END = """
import sys
from pathlib import Path
from rollfit.config import load_config
from rollfit.data.synthetic import make_demo_file
from rollfit.export import export
from rollfit.pipeline.run import train

tmp = Path(sys.argv[1])
cfg = load_config(None, ["model.activation=softplus", "model.layers=[8,8]", "trainer.max_epochs=30",
                         "trainer.progress=false", "trainer.report=false", "data.cache=false"])
cfg.data.hdf5_path = str(make_demo_file(tmp / "data.h5", n=60, seed=0))
run = train(cfg, tmp / "run")
assert all(v == v for v in run.metrics.values()), run.metrics
result = export(run.run_dir, "c", tmp / "net.h")
assert result.max_rel_error < 1e-5 and "log1pf(expf(z))" in (tmp / "net.h").read_text()
print("ok")
"""


@pytest.mark.slow
def test_design_doc_activation_trains_and_exports(tmp_path):
    """The same entry, end to end: the fused step trains with it and the C header computes it."""
    import shutil
    import subprocess

    if not shutil.which("cc") and not shutil.which("gcc"):
        pytest.skip("no C compiler")
    block = re.search(r"<!-- example:activation:start -->\n```python\n(.*?)```", _text("docs/design.md"), re.S)
    proc = subprocess.run([sys.executable, "-c", block.group(1) + ACTIVATION_END_TO_END, str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


# ------------------------------------------------------------------ the commands themselves

@pytest.mark.slow
def test_every_command_the_docs_show_runs_and_prints_what_they_show(tmp_path):
    """Runs the README's and the guide's commands and Python on the demo data (~2-4 min)."""
    problems = gen_docs.run_docs(update=False, folder=tmp_path)
    assert problems == [], "\n\n".join(problems)
