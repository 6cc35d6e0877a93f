"""Issue 18, what a newcomer meets in the first hour: stage names and outputs, every error with
spelling suggestions, fingerprints of the resolved spec, search configs as documents (validate,
summary, schema; every shipped file against the JSON Schema), the CLI's conveniences, and the
import-name conflict check. CLI tests run the command line as users do (a subprocess)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import archspec
from archspec import SpecError
from tests.conftest import ROOT, cli_in_process

EXAMPLES = sorted(ROOT.glob("examples/**/*.yaml"))
DILATED = ROOT / "examples" / "backbones" / "dilated_3stage.yaml"


def cli(*args: str, env: dict | None = None, process: bool = False) -> subprocess.CompletedProcess:
    """`archspec ARGS` in this process (the CLI's entry point), or with `process` as users run it
    (`python -m archspec`): for what depends on the process itself (the module entry point, a
    pipe's width and colours, a native library's own log on stderr)."""
    environment = {"COLUMNS": "80", **(env or {})}
    if not process:
        return cli_in_process(*args, env=environment)
    return subprocess.run([sys.executable, "-m", "archspec", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **environment}, timeout=600)


def three_stage(**changes) -> dict:
    """The issue's case: a 3-stage ResNet-like spec whose last stage is dilated at stride 1."""
    doc = {"type": "staged", "name": "three",
           "stem": [{"type": "conv", "out_channels": 32, "kernel": 3, "stride": 2}],
           "stages": [{"block": {"type": "basic"}, "depth": 1, "out_channels": 64},
                      {"block": {"type": "basic"}, "depth": 1, "out_channels": 128},
                      {"block": {"type": "basic", "dilation": 2}, "depth": 1, "out_channels": 256, "stride": 1}]}
    doc.update(changes)
    return doc


def error_of(doc) -> SpecError:
    with pytest.raises(SpecError) as info:
        archspec.validate(doc)
    return info.value


# -- 1. stage names and outputs --------------------------------------------------------------------
def test_the_dilated_example_exposes_all_three_stages():
    from archspec.compiler import summarize

    spec = archspec.load(DILATED)
    assert [stage.name for stage in spec.stages] == ["res2", "res3", "res4_dilated"]
    outputs = summarize(spec, (224, 224))["outputs"]
    assert {name: (o["channels"], o["stride"]) for name, o in outputs.items()} == {
        "res2": (64, 4), "res3": (128, 8), "res4_dilated": (256, 8)}


def test_outputs_refer_to_stages_by_name_and_levels_stay_where_they_are():
    doc = three_stage()
    doc["stages"][1]["name"] = "mid"
    spec = archspec.validate({**doc, "outputs": ["C2", "mid", "C3"]})
    layers = spec.output_layers()
    assert layers["mid"].stage == 1 and layers["C3"].stage == 2 and layers["C2"].stage == 0
    from archspec.compiler import build
    import torch

    out = build(spec)(torch.zeros(1, 3, 64, 64))
    assert list(out) == ["C2", "mid", "C3"]
    assert out["mid"].shape == (1, 128, 8, 8) and out["C3"].shape == (1, 256, 8, 8)


def test_unknown_names_list_every_level_reached_and_the_default_starts_at_c2():
    error = error_of(three_stage(outputs=["C2", "C3", "C4"]))
    assert error.path == "outputs[2]"
    assert error.message == "no output named 'C4'; available: C1, C2, C3"  # C1: the stride-2 stem conv
    assert archspec.validate(three_stage()).output_names() == ["C2", "C3"]
    assert archspec.validate(three_stage(outputs=["C1", "C3"])).output_names() == ["C1", "C3"]


def test_stage_names_are_unique_and_do_not_shadow_levels():
    doc = three_stage()
    doc["stages"][0]["name"] = "C3"
    doc["stages"][1]["name"] = "a"
    doc["stages"][2]["name"] = "a"
    issues = [str(i) for i in error_of(doc).issues]
    assert issues == ["stages[0].name: 'C3' is reserved for levels and the head (C<k>, P<k>, logits); choose another name",
                      "stages[2].name: 'a' is also the name of stages[1]"]


def test_stage_names_must_be_identifiers():
    doc = three_stage()
    doc["stages"][0]["name"] = "res 2"
    assert error_of(doc).path == "stages[0].name"


# -- 2. every error, with suggestions ----------------------------------------------------------------
def test_every_problem_is_reported_and_a_typo_is_named():
    doc = three_stage()
    del doc["stem"][0]["out_channels"]
    doc["stages"][1]["deph"] = doc["stages"][1].pop("depth")
    doc["stages"][2]["block"]["type"] = "basc"
    doc["stages"][0]["dilations"] = ["x"]
    error = error_of(doc)
    assert [str(i) for i in error.issues] == [
        "stem[0].out_channels: required field is missing",
        "stages[0].dilations[0]: Input should be a valid integer",
        "stages[1].deph: unknown field; did you mean 'depth' (a required field that is missing)?",
        "stages[2].block.type: unknown kind 'basc' (did you mean 'basic'?); expected one of 'conv', 'basic', 'bottleneck', "
        "'inverted_residual', 'shufflenet_v2', 'shuffle_xception', 'k1kx', 'k1kxk1'",
    ]
    assert str(error).count("\n") == 3


def test_an_unknown_field_with_a_close_known_name_gets_a_suggestion():
    doc = three_stage()
    doc["stem"][0]["kernal"] = 5
    assert str(error_of(doc)) == "stem[0].kernal: unknown field; did you mean 'kernel'?"


def test_a_value_fitting_no_member_of_a_union_is_one_line_without_pydantic_labels():
    doc = {"type": "detector", "backbone": three_stage(), "head": {"type": "fcos"}, "num_classes": 3,
           "neck": {"type": "fpn", "in_features": ["C2", "C3"], "min_level": 2}, "input_size": "big"}
    assert str(error_of(doc)) == "input_size: should be an integer or a list"


def test_errors_are_capped_with_a_count_of_the_rest():
    from archspec.errors import MAX_SHOWN_ISSUES

    doc = three_stage()
    doc["stages"] = [{"block": {"type": "basic"}} for _ in range(15)]  # 2 missing fields each
    error = error_of(doc)
    assert len(error.issues) == 30
    lines = str(error).splitlines()
    assert len(lines) == MAX_SHOWN_ISSUES + 1 and lines[-1] == "... and 10 more problems"


def test_cli_prints_every_problem_with_file_and_exits_2(tmp_path):
    doc = three_stage()
    doc["stages"][1]["deph"] = doc["stages"][1].pop("depth")
    doc["stages"][2]["out_channels"] = -1
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = cli("validate", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"error: {path}: stages[1].deph: unknown field; did you mean 'depth' (a required field that is missing)?",
        f"error: {path}: stages[2].out_channels: Input should be greater than or equal to 1"]


# -- 4. fingerprints of the resolved spec --------------------------------------------------------------
def test_fingerprint_is_the_same_whether_outputs_are_written_or_defaulted():
    defaulted = archspec.validate(three_stage())
    written = archspec.validate(three_stage(outputs=defaulted.output_names()))
    assert defaulted.outputs is None and written.outputs == ["C2", "C3"]
    assert archspec.fingerprint(defaulted) == archspec.fingerprint(written)
    other = archspec.validate(three_stage(outputs=["C3"]))
    assert archspec.fingerprint(other) != archspec.fingerprint(defaulted)


def test_fingerprint_of_a_detector_ignores_its_backbones_name_and_defaults():
    base = {"type": "detector", "head": {"type": "fcos"}, "num_classes": 3,
            "neck": {"type": "fpn", "in_features": ["C2", "C3"], "min_level": 2, "max_level": 4}}
    one = archspec.validate({**base, "backbone": three_stage()})
    two = archspec.validate({**base, "backbone": three_stage(name="renamed", outputs=["C2", "C3"])})
    assert archspec.fingerprint(one) == archspec.fingerprint(two)


def test_unnamed_stages_hash_as_before_stage_names_existed():
    # The pinned value is ResNet-18's fingerprint from before stage names (and before outputs
    # were resolved): the zoo's fingerprints must not move.
    assert archspec.fingerprint(archspec.load(ROOT / "examples/backbones/resnet18.yaml")) == "68365dd291d01221"
    named = copy.deepcopy(three_stage())
    named["stages"][0]["name"] = "first"
    assert archspec.fingerprint(archspec.validate(named)) != archspec.fingerprint(archspec.validate(three_stage()))


# -- 3. search configs are first-class documents; the schema matches the loader -----------------------
def test_validate_accepts_every_shipped_file_search_configs_included():
    result = cli("validate", *map(str, EXAMPLES))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(EXAMPLES) == 38 and all(line.startswith("ok: ") for line in lines)
    assert sum("(search " in line for line in lines) == 9 and sum("(detector " in line for line in lines) == 5
    assert sum("(template of " in line for line in lines) == 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_file_validates_against_the_json_schema(path):
    import jsonschema

    from archspec.io import parse_text

    validator = jsonschema.Draft202012Validator(archspec.json_schema())
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(parse_text(path.read_text()))]
    assert errors == []


