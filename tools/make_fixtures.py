#!/usr/bin/env python3
"""Generates the committed model fixtures that Lumen's Swift model tests compare against.

The oracle is Hugging Face diffusers/transformers (docs: shared GUIDE, "Correctness: what is the
oracle"). Run by hand, never in CI, from the repository root:

    python3 -m venv .venv-fixtures
    .venv-fixtures/bin/pip install -r tools/requirements-fixtures.txt
    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_fixtures.py

It is deterministic (fixed seeds, one CPU thread): running it again with the pinned versions
rewrites the same bytes. Nothing is downloaded; every model is built here from a config with
random weights. It writes, under Tests/Fixtures/:

  tiny-sd/                        a tiny Stable-Diffusion-1.x-shaped pipeline as a diffusers folder
                                  (model_index.json, scheduler/, tokenizer/ with the real CLIP
                                  vocabulary as vocab.json + merges.txt, text_encoder/, unet/, vae/),
                                  weights as f16 safetensors under the plain file names
  tiny-sd.safetensors             the same weights as one f16 checkpoint with the original
                                  Stable Diffusion (CompVis/LDM) tensor names, verified by loading it
                                  back with diffusers' own from_single_file
  tiny-sd-reference.safetensors   f32 reference inputs and outputs (int64 token ids) computed by
                                  diffusers/transformers in float32 from the folder as saved and
                                  loaded back; the configs and versions are in its __metadata__
  sd15-configs/                   configs of the full SD 1.5 networks (tools/sd15_param_counts.py)

Reference tensors (H = text hidden size):
  text.input_ids [2,77] int64        tokenizer(["a photo of an astronaut riding a horse on mars", ""],
                                     padding="max_length", truncation=True, max_length=77)
  text.last_hidden_state [2,77,H]    CLIPTextModel output (after the final layer norm)
  text.penultimate_hidden_state      hidden_states[-2]: output of the second-to-last encoder layer,
                    [2,77,H]         BEFORE the final layer norm (diffusers' clip_skip=1 applies the
                                     final layer norm to it)
  unet.sample [2,4,8,8]              random normal
  unet.timestep [2] f32              one timestep per batch element: 981 and 1
  unet.encoder_hidden_states         = text.last_hidden_state
  unet.out [2,4,8,8]                 unet(sample, timestep, encoder_hidden_states).sample
  unet_odd.*                         the same for one 7x9 latent (not divisible by the UNet's
                                     downsampling factor 2), timestep [1] = 500, context = the
                                     prompt's row of text.last_hidden_state
  vae.latents [1,4,8,8]              random normal
  vae.decoded [1,3,64,64]            vae.decode(latents).sample (no scaling factor applied)
  vae.image [1,3,64,64]              random uniform in [-1, 1]
  vae.encoded_mean / vae.encoded_logvar [1,4,8,8]
                                     vae.encode(image).latent_dist.mean / .logvar (diffusers clamps
                                     logvar to [-30, 20])
"""

import gzip
import hashlib
import json
import os
import shutil
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402
import open_clip  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sd15_param_counts import sd15_counts  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "Tests", "Fixtures")
FOLDER = os.path.join(FIXTURES, "tiny-sd")
SINGLE_FILE = os.path.join(FIXTURES, "tiny-sd.safetensors")
REFERENCE = os.path.join(FIXTURES, "tiny-sd-reference.safetensors")

PINNED = {"torch": "2.15.0", "diffusers": "0.42.1", "transformers": "5.23.0", "safetensors": "0.8.0",
          "open_clip": "3.3.0"}

PROMPTS = ["a photo of an astronaut riding a horse on mars", ""]
EXPECTED_IDS = [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496, 49407]
MAX_LENGTH = 77

# ---------------------------------------------------------------------------------------------
# Tiny configs. Chosen to exercise every kind of layer the SD 1.x networks have, while keeping
# everything under Tests/Fixtures to about 8 MB (the 49408 x H token embedding dominates).
# ---------------------------------------------------------------------------------------------

TEXT_HIDDEN = 16

TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=TEXT_HIDDEN,
    intermediate_size=37,  # odd on purpose
    num_hidden_layers=2,
    num_attention_heads=2,  # head size 8
    max_position_embeddings=MAX_LENGTH,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=TEXT_HIDDEN,
    attention_dropout=0.0,
    dropout=0.0,
    initializer_range=0.02,
    initializer_factor=1.0,
    # as the SD 1.5 folder ships them; only the pooled output (unused by SD) depends on them
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

# SD 1.5's block pattern (cross-attention blocks first, a plain DownBlock2D last; up blocks
# mirrored), two levels. Exercised: time embedding (sinusoidal, flip_sin_to_cos), ResNet blocks
# with time projection, ResNet channel changes through a 1x1 conv_shortcut (32 -> 64 going down;
# every up-block ResNet, whose input is a skip concatenation), Transformer2DModel with GroupNorm,
# 1x1-conv proj_in/proj_out, self-attention, cross-attention to a 16-wide context and a GEGLU
# feed-forward (in down block 0, the mid block and up block 1), a stride-2 downsample conv, a
# nearest-upsample + conv (with an explicit output size for odd latents), skip concatenations.
# attention_head_dim is, as in SD 1.x's config, the NUMBER of heads (diffusers' naming): 2 heads,
# of size 16 at 32 channels and 32 at 64 channels. norm_num_groups 8: 4 or 8 channels a group.
UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=8,
    norm_eps=1e-5,
    cross_attention_dim=TEXT_HIDDEN,
    attention_head_dim=2,
    use_linear_projection=False,
    upcast_attention=False,
)

# Four levels like SD's VAE, so that the spatial factor is 8 as in SD 1.x (8x8 latents <-> 64x64
# images). Channel changes: 8 -> 16 in the encoder and 16 -> 8 in the decoder's last up block
# (nin_shortcut). Mid blocks: ResNet, single-head attention, ResNet. norm_num_groups 4: 2 or 4
# channels a group.
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 16, 16, 16),
    layers_per_block=1,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=4,
    sample_size=64,
    scaling_factor=0.18215,
)

# As Stable Diffusion 1.5 ships its scheduler.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    trained_betas=None,
    skip_prk_steps=True,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
    timestep_spacing="leading",
)

SEED_WEIGHTS = {"text_encoder": 1000, "unet": 2000, "vae": 3000}
SEED_INPUTS = 4000


# ---------------------------------------------------------------------------------------------
# 1. The CLIP vocabulary, from the BPE merge list that open_clip ships.
# ---------------------------------------------------------------------------------------------

