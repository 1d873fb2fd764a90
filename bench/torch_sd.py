#!/usr/bin/python3
"""torch_sd.py - Stable Diffusion 2.1-base's pieces in plain PyTorch 1.13,
timed side by side with loco's bench_sd on the same pipeline folder.

    /usr/bin/python3 bench/torch_sd.py --folder /tmp/sd21 [--size 512] [--threads 1]
        [--jac-size 256] [--k 5] [--only text,unet,decode,jac] [--json OUT.json]
    /usr/bin/python3 bench/torch_sd.py --folder /tmp/sd21 --check [--size 256]

No diffusers or transformers: the UNet2DConditionModel, the AutoencoderKL
decoder (with post_quant_conv) and transformers' CLIPTextModel are written
here from the folder's config.json files, with module and parameter names
that are the checkpoints' keys, so the folder's safetensors (f16 or f32,
read here with json + numpy) load with no missing or unexpected key. All
arithmetic is float32, as in loco.

What is timed (each in its own subprocess, so that peak memories do not
mix; every worker loads the whole pipeline, as bench_sd does, so the peaks
include the ~5 GB of f32 weights on both sides):
  text    the empty prompt and the prompt, one batch of 2 (loco: loco_cond_new)
  unet    one UNet step with classifier-free guidance (batch 2, guidance 7.5)
  decode  one VAE decode of a latent
  jac     at --jac-size (256): the decoded posterior mean
              x0(z) = decode((z - sqrt(1-abar) eps_cfg(z)) / sqrt(abar) / 0.18215)
          on the middle quarter of the image at t = 696.27 (bench_sd's
          choice): the record (a forward with the autograd graph kept),
          U^T J by vjp (k vectors, backward through the kept graph), J V by
          forward mode (torch.autograd.forward_ad, no graph) and J V by the
          double-vjp trick (d/du <u^T J, v>, through the kept graph).
loco's figures come from build/bench_sd run with OMP_NUM_THREADS=--threads.

glibc malloc: by default glibc serves every block over its (dynamic, at
most 32 MiB) mmap threshold with a fresh mmap and gives it back with
munmap, so PyTorch's 50-500 MB activations cost page faults and kernel
zeroing on every op. The workers (and --check, which re-executes itself)
run with MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set to 2^40
(freed memory stays in the heap and is reused); --malloc default keeps
glibc's defaults, --malloc both measures both.

Times: wall and CPU seconds (user + system) of each phase; with one thread
on a shared machine the CPU time is the steadier figure.

--check compares torch's outputs with loco's command line on the same
inputs (loco eps: guided eps and x0_hat; loco generate --tensors: a latent
and its decoded image) and prints max abs / relative differences.

Bench scripts may use Python; tests and CI do not.
"""
import argparse
import json
import math
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIG = str(1 << 40)  # the malloc thresholds: "never"
PROMPT = "a photo of a man"
GUIDANCE = 7.5
T_STEP = 500.0
T_JAC = 696.27

# --------------------------------------------------------------------------
# safetensors, read by hand
# --------------------------------------------------------------------------


def st_read(path):
    import numpy as np
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    mm = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    types = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        if v["dtype"] not in types:
            raise SystemExit("%s: %s has dtype %s (not read here)" % (path, k, v["dtype"]))
        a, b = v["data_offsets"]
        out[k] = mm[a:b].view(types[v["dtype"]]).reshape(v["shape"])
    return out


def st_write(path, tensors, meta=None):
    import numpy as np
    hdr, off, blobs = {}, 0, []
    for k, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        b = a.tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    if meta:
        hdr["__metadata__"] = meta
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def find_weights(d):
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    raise SystemExit("%s: no safetensors weights" % d)


def load_into(module, tensors, prefix_filter=None, rename=None):
    """Copies the checkpoint's tensors into module's parameters (as f32):
    every parameter must be in the file, and every file tensor (that
    prefix_filter keeps) must be a parameter."""
    import numpy as np
    import torch
    sd = module.state_dict()
    keys = {}
    for k in tensors:
        if prefix_filter and not prefix_filter(k):
            continue
        keys[rename(k) if rename else k] = k
    missing = sorted(set(sd) - set(keys))
    unexpected = sorted(set(keys) - set(sd))
    if missing or unexpected:
        raise SystemExit("state dict mismatch: missing %s, unexpected %s" % (missing[:10], unexpected[:10]))
    with torch.no_grad():
        for name, p in sd.items():
            a = tensors[keys[name]]
            if tuple(a.shape) != tuple(p.shape):
                if a.size == p.numel():  # 1x1 conv weights of old VAE attention blocks
                    a = a.reshape(p.shape)
                else:
                    raise SystemExit("%s: shape %s in the file, %s in the model" % (name, a.shape, tuple(p.shape)))
            p.copy_(torch.from_numpy(np.asarray(a, dtype=np.float32)))
    return len(sd)


# --------------------------------------------------------------------------
# the networks (torch imported lazily: the parent process only runs loco)
# --------------------------------------------------------------------------


