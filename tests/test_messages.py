"""Every message a user sees is true, every piece of advice runnable, every exit code as `--help` says.

Each test here started as a reproduction of a message that lied, advice that could not be followed,
or an exit code that contradicted the help text (issue 11).
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import sherpa_onnx
from click.testing import CliRunner

from sherpa_fixed import OfflineRecognizer
from sherpa_fixed.cli import main
from sherpa_fixed.decoding.audio import write_wav
from sherpa_fixed.decoding.sherpa_check import run_sherpa
from sherpa_fixed.errors import BadInputError
from sherpa_fixed.oracle import OracleSpec, expected_text, oracle_audio, random_tokens, write_oracle_folder
from sherpa_fixed.testing import write_model_folder


def run(*args):
    r = CliRunner().invoke(main, list(map(str, args)))
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def dynamic_oracle(tmp_path_factory):
    """A dynamic-time model that really recognises its tone "speech", and one utterance of it."""
    root = tmp_path_factory.mktemp("msg")
    model = write_oracle_folder(root / "model", OracleSpec())
    toks = random_tokens(12, 5)
    audio, _ = oracle_audio(toks, seed=5)
    wav = root / "speech.wav"
    write_wav(wav, audio, 16000)
    return model, wav, expected_text(toks), root


# ----------------------------------------------------------------------------- audio


def test_tiny_audio_is_reported_and_the_batch_goes_on(dynamic_oracle):
    """Under 80 samples a dynamic encoder gets no feature frame; this used to end the batch with exit 3."""
    model, wav, text, root = dynamic_oracle
    write_wav(root / "tiny.wav", np.full(50, 0.3), 16000)
    write_wav(root / "silence.wav", np.zeros(16000), 16000)
    code, out, err = run("transcribe", model, wav, root / "tiny.wav", root / "silence.wav", wav)
    assert code == 1  # some failed: the documented code
    assert out.count(f"{wav}: {text}") == 2
    assert f"{root / 'silence.wav'}: \n" in out
    assert err.count("\n") == 1 and "tiny.wav: audio too short" in err and "internal error" not in err


def test_silence_is_an_empty_transcript(dynamic_oracle):
    model, _, _, root = dynamic_oracle
    write_wav(root / "silence2.wav", np.zeros(8000), 16000)
    code, out, err = run("transcribe", model, root / "silence2.wav")
    assert (code, out, err) == (0, "\n", "")


@pytest.mark.parametrize("rate", [16000, 44100, 8000, 22050])
def test_drop_in_gives_nothing_where_stock_raises_on_tiny_input(dynamic_oracle, rate):
    """The drop-in decodes every length stock sherpa-onnx decodes, identically, and tiny ones to nothing.

    The boundary (80 samples at the model's rate, after sherpa-onnx's own resampling) is found by
    stock sherpa-onnx here, not assumed: its error and our empty result must switch at the same length.
    """
    model, *_ = dynamic_oracle
    files = [str(model / n) for n in ("encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt")]
    stock = sherpa_onnx.OfflineRecognizer.from_transducer(*files, model_type="nemo_transducer")
    ours = OfflineRecognizer.from_transducer(*files, model_type="nemo_transducer")
    edge = math.floor(79 * rate / 16000)
    raised = []
    for n in range(max(1, edge - 2), edge + 4):
        x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
        s = stock.create_stream()
        s.accept_waveform(rate, x)
        try:
            stock.decode_stream(s)
            want = s.result.tokens
        except RuntimeError:
            want = None
            raised.append(n)
        o = ours.create_stream()
        o.accept_waveform(rate, x)
        ours.decode_stream(o)
        assert list(o.result.tokens) == (list(want) if want is not None else []), n
    assert raised and raised[-1] < edge + 3  # the boundary was inside the range tried
    s = stock.create_stream()
    s.accept_waveform(rate, np.zeros(rate, np.float32))
    stock.decode_stream(s)
    o = ours.create_stream()
    o.accept_waveform(rate, np.zeros(rate, np.float32))
    ours.decode_stream(o)
    assert o.result.text == s.result.text


# ----------------------------------------------------------------------------- advice


def _tokens_edit(fn):
    def edit(folder):
        p = folder / "tokens.txt"
        p.write_text(fn(p.read_text(encoding="utf-8")), encoding="utf-8")
    return edit


def _swap_decoder(folder):  # a decoder from another model: pred_hidden 16 where the joiner takes 8
    other = write_model_folder(folder.parent / (folder.name + "-other"), pred_hidden=16)
    shutil.copy(other / "decoder.onnx", folder / "decoder.onnx")


def _fp32_removed(folder):  # sherpa-onnx's int8 release archives ship only the int8 set
    for name in ("encoder.onnx", "decoder.onnx", "joiner.onnx"):
        (folder / name).unlink()


# Every kind of problem the factory can build: (ModelSpec changes, an edit of the written folder).
PROBLEMS = {
    "ok": ({}, None),
    "metadata-wrong-feat-dim": ({"metadata": "wrong_feat_dim"}, None),
    "metadata-missing": ({"metadata": "missing"}, None),
    "metadata-tdt-no-url": ({"metadata": "tdt_no_url"}, None),
    "metadata-no-normalize": ({"metadata": "no_normalize"}, None),
    "metadata-wrong-vocab": ({"metadata": "wrong_vocab"}, None),
    "external-single": ({"external": "single"}, None),
    "external-scattered": ({"external": "scattered"}, None),
    "external-absolute": ({"external": "absolute"}, None),
    "external-escaping": ({"external": "escaping"}, None),
    "external-missing": ({"external": "missing"}, None),
    "external-truncated": ({"external": "truncated"}, None),
    "external-outside": ({"external": "outside"}, None),
    "time-declared": ({"time": "declared", "frames": 400}, None),
    "time-baked": ({"time": "baked", "frames": 400}, None),
    "batch-baked": ({"time": "baked", "batch": "baked", "frames": 400}, None),
    "batch-declared": ({"time": "declared", "batch": "declared", "frames": 400}, None),
    "baked-and-metadata-missing": ({"time": "baked", "frames": 400, "metadata": "missing"}, None),
    "truncated-and-metadata-missing": ({"external": "truncated", "metadata": "missing"}, None),
    "int8-own-weights": ({"int8": True, "int8_external": "own"}, None),
    "int8-shared-weights": ({"int8": True, "external": "single", "int8_external": "shared"}, None),
    "tokens-no-blank": ({}, _tokens_edit(lambda t: t.replace("<blk>", "<b>"))),
    "tokens-duplicate-id": ({}, _tokens_edit(lambda t: t.replace("<unk> 0", "<unk> 1"))),
    "tokens-too-few": ({}, _tokens_edit(lambda t: "\n".join(t.splitlines()[:-3] + t.splitlines()[-1:]) + "\n")),
    "tokens-too-many": ({}, _tokens_edit(lambda t: t.replace("<blk> 16", "x 16\n<blk> 17"))),
    "tokens-blank-first": ({}, _tokens_edit(lambda t: "<blk> 0\n" + t.replace("<unk> 0", "<unk> 16")
                                            .replace("<blk> 16\n", ""))),
    "tokens-bad-line": ({}, _tokens_edit(lambda t: t.replace("<unk> 0", "<unk> 0 extra"))),
    "tokens-and-metadata-missing": ({"metadata": "missing"}, _tokens_edit(lambda t: t.replace("<blk>", "<b>"))),
    "decoder-from-another-model": ({}, _swap_decoder),
    "int8-only-release": ({"int8": True}, _fp32_removed),
    "int8-only-metadata-missing": ({"int8": True, "metadata": "missing"}, _fp32_removed),
    "int8-only-feat-dim-wrong": ({"int8": True, "metadata": "wrong_feat_dim"}, _fp32_removed),
}


def _next_steps(stdout: str) -> list[str]:
    return [ln[len("next: "):] for ln in stdout.splitlines() if ln.startswith("next: ")]


def _command(step: str) -> list[str] | None:
    """The sherpa-fixed prepare command in a piece of advice, as a shell would split it."""
    if "sherpa-fixed prepare " not in step:
        return None
    words = shlex.split(step.split("sherpa-fixed ", 1)[1].split(" (", 1)[0])
    assert words[0] == "prepare" and "--output" in words, step
    return words


NEMO_DIR = Path(__file__).parent / "data" / "nemo"
NEMO = sorted(p.name for p in NEMO_DIR.iterdir() if (p / "truth.json").exists())


@pytest.mark.parametrize("case", sorted(PROBLEMS) + [f"nemo-{n}" for n in NEMO])
def test_advice_is_runnable_and_agrees_everywhere(tmp_path, case):
    """Whenever inspect advises prepare, that very command runs and the result loads in stock sherpa-onnx;
    whenever it does not, prepare refuses; transcribe gives the same advice when it cannot load the folder."""
    if case.startswith("nemo-"):  # genuine raw NeMo exports
        folder = Path(shutil.copytree(NEMO_DIR / case[5:], tmp_path / "m"))
        (folder / "truth.json").unlink()
    else:
        changes, edit = PROBLEMS[case]
        folder = write_model_folder(tmp_path / "m", **changes)
        if edit:
            edit(folder)
    code, out, _ = run("inspect", folder)
    steps = _next_steps(out)
    verdict = re.search(r"^verdict: (.*)$", out, re.M).group(1)
    assert code == {"works in sherpa-onnx as is": 0, "cannot work": 2}.get(verdict, 1), out
    assert (code == 0) == (not steps), out
    commands = [c for c in map(_command, steps) if c]
    assert len(commands) <= 1
    dry_code, dry_out, dry_err = run("prepare", folder, "--dry-run")
    if code == 2:  # prepare refuses the folder, and says what inspect says
        assert not commands
        assert dry_code == 2 and steps[0] in dry_err
    elif commands:
        assert dry_code in (0, 1) and "nothing needs doing" not in dry_out, dry_out
        args = commands[0]
        p_code, p_out, p_err = run(*args)
        assert p_code == 0, p_out + p_err
        target = args[args.index("--output") + 1]
        assert run("inspect", target)[0] == 0
        ext = "" if Path(target, "encoder.onnx").exists() else ".int8"
        res = run_sherpa(*(f"{target}/{role}{ext}.onnx" for role in ("encoder", "decoder", "joiner")),
                         f"{target}/tokens.txt", samples=[16000, 26000])
        assert res.ok, res.error
    wav = tmp_path / "a.wav"
    write_wav(wav, np.random.default_rng(0).standard_normal(16000) * 0.1, 16000)
    t_code, _, t_err = run("transcribe", folder, wav)
    if t_code == 2:  # it could not use the folder: the advice is inspect's, word for word
        assert "; ".join(steps) in t_err.replace(str(folder.resolve()), str(folder)), (t_err, steps)
        assert t_err.count("\n") == 1
    else:
        assert t_code == 0, t_err


# ----------------------------------------------------------------------------- options and prepare's lines


@pytest.mark.parametrize("args", [("--window-seconds", "0"), ("--window-seconds", "-5"), ("--window-seconds", "nan"),
                                  ("--window-seconds", "inf"), ("--overlap-seconds", "-1"), ("--num-threads", "0")])
def test_transcribe_refuses_bad_numbers_before_loading(dynamic_oracle, args):
    """--window-seconds 0 used to mean 'the default', nan/inf were internal errors."""
    model, wav, *_ = dynamic_oracle
    code, out, err = run("transcribe", model, wav, *args)
    assert code == 2 and out == "" and f"'{args[0]}'" in err and "internal error" not in err


def test_transcribe_window_shorter_than_a_frame(dynamic_oracle):
    model, wav, *_ = dynamic_oracle
    code, _, err = run("transcribe", model, wav, "--window-seconds", "0.01")
    assert code == 2 and "shorter than one output frame" in err and "(0 s)" not in err


@pytest.fixture(scope="module")
def baked(tmp_path_factory):
    return write_model_folder(tmp_path_factory.mktemp("baked") / "m", time="baked", frames=400)


@pytest.mark.parametrize("args, says", [
    (("--hop", "100"), "between one output frame (0.08 s) and the window (4 s)"),
    (("--hop", "0"), "above 0"),
    (("--hop", "nan"), "above 0"),
    (("--context", "-1"), "0 or more"),
    (("--context", "3"), "leaves no hop"),
])
def test_prepare_window_values_are_checked_with_a_true_line(baked, tmp_path, args, says):
    out_dir = tmp_path / "out"
    code, _, err = run("prepare", baked, "--window", *args, "--output", out_dir)
    assert code == 2 and says in err and not re.search(r"(context|hop) -\d", err)  # was 'context -46 s'
    assert not out_dir.exists()


def test_dry_run_on_a_baked_encoder_says_what_is_true(baked):
    code, out, _ = run("prepare", baked, "--dry-run")
    assert code == 1
    assert "nothing needs doing" not in out and "accepts this folder" not in out
    assert "nothing prepare can change fixes this folder" in out and "--window" in out


@pytest.mark.parametrize("verify, says", [
    ("auto", "stock sherpa-onnx loaded this folder"),
    ("full", "stock sherpa-onnx loaded this folder"),
    ("fast", "stock sherpa-onnx was not run"),
    ("off", "not verified"),
])
def test_done_line_says_what_was_proven(tmp_path, verify, says):
    folder = write_model_folder(tmp_path / "m", metadata="wrong_feat_dim")
    code, out, _ = run("prepare", folder, "--output", tmp_path / "out", "--verify", verify)
    assert code == 0
    done = [ln for ln in out.splitlines() if ln.startswith("done:")]
    assert len(done) == 1 and says in done[0], out
    kinds = {c["kind"] for c in json.loads(run("prepare", folder, "--output", tmp_path / "j", "--verify", verify,
                                              "--json")[1])["checks"]}
    assert ("sherpa" in kinds) == ("stock sherpa-onnx loaded" in done[0])


@pytest.mark.parametrize("metadata, defaulted", [("wrong_feat_dim", None), ("tdt_no_url", None),
                                                 ("no_normalize", "normalize_type"), ("missing", "normalize_type")])
def test_family_warning_names_only_keys_that_come_from_defaults(tmp_path, metadata, defaulted):
    folder = write_model_folder(tmp_path / "m", metadata=metadata)
    warnings = json.loads(run("prepare", folder, "--dry-run", "--json")[1])["warnings"]
    family = [w for w in warnings if "family not recognised" in w]
    if defaulted is None:
        assert family == []
    else:
        assert len(family) == 1 and defaulted in family[0] and "url" not in family[0]


def test_validate_help_states_the_generated_audio_length():
    from sherpa_fixed.checking.validate import generated_audio

    _, out, _ = run("validate", "--help")
    said = float(re.search(r"about (\d+) s of generated", " ".join(out.split())).group(1))
    assert abs(said - len(generated_audio()) / 16000) < 1


def test_fp32_asked_of_an_int8_only_folder_is_refused(tmp_path):
    """--fp32 on sherpa-onnx's int8-only release used to decode with the int8 set without a word."""
    folder = write_model_folder(tmp_path / "m", int8=True)
    for name in ("encoder.onnx", "decoder.onnx", "joiner.onnx"):
        (folder / name).unlink()
    wav = tmp_path / "a.wav"
    write_wav(wav, np.random.default_rng(0).standard_normal(16000) * 0.1, 16000)
    code, out, err = run("transcribe", folder, wav, "--fp32")
    assert code == 2 and out == "" and "no fp32 model set" in err and "int8" in err
    assert run("transcribe", folder, wav, "--int8")[0] == 0


