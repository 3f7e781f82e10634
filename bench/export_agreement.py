"""Agreement of `sherpa-fixed export` with NeMo itself, on a model that really recognises speech.

For each clip: NeMo's own greedy decoding of its own encoder, fed the
features sherpa-onnx computes (kaldi-native-fbank, decoding/features.py),
against stock sherpa-onnx decoding the exported folder; torch's encoder
output against onnxruntime's; and NeMo's own preprocessor
(AudioToMelSpectrogramPreprocessor) against sherpa-onnx's front end (max and
RMS difference of the normalised features, and what NeMo's greedy decoding
makes of each: WER against the reference text). Then hotwords through
bpe.vocab: for clips that greedy search gets wrong, the missed reference
words as hotwords with modified_beam_search.

    /work/nemo-venv/bin/python bench/export_agreement.py /work/shared/speech/model/model.nemo \
        /work/shared/speech/setA /work/scratch/h6/agree [N_SHORT] [N_LONG]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    import jiwer
    import soundfile as sf
    import torch

    from sherpa_fixed.exporting import export_nemo
    from sherpa_fixed.exporting.agreement import (
        frontend_difference,
        nemo_greedy,
        nemo_reference,
        onnx_encoder_difference,
        sherpa_decode,
    )
    from sherpa_fixed.exporting.extra import require_extra
    from sherpa_fixed.exporting.nemo_model import quiet_nemo

    nemo_path, setdir, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    n_short = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    n_long = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    work.mkdir(parents=True, exist_ok=True)
    r = export_nemo(nemo_path, work / "model", force=True)
    assert r.written, r.to_json()
    folder = r.output
    _, nemo_asr, _ = require_extra()
    quiet_nemo()
    model = nemo_asr.models.ASRModel.restore_from(str(nemo_path), map_location="cpu")
    model.eval()
    vocab = [str(s) for s in model.joint.vocabulary]
    feat_dim = int(model.cfg.preprocessor.features)
    clips = json.loads((setdir / "short.json").read_text())[:n_short] + \
        json.loads((setdir / "long.json").read_text())[:n_long]
    audio = []
    for c in clips:
        x, sr = sf.read(setdir / c["file"], dtype="float32")
        assert sr == 16000
        audio.append(x)
    greedy, err = sherpa_decode(folder, audio)
    assert greedy is not None, err
    rows = []
    for c, x, g in zip(clips, audio, greedy["results"], strict=True):
        ref = nemo_reference(model, torch, x, feat_dim, "per_feature", vocab, tdt=True)
        enc = onnx_encoder_difference(folder / "encoder.onnx", ref)
        fe = frontend_difference(model, torch, x, feat_dim, "per_feature")
        with torch.no_grad():
            own, own_len = model.preprocessor(input_signal=torch.from_numpy(x[None]), length=torch.tensor([len(x)]))
        own_feats = own[0, :, : int(own_len[0])].numpy().T
        _, _, own_ids, _ = nemo_greedy(model, torch, own_feats)
        own_text = model.tokenizer.ids_to_text(own_ids)
        rows.append({"file": c["file"], "seconds": len(x) / 16000, "ref": c["text"],
                     "tokens_equal": g["tokens"] == ref.pieces, "tokens": len(ref.pieces),
                     "encoder_max_abs": enc["max_abs"], "encoder_scale": enc["output_scale"],
                     "fe_max": fe["max_abs"], "fe_rms": fe["rms"],
                     "fe_frames": (fe["nemo_frames"], fe["sherpa_frames"]),
                     "sherpa_text": g["text"].strip(), "nemo_own_frontend_text": own_text.strip()})
    refs = [r["ref"] for r in rows]
    summary = {
        "clips": len(rows), "seconds": round(sum(r["seconds"] for r in rows), 1),
        "tokens_equal": sum(r["tokens_equal"] for r in rows), "tokens": sum(r["tokens"] for r in rows),
        "encoder_max_abs": max(r["encoder_max_abs"] for r in rows),
        "frontend_max_abs": max(r["fe_max"] for r in rows),
        "frontend_rms": float(np.sqrt(np.mean([r["fe_rms"] ** 2 for r in rows]))),
        "frontend_frames_nemo_minus_sherpa": sorted({r["fe_frames"][0] - r["fe_frames"][1] for r in rows}),
        "wer_sherpa_frontend": jiwer.wer(refs, [r["sherpa_text"] for r in rows]),
        "wer_nemo_own_frontend": jiwer.wer(refs, [r["nemo_own_frontend_text"] for r in rows]),
    }
    # Hotwords through bpe.vocab: the reference words greedy search missed, boosted.
    wrong = [(i, r) for i, r in enumerate(rows[:n_short]) if r["sherpa_text"] != r["ref"]]
    fixed, tried, runs_ok = 0, 0, 0
    beam_plain, err = sherpa_decode(folder, [audio[i] for i, _ in wrong], method="modified_beam_search",
                                    bpe_vocab=True)
    assert beam_plain is not None, err
    examples = []
    for (i, r), plain in zip(wrong, beam_plain["results"], strict=True):
        missed = [w for w in r["ref"].split() if w not in plain["text"].split()]
        if not missed:
            continue
        tried += 1
        hot, err = sherpa_decode(folder, [audio[i]], method="modified_beam_search", bpe_vocab=True,
                                 hotwords="/".join(missed), hotwords_score=2.0)
        assert hot is not None, err
        runs_ok += 1
        text = hot["results"][0]["text"].strip()
        gained = sum(w in text.split() for w in missed)
        fixed += gained > 0
        if len(examples) < 5:
            examples.append({"ref": r["ref"], "beam": plain["text"].strip(), "hotwords": missed, "with_hotwords": text})
    summary["hotwords"] = {"clips_with_greedy_errors": len(wrong), "tried": tried, "ran": runs_ok,
                           "missed_word_recovered": fixed, "score": 2.0,
                           "wer_beam_without": None, "examples": examples}
    (work / "agreement.json").write_text(json.dumps({"summary": summary, "clips": rows}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