@pytest.mark.parametrize("change, words", [
    ({"head": {"type": "classifier"}}, "head.type"),
    ({"head": {"type": "fcos", "channel": 64}}, "head.channel"),
    ({"backbone": 7}, "backbone"),
])
def test_the_schema_rejects_what_the_loader_rejects_in_a_detector(change, words):
    import jsonschema

    doc = {"type": "detector", "backbone": "../backbones/resnet18.yaml", "head": {"type": "retinanet"},
           "num_classes": 3}
    assert jsonschema.Draft202012Validator(archspec.json_schema()).is_valid(doc)
    assert archspec.validate(doc, base_dir=ROOT / "examples" / "detectors").head.type == "retinanet"
    bad = {**doc, **change}
    assert not jsonschema.Draft202012Validator(archspec.json_schema()).is_valid(bad)
    with pytest.raises(SpecError) as info:
        archspec.validate(bad, base_dir=ROOT / "examples" / "detectors")
    assert words in str(info.value)


def test_the_schema_describes_search_configs_with_an_inline_or_file_base():
    import jsonschema

    validator = jsonschema.Draft202012Validator(archspec.json_schema())
    config = {"type": "search", "base": "resnet18.yaml", "space": {"type": "crnas"},
              "strategy": {"type": "crnas_two_step"}}
    assert validator.is_valid(config)
    assert validator.is_valid({**config, "base": three_stage()})
    assert not validator.is_valid({**config, "base": {"type": "detector"}})
    assert not validator.is_valid({**config, "strategy": {"type": "annealing"}})
    with pytest.raises(SpecError, match="strategy.type: unknown kind 'annealing'; expected one of"):
        archspec.validate_document({**config, "strategy": {"type": "annealing"}}, base_dir=ROOT / "examples/backbones")
    assert archspec.validate_document(config, base_dir=ROOT / "examples/backbones").type == "search"


