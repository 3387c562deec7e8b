#!/usr/bin/env python3
"""Step 3: train the example Mixtral MoE on ONE CPU thread; resumable.

    nohup tools/.venv/bin/python tools/example_model/train.py > tools/example_model/work/train.out 2>&1 &

Tokenises the splits once (work/<split>.npy, uint32), writes work/training_args.json, logs to
work/train.log and checkpoints every SETTINGS["checkpoint_seconds"] to work/checkpoint.pt (model,
optimizer, step, RNG states). Started again, it resumes from the checkpoint and continues exactly
where it stopped (same batches, same schedule). `--measure N` times N steps from scratch and exits.
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import SETTINGS, encode, expert_count, load_tokenizer, make_model, path, read_split


def token_ids(name):
    """Cached token ids of a split, rebuilt when tokenizer.json is newer."""
    cache = path(f"{name}.npy")
    if not os.path.exists(cache) or os.path.getmtime(cache) < os.path.getmtime(path("tokenizer.json")):
        ids = np.array(encode(load_tokenizer(), read_split(name)), dtype=np.uint32)
        np.save(cache + ".tmp.npy", ids)
        os.replace(cache + ".tmp.npy", cache)
    return np.load(cache)


def learning_rate(step):
    s = SETTINGS
    if step < s["warmup_steps"]:
        return s["learning_rate"] * (step + 1) / s["warmup_steps"]
    progress = min(1.0, (step - s["warmup_steps"]) / max(1, s["steps"] - s["warmup_steps"]))
    return s["min_learning_rate"] + 0.5 * (s["learning_rate"] - s["min_learning_rate"]) * (1 + math.cos(math.pi * progress))


def balance_loss(router_logits, top_k, experts):
    """Sum over layers of experts * sum_i f_i * P_i; equals top_k per layer when routing is perfectly even."""
    total = 0.0
    for logits in router_logits:
        probs = F.softmax(logits.float(), dim=-1)
        top = torch.topk(probs, top_k, dim=-1).indices
        share = F.one_hot(top, experts).sum(dim=(0, 1)).float() / probs.shape[0]
        total = total + experts * (share * probs.mean(dim=0)).sum()
    return total


def held_out_loss(model, tokens):
    """Mean cross-entropy (nats/token, no auxiliary loss) on the first eval_windows windows of the evaluation split."""
    length = SETTINGS["sequence_length"]
    model.eval()
    losses = []
    with torch.no_grad():
        for index in range(min(SETTINGS["eval_windows"], len(tokens) // length)):
            batch = torch.from_numpy(tokens[index * length:(index + 1) * length])[None]
            losses.append(model(input_ids=batch, labels=batch, output_router_logits=False).loss.item())
    model.train()
    return sum(losses) / max(1, len(losses))


def main():
    s = SETTINGS
    measure = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == "--measure" else 0
    torch.set_num_threads(s["threads"])
    train_ids = token_ids("train").astype(np.int64)
    eval_ids = token_ids("evaluation").astype(np.int64)
    token_ids("calibration")
    model = make_model()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": s["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=s["learning_rate"], betas=(0.9, 0.95))
    checkpoint_path = path("checkpoint.pt")
    step, elapsed = 0, 0.0
    generator = np.random.default_rng(s["seed"])
    if os.path.exists(checkpoint_path) and not measure:
        state = torch.load(checkpoint_path, weights_only=False)
        if state["settings"] != SETTINGS:
            sys.exit("work/checkpoint.pt was made with other SETTINGS; move it away to start afresh")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed_seconds"]
        generator.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
    if not measure:
        with open(path("training_args.json"), "w") as handle:
            json.dump(SETTINGS, handle, indent=2)
    log = sys.stdout if measure else open(path("train.log"), "a")
    params = sum(p.numel() for p in model.parameters())
    print(f"{'resumed at' if step else 'starting'} step {step}/{s['steps']}: {params / 1e6:.2f} M parameters, "
          f"{len(train_ids)} training tokens, {len(eval_ids)} evaluation tokens", file=log, flush=True)

    def save():
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "elapsed_seconds": elapsed, "settings": SETTINGS,
                    "numpy_rng": generator.bit_generator.state, "torch_rng": torch.get_rng_state()},
                   checkpoint_path + ".tmp")
        os.replace(checkpoint_path + ".tmp", checkpoint_path)

    model.train()
    length, batch_size = s["sequence_length"], s["batch_size"]
    coefficient = model.config.router_aux_loss_coef
    last_save = time.time()
    window_start, window_tokens, window_ce, window_aux, window_steps = time.time(), 0, 0.0, 0.0, 0
    last_stamp = time.time()
    final = measure or s["steps"]
    while step < final:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        starts = generator.integers(0, len(train_ids) - length - 1, size=batch_size)
        batch = torch.from_numpy(np.stack([train_ids[i:i + length] for i in starts]))
        output = model(input_ids=batch, output_router_logits=True)
        ce = F.cross_entropy(output.logits[:, :-1].reshape(-1, output.logits.shape[-1]), batch[:, 1:].reshape(-1))
        aux = balance_loss(output.router_logits, model.config.num_experts_per_tok, expert_count(model.config))
        optimizer.zero_grad(set_to_none=True)
        (ce + coefficient * aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s["grad_clip"])
        optimizer.step()
        step += 1
        now = time.time()
        elapsed += now - last_stamp
        last_stamp = now
        window_tokens += batch.numel()
        window_steps += 1
        window_aux += aux.item()
        window_ce += ce.item()
        if step % s["log_every"] == 0 or step == final:
            count = window_steps
            line = (f"step {step} train_ce {window_ce / count:.4f} aux {window_aux / count:.3f} "
                    f"lr {learning_rate(step):.2e} tokens/s {window_tokens / (now - window_start):.0f} "
                    f"elapsed {elapsed / 60:.1f} min")
            if step % s["eval_every"] == 0 or step == s["steps"]:
                line += f" held_out_ce {held_out_loss(model, eval_ids):.4f}"
            print(line, file=log, flush=True)
            window_start, window_tokens, window_ce, window_aux, window_steps = time.time(), 0, 0.0, 0.0, 0
            last_stamp = time.time()
        if not measure and (time.time() - last_save > s["checkpoint_seconds"] or step == s["steps"]):
            save()
            last_save = time.time()
    if not measure:
        print(f"done at step {step} after {elapsed / 60:.1f} min of training", file=log, flush=True)


if __name__ == "__main__":
    main()
