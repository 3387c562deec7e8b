#!/usr/bin/env python3
"""Step 2: train a GPT-2 style byte-level BPE (vocab 4096, <|endoftext|> = id 0) on the train split.

    tools/.venv/bin/python tools/example_model/train_tokenizer.py

Writes work/tokenizer.json.
"""
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from common import EOT, SEPARATOR, SETTINGS, path, read_split


def main():
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=SETTINGS["vocab_size"], special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    documents = read_split("train").split(SEPARATOR)
    tokenizer.train_from_iterator(documents, trainer, length=len(documents))
    assert tokenizer.get_vocab_size() == SETTINGS["vocab_size"] and tokenizer.token_to_id(EOT) == 0
    tokenizer.save(path("tokenizer.json"))
    sample = documents[0][:200]
    assert tokenizer.decode(tokenizer.encode(sample).ids) == sample, "byte-level round trip failed"
    print(f"vocab {tokenizer.get_vocab_size()}; {len(documents)} training documents; saved {path('tokenizer.json')}")


if __name__ == "__main__":
    main()