def build_classes():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class ResnetBlock2D(nn.Module):
        def __init__(self, cin, cout, temb, eps, groups):
            super().__init__()
            self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
            if temb:
                self.time_emb_proj = nn.Linear(temb, cout)
            self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            if cin != cout:
                self.conv_shortcut = nn.Conv2d(cin, cout, 1)
            self.has_temb, self.has_short = bool(temb), cin != cout

        def forward(self, x, temb=None):
            h = self.conv1(F.silu(self.norm1(x)))
            if self.has_temb:
                h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
            h = self.conv2(F.silu(self.norm2(h)))
            return (self.conv_shortcut(x) if self.has_short else x) + h

    def mha(q, k, v, heads, mask=None):
        """q [B, Tq, h*d], k, v [B, Tk, h*d] -> [B, Tq, h*d]; softmax(q k^T / sqrt(d)) v per head"""
        B, Tq, D = q.shape
        Tk, d = k.shape[1], D // heads
        q = q.reshape(B, Tq, heads, d).transpose(1, 2)
        k = k.reshape(B, Tk, heads, d).transpose(1, 2)
        v = v.reshape(B, Tk, heads, d).transpose(1, 2)
        w = torch.matmul(q * (d ** -0.5), k.transpose(-1, -2))
        if mask is not None:
            w = w + mask
        w = torch.softmax(w, dim=-1)
        return torch.matmul(w, v).transpose(1, 2).reshape(B, Tq, D)

    class Attention(nn.Module):  # diffusers' CrossAttention / Attention (no bias on q, k, v)
        def __init__(self, dim, ctx_dim, heads, head_dim):
            super().__init__()
            inner = heads * head_dim
            self.heads = heads
            self.to_q = nn.Linear(dim, inner, bias=False)
            self.to_k = nn.Linear(ctx_dim, inner, bias=False)
            self.to_v = nn.Linear(ctx_dim, inner, bias=False)
            self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

        def forward(self, x, ctx=None):
            c = x if ctx is None else ctx
            return self.to_out[0](mha(self.to_q(x), self.to_k(c), self.to_v(c), self.heads))

    class GEGLU(nn.Module):
        def __init__(self, dim, inner):
            super().__init__()
            self.proj = nn.Linear(dim, 2 * inner)

        def forward(self, x):
            h, gate = self.proj(x).chunk(2, dim=-1)
            return h * F.gelu(gate)

    class FeedForward(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.net = nn.ModuleList([GEGLU(dim, 4 * dim), nn.Identity(), nn.Linear(4 * dim, dim)])

        def forward(self, x):
            return self.net[2](self.net[0](x))

    class BasicTransformerBlock(nn.Module):
        def __init__(self, dim, heads, head_dim, ctx_dim):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attn1 = Attention(dim, dim, heads, head_dim)
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = Attention(dim, ctx_dim, heads, head_dim)
            self.norm3 = nn.LayerNorm(dim)
            self.ff = FeedForward(dim)

        def forward(self, x, ctx):
            x = x + self.attn1(self.norm1(x))
            x = x + self.attn2(self.norm2(x), ctx)
            return x + self.ff(self.norm3(x))

    class Transformer2DModel(nn.Module):
        def __init__(self, ch, heads, head_dim, ctx_dim, groups, linear):
            super().__init__()
            inner = heads * head_dim
            self.linear = linear
            self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
            self.proj_in = nn.Linear(ch, inner) if linear else nn.Conv2d(ch, inner, 1)
            self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner, heads, head_dim, ctx_dim)])
            self.proj_out = nn.Linear(inner, ch) if linear else nn.Conv2d(inner, ch, 1)

        def forward(self, x, ctx):
            B, C, H, W = x.shape
            h = self.norm(x)
            if not self.linear:
                h = self.proj_in(h)
            h = h.permute(0, 2, 3, 1).reshape(B, H * W, -1)
            if self.linear:
                h = self.proj_in(h)
            for blk in self.transformer_blocks:
                h = blk(h, ctx)
            if self.linear:
                h = self.proj_out(h)
            h = h.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()  # (forward-mode AD of group_norm
            if not self.linear:                                           # in 1.13 views its tangent)
                h = self.proj_out(h)
            return h + x

    class Downsample2D(nn.Module):
        def __init__(self, ch):
            super().__init__()
            self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

        def forward(self, x):
            return self.conv(x)

    class Upsample2D(nn.Module):
        def __init__(self, ch):
            super().__init__()
            self.conv = nn.Conv2d(ch, ch, 3, padding=1)

        def forward(self, x):
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

    class Block(nn.Module):  # a down, mid or up block: resnets [+ attentions] [+ down/upsamplers]
        pass

    class TimestepEmbedding(nn.Module):
        def __init__(self, cin, temb):
            super().__init__()
            self.linear_1 = nn.Linear(cin, temb)
            self.linear_2 = nn.Linear(temb, temb)

        def forward(self, x):
            return self.linear_2(F.silu(self.linear_1(x)))

    class UNet2DConditionModel(nn.Module):
        def __init__(self, c):
            super().__init__()
            boc, L, G, eps = c["block_out_channels"], c["layers_per_block"], c["norm_num_groups"], c["norm_eps"]
            n = len(boc)
            heads = c["attention_head_dim"]  # diffusers 0.10: really the head count (head dim = channels / it)
            if isinstance(heads, int):
                heads = [heads] * n
            ctx, lin = c["cross_attention_dim"], c.get("use_linear_projection", False)
            temb = boc[0] * 4
            self.cfg, self.temb_ch = c, boc[0]
            self.conv_in = nn.Conv2d(c["in_channels"], boc[0], 3, padding=1)
            self.time_embedding = TimestepEmbedding(boc[0], temb)

            def t2d(ch, h):
                return Transformer2DModel(ch, h, ch // h, ctx, G, lin)

            self.down_blocks = nn.ModuleList()
            out = boc[0]
            for i, typ in enumerate(c["down_block_types"]):
                inp, out = out, boc[i]
                b = Block()
                b.resnets = nn.ModuleList([ResnetBlock2D(inp if j == 0 else out, out, temb, eps, G) for j in range(L)])
                if typ == "CrossAttnDownBlock2D":
                    b.attentions = nn.ModuleList([t2d(out, heads[i]) for _ in range(L)])
                elif typ != "DownBlock2D":
                    raise SystemExit("down block %s: not written here" % typ)
                if i < n - 1:
                    b.downsamplers = nn.ModuleList([Downsample2D(out)])
                self.down_blocks.append(b)
            self.mid_block = Block()
            self.mid_block.resnets = nn.ModuleList([ResnetBlock2D(boc[-1], boc[-1], temb, eps, G) for _ in range(2)])
            self.mid_block.attentions = nn.ModuleList([t2d(boc[-1], heads[-1])])
            rev, rheads = boc[::-1], heads[::-1]
            self.up_blocks = nn.ModuleList()
            prev = rev[0]
            for i, typ in enumerate(c["up_block_types"]):
                out, inp = rev[i], rev[min(i + 1, n - 1)]
                b = Block()
                b.resnets = nn.ModuleList([
                    ResnetBlock2D((prev if j == 0 else out) + (inp if j == L else out), out, temb, eps, G)
                    for j in range(L + 1)])
                if typ == "CrossAttnUpBlock2D":
                    b.attentions = nn.ModuleList([t2d(out, rheads[i]) for _ in range(L + 1)])
                elif typ != "UpBlock2D":
                    raise SystemExit("up block %s: not written here" % typ)
                if i < n - 1:
                    b.upsamplers = nn.ModuleList([Upsample2D(out)])
                self.up_blocks.append(b)
                prev = out
            self.conv_norm_out = nn.GroupNorm(G, boc[0], eps=eps)
            self.conv_out = nn.Conv2d(boc[0], c["out_channels"], 3, padding=1)

        def time_proj(self, t):
            half = self.temb_ch // 2
            e = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) /
                          (half - self.cfg.get("freq_shift", 0)))
            e = t.float()[:, None] * e[None, :]
            s, c = torch.sin(e), torch.cos(e)
            return torch.cat([c, s] if self.cfg.get("flip_sin_to_cos", True) else [s, c], dim=-1)

        def forward(self, x, t, ctx):
            temb = self.time_embedding(self.time_proj(t))
            x = self.conv_in(x)
            res = [x]
            for b in self.down_blocks:
                for j, r in enumerate(b.resnets):
                    x = r(x, temb)
                    if hasattr(b, "attentions"):
                        x = b.attentions[j](x, ctx)
                    res.append(x)
                if hasattr(b, "downsamplers"):
                    x = b.downsamplers[0](x)
                    res.append(x)
            m = self.mid_block
            x = m.resnets[1](m.attentions[0](m.resnets[0](x, temb), ctx), temb)
            for b in self.up_blocks:
                for j, r in enumerate(b.resnets):
                    x = r(torch.cat([x, res.pop()], dim=1), temb)
                    if hasattr(b, "attentions"):
                        x = b.attentions[j](x, ctx)
                if hasattr(b, "upsamplers"):
                    x = b.upsamplers[0](x)
            return self.conv_out(F.silu(self.conv_norm_out(x)))

    class VAEAttention(nn.Module):  # diffusers' Attention of the VAE: one head, biased q, k, v
        def __init__(self, ch, groups):
            super().__init__()
            self.group_norm = nn.GroupNorm(groups, ch, eps=1e-6)
            self.to_q = nn.Linear(ch, ch)
            self.to_k = nn.Linear(ch, ch)
            self.to_v = nn.Linear(ch, ch)
            self.to_out = nn.ModuleList([nn.Linear(ch, ch)])

        def forward(self, x):
            B, C, H, W = x.shape
            h = self.group_norm(x).reshape(B, C, H * W).transpose(1, 2)
            h = self.to_out[0](mha(self.to_q(h), self.to_k(h), self.to_v(h), 1))
            return h.transpose(1, 2).contiguous().reshape(B, C, H, W) + x

    class Decoder(nn.Module):
        def __init__(self, c):
            super().__init__()
            boc, L, G = c["block_out_channels"], c["layers_per_block"], c["norm_num_groups"]
            n, eps = len(boc), 1e-6
            self.conv_in = nn.Conv2d(c["latent_channels"], boc[-1], 3, padding=1)
            self.mid_block = Block()
            self.mid_block.resnets = nn.ModuleList([ResnetBlock2D(boc[-1], boc[-1], 0, eps, G) for _ in range(2)])
            self.mid_block.attentions = nn.ModuleList([VAEAttention(boc[-1], G)])
            rev = boc[::-1]
            self.up_blocks = nn.ModuleList()
            prev = rev[0]
            for i, typ in enumerate(c["up_block_types"]):
                if typ != "UpDecoderBlock2D":
                    raise SystemExit("VAE up block %s: not written here" % typ)
                out = rev[i]
                b = Block()
                b.resnets = nn.ModuleList([ResnetBlock2D(prev if j == 0 else out, out, 0, eps, G) for j in range(L + 1)])
                if i < n - 1:
                    b.upsamplers = nn.ModuleList([Upsample2D(out)])
                self.up_blocks.append(b)
                prev = out
            self.conv_norm_out = nn.GroupNorm(G, boc[0], eps=eps)
            self.conv_out = nn.Conv2d(boc[0], c["out_channels"], 3, padding=1)

        def forward(self, z):
            x = self.conv_in(z)
            m = self.mid_block
            x = m.resnets[1](m.attentions[0](m.resnets[0](x)))
            for b in self.up_blocks:
                for r in b.resnets:
                    x = r(x)
                if hasattr(b, "upsamplers"):
                    x = b.upsamplers[0](x)
            return self.conv_out(F.silu(self.conv_norm_out(x)))

    class VAEDecode(nn.Module):  # AutoencoderKL.decode: post_quant_conv + decoder
        def __init__(self, c):
            super().__init__()
            self.scaling = c.get("scaling_factor", 0.18215)
            self.post_quant_conv = nn.Conv2d(c["latent_channels"], c["latent_channels"], 1)
            self.decoder = Decoder(c)

        def forward(self, z):  # z as the pipeline holds it (scaled)
            return self.decoder(self.post_quant_conv(z / self.scaling))

    class CLIPAttention(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.heads = heads
            self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
            self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

        def forward(self, x, mask):
            return self.out_proj(mha(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, mask))

    class CLIPMLP(nn.Module):
        def __init__(self, d, inter, act):
            super().__init__()
            self.fc1, self.fc2, self.act = nn.Linear(d, inter), nn.Linear(inter, d), act

        def forward(self, x):
            h = self.fc1(x)
            h = h * torch.sigmoid(1.702 * h) if self.act == "quick_gelu" else F.gelu(h)
            return self.fc2(h)

    class CLIPEncoderLayer(nn.Module):
        def __init__(self, c):
            super().__init__()
            d, e = c["hidden_size"], c.get("layer_norm_eps", 1e-5)
            self.self_attn = CLIPAttention(d, c["num_attention_heads"])
            self.layer_norm1 = nn.LayerNorm(d, eps=e)
            self.mlp = CLIPMLP(d, c["intermediate_size"], c.get("hidden_act", "quick_gelu"))
            self.layer_norm2 = nn.LayerNorm(d, eps=e)

        def forward(self, x, mask):
            x = x + self.self_attn(self.layer_norm1(x), mask)
            return x + self.mlp(self.layer_norm2(x))

    class CLIPTextModel(nn.Module):  # transformers' CLIPTextModel; output: the last hidden state
        def __init__(self, c):
            super().__init__()
            d = c["hidden_size"]
            tm = nn.Module()
            tm.embeddings = nn.Module()
            tm.embeddings.token_embedding = nn.Embedding(c["vocab_size"], d)
            tm.embeddings.position_embedding = nn.Embedding(c["max_position_embeddings"], d)
            tm.encoder = nn.Module()
            tm.encoder.layers = nn.ModuleList([CLIPEncoderLayer(c) for _ in range(c["num_hidden_layers"])])
            tm.final_layer_norm = nn.LayerNorm(d, eps=c.get("layer_norm_eps", 1e-5))
            self.text_model = tm

        def forward(self, ids):
            tm = self.text_model
            T = ids.shape[1]
            x = tm.embeddings.token_embedding(ids) + tm.embeddings.position_embedding(torch.arange(T))[None]
            mask = torch.full((T, T), float("-inf")).triu(1)
            for layer in tm.encoder.layers:
                x = layer(x, mask)
            return tm.final_layer_norm(x)

    return UNet2DConditionModel, VAEDecode, CLIPTextModel


VAE_OLD = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def vae_rename(k):  # diffusers < 0.14 named the VAE attention's layers query/key/value/proj_attn
    parts = k.split(".")
    if len(parts) >= 2 and parts[-2] in VAE_OLD:
        return ".".join(parts[:-2] + [VAE_OLD[parts[-2]], parts[-1]])
    return k


# parameters and tensors of Stable Diffusion 2.1-base (the VAE: decoder + post_quant_conv)
SD2_COUNTS = {"unet": (865910724, 686), "vae": (49490199, 140), "text": (340387840, 372)}


class Pipe:
    def __init__(self, folder, parts=("text", "unet", "vae")):
        import numpy as np
        UNet, VAEDec, CLIP = build_classes()
        self.folder = folder
        cfg = lambda p: json.load(open(os.path.join(folder, p, "config.json")))
        self.counts = {}
        if "text" in parts:
            self.text = CLIP(cfg("text_encoder")).eval()
            w = st_read(find_weights(os.path.join(folder, "text_encoder")))
            nt = load_into(self.text, w, lambda k: not k.endswith("position_ids"))
            self.counts["text"] = (sum(p.numel() for p in self.text.parameters()), nt)
        if "unet" in parts:
            self.unet = UNet(cfg("unet")).eval()
            nt = load_into(self.unet, st_read(find_weights(os.path.join(folder, "unet"))))
            self.counts["unet"] = (sum(p.numel() for p in self.unet.parameters()), nt)
        if "vae" in parts:
            self.vae = VAEDec(cfg("vae")).eval()
            nt = load_into(self.vae, st_read(find_weights(os.path.join(folder, "vae"))),
                           lambda k: k.startswith("decoder.") or k.startswith("post_quant_conv."), vae_rename)
            self.counts["vae"] = (sum(p.numel() for p in self.vae.parameters()), nt)
        for m in ("text", "unet", "vae"):
            if hasattr(self, m):
                for p in getattr(self, m).parameters():
                    p.requires_grad_(False)
        if json.load(open(os.path.join(folder, "unet", "config.json")))["block_out_channels"] == [320, 640, 1280, 1280] \
                and cfg("text_encoder")["hidden_size"] == 1024:  # Stable Diffusion 2.x: diffusers' counts
            for part, want in SD2_COUNTS.items():
                if part in self.counts and self.counts[part] != want:
                    raise SystemExit("%s: %d parameters in %d tensors, expected %d in %d" %
                                     ((part,) + self.counts[part] + want))
        sc = json.load(open(os.path.join(folder, "scheduler", "scheduler_config.json")))
        T = sc.get("num_train_timesteps", 1000)
        b0, b1 = sc.get("beta_start", 1e-4), sc.get("beta_end", 0.02)
        kind = sc.get("beta_schedule", "linear")
        if kind == "scaled_linear":
            betas = np.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=np.float64) ** 2
        elif kind == "linear":
            betas = np.linspace(b0, b1, T, dtype=np.float64)
        else:
            raise SystemExit("beta_schedule %s: not written here" % kind)
        self.abar = np.cumprod(1.0 - betas)

    def abar_at(self, t):  # loco's schedule_abar: alphas_cumprod[floor(t)]
        return float(self.abar[min(max(int(math.floor(t)), 0), len(self.abar) - 1)])

    def ids(self, prompt):
        r = subprocess.run([LOCO, "tokenize", self.folder, "--prompt", prompt, "--json"], check=True,
                           stdout=subprocess.PIPE, env=dict(os.environ, OMP_NUM_THREADS="1"))
        j = json.loads(r.stdout)
        return j["ids"]

    def encode(self, id_rows):
        import torch
        return self.text(torch.tensor(id_rows, dtype=torch.long))

    def eps_cfg(self, z, t, emb):  # emb [2, T, D]: (uncond, cond)
        import torch
        e = self.unet(torch.cat([z, z]), torch.full((2,), t), emb)
        eu, ec = e.chunk(2)
        return eu + GUIDANCE * (ec - eu)

    def x0_hat(self, z, t, emb):
        a = self.abar_at(t)
        return (z - math.sqrt(1 - a) * self.eps_cfg(z, t, emb)) / math.sqrt(a)


