"""Tiny stand-ins for the paper's real components, made locally (nothing is downloaded):
two different byte-level BPE tokenizers, a tiny Llama policy and a tiny scalar-head reward
model saved with `save_pretrained`, and JSONL files in HH-RLHF's schema."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, PreTrainedTokenizerFast

ANIMALS = ["cat", "dog", "horse", "parrot", "rabbit", "goat", "turtle", "fox"]
NAMES = ["Milo", "Luna", "Pepper", "Oscar", "Daisy", "Rex", "Coco", "Ziggy"]
TOPICS = ["the weather", "a recipe", "my garden", "the news", "a book", "music"]


def dialogue(rng: random.Random) -> dict[str, str]:
    """One HH-style row: a one- or two-turn conversation, chosen and rejected replies."""
    animal, name, topic = rng.choice(ANIMALS), rng.choice(NAMES), rng.choice(TOPICS)
    prompt = f"\n\nHuman: What is a good name for a {animal}?\n\nAssistant:"
    if rng.random() < 0.4:
        prompt = f"\n\nHuman: Tell me about {topic}.\n\nAssistant: Sure, happy to.{prompt}"
    return {"chosen": f"{prompt} {name} is a lovely name.", "rejected": f"{prompt} I do not know."}


def write_hh_jsonl(path: Path, rows: int, seed: int) -> Path:
    rng = random.Random(seed)
    path.write_text("".join(json.dumps(dialogue(rng)) + "\n" for _ in range(rows)))
    return path


def corpus() -> list[str]:
    rng = random.Random(0)
    return [dialogue(rng)["chosen"] for _ in range(400)]


def bpe_tokenizer(vocab_size: int, pad: str, bos: str, eos: str, chat_template: str | None) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[pad, bos, eos], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, bos_token=bos, eos_token=eos)
    if chat_template:
        fast.chat_template = chat_template
    return fast


def policy_tokenizer() -> PreTrainedTokenizerFast:
    return bpe_tokenizer(320, "<pad>", "<s>", "</s>", chat_template=None)


ORACLE_TEMPLATE = "{{ '<|begin|>' }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"


def oracle_tokenizer() -> PreTrainedTokenizerFast:
    """Another vocabulary and a chat template: responses must go through text to reach it."""
    return bpe_tokenizer(400, "[PAD]", "<|begin|>", "<|end|>", chat_template=ORACLE_TEMPLATE)


def llama_config(tokenizer: PreTrainedTokenizerFast, **extra) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def save_policy(directory: Path, tokenizer: PreTrainedTokenizerFast | None = None, seed: int = 0) -> Path:
    tokenizer = tokenizer or policy_tokenizer()
    torch.manual_seed(seed)
    LlamaForCausalLM(llama_config(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_reward_model(directory: Path, seed: int = 1) -> Path:
    tokenizer = oracle_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(llama_config(tokenizer, num_labels=1))
    torch.nn.init.normal_(model.score.weight, std=1.0)  # scores of order 1, not 0.02
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