def byte_unicode_table():
    """The reversible byte -> printable character table of GPT-2/CLIP byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    # The vocabulary lists them in the table's order: the printable bytes first, then the others.
    return list(table.values())


def build_clip_vocab():
    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    # Line 0 is the header; CLIP uses the next 49152 - 256 - 2 merges.
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    assert len(merges) == 48894 and all(len(m) == 2 for m in merges)
    chars = byte_unicode_table()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens) == 49408, len(vocab)
    return vocab, merges


def write_tokenizer_folder(directory, vocab, merges):
    """The classic CLIPTokenizer layout (vocab.json + merges.txt) that SD 1.x folders ship."""
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    write_special_tokens(directory, "<|endoftext|>")


def write_special_tokens(directory, pad):
    """special_tokens_map.json and tokenizer_config.json of a CLIP tokenizer padding with `pad`."""
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "pad_token": pad, "unk_token": "<|endoftext|>"}
    with open(os.path.join(directory, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
        f.write("\n")
    config = dict(special, add_prefix_space=False, do_lower_case=True, errors="replace",
                  model_max_length=MAX_LENGTH, tokenizer_class="CLIPTokenizer")
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def linked_tokenizer_folder(directory, pad):
    """A tokenizer folder whose vocab.json and merges.txt are symlinks to tiny-sd's (the fixtures
    of other model families share the vocabulary), padding with `pad`."""
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    for name in ("vocab.json", "merges.txt"):
        os.symlink(os.path.join("..", "..", "tiny-sd", "tokenizer", name), os.path.join(directory, name))
    write_special_tokens(directory, pad)


def print_fixtures(paths, ref):
    """Sizes of the files written and the range of each reference tensor."""
    for p in paths:
        print(f"  {os.path.relpath(p, REPO):45s} {file_size(p):>10,} bytes")
    for k, v in ref.items():
        print(f"  {k:32s} {list(v.shape)}  max|x| {v.double().abs().max().item():.4g}")


def tokenize(tokenizer):
    return tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=MAX_LENGTH,
                     return_tensors="pt").input_ids.to(torch.int64)


def check_tokenizer(tokenizer, where):
    ids = tokenize(tokenizer)
    assert ids[0, :len(EXPECTED_IDS)].tolist() == EXPECTED_IDS, (where, ids[0, :16].tolist())
    assert ids[0, len(EXPECTED_IDS):].eq(49407).all(), where  # padded with <|endoftext|>
    assert ids[1, :2].tolist() == [49406, 49407] and ids[1, 2:].eq(49407).all(), where
    return ids


# ---------------------------------------------------------------------------------------------
# 2. Random weights that make a missing or misplaced parameter show.
# ---------------------------------------------------------------------------------------------

def randomise(model, seed):
    """Re-initialises every parameter from a fixed seed: weights ~ N(0, 1/fan_in) so activations
    stay of order 1, biases ~ N(0, 0.1^2), norm scales ~ U(0.5, 1.5) and norm shifts ~ N(0, 0.2^2)
    (never 1 and 0, so a missing affine shows), embeddings ~ N(0, 0.5^2). Then rounds every
    parameter to f16, so the f32 model equals the f16 files exactly."""
    g = torch.Generator().manual_seed(seed)
    done = set()
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if id(p) in done:
                    continue
                done.add(id(p))
                if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                    if name == "weight":
                        v = torch.rand(p.shape, generator=g) + 0.5
                    else:
                        v = torch.randn(p.shape, generator=g) * 0.2
                elif isinstance(module, torch.nn.Embedding):
                    v = torch.randn(p.shape, generator=g) * 0.5
                elif name == "bias":
                    v = torch.randn(p.shape, generator=g) * 0.1
                else:
                    assert p.dim() >= 2, (type(module).__name__, name, tuple(p.shape))
                    fan_in = p[0].numel()
                    v = torch.randn(p.shape, generator=g) / fan_in ** 0.5
                p.copy_(v.to(torch.float16).to(p.dtype))
    missing = [n for n, p in model.named_parameters() if id(p) not in done]
    assert not missing, missing


def build_networks(text_config, unet_config, vae_config, seeds):
    """The three networks from their configs, every parameter drawn by `randomise` from its seed
    (seeds: text_encoder, unet, vae), in eval mode."""
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    text_encoder.config.architectures = ["CLIPTextModel"]
    unet = UNet2DConditionModel(**unet_config)
    vae = AutoencoderKL(**vae_config)
    for name, model in (("text_encoder", text_encoder), ("unet", unet), ("vae", vae)):
        randomise(model, seeds[name])
        model.eval()
    return text_encoder, unet, vae


def save_sd_folder(folder, vae, text_encoder, tokenizer, unet, scheduler):
    """A StableDiffusionPipeline of these parts saved as a diffusers folder in f16 (replacing it)."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.to(torch.float16)
    pipe.save_pretrained(folder, safe_serialization=True)


def count(module):
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# 4. diffusers names -> original Stable Diffusion (CompVis/LDM) names.
# ---------------------------------------------------------------------------------------------

UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _sub(rest, table):
    """Renames the first component(s) of a dotted name by table, keeping the rest."""
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    raise KeyError(rest)