def test_a_search_config_is_named_by_the_spec_loader_not_called_an_unknown_kind():
    with pytest.raises(SpecError, match="a search config, not a spec"):
        archspec.load(ROOT / "examples/search/crnas_resnet50.yaml")


def test_summary_of_a_search_config_shows_the_search_and_its_base_at_the_budget_size():
    result = cli("summary", "examples/search/crnas_resnet50.yaml", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["search"]["name"] == "crnas_resnet50" and info["search"]["space"]["type"] == "crnas"
    assert info["base"] == {"name": "resnet50", "type": "staged"}
    assert info["input_size"] == [800, 800] and info["params"] == 23508032
    text = cli("summary", "examples/search/crnas_resnet50.yaml").stdout
    assert text.startswith("crnas_resnet50 (search)") and "resnet50 (staged" in text


# -- 5. the CLI where people reach for it ------------------------------------------------------------------
def test_python_dash_m_archspec_runs_the_cli():
    result = cli("--help", process=True)
    assert result.returncode == 0 and "validate" in result.stdout and "search" in result.stdout


def test_set_overrides_a_field_typed_as_yaml():
    r18 = "examples/backbones/resnet18.yaml"
    plain = json.loads(cli("summary", r18, "--json").stdout)
    changed = cli("summary", r18, "--json", "--set", "stages[3].depth=1", "--set", "outputs=[C4, C5]")
    assert changed.returncode == 0, changed.stderr
    info = json.loads(changed.stdout)
    doc = yaml.safe_load((ROOT / r18).read_text())
    doc["stages"][3]["depth"] = 1
    doc["outputs"] = ["C4", "C5"]
    from archspec.compiler import summarize

    assert info["params"] == summarize(archspec.validate(doc))["params"] < plain["params"]
    assert list(info["outputs"]) == ["C4", "C5"]


@pytest.mark.parametrize("override, line", [
    ("stages[9].depth=2", "stages[9].depth: --set: stages has 4 items, so there is no [9]"),
    ("stages[1].depth=0", "stages[1].depth: Input should be greater than or equal to 1"),
    ("stages[1].deph=3", "stages[1].deph: unknown field; did you mean 'depth'?"),
    ("stages[1]depth=3", "--set stages[1]depth: cannot read the key path at 'depth'"),
])
def test_set_errors_name_the_key_path(override, line):
    result = cli("validate", "examples/backbones/resnet18.yaml", "--set", override)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: examples/backbones/resnet18.yaml: {line}"), result.stderr


def test_set_values_are_typed_by_yaml_scalar_parsing():
    from archspec.overrides import apply_overrides

    data = apply_overrides({"budgets": {}}, ["budgets.max_flops=3e9", "budgets.input_size=480", "a.b=true",
                                             "a.c=null", "a.d=[C3, C4]", "a.e=relu"])
    assert data == {"budgets": {"max_flops": 3e9, "input_size": 480},
                    "a": {"b": True, "c": None, "d": ["C3", "C4"], "e": "relu"}}
    assert isinstance(data["budgets"]["input_size"], int)


@pytest.mark.parametrize("value, problem", [
    ("[" * 101 + "]" * 101, "nested more than 100 levels deep"),
    ("{a: 1, a: 2}", "duplicate key 'a'"),
])
def test_set_values_are_refused_like_spec_files(value, problem):
    """`--set` values go through the spec files' YAML loader: its depth limit and duplicate keys."""
    from archspec.errors import SpecError
    from archspec.overrides import parse_value

    with pytest.raises(SpecError, match=problem):
        parse_value(value, "a.b")


def test_set_values_parse_like_spec_files():
    """Aliases within the node budget, nesting at the limit and YAML 1.2 numbers, as in spec files."""
    from archspec.overrides import parse_value

    assert parse_value("[&a [1, 1], *a, *a, *a]") == [[1, 1]] * 4
    assert parse_value("[" * 100 + "]" * 100) is not None
    assert parse_value("1:04") == "1:04"


def test_search_takes_set_and_a_resume_must_repeat_it(tmp_path):
    config = "examples/search/crnas_resnet50.yaml"
    out = tmp_path / "run"
    first = cli("search", config, "--out", str(out), "--max-trials", "3", "--set", "budgets.input_size=224")
    assert first.returncode == 0, first.stderr
    again = cli("search", config, "--out", str(out), "--max-trials", "3", "--resume")
    assert again.returncode == 2 and "the search config (budgets) changed" in again.stderr
    same = cli("search", config, "--out", str(out), "--max-trials", "3", "--resume", "--set", "budgets.input_size=224")
    assert same.returncode == 0, same.stderr


def test_ctrl_c_names_the_exact_resume_command(tmp_path):
    # The search is interrupted from inside (SIGINT raised in the process itself as the search
    # starts), so the test does not depend on timing: signal.raise_signal runs the handler before
    # it returns, where os.kill's signal may reach another thread and the handler a few bytecodes
    # later (on a busy machine, after the CLI went on to read the run's outputs). Python's SIGINT
    # handler is installed explicitly: a shell's background job inherits SIGINT ignored, and Python
    # then installs none. It runs in its own folder, so two test runs at once never share a runs/x.
    script = (
        "import signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "import archspec.search.run as run\n"
        "run.run_search = lambda *a, **k: signal.raise_signal(signal.SIGINT)\n"
        "from archspec.cli import main\n"
        "sys.argv = ['archspec', 'search', 'my config.yaml', '--out', 'runs/x', '--max-trials', '50']\n"
        "main(sys.argv[1:])\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines()[-2:] == [
        "interrupted; continue with:", "  archspec search 'my config.yaml' --out runs/x --max-trials 50 --resume"]


def test_resume_command_keeps_the_arguments_and_adds_resume_once():
    from archspec.cli.options import resume_command

    assert resume_command("train", ["-m", "archspec", "train", "a.yaml", "--out", "r"]) == \
        "archspec train a.yaml --out r --resume"
    assert resume_command("train", ["train", "a.yaml", "--resume"]) == "archspec train a.yaml --resume"


def test_output_fits_80_columns_in_a_pipe_without_split_words_or_colour_codes():
    result = cli("summary", "examples/backbones/resnet18.yaml", "examples/backbones/spinenet49.yaml",
                 "examples/search/crnas_resnet50.yaml", process=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "\x1b[" not in result.stdout
    header = " ".join(line for line in lines[:6])
    for word in ("spec", "type", "params", "GMACs", "outputs:", "ch/stride", "RF", "(last)"):
        assert f" {word} " in header, (word, header)


def test_a_search_in_a_pipe_prints_no_progress_bar(tmp_path):
    result = cli("search", "examples/search/crnas_resnet50.yaml", "--out", str(tmp_path / "s"), "--max-trials", "2",
                 process=True)
    assert result.returncode == 0, result.stderr
    assert "━" not in result.stderr + result.stdout and "\x1b[" not in result.stderr + result.stdout


# -- 9. the import name ---------------------------------------------------------------------------------
def test_spacks_archspec_beside_this_one_is_explained_at_import(tmp_path):
    (tmp_path / "archspec" / "cpu").mkdir(parents=True)
    (tmp_path / "archspec" / "cpu" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    result = subprocess.run([sys.executable, "-c", "import archspec; print(archspec.load.__module__)"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "archspec.io"
    assert "ImportNameConflict" in result.stderr and "Spack's CPU-microarchitecture library" in result.stderr
    assert str(tmp_path / "archspec") in result.stderr


def test_no_conflict_warning_when_only_this_archspec_is_installed():
    result = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", "import archspec"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0 and result.stderr == ""


# -- 6. training defaults, detection pictures, TensorBoard ----------------------------------------------
def test_warm_up_is_capped_so_a_short_run_reaches_the_peak_rate():
    from archspec.detection.train import TrainOptions, lr_schedule, warmup_steps

    short = TrainOptions(epochs=2, learning_rate=2e-3)
    total = 2 * 16  # --epochs 2 of 16 steps: the issue's run never left the 100-step warm-up
    assert warmup_steps(short, total) == 8
    factors = [lr_schedule(warmup_steps(short, total), total)(step) for step in range(total)]
    assert max(factors) == 1.0 and factors.index(1.0) == 7 and factors[-1] < 0.1
    assert warmup_steps(TrainOptions(), 100_000) == 100  # long runs keep their warm-up


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from archspec.detection.synthetic import synthesize

    root = tmp_path_factory.mktemp("synth")
    synthesize(root, num_train=4, num_val=2, seed=1)
    return root


def test_a_resumed_training_says_so_and_from_which_epoch(tiny_data, tmp_path):
    args = ["train", "examples/detectors/fcos_tiny.yaml", "--data", str(tiny_data), "--out", str(tmp_path / "run"),
            "--batch-size", "4", "--max-steps-per-epoch", "1"]
    first = cli(*args, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    assert "resumed" not in first.stderr
    second = cli(*args, "--epochs", "2", "--resume")
    assert second.returncode == 0, second.stderr
    assert f"resumed {tmp_path / 'run' / 'last.pt'}: 1 of 2 epochs done, continuing at epoch 2" in second.stderr
    assert len((tmp_path / "run" / "history.jsonl").read_text().splitlines()) == 2


def test_training_logs_to_tensorboard_when_it_is_installed(tiny_data, tmp_path, monkeypatch):
    import types

    from archspec.detection.train import TrainOptions, train

    written: list[tuple[str, float, int]] = []

    class Writer:  # stands in for torch.utils.tensorboard.SummaryWriter (the extra is optional)
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            written.append(("closed", 0.0, 0))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    options = TrainOptions(epochs=1, batch_size=4, max_steps_per_epoch=1)
    result = train(archspec.load(ROOT / "examples/detectors/fcos_tiny.yaml"), tiny_data, tmp_path / "run", options,
                   progress=False)
    record = result.history[0]
    tags = {tag: (value, step) for tag, value, step in written}
    assert tags["train/loss"] == (record["loss"], 1) and tags["train/lr"] == (record["lr"], 1)
    assert tags["val/AP"] == (record["AP"], 1) and written[-1][0] == "closed"


def test_detect_pictures_are_drawn_large_with_a_drawing_threshold(tmp_path):
    from PIL import Image

    from archspec.detection.deploy import DRAWING_MIN_SIDE, PALETTE, ImageDetections, draw, drawn_count

    source = tmp_path / "small.png"
    Image.new("RGB", (128, 96), (128, 128, 128)).save(source)
    found = ImageDetections(source, (96, 128), [[10, 10, 60, 60], [70, 20, 120, 90], [5, 50, 40, 90]],
                            [0.9, 0.5, 0.1], [0, 1, 3], ["circle", "square", "star"])
    picture = Image.open(draw(found, tmp_path / "drawn.png", min_score=0.3)).convert("RGB")
    factor = DRAWING_MIN_SIDE // 96 + (DRAWING_MIN_SIDE % 96 > 0)
    assert picture.size == (128 * factor, 96 * factor) and min(picture.size) >= DRAWING_MIN_SIDE
    colours = {colour for _, colour in picture.getcolors(maxcolors=1 << 20)}
    assert PALETTE[0] in colours and PALETTE[1] in colours and PALETTE[3] not in colours
    assert drawn_count([found], 0.3) == 2


# -- 7. quiet provider probing ---------------------------------------------------------------------------
def test_a_missing_gpu_provider_is_one_clear_line_without_onnxruntimes_log():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the provider starts")
    result = cli("bench", "examples/backbones/resnet18.yaml", "--provider", "cuda", "--input-size", "32",
                 "--warmup", "0", "--repeat", "1", process=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: provider 'cuda' (CUDAExecutionProvider)"), result.stderr
    assert "\x1b[" not in result.stderr and "onnxruntime_src" not in result.stderr


def test_the_cause_of_a_provider_load_failure_is_read_from_onnxruntimes_log():
    from archspec.compiler.runtime import provider_load_failure

    log = ("\x1b[1;31m2026-12-02 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] ... : FAIL : "
           "Failed to load library /x/capi/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: "
           "cannot open shared object file: No such file or directory\n\x1b[m")
    assert provider_load_failure(log) == ("libonnxruntime_providers_cuda.so needs libcublasLt.so.13: cannot open "
                                          "shared object file: No such file or directory")
    assert provider_load_failure("") is None


# -- 8. pareto.png ---------------------------------------------------------------------------------------
def _trial(i: int, flops: float, score: float):
    from archspec.search.store import Trial

    return Trial(i, (i,), f"f{i}", "feasible", None, {"flops": flops, "params": 1, "macs": flops / 2}, score, 0.0)


def test_pareto_plot_marks_the_budget_and_the_base(tmp_path):
    from archspec.search.run import PlotReference, _plot, pareto_front

    trials = [_trial(0, 2e9, 10.0), _trial(1, 3e9, 12.0), _trial(2, 2.5e9, 9.0)]
    reference = PlotReference(max_flops=4e9, base_flops=2.2e9, base_score=9.5, base_name="r50")
    figure = _plot(tmp_path / "p.png", trials, pareto_front(trials), reference)
    axes = figure.axes[0]
    assert axes.get_xlabel() == "GFLOPs (2 x MACs)" and (tmp_path / "p.png").stat().st_size > 0
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels == ["feasible", "Pareto front", "max_flops budget", "base (r50)"]
    budget = [line for line in axes.get_lines() if line.get_label() == "max_flops budget"][0]
    assert list(budget.get_xdata()) == [4.0, 4.0]


def test_pareto_plot_uses_the_trial_number_when_all_trials_share_flops(tmp_path):
    from archspec.search.run import PlotReference, _plot, pareto_front

    trials = [_trial(i, 104.26e9, score) for i, score in enumerate([5.0, 7.0, 6.0, 9.0])]
    figure = _plot(tmp_path / "p.png", trials, pareto_front(trials), PlotReference(base_score=6.5, base_name="r50"))
    axes = figure.axes[0]
    assert axes.get_xlabel() == "trial"
    best = [line for line in axes.get_lines() if line.get_label() == "best so far"][0]
    assert list(best.get_ydata()) == [5.0, 7.0, 7.0, 9.0]
    assert "base (r50)" in [text.get_text() for text in axes.get_legend().get_texts()]


# -- 8. docs match the code --------------------------------------------------------------------------------
def _guide_blocks(language: str) -> list[str]:
    text = (ROOT / "docs" / "spec-guide.md").read_text()
    blocks = text.split(f"```{language}\n")[1:]
    return [block.split("```", 1)[0] for block in blocks]


def test_every_complete_document_in_the_spec_guide_validates():
    from archspec.io import parse_text

    checked = 0
    for language in ("yaml", "json"):
        for block in _guide_blocks(language):
            if block.startswith(("# excerpt", "# invalid", "# yaml-language-server")):
                continue
            document = archspec.validate_document(parse_text(block, format=language),
                                                  base_dir=ROOT / "examples" / "detectors")
            checked += 1
            assert document.type in ("staged", "detector", "search")
    assert checked == 7  # toy (YAML and JSON), dilated, ResNet-50, mixed, FCOS, search


def test_the_spec_guides_invalid_example_gives_the_errors_it_shows():
    from archspec.io import parse_text

    block = next(b for b in _guide_blocks("yaml") if b.startswith("# invalid"))
    shown = _guide_blocks("text")[0].replace("error: bad.yaml: ", "").splitlines()
    with pytest.raises(SpecError) as info:
        archspec.validate(parse_text(block))
    actual = [str(issue) for issue in info.value.issues]
    assert len(actual) == len(shown)
    for expected, got in zip(shown, actual):
        assert got.startswith(expected.removesuffix("..."))


def test_readme_names_the_networkx_graph_and_the_heads_behind_each_count():
    readme = (ROOT / "README.md").read_text()
    assert "compiler.lower(spec)" in readme and ".nx" in readme
    graph = __import__("archspec.compiler", fromlist=["lower"]).lower(archspec.load(ROOT / "examples/backbones/resnet18.yaml"))
    import networkx

    assert isinstance(graph.nx, networkx.DiGraph)
    assert "instances_{train,val}2017.json" in readme and "91 classes" in readme and "80 classes" in readme
    help_text = cli("train", "--help").stdout
    assert "instances_{train,val}2017.json" in " ".join(help_text.split())
    assert "run_search" in readme and "Spack" in readme and "_ARCHSPEC_COMPLETE=bash_source" in readme
