#!/usr/bin/env python3
"""Step 5: held-out metrics of an exported model; writes <directory>/metrics.json and prints it.

    tools/.venv/bin/python tools/example_model/evaluate.py [directory]

- perplexity on eval.u32 in non-overlapping windows of 512 tokens (each window's first token is only
  context; targets are the next tokens, as transformers' label shift), plain cross-entropy, no aux loss;
- unigram baseline perplexity on exactly the same target tokens, counts from the TRAIN split, add-one;
- per layer: top-k expert assignment counts over the eval tokens and the entropy (bits) of their
  distribution; log2(num_local_experts) is the maximum (perfectly even use).
"""
import json
import math
import os
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from common import MODEL_DIR, SETTINGS, expert_count, path


def readme_block(metrics, training):
    """The metrics table that replaces the marked block in <directory>/README.md."""
    lines = ["| | |", "|---|---|"]
    if training.get("trained_steps") is not None:
        provisional = "" if training["trained_steps"] >= training.get("steps", 0) else " (PROVISIONAL snapshot)"
        lines.append(f"| trained | {training['trained_steps']} steps{provisional}, "
                     f"{training['trained_tokens'] / 1e6:.1f} M tokens, "
                     + (f"{training['training_minutes_one_thread']:.0f} min on one CPU thread |"
                        if "training_minutes_one_thread" in training
                        else f"{training['training_minutes']:.0f} min on {training['threads']} CPU threads |"))
    lines += [f"| held-out perplexity ({metrics['predicted_tokens']:,} predicted tokens, windows of {metrics['window']}) "
              f"| **{metrics['perplexity']:.2f}** ({metrics['cross_entropy_nats']:.3f} nats/token) |",
              f"| unigram baseline perplexity, same tokens | {metrics['unigram_perplexity']:.1f} "
              f"({metrics['unigram_cross_entropy_nats']:.3f} nats/token) |",
              "| routing entropy per layer, bits (max {:g}) | {} |".format(
                  metrics["routing_entropy_max_bits"], ", ".join(f"{e:.3f}" for e in metrics["routing_entropy_bits"])),
              "", f"Top-{training.get('model', {}).get('num_experts_per_tok', 2)} assignments per expert over the eval tokens:", "",
              "| layer | " + " | ".join(f"e{i}" for i in range(len(metrics["expert_token_counts"][0]))) + " |",
              "|---|" + "---:|" * len(metrics["expert_token_counts"][0])]
    for layer, row in enumerate(metrics["expert_token_counts"]):
        lines.append(f"| {layer} | " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def update_readme(directory, metrics, training):
    readme = os.path.join(directory, "README.md")
    if not os.path.exists(readme):
        return
    text = open(readme, encoding="utf-8").read()
    pattern = re.compile(r"(<!-- metrics:begin[^>]*-->\n).*?(\n<!-- metrics:end -->)", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda m: m.group(1) + readme_block(metrics, training) + m.group(2), text)
        with open(readme, "w", encoding="utf-8") as handle:
            handle.write(text)


def main():
    directory = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else MODEL_DIR
    torch.set_num_threads(SETTINGS["threads"])
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    model.eval()
    config = model.config
    tokens = np.fromfile(os.path.join(directory, "eval.u32"), dtype="<u4").astype(np.int64)
    window = SETTINGS["evaluation_window"]
    nll, targets = 0.0, []
    counts = np.zeros((config.num_hidden_layers, expert_count(config)), dtype=np.int64)
    # Routing over the first two windows (1,024 tokens) alone: freq and mass as the profiler
    # defines them (mass = softmax probability summed over the tokens whose top-k holds the expert),
    # for a cheap cross-check of pmq against transformers' router on this model.
    first_counts = np.zeros_like(counts)
    first_mass = np.zeros(counts.shape, dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(tokens), window):
            chunk = torch.from_numpy(tokens[start:start + window])[None]
            if chunk.shape[1] < 2:
                break
            output = model(input_ids=chunk, output_router_logits=True)
            nll += F.cross_entropy(output.logits[0, :-1].float(), chunk[0, 1:], reduction="sum").item()
            targets.append(chunk[0, 1:].numpy())
            for layer, logits in enumerate(output.router_logits):
                top = torch.topk(logits.float(), config.num_experts_per_tok, dim=-1).indices
                counts[layer] += np.bincount(top.flatten().numpy(), minlength=expert_count(config))
                if start < 2 * window:
                    probabilities = torch.softmax(logits.float(), dim=-1)
                    chosen = torch.zeros_like(probabilities).scatter_(1, top, 1.0)
                    first_counts[layer] += chosen.sum(0).long().numpy()
                    first_mass[layer] += (probabilities * chosen).sum(0).double().numpy()
    targets = np.concatenate(targets)
    train_ids = np.load(path("train.npy"))
    unigram = np.bincount(train_ids, minlength=config.vocab_size).astype(np.float64) + 1.0
    unigram /= unigram.sum()
    entropies = []
    for layer_counts in counts:
        p = layer_counts[layer_counts > 0] / layer_counts.sum()
        entropies.append(round(float(-(p * np.log2(p)).sum()), 4))
    training = {}
    if os.path.exists(os.path.join(directory, "training_args.json")):
        with open(os.path.join(directory, "training_args.json")) as handle:
            training = json.load(handle)
    metrics = {
        "evaluation_file": "eval.u32", "evaluation_tokens": int(len(tokens)),
        "predicted_tokens": int(len(targets)), "window": window,
        "cross_entropy_nats": round(nll / len(targets), 4),
        "perplexity": round(math.exp(nll / len(targets)), 3),
        "unigram_cross_entropy_nats": round(float(-np.log(unigram[targets]).mean()), 4),
        "unigram_perplexity": round(float(np.exp(-np.log(unigram[targets]).mean())), 3),
        "unigram_counts_from": "train split, add-one smoothing",
        "routing_entropy_bits": entropies,
        "routing_entropy_max_bits": math.log2(expert_count(config)),
        "expert_token_counts": counts.tolist(),
        "first_1024_tokens": {"freq": first_counts.tolist(), "mass": first_mass.round(6).tolist()},
        "trained_steps": training.get("trained_steps"),
    }
    with open(os.path.join(directory, "metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=2)
    update_readme(directory, metrics, training)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
