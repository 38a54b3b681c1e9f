"""Helpers shared by the hand-run Python tools (pinned versions, the CLIP vocabulary, tokenizer folders).

Not a script. Imported by tools/train_demo_model.py and tools/eval_adherence.py; it follows the
conventions of tools/make_fixtures.py (which keeps its own copy, so that its committed outputs
cannot change by accident):

  - versions pinned in tools/requirements-fixtures.txt, checked at start-up;
  - the real CLIP vocabulary (49408 tokens) rebuilt from the BPE merge list that open_clip ships,
    written in the classic SD 1.x layout (tokenizer/vocab.json + merges.txt + two small JSONs);
  - nothing downloaded (HF_HUB_OFFLINE=1).
"""

import gzip
import json
import os
import shutil

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LENGTH = 77
VOCAB_SIZE = 49408
BOS_ID, EOS_ID = 49406, 49407

PINNED = {"torch": "2.15.0", "diffusers": "0.42.1", "transformers": "5.23.0", "safetensors": "0.8.0",
          "open_clip": "3.3.0"}


def check_pinned_versions():
    """Asserts that the imported libraries are the versions in tools/requirements-fixtures.txt."""
    import diffusers
    import open_clip
    import safetensors
    import torch
    import transformers
    have = {"torch": torch, "diffusers": diffusers, "transformers": transformers,
            "safetensors": safetensors, "open_clip": open_clip}
    for name, want in PINNED.items():
        version = have[name].__version__.split("+")[0]
        assert version == want, f"{name} {version}, pinned {want}: see tools/requirements-fixtures.txt"
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _byte_characters():
    """GPT-2/CLIP byte-level BPE maps every byte to a printable character: the printable Latin-1
    bytes to themselves, the other 68 to U+0100 onwards, listed in that order."""
    keep = [b for b in range(256)
            if ord("!") <= b <= ord("~") or ord("¡") <= b <= ord("¬") or ord("®") <= b <= ord("ÿ")]
    others = [b for b in range(256) if b not in keep]
    mapping = {b: chr(b) for b in keep}
    mapping.update({b: chr(256 + i) for i, b in enumerate(others)})
    return [mapping[b] for b in keep + others]


def clip_vocabulary():
    """(vocab dict token -> id, list of merge pairs) of the CLIP ViT-L/14 tokenizer: byte characters,
    the same with </w>, the first 48894 merges, then <|startoftext|> and <|endoftext|>."""
    import open_clip
    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    with gzip.open(path) as f:
        lines = f.read().decode("utf-8").split("\n")
    n_merges = VOCAB_SIZE - 2 * 256 - 2
    merges = [tuple(line.split()) for line in lines[1:1 + n_merges]]
    assert len(merges) == n_merges and all(len(m) == 2 for m in merges)
    chars = _byte_characters()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == VOCAB_SIZE and vocab["<|startoftext|>"] == BOS_ID and vocab["<|endoftext|>"] == EOS_ID
    return vocab, merges


def clip_tokenizer():
    from transformers import CLIPTokenizer
    vocab, merges = clip_vocabulary()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)
    ids = tokenizer(["a red circle"], padding="max_length", max_length=MAX_LENGTH).input_ids[0]
    assert ids[:5] == [BOS_ID, 320, 736, 7117, EOS_ID] and len(ids) == MAX_LENGTH, ids[:6]
    return tokenizer


def write_tokenizer_folder(directory):
    """Writes the classic CLIPTokenizer layout that SD 1.x folders ship (transformers 5 would write
    only tokenizer.json). The same bytes as Tests/Fixtures/tiny-sd/tokenizer."""
    vocab, merges = clip_vocabulary()
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    with open(os.path.join(directory, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
        f.write("\n")
    config = dict(special, add_prefix_space=False, do_lower_case=True, errors="replace",
                  model_max_length=MAX_LENGTH, tokenizer_class="CLIPTokenizer")
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def folder_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
