"""Loading pretrained checkpoints and tokenizers by hub id or local directory, with one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from pilaf_exp.infra.errors import ConfigError


def check_checkpoint(path: str, what: str) -> None:
    """A path that names a local directory must exist and hold a checkpoint; anything else is
    taken for a hub id (which only loads where the hub or its cache is reachable)."""
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir() or not ((local / "config.json").exists() or (local / "tokenizer_config.json").exists()):
            raise ConfigError(f"{what}={path!r} is not a checkpoint directory (no config.json / tokenizer_config.json)")
    elif path.startswith(("/", "./", "../", "~")):
        raise ConfigError(f"{what}={path!r} does not exist: expected a checkpoint directory or a hub id")


def load_pretrained(loader: Callable, path: str, what: str, **kwargs):
    """`loader.from_pretrained(path)` with a one-line error instead of a hub traceback."""
    check_checkpoint(path, what)
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{what}={path!r} could not be loaded ({first}); offline, give a local directory") from None


def load_tokenizer(path: str, what: str = "model.tokenizer.path") -> PreTrainedTokenizerBase:
    """A tokenizer that left-pads (prompts end where generation starts) and has a pad token."""
    tokenizer = load_pretrained(AutoTokenizer, path, what)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"{what}={path!r}: the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