LOCO = os.path.join(ROOT, "build", "loco")
BENCH_SD = os.path.join(ROOT, "build", "bench_sd")


# --------------------------------------------------------------------------
# measurement workers (one per subprocess)
# --------------------------------------------------------------------------


def hwm_reset():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def hwm_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def worker(a):
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    res = {"phase": a.worker, "threads": torch.get_num_threads(),
           "malloc": "tuned" if os.environ.get("MALLOC_MMAP_THRESHOLD_") else "default"}
    t0 = time.perf_counter()
    P = Pipe(a.folder)
    res["load_s"] = time.perf_counter() - t0
    res["counts"] = P.counts
    rows = [P.ids(""), P.ids(PROMPT)]
    size = a.jac_size if a.worker == "jac" else a.size
    lat = size // 8
    rng = np.random.default_rng(7)
    z = torch.from_numpy(rng.standard_normal((1, 4, lat, lat)).astype(np.float32))

    def timed(fn, repeat):  # median wall and CPU seconds
        ts, cs = [], []
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            fn()
            ts.append(time.perf_counter() - t)
            cs.append(time.process_time() - c)
        return sorted(ts)[len(ts) // 2], sorted(cs)[len(cs) // 2]

    with torch.no_grad():
        emb = P.encode(rows)
    if a.worker == "text":
        hwm_reset()
        with torch.no_grad():
            res["seconds"], res["cpu_seconds"] = timed(lambda: P.encode(rows), a.repeat)
        res["peak_kb"] = hwm_kb()
    elif a.worker == "unet":
        hwm_reset()
        with torch.no_grad():
            res["seconds"], res["cpu_seconds"] = timed(lambda: P.eps_cfg(z, T_STEP, emb), a.repeat)
        res["peak_kb"] = hwm_kb()
    elif a.worker == "decode":
        hwm_reset()
        with torch.no_grad():
            res["seconds"], res["cpu_seconds"] = timed(lambda: P.vae(z), a.repeat)
        res["peak_kb"] = hwm_kb()
    elif a.worker == "jac":
        k = a.k
        S = size
        mask = torch.zeros(1, 3, S, S, dtype=torch.bool)
        mask[:, :, S * 3 // 8:S * 5 // 8, S * 3 // 8:S * 5 // 8] = True

        def f(zz):
            return P.vae(P.x0_hat(zz, T_JAC, emb))[mask]

        V = torch.from_numpy(rng.standard_normal((k, 1, 4, lat, lat)).astype(np.float32))
        sub = a.jac_part
        if sub == "fwd":  # J V by forward mode: k forwards with a tangent, no graph
            import torch.autograd.forward_ad as fwAD
            hwm_reset()
            t, c = time.perf_counter(), time.process_time()
            JV = []
            for i in range(k):
                with fwAD.dual_level():
                    out = f(fwAD.make_dual(z, V[i]))
                    JV.append(fwAD.unpack_dual(out).tangent.clone())
            res["jv_fwd_s"], res["jv_fwd_cpu"] = time.perf_counter() - t, time.process_time() - c
            res["jv_fwd_peak_kb"] = hwm_kb()
            JV = torch.stack(JV)
            res["jv_norm2"] = float((JV.double() ** 2).sum())
        else:  # the record, then U^T J by vjp and J V by double vjp through it
            hwm_reset()
            t, c = time.perf_counter(), time.process_time()
            zz = z.clone().requires_grad_(True)
            out = f(zz)
            res["record_s"], res["record_cpu"] = time.perf_counter() - t, time.process_time() - c
            res["record_peak_kb"] = hwm_kb()
            U = torch.from_numpy(rng.standard_normal((k, out.numel())).astype(np.float32))
            hwm_reset()
            t, c = time.perf_counter(), time.process_time()
            UJ = [torch.autograd.grad(out, zz, U[i], retain_graph=True)[0] for i in range(k)]
            res["vjp_s"], res["vjp_cpu"] = time.perf_counter() - t, time.process_time() - c
            res["vjp_peak_kb"] = hwm_kb()
            hwm_reset()
            t, c = time.perf_counter(), time.process_time()
            u = torch.zeros_like(out, requires_grad=True)
            g = torch.autograd.grad(out, zz, u, create_graph=True)[0]  # u^T J, linear in u
            JV = [torch.autograd.grad(g, u, V[i], retain_graph=True)[0] for i in range(k)]
            res["jv_dvjp_s"], res["jv_dvjp_cpu"] = time.perf_counter() - t, time.process_time() - c
            res["jv_dvjp_peak_kb"] = hwm_kb()
            # adjoint identity: <J V, U> = <V, U^T J>
            a1 = sum(float((JV[i].double() * U[i].double()).sum()) for i in range(k))
            a2 = sum(float((V[i].double() * UJ[i].double()).sum()) for i in range(k))
            res["adjoint_rel"] = abs(a1 - a2) / max(abs(a1), 1e-30)
            res["jv_norm2"] = float(sum((j.double() ** 2).sum() for j in JV))
    res["process_peak_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("TORCH_SD_RESULT " + json.dumps(res), flush=True)


# --------------------------------------------------------------------------
# correctness against loco's command line
# --------------------------------------------------------------------------


def rel(a, b):
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = np.abs(a - b).max()
    return d, d / max(np.abs(b).max(), 1e-30), float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def check(a):
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    P = Pipe(a.folder)
    print("parameters: " + ", ".join("%s %d in %d tensors" % (k, v[0], v[1]) for k, v in P.counts.items()))
    lat = a.size // 8
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    out = {}
    with tempfile.TemporaryDirectory() as td:
        rng = np.random.default_rng(3)
        z = rng.standard_normal((1, 4, lat, lat)).astype(np.float32)
        st_write(os.path.join(td, "x.safetensors"), {"x": z})
        rows = [P.ids(""), P.ids(PROMPT)]
        print("ids of %r: %s" % (PROMPT, rows[1][:8]))
        with torch.no_grad():
            emb = P.encode(rows)
        for t in (T_STEP, T_JAC):
            o = os.path.join(td, "eps.safetensors")
            subprocess.run([LOCO, "eps", a.folder, "--image-size", str(a.size), "--x", os.path.join(td, "x.safetensors"),
                            "--t", repr(t), "--prompt", PROMPT, "--guidance", str(GUIDANCE), "--out", o, "--quiet"],
                           check=True, env=env)
            L = st_read(o)
            with torch.no_grad():
                zt = torch.from_numpy(z)
                e = P.eps_cfg(zt, t, emb).numpy()
                x0 = P.x0_hat(zt, t, emb).numpy()
            for name, mine, theirs in (("eps", e, L["eps"]), ("x0_hat", x0, L["x0_hat"])):
                d, r, rn = rel(mine, theirs)
                out["%s t=%g" % (name, t)] = (d, r, rn)
        g = os.path.join(td, "gen.safetensors")
        subprocess.run([LOCO, "generate", a.folder, "--image-size", str(a.size), "--prompt", PROMPT, "--steps", "2",
                        "--seed", "1", "--out", os.path.join(td, "gen.png"), "--tensors", g, "--quiet"],
                       check=True, env=env)
        G = st_read(g)
        with torch.no_grad():
            img = P.vae(torch.from_numpy(np.array(G["latents"], dtype=np.float32))).numpy()
        out["VAE decode"] = rel(img, G["samples"])
        if a.emb:  # text embeddings written by another program (tensor "emb" [2, 77, D]: uncond, cond)
            out["text embedding"] = rel(emb.numpy(), st_read(a.emb)["emb"])
    print("%-22s %12s %12s %12s" % ("torch vs loco", "max abs", "max rel", "rel L2"))
    for k, (d, r, rn) in out.items():
        print("%-22s %12.3g %12.3g %12.3g" % (k, d, r, rn))
    if a.json:
        json.dump({k: {"max_abs": v[0], "max_rel": v[1], "rel_l2": v[2]} for k, v in out.items()}, open(a.json, "w"),
                  indent=1)


# --------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------


def run_worker(a, phase, malloc, extra=()):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    for v in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(v, None)
    if malloc == "tuned":
        env["MALLOC_MMAP_THRESHOLD_"] = BIG
        env["MALLOC_TRIM_THRESHOLD_"] = BIG
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", phase, "--folder", a.folder, "--size", str(a.size),
           "--jac-size", str(a.jac_size), "--threads", str(a.threads), "--k", str(a.k), "--repeat", str(a.repeat)]
    cmd += list(extra)
    sys.stderr.write("torch_sd: %s (%s malloc) ...\n" % (" ".join([phase] + list(extra)), malloc))
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, universal_newlines=True)
    for line in r.stdout.splitlines():
        if line.startswith("TORCH_SD_RESULT "):
            res = json.loads(line[len("TORCH_SD_RESULT "):])
            res["wall_s"] = time.perf_counter() - t
            sys.stderr.write("torch_sd:   %s\n" % json.dumps(res))
            return res
    return {"error": "worker %s exited %d" % (phase, r.returncode)}


def run_loco(a, size, jac):
    cmd = [BENCH_SD, a.folder, "--image-size", str(size), "--k", str(a.k), "--repeat", str(a.repeat), "--json"]
    if not jac:
        cmd.append("--no-jacobian")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    sys.stderr.write("torch_sd: %s\n" % " ".join(cmd))
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, universal_newlines=True, check=True)
    j = json.loads(r.stdout)
    return {p["name"]: p for p in j["phases"]}