def test_cannot_work_metadata_table_does_not_promise_a_rewrite(tmp_path):
    folder = write_model_folder(tmp_path / "m")
    tokens = folder / "tokens.txt"
    tokens.write_text(tokens.read_text().replace("<unk> 0", "<unk> 1"))  # tokens.txt now measures 15 words
    code, out, _ = run("inspect", folder)
    assert code == 2 and "-> '15'" in out
    assert "prepare writes nothing until the ✗ below are fixed" in out
    assert "sherpa-fixed prepare" not in out
    assert "the graphs say 15" not in out  # 15 is tokens.txt's count; the decoder's embedding says 16


def test_output_of_a_folder_that_needs_nothing_says_it_was_copied(tmp_path):
    folder = write_model_folder(tmp_path / "m")
    code, out, _ = run("prepare", folder, "--output", tmp_path / "out")
    assert code == 0 and f"copied to {tmp_path / 'out'} unchanged" in out and "done:" not in out


def test_advice_for_files_from_several_folders_gathers_them_first(tmp_path):
    """inspect GOOD --encoder OTHER/encoder.onnx used to advise 'prepare GOOD', which rewrites nothing."""
    good = write_model_folder(tmp_path / "good")
    broken = write_model_folder(tmp_path / "broken", metadata="wrong_feat_dim")
    code, out, _ = run("inspect", good, "--encoder", broken / "encoder.onnx")
    steps = _next_steps(out)
    assert code == 1 and len(steps) == 2 and "one folder FOLDER" in steps[0] and str(good) not in steps[1]
    gathered = tmp_path / "FOLDER"
    gathered.mkdir()
    shutil.copy(broken / "encoder.onnx", gathered)
    for name in ("decoder.onnx", "joiner.onnx", "tokens.txt"):
        shutil.copy(good / name, gathered)
    args = [a.replace("FOLDER", str(gathered)) for a in _command(steps[1])]
    assert run(*args)[0] == 0 and run("inspect", f"{gathered}-prepared")[0] == 0
    assert _next_steps(run("inspect", broken)[1]) == [f"run: sherpa-fixed prepare {broken} --output {broken}-prepared"]


