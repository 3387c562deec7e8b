"""Shared settings and helpers for pmq's example models (tools/example_model/*.py).

Two example models, chosen by the environment variable PMQ_EXAMPLE:
- "model" (default): examples/model, a Mixtral (8 experts, top-2, balanced routing) trained on the
  Python 3.11 documentation; work directory work/.
- "fine": examples/model-fine, a fine-grained Qwen3-MoE (32 small experts, top-4, GQA, a weak balancing
  loss so routing stays uneven) trained on the Linux kernel's documentation; work directory work-fine/.

Every setting lives in SETTINGS; train.py copies it to <work>/training_args.json and export.py to the
model directory's training_args.json. Example generation only: never part of pmq's run path or CI.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANT = os.environ.get("PMQ_EXAMPLE", "model")
if VARIANT not in ("model", "fine"):
    raise SystemExit(f"PMQ_EXAMPLE={VARIANT!r}: expected 'model' or 'fine'")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORK = os.path.join(HERE, "work" if VARIANT == "model" else "work-fine")
MODEL_DIR = os.path.join(ROOT, "examples", "model" if VARIANT == "model" else "model-fine")
CORPUS = "/usr/share/doc/python3.11/html/_sources" if VARIANT == "model" else "/usr/share/doc/linux-doc-6.1/Documentation"
# Files of the corpus, relative to CORPUS (the kernel's translations are left out: English only).
CORPUS_PATTERNS = ["**/*.rst.txt"] if VARIANT == "model" else ["**/*.rst", "**/*.rst.gz"]
CORPUS_EXCLUDE = [] if VARIANT == "model" else ["translations/"]
EOT = "<|endoftext|>"
SEPARATOR = f"\n{EOT}\n"  # between documents in work/<split>.txt

MODEL_SETTINGS = {
    "corpus": "Python 3.11 documentation, reStructuredText sources (Debian package python3.11-doc, "
              "/usr/share/doc/python3.11/html/_sources/**/*.rst.txt), PSF License Version 2",
    "split_seed": 1234, "calibration_fraction": 0.05, "evaluation_fraction": 0.05,
    "tokenizer": "byte-level BPE (tokenizers), ByteLevel pre-tokenizer/decoder, special token <|endoftext|> = id 0",
    "vocab_size": 4096,
    "model": {"hidden_size": 160, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_local_experts": 8, "num_experts_per_tok": 2,
              "max_position_embeddings": 1024, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "router_aux_loss_coef": 0.02,
              "output_router_logits": True, "bos_token_id": 0, "eos_token_id": 0},
    "load_balancing": "Switch-style auxiliary loss per MoE layer, summed over layers: router_aux_loss_coef * "
                      "sum_layers num_experts * sum_i f_i * P_i (f_i: share of top-k assignments, P_i: mean router "
                      "probability); transformers' built-in Mixtral loss pools all layers, which let single layers collapse",
    "seed": 1, "sequence_length": 256, "batch_size": 16,
    "optimizer": "AdamW betas (0.9, 0.95), weight decay on matrices only",
    "learning_rate": 3e-3, "min_learning_rate": 3e-4, "warmup_steps": 200, "steps": 3300,
    "schedule": "linear warmup, then cosine decay to min_learning_rate",
    "weight_decay": 0.05, "grad_clip": 1.0, "threads": 1,
    "checkpoint_seconds": 240, "log_every": 20, "eval_every": 200, "eval_windows": 32,
    "calibration_sequences": 128, "calibration_length": 512, "evaluation_tokens": 131072,
    "evaluation_window": 512, "max_model_dir_bytes": 40 * 1024 * 1024,
}

FINE_SETTINGS = {
    "corpus": "Linux 6.1 kernel documentation, reStructuredText sources (Debian package linux-doc-6.1, "
              "/usr/share/doc/linux-doc-6.1/Documentation/**/*.rst[.gz], translations/ left out), GPL-2.0",
    "architecture": "qwen3_moe",
    "split_seed": 1234, "calibration_fraction": 0.03, "evaluation_fraction": 0.03,
    "tokenizer": "byte-level BPE (tokenizers), ByteLevel pre-tokenizer/decoder, special token <|endoftext|> = id 0",
    "vocab_size": 4096,
    "model": {"hidden_size": 128, "intermediate_size": 384, "moe_intermediate_size": 96, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "num_experts": 32,
              "num_experts_per_tok": 4, "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
              "max_position_embeddings": 1024, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
              "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "router_aux_loss_coef": 0.0001,
              "output_router_logits": True, "bos_token_id": 0, "eos_token_id": 0},
    "load_balancing": "the same per-layer Switch-style loss as the first example model, 200x weaker "
                      "(router_aux_loss_coef 0.0001), so that routing stays uneven and some experts are rare",
    "seed": 1, "sequence_length": 256, "batch_size": 16,
    "optimizer": "AdamW betas (0.9, 0.95), weight decay on matrices only",
    "learning_rate": 3e-3, "min_learning_rate": 3e-4, "warmup_steps": 150, "steps": 2000,
    "schedule": "linear warmup, then cosine decay to min_learning_rate",
    "weight_decay": 0.05, "grad_clip": 1.0, "threads": 2,
    "checkpoint_seconds": 240, "log_every": 20, "eval_every": 250, "eval_windows": 32,
    "calibration_sequences": 128, "calibration_length": 512, "evaluation_tokens": 131072,
    "evaluation_window": 512, "max_model_dir_bytes": 32 * 1024 * 1024,
}

SETTINGS = MODEL_SETTINGS if VARIANT == "model" else FINE_SETTINGS


def path(*parts):
    return os.path.join(WORK, *parts)


def read_split(name):
    with open(path(f"{name}.txt"), encoding="utf-8") as handle:
        return handle.read()


def load_tokenizer():
    from tokenizers import Tokenizer
    return Tokenizer.from_file(path("tokenizer.json"))


def encode(tokenizer, text):
    """Token ids of a split: every document followed by <|endoftext|>."""
    eot = tokenizer.token_to_id(EOT)
    ids = []
    for document in text.split(SEPARATOR):
        ids.extend(tokenizer.encode(document).ids)
        ids.append(eot)
    return ids


def make_model():
    import torch
    torch.manual_seed(SETTINGS["seed"])
    if SETTINGS.get("architecture") == "qwen3_moe":
        from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
        return Qwen3MoeForCausalLM(Qwen3MoeConfig(vocab_size=SETTINGS["vocab_size"], **SETTINGS["model"]))
    from transformers import MixtralConfig, MixtralForCausalLM
    config = MixtralConfig(vocab_size=SETTINGS["vocab_size"], **SETTINGS["model"])
    return MixtralForCausalLM(config)


def expert_count(config):
    """Routed experts per MoE layer (Mixtral: num_local_experts; Qwen-MoE: num_experts)."""
    return getattr(config, "num_local_experts", None) or config.num_experts
