#!/usr/bin/env python3
"""Step 4: export the trained model to examples/model/ (or the directory given) as a Hugging Face directory.

    tools/.venv/bin/python tools/example_model/export.py [directory]

Writes config.json, generation_config.json, model.safetensors (float32 when the whole directory stays
within SETTINGS["max_model_dir_bytes"], else bfloat16), tokenizer.json, training_args.json,
calib.u32 and eval.u32 (raw little-endian uint32 token ids, no header).
"""
import json
import os
import shutil
import sys

import numpy as np
import torch

from common import MODEL_DIR, SETTINGS, make_model, path


def directory_bytes(directory):
    return sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))


def main():
    directory = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else MODEL_DIR
    state = torch.load(path("checkpoint.pt"), weights_only=False)
    if state["settings"] != SETTINGS:
        sys.exit("work/checkpoint.pt was made with other SETTINGS")
    model = make_model()
    model.load_state_dict(state["model"])
    model.config.output_router_logits = False  # inference default; training used True (see training_args.json)
    os.makedirs(directory, exist_ok=True)
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "training_args.json", "calib.u32", "eval.u32"):
        if os.path.exists(os.path.join(directory, name)):
            os.remove(os.path.join(directory, name))

    shutil.copy(path("tokenizer.json"), os.path.join(directory, "tokenizer.json"))
    calibration = np.load(path("calibration.npy"))
    length = SETTINGS["calibration_length"]
    sequences = min(SETTINGS["calibration_sequences"], len(calibration) // length)
    calibration[:sequences * length].astype("<u4").tofile(os.path.join(directory, "calib.u32"))
    evaluation = np.load(path("evaluation.npy"))[:SETTINGS["evaluation_tokens"]]
    evaluation.astype("<u4").tofile(os.path.join(directory, "eval.u32"))

    params = sum(p.numel() for p in model.parameters())
    other = directory_bytes(directory) + 64 * 1024  # config files and safetensors header, generously
    dtype = torch.float32 if other + 4 * params <= SETTINGS["max_model_dir_bytes"] else torch.bfloat16
    model = model.to(dtype)
    model.save_pretrained(directory, safe_serialization=True)

    log_tail = ""
    if os.path.exists(path("train.log")):
        held_out = [line for line in open(path("train.log")) if "held_out_ce" in line]
        log_tail = held_out[-1].strip() if held_out else ""
    with open(os.path.join(directory, "training_args.json"), "w") as handle:
        json.dump({**SETTINGS, "trained_steps": state["step"],
                   ("training_minutes_one_thread" if SETTINGS["threads"] == 1 else "training_minutes"):
                       round(state["elapsed_seconds"] / 60, 1),
                   "trained_tokens": state["step"] * SETTINGS["batch_size"] * SETTINGS["sequence_length"],
                   "last_log_line_with_held_out": log_tail,
                   "exported_dtype": str(dtype).removeprefix("torch."),
                   "parameters": params}, handle, indent=2)
    total = directory_bytes(directory)
    if total > SETTINGS["max_model_dir_bytes"]:
        sys.exit(f"{directory}: {total} bytes, over the {SETTINGS['max_model_dir_bytes']} byte limit")
    print(f"exported step {state['step']}/{SETTINGS['steps']} ({params / 1e6:.2f} M parameters, {dtype}) to {directory}: "
          f"{total / 1e6:.1f} MB; calib.u32 {sequences} x {length} tokens; eval.u32 {len(evaluation)} tokens")


if __name__ == "__main__":
    main()
