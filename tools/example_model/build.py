#!/usr/bin/env python3
"""Builds pmq's example model: a small Mixtral-architecture MoE language model trained on the
reStructuredText sources of the Python 3.11 documentation (Debian's python3.11-doc, PSF licence).

    tools/.venv/bin/python tools/example_model/build.py corpus      # split the corpus by file
    tools/.venv/bin/python tools/example_model/build.py tokenizer   # byte-level BPE, 4096 tokens
    tools/.venv/bin/python tools/example_model/build.py train       # resumable; checkpoints to work/
    tools/.venv/bin/python tools/example_model/build.py export      # examples/model/
    tools/.venv/bin/python tools/example_model/build.py evaluate    # examples/model/metrics.json

Every setting is in SETTINGS below and is copied into examples/model/training_args.json.
Fixture and example generation only: never part of pmq's run path or CI.
"""
import glob
import json
import math
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORK = os.path.join(HERE, "work")
MODEL_DIR = os.path.join(ROOT, "examples", "model")
CORPUS = "/usr/share/doc/python3.11/html/_sources"

SETTINGS = {
    "corpus": "Python 3.11 documentation, reStructuredText sources (Debian python3.11-doc), PSF License",
    "split_seed": 1234, "calibration_fraction": 0.05, "evaluation_fraction": 0.05,
    "vocab_size": 4096,
    "model": {"hidden_size": 160, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_local_experts": 8, "num_experts_per_tok": 2,
              "max_position_embeddings": 1024, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
              "tie_word_embeddings": False, "router_aux_loss_coef": 0.02, "output_router_logits": True},
    "seed": 1, "sequence_length": 256, "batch_size": 16, "learning_rate": 3e-3, "min_learning_rate": 3e-4,
    "warmup_steps": 200, "steps": 2600, "weight_decay": 0.05, "grad_clip": 1.0,
    "checkpoint_seconds": 240, "eval_every": 200, "threads": 1,
    "calibration_sequences": 128, "calibration_length": 512, "evaluation_tokens": 131072,
}


def read_split(name):
    with open(os.path.join(WORK, f"{name}.txt"), encoding="utf-8") as handle:
        return handle.read()


def corpus():
    os.makedirs(WORK, exist_ok=True)
    files = sorted(glob.glob(os.path.join(CORPUS, "**", "*.txt"), recursive=True))
    if not files:
        sys.exit(f"{CORPUS}: no files (apt-get install python3.11-doc)")
    random.Random(SETTINGS["split_seed"]).shuffle(files)
    n = len(files)
    n_cal = max(1, int(n * SETTINGS["calibration_fraction"]))
    n_eval = max(1, int(n * SETTINGS["evaluation_fraction"]))
    splits = {"calibration": files[:n_cal], "evaluation": files[n_cal:n_cal + n_eval], "train": files[n_cal + n_eval:]}
    for name, members in splits.items():
        texts = []
        for path in sorted(members):
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read().replace("\r\n", "\n").strip()
            texts.append(text)
        with open(os.path.join(WORK, f"{name}.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n<|endoftext|>\n".join(texts))
        print(f"{name}: {len(members)} files, {sum(len(t) for t in texts) / 1e6:.2f} M characters")


def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=SETTINGS["vocab_size"], special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train([os.path.join(WORK, "train.txt")], trainer)
    bpe.save(os.path.join(WORK, "tokenizer.json"))
    for name in ("train", "calibration", "evaluation"):
        ids = encode(bpe, read_split(name))
        import numpy as np
        np.save(os.path.join(WORK, f"{name}.npy"), np.array(ids, dtype=np.uint32))
        print(f"{name}: {len(ids)} tokens")


def encode(bpe, text):
    ids = []
    for chunk in text.split("\n<|endoftext|>\n"):
        ids.extend(bpe.encode(chunk).ids)
        ids.append(bpe.token_to_id("<|endoftext|>"))
    return ids


def make_model():
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM
    torch.manual_seed(SETTINGS["seed"])
    config = MixtralConfig(vocab_size=SETTINGS["vocab_size"], **SETTINGS["model"])
    return MixtralForCausalLM(config)


def learning_rate(step):
    s = SETTINGS
    if step < s["warmup_steps"]:
        return s["learning_rate"] * (step + 1) / s["warmup_steps"]
    progress = min(1.0, (step - s["warmup_steps"]) / max(1, s["steps"] - s["warmup_steps"]))
    return s["min_learning_rate"] + 0.5 * (s["learning_rate"] - s["min_learning_rate"]) * (1 + math.cos(math.pi * progress))


def held_out_loss(model, tokens, length=256, windows=32):
    import torch
    model.eval()
    losses = []
    with torch.no_grad():
        for index in range(min(windows, len(tokens) // length)):
            batch = torch.tensor(tokens[index * length:(index + 1) * length], dtype=torch.long)[None]
            losses.append(model(input_ids=batch, labels=batch).loss.item())
    model.train()
    return sum(losses) / max(1, len(losses))


def train():
    import numpy as np
    import torch
    s = SETTINGS
    torch.set_num_threads(s["threads"])
    train_ids = np.load(os.path.join(WORK, "train.npy")).astype(np.int64)
    eval_ids = np.load(os.path.join(WORK, "evaluation.npy")).astype(np.int64)
    model = make_model()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": s["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=s["learning_rate"], betas=(0.9, 0.95))
    checkpoint_path = os.path.join(WORK, "checkpoint.pt")
    step = 0
    generator = np.random.default_rng(s["seed"])
    if os.path.exists(checkpoint_path):
        state = torch.load(checkpoint_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        generator.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at step {step}", flush=True)
    log = open(os.path.join(WORK, "train.log"), "a")
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.2f} M parameters; {len(train_ids)} training tokens", file=log, flush=True)

    def save():
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "numpy_rng": generator.bit_generator.state, "torch_rng": torch.get_rng_state()},
                   checkpoint_path + ".tmp")
        os.replace(checkpoint_path + ".tmp", checkpoint_path)

    model.train()
    last_save = time.time()
    window_start, window_tokens = time.time(), 0
    length, batch_size = s["sequence_length"], s["batch_size"]
    while step < s["steps"]:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        starts = generator.integers(0, len(train_ids) - length - 1, size=batch_size)
        batch = torch.from_numpy(np.stack([train_ids[i:i + length] for i in starts]))
        output = model(input_ids=batch, labels=batch)
        loss = output.loss  # includes router_aux_loss_coef × load-balancing loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s["grad_clip"])
        optimizer.step()
        step += 1
        window_tokens += batch.numel()
        if step % 20 == 0:
            rate = window_tokens / (time.time() - window_start)
            line = f"step {step} loss {loss.item():.4f} lr {learning_rate(step):.2e} tokens/s {rate:.0f}"
            if step % s["eval_every"] == 0:
                line += f" held-out {held_out_loss(model, eval_ids):.4f}"
            print(line, file=log, flush=True)
            window_start, window_tokens = time.time(), 0
        if time.time() - last_save > s["checkpoint_seconds"] or step == s["steps"]:
            save()
            last_save = time.time()
    print(f"done at step {step}", file=log, flush=True)