def test_advice_with_a_space_in_the_path_runs_as_written(tmp_path):
    folder = write_model_folder(tmp_path / "my model", metadata="missing")
    steps = _next_steps(run("inspect", folder)[1])
    assert steps == [f"run: sherpa-fixed prepare '{folder}' --output '{folder}-prepared'"]
    assert run(*_command(steps[0]))[0] == 0 and run("inspect", f"{folder}-prepared")[0] == 0


def test_models_with_weights_in_two_folders_get_advice_that_exists(tmp_path):
    """The recognizer advised 'run sherpa-fixed prepare', which takes one folder and cannot join two."""
    import onnx

    a = write_model_folder(tmp_path / "a", external="single")
    b = write_model_folder(tmp_path / "b")
    dec = onnx.load(str(b / "decoder.onnx"))
    onnx.save(dec, str(b / "decoder.onnx"), save_as_external_data=True, location="decoder.weights",
              size_threshold=0)
    with pytest.raises(BadInputError) as err:
        OfflineRecognizer.from_transducer(str(a / "encoder.onnx"), str(b / "decoder.onnx"), str(a / "joiner.onnx"),
                                          str(a / "tokens.txt"), model_type="nemo_transducer")
    assert "different folders" in str(err.value) and "prepare" not in (err.value.fix or "")


def test_a_model_that_fails_every_file_is_the_models_problem(tmp_path):
    """A 128-mel encoder without feat_dim metadata loads, then fails on every file (sherpa-onnx feeds 80
    mel bins): that used to be one 'failed' line per file and exit 1, with no word about the model."""
    import onnx

    folder = write_model_folder(tmp_path / "m", feat_dim=128)
    model = onnx.load(str(folder / "encoder.onnx"))
    keep = [p for p in model.metadata_props if p.key != "feat_dim"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.save(model, str(folder / "encoder.onnx"))
    wav = tmp_path / "a.wav"
    write_wav(wav, np.random.default_rng(0).standard_normal(16000) * 0.1, 16000)
    code, _, err = run("transcribe", folder, wav, wav)
    steps = _next_steps(run("inspect", folder)[1])
    assert code == 2 and err.count("\n") == 1 and "Expected: 128" in err and steps and steps[0] in err
    assert run(*_command(steps[0]))[0] == 0
    assert run("transcribe", f"{folder}-prepared", wav)[0] == 0
