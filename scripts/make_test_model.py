"""Write a randomly initialised CLIP (tiny, or ViT-B/32 sized) that loads like a downloaded one."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTokenizer,
)

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
SEED = 20240601
CONTEXT_LENGTH = 77  # CLIP's text positions; the tokenizer truncates to this

# Words of the default prompts get whole-word tokens; any other text falls back to single
# characters, which are all in the vocabulary, so tokenizing never fails.
PROMPT_WORDS = (
    *("a", "photo", "of", "an", "amur", "bengal", "tiger", "lion", "leopard", "domestic"),
    *("cat", "without", "night", "camera", "trap", "empty"),
)

# Trained CLIP ends with logit_scale = ln(100); the default init (ln(1/0.07)) makes the
# random tiny model's probabilities almost uniform, which would make the tests weaker.
TRAINED_LOGIT_SCALE = 4.6052


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level table: every byte maps to a printable unicode character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def word_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Left-to-right merges that build each word into one `word</w>` token."""
    merges: list[tuple[str, str]] = []
    for word in words:
        symbols = [*word[:-1], word[-1] + "</w>"]
        merged = symbols[0]
        for symbol in symbols[1:]:
            pair = (merged, symbol)
            if pair not in merges:
                merges.append(pair)
            merged += symbol
    return merges


def build_vocab(merges: list[tuple[str, str]], vocab_size: int | None) -> dict[str, int]:
    """Characters, `char</w>`, merge results, filler up to vocab_size if given, BOS/EOS last."""
    characters = list(bytes_to_unicode().values())
    tokens = characters + [c + "</w>" for c in characters]
    tokens += [a + b for a, b in merges if a + b not in tokens]
    if vocab_size is not None:
        # Full-size CLIP puts BOS/EOS at 49406/49407 and its config says so: pad up to there.
        tokens += [f"<|unused{i}|>" for i in range(vocab_size - 2 - len(tokens))]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def write_tokenizer_files(out: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (out / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def special_token_ids(vocab: dict[str, int]) -> dict[str, int]:
    # The text tower pools at the first EOS id, so the config must agree with the tokenizer.
    return {
        "bos_token_id": vocab[BOS_TOKEN],
        "eos_token_id": vocab[EOS_TOKEN],
        "pad_token_id": vocab[EOS_TOKEN],
    }


def full_size_config(vocab: dict[str, int]) -> CLIPConfig:
    """CLIPConfig defaults: exactly the openai/clip-vit-base-patch32 architecture."""
    return CLIPConfig(text_config=special_token_ids(vocab))


def tiny_config(vocab: dict[str, int]) -> CLIPConfig:
    """A 600 kB CLIP that still takes the real 224x224 processor output (7x7 patches of 32)."""
    text_config = {
        **special_token_ids(vocab),
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": CONTEXT_LENGTH,
    }
    vision_config = {
        "image_size": 224,
        "patch_size": 32,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    return CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=16,
        logit_scale_init_value=TRAINED_LOGIT_SCALE,
    )


def build_test_model(out: Path, *, full_size: bool = False) -> Path:
    """Write model, tokenizer and image processor into `out` (created if needed); return `out`."""
    out.mkdir(parents=True, exist_ok=True)
    merges = word_merges(PROMPT_WORDS)
    full_vocab_size = CLIPTextConfig().vocab_size if full_size else None
    vocab = build_vocab(merges, full_vocab_size)
    config = full_size_config(vocab) if full_size else tiny_config(vocab)

    torch.manual_seed(SEED)
    CLIPModel(config).save_pretrained(out)

    write_tokenizer_files(out, vocab, merges)
    # Built from the files just written, so a broken vocab.json/merges.txt fails here.
    tokenizer = CLIPTokenizer(
        vocab=str(out / "vocab.json"),
        merges=str(out / "merges.txt"),
        model_max_length=CONTEXT_LENGTH,
    )
    processor = CLIPProcessor(  # type: ignore[no-untyped-call]
        image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer
    )
    processor.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="folder to write the model into")
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="ViT-B/32 architecture (CLIPConfig defaults, ~600 MB) instead of a tiny model",
    )
    args = parser.parse_args(argv)
    print(build_test_model(args.out, full_size=args.full_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