def unet_to_ldm(state, config):
    """UNet2DConditionModel state dict -> model.diffusion_model.* names. The original numbers its
    input_blocks / output_blocks flat: input_blocks.0 is conv_in; each down level has
    layers_per_block entries (resnet at .0, transformer at .1) and then, except the last level,
    one for the downsampler (.0.op); middle_block is resnet, transformer, resnet; each up level
    has layers_per_block + 1 entries, the last of which also holds the upsampler (after the
    transformer when there is one)."""
    lpb = config["layers_per_block"]
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in ("down_blocks", "up_blocks"):
            level, kind, index = int(parts[1]), parts[2], int(parts[3])
            rest = ".".join(parts[4:])
            if parts[0] == "down_blocks":
                first = 1 + level * (lpb + 1)
                if kind == "resnets":
                    name = f"input_blocks.{first + index}.0.{_sub(rest, UNET_RESNET)}"
                elif kind == "attentions":
                    name = f"input_blocks.{first + index}.1.{rest}"
                elif kind == "downsamplers":
                    assert rest.startswith("conv."), key
                    name = f"input_blocks.{first + lpb}.0.op.{rest[len('conv.'):]}"
                else:
                    raise KeyError(key)
            else:
                first = level * (lpb + 1)
                if kind == "resnets":
                    name = f"output_blocks.{first + index}.0.{_sub(rest, UNET_RESNET)}"
                elif kind == "attentions":
                    name = f"output_blocks.{first + index}.1.{rest}"
                elif kind == "upsamplers":
                    has_attention = config["up_block_types"][level].startswith("CrossAttn")
                    name = f"output_blocks.{first + lpb}.{2 if has_attention else 1}.{rest}"
                else:
                    raise KeyError(key)
        elif parts[0] == "mid_block":
            kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            if kind == "resnets":
                name = f"middle_block.{2 * index}.{_sub(rest, UNET_RESNET)}"
            elif kind == "attentions":
                name = f"middle_block.1.{rest}"
            else:
                raise KeyError(key)
        else:
            name = _sub(key, fixed)
        out["model.diffusion_model." + name] = value
    return out


def vae_to_ldm(state, config):
    """AutoencoderKL state dict -> first_stage_model.* names. The decoder's up.i counts from the
    lowest resolution's other end: diffusers' up_blocks.i is up.(n-1-i). Mid-block attention
    projections are 1x1 convolutions [C, C, 1, 1] in the original."""
    n_up = len(config["up_block_types"])
    out = {}
    for key, value in state.items():
        coder, parts = key.split(".", 1)[0], key.split(".")
        if coder in ("quant_conv", "post_quant_conv"):
            name = key
        else:
            kind = parts[1]
            if kind in ("down_blocks", "up_blocks"):
                level, sub, index = int(parts[2]), parts[3], int(parts[4])
                rest = ".".join(parts[5:])
                ldm_level = level if kind == "down_blocks" else n_up - 1 - level
                block = "down" if kind == "down_blocks" else "up"
                if sub == "resnets":
                    rest = rest.replace("conv_shortcut", "nin_shortcut")
                    name = f"{coder}.{block}.{ldm_level}.block.{index}.{rest}"
                elif sub == "downsamplers":
                    name = f"{coder}.down.{ldm_level}.downsample.{rest}"
                elif sub == "upsamplers":
                    name = f"{coder}.up.{ldm_level}.upsample.{rest}"
                else:
                    raise KeyError(key)
            elif kind == "mid_block":
                sub, index, rest = parts[2], int(parts[3]), ".".join(parts[4:])
                if sub == "resnets":
                    rest = rest.replace("conv_shortcut", "nin_shortcut")
                    name = f"{coder}.mid.block_{index + 1}.{rest}"
                elif sub == "attentions":
                    name = f"{coder}.mid.attn_1.{_sub(rest, VAE_ATTENTION)}"
                    if value.dim() == 2:
                        value = value[:, :, None, None]
                else:
                    raise KeyError(key)
            else:
                name = coder + "." + _sub(".".join(parts[1:]), {"conv_norm_out": "norm_out",
                                                                 "conv_in": "conv_in",
                                                                 "conv_out": "conv_out"})
        out["first_stage_model." + name] = value
    return out


