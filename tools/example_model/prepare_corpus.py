#!/usr/bin/env python3
"""Step 1: split the corpus BY FILE into train / calibration / evaluation.

    apt-get install -y python3.11-doc linux-doc-6.1
    [PMQ_EXAMPLE=fine] tools/.venv/bin/python tools/example_model/prepare_corpus.py

Writes work/{train,calibration,evaluation}.txt (documents separated by a line holding <|endoftext|>).
"""
import glob
import os
import random
import re
import sys

import gzip

from common import CORPUS, CORPUS_EXCLUDE, CORPUS_PATTERNS, EOT, SEPARATOR, SETTINGS, WORK, path


def normalise(text):
    """Light whitespace normalisation: LF line ends, no trailing blanks, at most one empty line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def main():
    os.makedirs(WORK, exist_ok=True)
    files = sorted({os.path.relpath(f, CORPUS) for pattern in CORPUS_PATTERNS
                    for f in glob.glob(os.path.join(CORPUS, pattern), recursive=True)})
    files = [f for f in files if not any(f.startswith(prefix) for prefix in CORPUS_EXCLUDE)]
    if not files:
        sys.exit(f"{CORPUS}: no files matching {CORPUS_PATTERNS} (apt-get install -y python3.11-doc linux-doc-6.1)")
    shuffled = list(files)
    random.Random(SETTINGS["split_seed"]).shuffle(shuffled)
    n = len(shuffled)
    n_cal = max(1, round(n * SETTINGS["calibration_fraction"]))
    n_eval = max(1, round(n * SETTINGS["evaluation_fraction"]))
    splits = {"calibration": shuffled[:n_cal], "evaluation": shuffled[n_cal:n_cal + n_eval],
              "train": shuffled[n_cal + n_eval:]}
    total = 0
    for name, members in splits.items():
        texts = []
        for relative in sorted(members):
            opener = gzip.open if relative.endswith(".gz") else open
            with opener(os.path.join(CORPUS, relative), "rt", encoding="utf-8", errors="replace") as handle:
                text = normalise(handle.read())
            if text and EOT not in text:
                texts.append(text)
        joined = SEPARATOR.join(texts)
        with open(path(f"{name}.txt"), "w", encoding="utf-8") as handle:
            handle.write(joined)
        with open(path(f"{name}.files"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(sorted(members)) + "\n")
        total += len(joined.encode("utf-8"))
        print(f"{name}: {len(texts)} files, {len(joined.encode('utf-8')) / 1e6:.2f} MB")
    print(f"total: {n} files, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
