"""Corpus transcription: a NeMo manifest or a folder of audio to an output manifest, resumable, exactly once.

    from sherpa_fixed.corpus import transcribe_corpus
    summary = transcribe_corpus("model", "train.json", "train.pred.json", workers=2)

Modules, one concern each: inputs (manifest and folder reading), audio (soundfile blocks), decode
(one file to one output line), output (the locked, resumable output file), local (worker
processes), ray_runner (Ray Data actors), progress, summary (counts and WER), run (the whole run).
docs/corpus.md has the output format, the resume rules and Ray deployment.
"""

from .inputs import Corpus, Item, read_corpus
from .run import transcribe_corpus
from .summary import CorpusSummary

__all__ = ["Corpus", "CorpusSummary", "Item", "read_corpus", "transcribe_corpus"]