def text_to_ldm(state):
    """CLIPTextModel state dict (transformers 5 writes it without the text_model. prefix) ->
    cond_stage_model.transformer.text_model.* names, plus the int64 position_ids buffer that the
    original SD 1.x checkpoints carry."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("text_model.")
        out["cond_stage_model.transformer.text_model." + key] = value
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = \
        torch.arange(MAX_LENGTH, dtype=torch.int64)[None]
    return out


# ---------------------------------------------------------------------------------------------

def set_up():
    for name, want in PINNED.items():
        have = {"torch": torch, "diffusers": diffusers, "transformers": transformers,
                "safetensors": safetensors, "open_clip": open_clip}[name].__version__
        assert have.split("+")[0] == want, f"{name} {have}, pinned {want}: see tools/requirements-fixtures.txt"
    torch.set_num_threads(1)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)


def save_safetensors(tensors, path, metadata):
    """safetensors' save_file, then the header rewritten with sorted keys: the library writes the
    __metadata__ map in hash order, which would make the file's bytes differ from run to run."""
    save_file(tensors, path, metadata=metadata)
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + blob[8 + n:])
    back = load_file(path)
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors), path



def write_reference(tensors, path, generator, **metadata):
    """A reference file of drawn images: `tensors` (contiguous copies) with the format, the script
    that wrote it, `metadata` (each request as JSON) and the torch/diffusers versions in its header."""
    save_safetensors({k: v.contiguous().clone() for k, v in tensors.items()}, path, metadata={
        "format": "pt", "generator": generator, **metadata,
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__}, sort_keys=True)})


def list_written(*paths):
    """Makes each file (or every file under each folder) 0644 and prints it with its size."""
    files = []
    for p in paths:
        files += [os.path.join(root, f) for root, _, names in os.walk(p) for f in sorted(names)] if os.path.isdir(p) else [p]
    for f in files:
        if os.path.islink(f):
            continue
        os.chmod(f, 0o644)
        print(f"  {os.path.relpath(f, REPO):60s} {os.path.getsize(f):>10,} bytes")

def file_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def float_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(name, got, want):
    got = {k.removeprefix("text_model."): v for k, v in got.items() if v.is_floating_point()}
    want = {k.removeprefix("text_model."): v for k, v in want.items() if v.is_floating_point()}
    assert got.keys() == want.keys(), (name, sorted(got.keys() ^ want.keys())[:10])
    for k in want:
        assert got[k].shape == want[k].shape, (name, k, got[k].shape, want[k].shape)
        assert torch.equal(got[k].float(), want[k].float()), (name, k)