def export(directory=MODEL_DIR):
    import numpy as np
    import torch
    model = make_model()
    state = torch.load(os.path.join(WORK, "checkpoint.pt"), weights_only=False)
    model.load_state_dict(state["model"])
    model.config.output_router_logits = False
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    import shutil
    shutil.copy(os.path.join(WORK, "tokenizer.json"), os.path.join(directory, "tokenizer.json"))
    calibration = np.load(os.path.join(WORK, "calibration.npy"))
    count = min(len(calibration), SETTINGS["calibration_sequences"] * SETTINGS["calibration_length"])
    calibration[:count].astype("<u4").tofile(os.path.join(directory, "calib.u32"))
    evaluation = np.load(os.path.join(WORK, "evaluation.npy"))
    evaluation[:SETTINGS["evaluation_tokens"]].astype("<u4").tofile(os.path.join(directory, "eval.u32"))
    with open(os.path.join(directory, "training_args.json"), "w") as handle:
        json.dump({**SETTINGS, "trained_steps": state["step"]}, handle, indent=2)
    print(f"exported step {state['step']} to {directory}")


def evaluate(directory=MODEL_DIR):
    import numpy as np
    import torch
    from transformers import MixtralForCausalLM
    torch.set_num_threads(SETTINGS["threads"])
    model = MixtralForCausalLM.from_pretrained(directory)
    model.eval()
    tokens = np.fromfile(os.path.join(directory, "eval.u32"), dtype="<u4").astype(np.int64)
    window = 512
    total_nll, total_count = 0.0, 0
    experts = model.config.num_local_experts
    counts = [np.zeros(experts, dtype=np.int64) for _ in range(model.config.num_hidden_layers)]
    with torch.no_grad():
        for start in range(0, len(tokens) - 1, window):
            chunk = torch.tensor(tokens[start:start + window])[None]
            if chunk.shape[1] < 2:
                break
            output = model(input_ids=chunk, labels=chunk, output_router_logits=True)
            total_nll += output.loss.item() * (chunk.shape[1] - 1)
            total_count += chunk.shape[1] - 1
            for layer, logits in enumerate(output.router_logits):
                top = torch.topk(logits, model.config.num_experts_per_tok, dim=-1).indices.flatten().numpy()
                counts[layer] += np.bincount(top, minlength=experts)
    train_ids = np.load(os.path.join(WORK, "train.npy"))
    unigram = np.bincount(train_ids, minlength=model.config.vocab_size).astype(np.float64) + 1.0
    unigram /= unigram.sum()
    targets = tokens[1:total_count + 1]
    unigram_ppl = float(np.exp(-np.log(unigram[targets]).mean()))
    entropies = []
    for layer_counts in counts:
        p = layer_counts / layer_counts.sum()
        entropies.append(float(-(p[p > 0] * np.log2(p[p > 0])).sum()))
    metrics = {"evaluation_tokens": int(total_count), "perplexity": math.exp(total_nll / total_count),
               "unigram_perplexity": unigram_ppl, "routing_entropy_bits": entropies,
               "routing_entropy_max_bits": math.log2(experts),
               "expert_token_counts": [c.tolist() for c in counts]}
    with open(os.path.join(directory, "metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=2)
    print(json.dumps({k: v for k, v in metrics.items() if k != "expert_token_counts"}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    commands = {"corpus": corpus, "tokenizer": tokenizer, "train": train, "export": export, "evaluate": evaluate}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: build.py {{{'|'.join(commands)}}} [directory]")
    commands[sys.argv[1]](*sys.argv[2:])