GiB = 1048576.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", default="/tmp/sd21")
    ap.add_argument("--size", type=int, default=512, help="image size of text/unet/decode (512)")
    ap.add_argument("--jac-size", type=int, default=256, help="image size of the Jacobian products (256)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=1, help="median of R runs per timing (1)")
    ap.add_argument("--only", default="text,unet,decode,jac", help="comma list of text, unet, decode, jac")
    ap.add_argument("--malloc", choices=("tuned", "default", "both"), default="tuned")
    ap.add_argument("--default-malloc", action="store_true", help="--malloc default")
    ap.add_argument("--no-loco", action="store_true", help="torch only")
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--check", action="store_true", help="compare outputs with loco's at --size")
    ap.add_argument("--table-from", help="print the table of an earlier --json file")
    ap.add_argument("--emb", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--jac-part", default="rev", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.default_malloc:
        a.malloc = "default"
    if a.worker:
        return worker(a)
    if a.check:
        if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):  # re-exec with the tuned malloc
            os.execve(sys.executable, [sys.executable] + sys.argv,
                      dict(os.environ, MALLOC_MMAP_THRESHOLD_=BIG, MALLOC_TRIM_THRESHOLD_=BIG))
        return check(a)
    only = a.only.split(",")
    mallocs = ["tuned", "default"] if a.malloc == "both" else [a.malloc]
    if a.table_from:
        return table(json.load(open(a.table_from)))
    R = {"folder": a.folder, "size": a.size, "jac_size": a.jac_size, "threads": a.threads, "k": a.k,
         "repeat": a.repeat, "mallocs": mallocs, "torch": {}, "loco": {}}
    for m in mallocs:
        R["torch"][m] = {}
    if set(only) & {"text", "unet", "decode"}:  # loco then torch at --size, then both at --jac-size
        if not a.no_loco:
            R["loco"][str(a.size)] = run_loco(a, a.size, False)
        for m in mallocs:
            for ph in ("text", "unet", "decode"):
                if ph in only:
                    R["torch"][m][ph] = run_worker(a, ph, m)
    if "jac" in only:
        if not a.no_loco:
            R["loco"][str(a.jac_size)] = run_loco(a, a.jac_size, True)
        for m in mallocs:
            R["torch"][m]["jac_rev"] = run_worker(a, "jac", m, ["--jac-part", "rev"])
            R["torch"][m]["jac_fwd"] = run_worker(a, "jac", m, ["--jac-part", "fwd"])
    if a.json:
        with open(a.json, "w") as fo:
            json.dump(R, fo, indent=1)
    table(R, a.json)


def table(R, json_out=None):
    mallocs = R["mallocs"]
    # the table
    L = R["loco"].get(str(R["size"]), {})
    LJ = R["loco"].get(str(R["jac_size"]), {})
    k = R["k"]
    rows = []

    def add(name, lname, key, tkey, ckey, peak_key, Ld):
        lo = Ld.get(lname, {})
        for m in mallocs:
            tr = R["torch"][m].get(key)
            if not tr or "error" in tr:
                continue
            tp = tr.get(peak_key)
            rows.append((name + ("" if len(mallocs) == 1 else " [%s malloc]" % m), tr.get(ckey), lo.get("cpu_seconds"),
                         tr.get(tkey), lo.get("seconds"), tp and tp / GiB,
                         lo.get("peak_bytes") and lo["peak_bytes"] / GiB / 1024))

    jv, vj = "J V (k=%d)" % k, "U^T J (k=%d)" % k
    add("text (2 prompts)", "text (2 prompts)", "text", "seconds", "cpu_seconds", "peak_kb", L)
    add("UNet step, CFG (x2)", "UNet step, CFG (x2)", "unet", "seconds", "cpu_seconds", "peak_kb", L)
    add("VAE decode", "VAE decode", "decode", "seconds", "cpu_seconds", "peak_kb", L)
    add("record d x0/d z_t", "record d x0 / d z_t", "jac_rev", "record_s", "record_cpu", "record_peak_kb", LJ)
    add("J V k=%d forward mode" % k, jv, "jac_fwd", "jv_fwd_s", "jv_fwd_cpu", "jv_fwd_peak_kb", LJ)
    add("J V k=%d double vjp" % k, jv, "jac_rev", "jv_dvjp_s", "jv_dvjp_cpu", "jv_dvjp_peak_kb", LJ)
    add("U^T J k=%d vjp" % k, vj, "jac_rev", "vjp_s", "vjp_cpu", "vjp_peak_kb", LJ)
    print("threads %d, text/UNet/decode at %dx%d, Jacobian at %dx%d; CPU and wall seconds (median of %d); "
          "peak memory of the process (GiB, weights included)" % (R["threads"], R["size"], R["size"], R["jac_size"],
                                                                  R["jac_size"], R.get("repeat", 1)))
    print("%-26s %8s %8s %6s %8s %8s %6s %9s %9s" % ("phase", "torch", "loco", "t/l", "torch", "loco", "t/l",
                                                   "torch", "loco"))
    print("%-26s %8s %8s %6s %8s %8s %6s %9s %9s" % ("", "CPU s", "CPU s", "", "wall s", "wall s", "", "GiB", "GiB"))
    f = lambda v, fmt: (fmt % v) if v is not None else "-"
    q = lambda x, y: x / y if x and y else None
    for name, tc, lc, tw, lw, tp, lp in rows:
        print("%-26s %8s %8s %6s %8s %8s %6s %9s %9s" % (name, f(tc, "%.2f"), f(lc, "%.2f"), f(q(tc, lc), "%.2f"),
                                                       f(tw, "%.2f"), f(lw, "%.2f"), f(q(tw, lw), "%.2f"),
                                                       f(tp, "%.2f"), f(lp, "%.2f")))
    for m in mallocs:
        jr, jf = R["torch"][m].get("jac_rev", {}), R["torch"][m].get("jac_fwd", {})
        if "jv_norm2" in jr and "jv_norm2" in jf:
            print("torch |J V|^2 (%s malloc): forward mode %.8g, double vjp %.8g" % (m, jf["jv_norm2"], jr["jv_norm2"]))
        if "adjoint_rel" in jr:
            print("torch adjoint identity (%s malloc): <J V, U> vs <V, U^T J> relative %.2g" % (m, jr["adjoint_rel"]))
    R["table"] = [dict(zip(("phase", "torch_cpu_s", "loco_cpu_s", "torch_s", "loco_s", "torch_peak_gib",
                            "loco_peak_gib"), r)) for r in rows]
    if json_out:
        with open(json_out, "w") as fo:
            json.dump(R, fo, indent=1)


if __name__ == "__main__":
    main()