def main():
    set_up()
    os.makedirs(FIXTURES, exist_ok=True)

    # 1. Tokenizer ---------------------------------------------------------------------------
    vocab, merges = build_clip_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)
    check_tokenizer(tokenizer, "CLIPTokenizer(vocab=, merges=)")

    # 2. Tiny pipeline with random weights ---------------------------------------------------
    text_encoder, unet, vae = build_networks(TEXT_CONFIG, UNET_CONFIG, VAE_CONFIG, SEED_WEIGHTS)
    scheduler = PNDMScheduler(**SCHEDULER_CONFIG)
    originals = {"text_encoder": float_state(text_encoder), "unet": float_state(unet), "vae": float_state(vae)}

    # 3. The diffusers folder, f16, plain file names ----------------------------------------
    save_sd_folder(FOLDER, vae, text_encoder, tokenizer, unet, scheduler)
    # transformers 5 writes only tokenizer.json: replace it with the vocab.json + merges.txt layout.
    write_tokenizer_folder(os.path.join(FOLDER, "tokenizer"), vocab, merges)
    for sub, weights in (("text_encoder", "model.safetensors"), ("unet", "diffusion_pytorch_model.safetensors"),
                         ("vae", "diffusion_pytorch_model.safetensors")):
        files = sorted(os.listdir(os.path.join(FOLDER, sub)))
        assert files == sorted(["config.json", weights]), (sub, files)
        stored = load_file(os.path.join(FOLDER, sub, weights))
        assert all(t.dtype == torch.float16 for t in stored.values()), sub
        assert_same_state(sub, stored, originals[sub])

    # 4. Single-file checkpoint with the original names -------------------------------------
    single = {}
    single.update(unet_to_ldm(originals["unet"], UNET_CONFIG))
    single.update(vae_to_ldm(originals["vae"], VAE_CONFIG))
    single.update(text_to_ldm(originals["text_encoder"]))
    single = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in sorted(single.items())}
    assert len(single) == len(originals["unet"]) + len(originals["vae"]) + len(originals["text_encoder"]) + 1
    save_safetensors(single, SINGLE_FILE, metadata={"format": "pt",
                                            "lumen_fixture": "tiny random-weight SD 1.x; tools/make_fixtures.py"})

    loaded = StableDiffusionPipeline.from_single_file(SINGLE_FILE, config=FOLDER, local_files_only=True,
                                                      torch_dtype=torch.float32, safety_checker=None,
                                                      requires_safety_checker=False)
    for name in ("unet", "vae", "text_encoder"):
        assert_same_state(f"from_single_file {name}", getattr(loaded, name).state_dict(), originals[name])
    check_tokenizer(loaded.tokenizer, "from_single_file tokenizer")
    single_file_check = ("StableDiffusionPipeline.from_single_file(tiny-sd.safetensors, config=tiny-sd, "
                         "local_files_only=True): unet, vae and text_encoder state dicts equal the originals exactly")
    del loaded

    # 5. Reference outputs from the folder as saved and loaded back, in f32 ------------------
    pipe = StableDiffusionPipeline.from_pretrained(FOLDER, dtype=torch.float32, local_files_only=True)
    for name in ("unet", "vae", "text_encoder"):
        model = getattr(pipe, name)
        assert not model.training, name
        assert_same_state(f"from_pretrained {name}", model.state_dict(), originals[name])
    assert isinstance(pipe.scheduler, PNDMScheduler)
    ids = check_tokenizer(pipe.tokenizer, "tokenizer folder")

    g = torch.Generator().manual_seed(SEED_INPUTS)
    ref = {}
    with torch.no_grad():
        text = pipe.text_encoder(ids, output_hidden_states=True)
        ref["text.input_ids"] = ids
        ref["text.last_hidden_state"] = text.last_hidden_state
        ref["text.penultimate_hidden_state"] = text.hidden_states[-2]

        ref["unet.sample"] = torch.randn((2, 4, 8, 8), generator=g)
        ref["unet.timestep"] = torch.tensor([981.0, 1.0])
        ref["unet.encoder_hidden_states"] = ref["text.last_hidden_state"]
        ref["unet.out"] = pipe.unet(ref["unet.sample"], ref["unet.timestep"],
                                    encoder_hidden_states=ref["unet.encoder_hidden_states"]).sample

        ref["unet_odd.sample"] = torch.randn((1, 4, 7, 9), generator=g)
        ref["unet_odd.timestep"] = torch.tensor([500.0])
        ref["unet_odd.encoder_hidden_states"] = ref["text.last_hidden_state"][:1]
        ref["unet_odd.out"] = pipe.unet(ref["unet_odd.sample"], ref["unet_odd.timestep"],
                                        encoder_hidden_states=ref["unet_odd.encoder_hidden_states"]).sample

        ref["vae.latents"] = torch.randn((1, 4, 8, 8), generator=g)
        ref["vae.decoded"] = pipe.vae.decode(ref["vae.latents"]).sample
        ref["vae.image"] = torch.rand((1, 3, 64, 64), generator=g) * 2 - 1
        dist = pipe.vae.encode(ref["vae.image"]).latent_dist
        ref["vae.encoded_mean"] = dist.mean
        ref["vae.encoded_logvar"] = dist.logvar

    shapes = {"text.input_ids": (2, 77), "text.last_hidden_state": (2, 77, TEXT_HIDDEN),
              "text.penultimate_hidden_state": (2, 77, TEXT_HIDDEN), "unet.sample": (2, 4, 8, 8),
              "unet.timestep": (2,), "unet.encoder_hidden_states": (2, 77, TEXT_HIDDEN), "unet.out": (2, 4, 8, 8),
              "unet_odd.sample": (1, 4, 7, 9), "unet_odd.timestep": (1,),
              "unet_odd.encoder_hidden_states": (1, 77, TEXT_HIDDEN), "unet_odd.out": (1, 4, 7, 9),
              "vae.latents": (1, 4, 8, 8), "vae.decoded": (1, 3, 64, 64), "vae.image": (1, 3, 64, 64),
              "vae.encoded_mean": (1, 4, 8, 8), "vae.encoded_logvar": (1, 4, 8, 8)}
    assert shapes.keys() == ref.keys()
    for k, v in ref.items():
        assert tuple(v.shape) == shapes[k], (k, tuple(v.shape))
        assert torch.isfinite(v.float()).all(), k
    ref = {k: (v.to(torch.int64) if k == "text.input_ids" else v.to(torch.float32)).clone().contiguous()
           for k, v in ref.items()}
    # The two sequences differ, and penultimate differs from last (a test on them is not vacuous).
    assert not torch.allclose(ref["text.last_hidden_state"][0], ref["text.last_hidden_state"][1])
    assert not torch.allclose(ref["text.last_hidden_state"], ref["text.penultimate_hidden_state"])

    param_counts = {"text_encoder": count(pipe.text_encoder), "unet": count(pipe.unet), "vae": count(pipe.vae)}
    metadata = {
        "format": "pt",
        "generator": "tools/make_fixtures.py",
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "transformers": transformers.__version__, "safetensors": safetensors.__version__,
                                "open_clip": open_clip.__version__, "numpy": np.__version__}, sort_keys=True),
        "text_encoder_config": json.dumps(TEXT_CONFIG, sort_keys=True),
        "unet_config": json.dumps(UNET_CONFIG, sort_keys=True),
        "vae_config": json.dumps(VAE_CONFIG, sort_keys=True),
        "scheduler_config": json.dumps(dict(SCHEDULER_CONFIG, _class_name="PNDMScheduler"), sort_keys=True),
        "param_counts": json.dumps(param_counts, sort_keys=True),
        "prompts": json.dumps(PROMPTS),
        "notes": ("Computed in float32 from Tests/Fixtures/tiny-sd loaded with from_pretrained(dtype=torch.float32) "
                  "(f16 weights upcast exactly). unet.timestep: one value per batch element (981, 1). "
                  "unet_odd: a 7x9 latent, timestep 500, context = row 0 of text.last_hidden_state. "
                  "text.penultimate_hidden_state = hidden_states[-2], before the final layer norm. "
                  "vae.decoded = vae.decode(vae.latents).sample, no scaling factor. "
                  "vae.encoded_logvar is clamped to [-30, 20] by diffusers."),
    }
    save_safetensors(ref, REFERENCE, metadata=metadata)

    # SD 1.5 counts and configs --------------------------------------------------------------
    sd15 = sd15_counts()

    # safetensors writes its files 0600; make every fixture plainly readable.
    for d, _, fs in os.walk(FIXTURES):
        for f in fs:
            os.chmod(os.path.join(d, f), 0o644)

    # 6. Summary ---------------------------------------------------------------------------
    print("tokenizer: ids of the prompt", ids[0, :len(EXPECTED_IDS)].tolist(), "(asserted)")
    print("single file:", single_file_check)
    print("\nparameters (tiny):")
    for name, n in param_counts.items():
        print(f"  {name:13s} {n:>10,}")
    print("parameters (SD 1.5, asserted):")
    for name, n in sd15.items():
        print(f"  {name:13s} {n:>13,}")
    print("\nfiles:")
    paths = [os.path.join(FOLDER, s) for s in sorted(os.listdir(FOLDER))] + [SINGLE_FILE, REFERENCE,
                                                                           os.path.join(FIXTURES, "sd15-configs")]
    for p in paths:
        print(f"  {os.path.relpath(p, REPO):58s} {file_size(p):>10,} bytes")
    total = sum(file_size(p) for p in paths)
    print(f"  {'these files':58s} {total:>10,} bytes  (Tests/Fixtures in all: {file_size(FIXTURES):,})")
    print("\nreference tensors:")
    for k, v in ref.items():
        vf = v.double()
        print(f"  {k:32s} {str(list(v.shape)):15s} {str(v.dtype).removeprefix('torch.'):8s} "
              f"max|x| {vf.abs().max().item():10.4g}  mean|x| {vf.abs().mean().item():10.4g}")
    digest = hashlib.sha256(open(REFERENCE, "rb").read()).hexdigest()
    print(f"\nsha256 {os.path.relpath(REFERENCE, REPO)} {digest}")
    assert total <= 9 * 1024 * 1024, f"this script's fixtures are {total:,} bytes, over budget"
    return 0


if __name__ == "__main__":
    sys.exit(main())
