#!/usr/bin/python3
"""torch_unet2d.py - loco side by side with plain PyTorch 1.13 (issue #15).

A self-contained PyTorch implementation of diffusers' UNet2DModel (no
diffusers, no network): built from a loco/diffusers model folder's
config.json, weights read from its diffusion_pytorch_model.safetensors by a
small reader of our own, then

  check MODEL   eps, x0_hat, J V and U^T J of x0_hat against `loco eps` and
                `loco jacobian` (max abs / relative differences);
  bench MODEL   forward pass (batch 1 and 3), J V and U^T J with k = 1 and 5,
                at 1 and 2 threads, torch and loco (build/bench and
                build/bench_lin run as subprocesses) in the same run, as a
                table with ratios (--json: machine-readable).

Run it with Debian's interpreter, which has python3-torch 1.13:

  /usr/bin/python3 bench/torch_unet2d.py check build/bench-models/ddpm-ema-celebahq-256
  /usr/bin/python3 bench/torch_unet2d.py bench build/bench-models/ddpm-ema-celebahq-256 [--json OUT.json]

`bench` runs build/bench with --cache DIR --only NAME for MODEL = DIR/NAME, so
NAME must be one of bench's model names (ddpm-ema-celebahq-256, ddpm-cifar10-32,
...); the loco programs are taken from build/ (LOCO_BUILD=DIR to change).

Conventions shared with loco: t is the network's timestep (a float), x0_hat
= (x - sqrt(1 - abar) eps) / sqrt(abar) with abar = alphas_cumprod[floor(t)]
(linear betas 1e-4..0.02 over 1000 steps unless scheduler/scheduler_config.json
says otherwise; products in float64, rounded to float32 as loco does). The
Jacobian products are those of x0_hat with respect to x, as `loco jacobian`
computes by default and `bench_lin` times.

Memory allocator: glibc's malloc returns every large block (> 32 MiB at most,
the dynamic mmap threshold) to the kernel with munmap and maps it again on the
next allocation, so every activation of a 256x256 UNet is page-faulted in
afresh on every call; PyTorch on this machine was ~3x slower on big tensors
for that reason. The script therefore re-executes itself once with
MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set to 16 GiB (heap memory
is kept and reused), unless they are already set or --default-malloc is given
(then measured as glibc ships it; `bench --default-malloc-row` adds one such
row for comparison).

OpenMP waits: loco re-executes itself with GOMP_SPINCOUNT=1000 (libgomp's
default spins 300,000 times before a thread sleeps, which costs dearly on a
machine shared with other work); this script gives torch the same setting,
unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set already. The loco programs
run without the malloc variables, as a user runs them.
"""
import json
import math
import os
import resource
import statistics
import struct
import subprocess
import sys
import time

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(16 << 30), "MALLOC_TRIM_THRESHOLD_": str(16 << 30)}
ENV_SHOWN = list(MALLOC_ENV) + ["GOMP_SPINCOUNT", "OMP_WAIT_POLICY"]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def maybe_reexec():
    """Re-execute once with the malloc settings (see the module docstring) and
    loco's OpenMP wait (GOMP_SPINCOUNT=1000, what loco_threads_reexec sets;
    unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is given) in the environment:
    glibc and libgomp read them at start-up only."""
    if os.environ.get("TORCH_UNET2D_REEXEC"):
        return
    want = {}
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        want["GOMP_SPINCOUNT"] = "1000"
    if "--default-malloc" not in sys.argv:
        want.update({k: v for k, v in MALLOC_ENV.items() if k not in os.environ})
    if not want:
        return
    env = dict(os.environ, TORCH_UNET2D_REEXEC="1", **want)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


# ---- safetensors ------------------------------------------------------------

def read_safetensors(path):
    """name -> float32 tensor. The format: an 8-byte little-endian header
    length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}}
    (offsets relative to the end of the header), then the raw little-endian
    data. Each tensor is read straight into its own buffer (no second copy of
    the file in memory)."""
    import torch
    dtypes = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
              "F64": (torch.float64, 8)}
    out = {}
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, 100 << 20):
            raise ValueError(f"{path}: header length {n} out of range")
        header = json.loads(f.read(n))
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in dtypes:
                raise ValueError(f"{path}: {name}: dtype {info['dtype']} not supported")
            dt, width = dtypes[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            b, e = (int(v) for v in info["data_offsets"])
            count = math.prod(shape)
            if e - b != count * width or base + e > size:
                raise ValueError(f"{path}: {name}: data_offsets {b}..{e} do not fit shape {shape}")
            buf = torch.empty(e - b, dtype=torch.uint8)
            f.seek(base + b)
            if f.readinto(buf.numpy()) != e - b:
                raise ValueError(f"{path}: {name}: short read")
            t = buf.view(dt).reshape(shape)
            out[name] = t if dt == torch.float32 else t.float()
    return out


def write_safetensors(path, tensors):
    """tensors: name -> float32 tensor (written as F32)."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# old diffusers attention names (AttentionBlock) -> the Attention module's
OLD_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def rename_old_attention(sd):
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if len(parts) >= 3 and "attentions" in parts and parts[-2] in OLD_ATTN:
            k = ".".join(parts[:-2] + [OLD_ATTN[parts[-2]], parts[-1]])
        out[k] = v
    return out


# ---- the network --------------------------------------------------------------

def build_model_classes():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def act(x):
        return F.silu(x)

    class Resnet(nn.Module):
        """GroupNorm, SiLU, conv 3x3, + projected time embedding, GroupNorm,
        SiLU, conv 3x3; a 1x1 convolution on the skip path when the channel
        count changes; (skip + h) / output_scale."""

        def __init__(self, cin, cout, temb, groups, eps, scale_shift, out_scale):
            super().__init__()
            self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
            self.scale_shift = scale_shift
            self.time_emb_proj = nn.Linear(temb, 2 * cout if scale_shift else cout)
            self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None
            self.out_scale = out_scale

        def forward(self, x, emb):
            h = self.conv1(act(self.norm1(x)))
            e = self.time_emb_proj(act(emb))[:, :, None, None]
            if self.scale_shift:
                s, b = e.chunk(2, dim=1)
                h = self.norm2(h) * (1 + s) + b
            else:
                h = self.norm2(h + e)
            h = self.conv2(act(h))
            skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
            out = skip + h
            return out / self.out_scale if self.out_scale != 1 else out

    class Attn(nn.Module):
        """Spatial self-attention over the H*W positions: GroupNorm, q/k/v
        linear maps, heads of head_dim channels, softmax(q k^T / sqrt(head_dim))
        v, output linear map, + input, / rescale."""

        def __init__(self, ch, head_dim, groups, eps, rescale):
            super().__init__()
            self.group_norm = nn.GroupNorm(groups, ch, eps=eps)
            self.to_q = nn.Linear(ch, ch)
            self.to_k = nn.Linear(ch, ch)
            self.to_v = nn.Linear(ch, ch)
            self.to_out = nn.ModuleList([nn.Linear(ch, ch)])
            if ch % head_dim:
                raise ValueError(f"attention: {ch} channels do not split into heads of {head_dim}")
            self.heads, self.head_dim = ch // head_dim, head_dim
            self.rescale = rescale

        def forward(self, x):
            B, C, H, W = x.shape
            h = self.group_norm(x).reshape(B, C, H * W).transpose(1, 2)  # [B, HW, C]
            nh, d = self.heads, self.head_dim

            def split(t):
                return t.reshape(B, H * W, nh, d).permute(0, 2, 1, 3)  # [B, nh, HW, d]

            q, k, v = split(self.to_q(h)), split(self.to_k(h)), split(self.to_v(h))
            p = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (d ** -0.5), dim=-1)
            o = torch.matmul(p, v).permute(0, 2, 1, 3).reshape(B, H * W, C)
            # contiguous: forward-mode AD's group_norm (torch 1.13) cannot view a channels-last tangent
            o = self.to_out[0](o).transpose(1, 2).reshape(B, C, H, W).contiguous()
            out = o + x
            return out / self.rescale if self.rescale != 1 else out

    class Down(nn.Module):
        """3x3 convolution with stride 2; padding 0 means one zero row and
        column on the bottom and right first."""

        def __init__(self, ch, padding):
            super().__init__()
            self.pad0 = padding == 0
            self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=padding)

        def forward(self, x):
            if self.pad0:
                x = F.pad(x, (0, 1, 0, 1))
            return self.conv(x)

    class Up(nn.Module):
        """nearest-neighbour 2x upsampling, then a 3x3 convolution"""

        def __init__(self, ch):
            super().__init__()
            self.conv = nn.Conv2d(ch, ch, 3, padding=1)

        def forward(self, x):
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

    class DownBlock(nn.Module):
        def __init__(self, cin, cout, n, temb, groups, eps, ss, attn_head, down, pad):
            super().__init__()
            self.resnets = nn.ModuleList(
                [Resnet(cin if i == 0 else cout, cout, temb, groups, eps, ss, 1.0) for i in range(n)])
            self.attentions = (nn.ModuleList([Attn(cout, attn_head, groups, eps, 1.0) for _ in range(n)])
                               if attn_head else None)
            self.downsamplers = nn.ModuleList([Down(cout, pad)]) if down else None

        def forward(self, x, emb):
            outs = []
            for i, r in enumerate(self.resnets):
                x = r(x, emb)
                if self.attentions is not None:
                    x = self.attentions[i](x)
                outs.append(x)
            if self.downsamplers is not None:
                x = self.downsamplers[0](x)
                outs.append(x)
            return x, outs

    class UpBlock(nn.Module):
        def __init__(self, cin, cprev, cout, n, temb, groups, eps, ss, attn_head, up):
            super().__init__()
            rs = []
            for i in range(n):
                skip = cin if i == n - 1 else cout
                rs.append(Resnet((cprev if i == 0 else cout) + skip, cout, temb, groups, eps, ss, 1.0))
            self.resnets = nn.ModuleList(rs)
            self.attentions = (nn.ModuleList([Attn(cout, attn_head, groups, eps, 1.0) for _ in range(n)])
                               if attn_head else None)
            self.upsamplers = nn.ModuleList([Up(cout)]) if up else None

        def forward(self, x, skips, emb):
            for i, r in enumerate(self.resnets):
                x = r(torch.cat([x, skips.pop()], dim=1), emb)
                if self.attentions is not None:
                    x = self.attentions[i](x)
            if self.upsamplers is not None:
                x = self.upsamplers[0](x)
            return x

    class Mid(nn.Module):
        def __init__(self, ch, temb, groups, eps, ss, attn_head, scale, attention):
            super().__init__()
            self.resnets = nn.ModuleList([Resnet(ch, ch, temb, groups, eps, ss, scale) for _ in range(2)])
            self.attentions = nn.ModuleList([Attn(ch, attn_head, groups, eps, scale)]) if attention else None

        def forward(self, x, emb):
            x = self.resnets[0](x, emb)
            if self.attentions is not None:
                x = self.attentions[0](x)
            return self.resnets[1](x, emb)

    class TimeEmbedding(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.linear_1 = nn.Linear(cin, cout)
            self.linear_2 = nn.Linear(cout, cout)

        def forward(self, x):
            return self.linear_2(act(self.linear_1(x)))

    class UNet2D(nn.Module):
        """diffusers' UNet2DModel for the configurations loco supports:
        positional time embedding, Down/AttnDown/Up/AttnUpBlock2D, the mid
        block with one attention, 'default' or 'scale_shift' time scaling."""

        def __init__(self, cfg):
            super().__init__()
            c = dict(cfg)
            for key, ok in (("time_embedding_type", ("positional", None)),
                            ("class_embed_type", (None,)), ("num_class_embeds", (None,)),
                            ("act_fn", ("silu", "swish", None)), ("upsample_type", ("conv", None)),
                            ("downsample_type", ("conv", None)), ("mid_block_type", ("UNetMidBlock2D", None)),
                            ("attn_norm_num_groups", (None,)),
                            ("resnet_time_scale_shift", ("default", "scale_shift", None))):
                if c.get(key) not in ok:
                    raise ValueError(f"config: {key} = {c.get(key)!r} is not supported here")
            ch = list(c["block_out_channels"])
            downs, ups = list(c["down_block_types"]), list(c["up_block_types"])
            if not (len(ch) == len(downs) == len(ups)):
                raise ValueError("config: block_out_channels, down_block_types and up_block_types differ in length")
            n = int(c.get("layers_per_block", 2))
            groups = int(c.get("norm_num_groups", 32))
            eps = float(c.get("norm_eps", 1e-5))
            ss = c.get("resnet_time_scale_shift") == "scale_shift"
            ahd = c.get("attention_head_dim", 8)
            self.center = bool(c.get("center_input_sample", False))
            self.flip = bool(c.get("flip_sin_to_cos", True))
            self.shift = float(c.get("freq_shift", 0))
            self.temb_in = ch[0]
            temb = 4 * ch[0]
            self.conv_in = nn.Conv2d(int(c.get("in_channels", 3)), ch[0], 3, padding=1)
            self.time_embedding = TimeEmbedding(ch[0], temb)
            self.down_blocks = nn.ModuleList()
            cout = ch[0]
            for i, kind in enumerate(downs):
                if kind not in ("DownBlock2D", "AttnDownBlock2D"):
                    raise ValueError(f"config: down block {kind} is not supported here")
                cin, cout = cout, ch[i]
                head = (ahd or cout) if kind == "AttnDownBlock2D" else 0
                self.down_blocks.append(DownBlock(cin, cout, n, temb, groups, eps, ss, head, i < len(ch) - 1,
                                                  int(c.get("downsample_padding", 1))))
            self.mid_block = Mid(ch[-1], temb, groups, eps, ss, ahd or ch[-1],
                                 float(c.get("mid_block_scale_factor", 1)), bool(c.get("add_attention", True)))
            self.up_blocks = nn.ModuleList()
            rev = ch[::-1]
            cout = rev[0]
            for i, kind in enumerate(ups):
                if kind not in ("UpBlock2D", "AttnUpBlock2D"):
                    raise ValueError(f"config: up block {kind} is not supported here")
                cprev, cout = cout, rev[i]
                cin = rev[min(i + 1, len(ch) - 1)]
                head = (ahd or cout) if kind == "AttnUpBlock2D" else 0
                self.up_blocks.append(UpBlock(cin, cprev, cout, n + 1, temb, groups, eps, ss, head,
                                              i < len(ch) - 1))
            self.conv_norm_out = nn.GroupNorm(groups, ch[0], eps=eps)
            self.conv_out = nn.Conv2d(ch[0], int(c.get("out_channels", 3)), 3, padding=1)

        def time_features(self, t):
            """sinusoidal features of the timesteps t [B] (float32): exp(-ln(1e4)
            i / (half - freq_shift)) frequencies, [sin | cos] or [cos | sin]"""
            half = self.temb_in // 2
            freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - self.shift))
            a = t.float()[:, None] * freq[None, :]
            e = torch.cat([torch.cos(a), torch.sin(a)] if self.flip else [torch.sin(a), torch.cos(a)], dim=1)
            if self.temb_in % 2:
                e = F.pad(e, (0, 1))
            return e

        def forward(self, x, t):
            if self.center:
                x = 2 * x - 1.0
            emb = self.time_embedding(self.time_features(t.expand(x.shape[0])))
            h = self.conv_in(x)
            skips = [h]
            for blk in self.down_blocks:
                h, outs = blk(h, emb)
                skips += outs
            h = self.mid_block(h, emb)
            for blk in self.up_blocks:
                h = blk(h, skips, emb)
            return self.conv_out(act(self.conv_norm_out(h)))

    return UNet2D


class Schedule:
    """alphas_cumprod as loco computes it (float64 products, rounded to float32)"""

    def __init__(self, folder):
        cfg = {}
        p = os.path.join(folder, "scheduler", "scheduler_config.json")
        if os.path.exists(p):
            with open(p) as f:
                cfg = json.load(f)
        T = int(cfg.get("num_train_timesteps") or 1000)
        b0, b1 = float(cfg.get("beta_start") or 1e-4), float(cfg.get("beta_end") or 0.02)
        kind = cfg.get("beta_schedule") or "linear"
        self.pred = cfg.get("prediction_type") or "epsilon"
        if kind == "linear":
            betas = [b0 + (b1 - b0) * i / (T - 1) for i in range(T)]
        elif kind == "scaled_linear":
            betas = [(math.sqrt(b0) + (math.sqrt(b1) - math.sqrt(b0)) * i / (T - 1)) ** 2 for i in range(T)]
        elif kind == "squaredcos_cap_v2":
            def ab(u):
                return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = [min(1 - ab((i + 1) / T) / ab(i / T), 0.999) for i in range(T)]
        else:
            raise ValueError(f"scheduler: beta_schedule {kind} is not supported here")
        acc, self.abar = 1.0, []
        for b in betas:
            acc *= 1.0 - b
            self.abar.append(struct.unpack("f", struct.pack("f", acc))[0])
        self.T = T

    def at(self, t):
        if not t >= 0:
            return self.abar[0]
        if not t < self.T - 1:
            return self.abar[-1]
        return self.abar[int(t)]


class Denoiser:
    def __init__(self, folder):
        import torch
        with open(os.path.join(folder, "config.json")) as f:
            self.cfg = json.load(f)
        self.net = build_model_classes()(self.cfg).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        path = os.path.join(folder, "diffusion_pytorch_model.safetensors")
        sd = rename_old_attention(read_safetensors(path))
        res = self.net.load_state_dict(sd, strict=False)
        if res.missing_keys or res.unexpected_keys:
            raise ValueError(f"{path}: missing keys {res.missing_keys}, unexpected keys {res.unexpected_keys}")
        self.n_keys = len(sd)
        del sd
        self.sched = Schedule(folder)
        self.C = int(self.cfg.get("in_channels", 3))
        s = self.cfg.get("sample_size", 32)
        self.H, self.W = (s, s) if isinstance(s, int) else tuple(s)
        self.torch = torch

    def eps(self, x, t):
        torch = self.torch
        y = self.net(x, torch.tensor([float(t)], dtype=torch.float32))
        return self._out(x, t, y, "eps")

    def x0(self, x, t):
        y = self.net(x, self.torch.tensor([float(t)], dtype=self.torch.float32))
        return self._out(x, t, y, "x0")

    def _out(self, x, t, y, what):
        torch = self.torch
        ab = torch.tensor(self.sched.at(t), dtype=torch.float32)
        sa, s1 = torch.sqrt(ab), torch.sqrt(1 - ab)
        p = self.sched.pred
        if p == "epsilon":
            return y if what == "eps" else (x - s1 * y) / sa
        if p == "v_prediction":
            return s1 * x + sa * y if what == "eps" else sa * x - s1 * y
        if p == "sample":
            return (x - sa * y) / s1 if what == "eps" else y
        raise ValueError(f"prediction_type {p} is not supported here")


# ---- Jacobian products ----------------------------------------------------------

def jvp_fn(den, x, t, method):
    """returns f(V [k,C,H,W]) -> J V of x0_hat at x [1,C,H,W]"""
    torch = den.torch
    if method == "vmap":  # functorch: the primal once, the k tangents batched through every op
        import functorch

        def one(v):
            return functorch.jvp(lambda z: den.x0(z, t), (x,), (v[None],))[1][0]

        return functorch.vmap(one)
    if method == "dual-batch":  # forward-mode AD, the primal replicated k times
        import torch.autograd.forward_ad as fwAD

        def f(V):
            with fwAD.dual_level():
                out = den.x0(fwAD.make_dual(x.expand(V.shape[0], -1, -1, -1).contiguous(), V), t)
                return fwAD.unpack_dual(out).tangent
        return f
    if method == "dual-loop":  # forward-mode AD, one tangent at a time
        import torch.autograd.forward_ad as fwAD

        def f(V):
            res = []
            for i in range(V.shape[0]):
                with fwAD.dual_level():
                    out = den.x0(fwAD.make_dual(x, V[i:i + 1]), t)
                    res.append(fwAD.unpack_dual(out).tangent)
            return torch.cat(res)
        return f
    raise ValueError(f"unknown J V method {method}")


class VJP:
    """U^T J of x0_hat at x: one forward pass recorded with its graph (kept),
    then backward passes; 'batched' runs the k cotangents through one vmapped
    backward (autograd.grad(is_grads_batched=True)), 'loop' one at a time"""

    def __init__(self, den, x, t, method):
        torch = den.torch
        self.torch, self.method = torch, method
        self.x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            self.out = den.x0(self.x, t)

    def __call__(self, U):
        torch = self.torch
        if self.method == "batched":
            return torch.autograd.grad(self.out, self.x, U[:, None], retain_graph=True, is_grads_batched=True)[0][:, 0]
        if self.method == "loop":
            return torch.cat([torch.autograd.grad(self.out, self.x, U[i:i + 1], retain_graph=True)[0]
                              for i in range(U.shape[0])])
        raise ValueError(f"unknown U^T J method {self.method}")


# ---- check against loco -----------------------------------------------------------

def loco_bin(name):
    return os.environ.get("LOCO_BUILD", os.path.join(ROOT, "build")) + "/" + name


def diff(a, b):
    d = (a - b).abs().max().item()
    return {"max_abs": d, "max_rel": d / max(b.abs().max().item(), 1e-30)}


def cmd_check(args):
    import tempfile
    torch = setup_torch(args.threads)
    t0 = time.time()
    den = Denoiser(args.model)
    print(f"loaded {args.model}: {den.n_keys} tensors, no missing or unexpected keys ({time.time() - t0:.1f} s)")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, den.C, den.H, den.W, generator=g)
    V = torch.randn(args.k, den.C, den.H, den.W, generator=g)
    U = torch.randn(args.k, den.C, den.H, den.W, generator=g)
    report = {"model": args.model, "t": args.t, "k": args.k, "batch": args.batch}
    with tempfile.TemporaryDirectory() as d:
        write_safetensors(f"{d}/x.safetensors", {"x": x})
        write_safetensors(f"{d}/x1.safetensors", {"x": x[:1]})
        write_safetensors(f"{d}/V.safetensors", {"V": V})
        write_safetensors(f"{d}/U.safetensors", {"U": U})
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        for k in MALLOC_ENV:
            env.pop(k, None)
        run = lambda *a: subprocess.run([loco_bin("loco"), *a], check=True, env=env, stdout=subprocess.DEVNULL)
        t0 = time.time()
        run("eps", args.model, "--x", f"{d}/x.safetensors", "--t", str(args.t), "--out", f"{d}/eps.safetensors")
        run("jacobian", args.model, "--x", f"{d}/x1.safetensors", "--t", str(args.t), "--mode", "jvp",
            "--in", f"{d}/V.safetensors", "--out", f"{d}/jv.safetensors")
        run("jacobian", args.model, "--x", f"{d}/x1.safetensors", "--t", str(args.t), "--mode", "vjp",
            "--in", f"{d}/U.safetensors", "--out", f"{d}/uj.safetensors")
        print(f"loco: eps, J V, U^T J in {time.time() - t0:.1f} s")
        le = read_safetensors(f"{d}/eps.safetensors")
        ljv = read_safetensors(f"{d}/jv.safetensors")["JV"]
        luj = read_safetensors(f"{d}/uj.safetensors")["UJ"]
    with torch.no_grad():
        t0 = time.time()
        e = den.eps(x, args.t)
        x0 = den._out(x, args.t, e, "x0") if den.sched.pred == "epsilon" else den.x0(x, args.t)
        print(f"torch: eps of batch {args.batch} in {time.time() - t0:.1f} s")
    report["eps"] = diff(e, le["eps"])
    report["x0_hat"] = diff(x0, le["x0_hat"])
    for m in args.jvp_methods.split(","):
        t0 = time.time()
        with torch.no_grad():
            jv = jvp_fn(den, x[:1], args.t, m)(V)
        print(f"torch: J V ({m}) k={args.k} in {time.time() - t0:.1f} s")
        report[f"jvp_{m}"] = diff(jv, ljv)
    for m in args.vjp_methods.split(","):
        t0 = time.time()
        uj = VJP(den, x[:1], args.t, m)(U)
        print(f"torch: U^T J ({m}) k={args.k} in {time.time() - t0:.1f} s")
        report[f"vjp_{m}"] = diff(uj, luj)
    # the adjoint identity across the two implementations: <U, J V> (torch) vs <U^T J, V> (loco)
    a, b = (U.double() * jv.double()).sum().item(), (luj.double() * V.double()).sum().item()
    report["adjoint_torch_jv_vs_loco_uj"] = abs(a - b) / abs(a)
    for k, v in report.items():
        if isinstance(v, dict):
            print(f"  {k:12s} max |torch - loco| = {v['max_abs']:.3e}   relative to max |loco| = {v['max_rel']:.3e}")
    print(f"  <U, J V>_torch vs <U^T J, V>_loco: relative difference {report['adjoint_torch_jv_vs_loco_uj']:.3e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    worst = max(v["max_rel"] for v in report.values() if isinstance(v, dict))
    print(f"worst relative difference {worst:.3e} ({'OK' if worst <= args.tol else 'ABOVE'} the bound {args.tol:g})")
    return 0 if worst <= args.tol else 1


# ---- one measurement (a child process) -----------------------------------------------

def setup_torch(threads):
    import torch
    torch.set_num_threads(threads)
    return torch


def cmd_measure(args):
    """one measurement in this process; prints one JSON line"""
    torch = setup_torch(args.threads)
    t0 = time.time()
    den = Denoiser(args.model)
    load_s = time.time() - t0
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    g = torch.Generator().manual_seed(42)
    B = args.batch if args.what == "forward" else 1
    x = torch.randn(B, den.C, den.H, den.W, generator=g)
    t = 600.0
    k = args.k
    R = torch.randn(max(k, 1), den.C, den.H, den.W, generator=g)
    rec_s = None
    if args.what == "forward":
        def step():
            with torch.no_grad():
                return den.eps(x, t)
    elif args.what == "jvp":
        f = jvp_fn(den, x, t, args.method)

        def step():
            with torch.no_grad():
                return f(R)
    elif args.what == "vjp":
        t1 = time.time()
        vj = VJP(den, x, t, args.method)
        rec_s = time.time() - t1

        def step():
            return vj(R)
    else:
        raise ValueError(args.what)
    t1 = time.time()
    if args.what == "forward":
        out = step()  # warm-up
    else:  # warm-up with one vector: the first-call costs at a fraction of a k = 5 product
        with torch.no_grad() if args.what == "jvp" else torch.enable_grad():
            out = (f if args.what == "jvp" else vj)(R[:1])
    warm_s = time.time() - t1
    if not torch.isfinite(out).all():
        raise RuntimeError("non-finite output")
    times = []
    for _ in range(args.reps):
        t1 = time.time()
        step()
        times.append(time.time() - t1)
    rec = {"what": args.what, "batch": B, "k": k, "method": args.method, "threads": args.threads,
           "median_s": statistics.median(times), "min_s": min(times), "times_s": times, "warmup_s": warm_s,
           "load_s": load_s, "record_s": rec_s, "rss_after_load_mib": rss_load,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
           "torch_threads": torch.get_num_threads(),
           "env": {k2: os.environ.get(k2) for k2 in ENV_SHOWN}}
    print("RESULT " + json.dumps(rec))
    return 0


# ---- the side-by-side run ---------------------------------------------------------------

def cpu_stat():
    with open("/proc/stat") as f:
        v = [int(a) for a in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


def child(argv, env=None):
    """runs argv, returns (stdout, wall s, others' share of all CPUs in %)"""
    b0, t0 = cpu_stat()
    w0 = time.time()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b1, t1 = cpu_stat()
    if p.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    tck = os.sysconf("SC_CLK_TCK")
    own = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * tck
    other = max(0.0, 100.0 * ((b1 - b0) - own) / max(t1 - t0, 1))
    return p.stdout, time.time() - w0, other


def torch_row(args, what, threads, batch=1, k=0, method="", reps=None, default_malloc=False):
    argv = [sys.executable, os.path.abspath(__file__), "_measure", args.model, "--what", what, "--threads",
            str(threads), "--batch", str(batch), "--k", str(k), "--method", method, "--reps",
            str(reps if reps is not None else (args.reps if what == "forward" else args.reps_products))]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if default_malloc:
        for v in MALLOC_ENV:
            env.pop(v, None)
        argv.append("--default-malloc")
    label = f"torch {what} threads={threads} batch={batch} k={k} {method}{' default malloc' if default_malloc else ''}"
    print(f"... {label}", file=sys.stderr, flush=True)
    out, wall, other = child(argv, env)
    rec = json.loads([ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1][7:])
    rec["other_cpu_pct"] = other
    rec["default_malloc"] = default_malloc
    print(f"    median {rec['median_s']:.2f} s (runs {', '.join(f'{v:.2f}' for v in rec['times_s'])}), "
          f"peak {rec['peak_rss_mib']:.0f} MiB, others {other:.0f}%", file=sys.stderr, flush=True)
    return rec


def loco_forward(args, threads, batches):
    """build/bench's forward pass of the model (it must be the folder bench
    caches as ddpm-ema-celebahq-256 under --cache)"""
    cache, name = os.path.split(os.path.abspath(args.model))
    argv = [loco_bin("bench"), "--json", "--only", name, "--batch", ",".join(map(str, batches)), "--threads",
            str(threads), "--cache", cache]
    print(f"... loco {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    env = dict(os.environ)
    for v in MALLOC_ENV:
        env.pop(v, None)
    out, wall, other = child(argv, env)
    j = json.loads(out)
    for r in j["forward"]:
        print(f"    batch {r['batch']}: median {r['median_s']:.2f} s, peak {r['peak_rss_mib']:.0f} MiB, "
              f"others {r['other_cpu_pct']:.0f}%", file=sys.stderr, flush=True)
    return j


def loco_lin(args, threads):
    argv = [loco_bin("bench_lin"), "--model", args.model, "--reps", str(args.reps_products)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for v in MALLOC_ENV:
        env.pop(v, None)
    print(f"... loco OMP_NUM_THREADS={threads} {' '.join(argv)}", file=sys.stderr, flush=True)
    out, wall, other = child(argv, env)
    row = [ln for ln in out.splitlines() if ln.startswith("|") and args.model in ln][-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    sec = lambda c: float(c.split()[0])
    r = {"forward_s": sec(cells[1]), "record_s": sec(cells[2]), "jvp1_s": sec(cells[3]), "jvp5_s": sec(cells[4]),
         "vjp1_s": sec(cells[5]), "vjp5_s": sec(cells[6]), "record_mib": float(cells[7]),
         "work5_mib": float(cells[8]), "peak_rss_mib": float(cells[9]), "other_cpu_pct": other, "wall_s": wall,
         "header": out.splitlines()[0]}
    print(f"    J V k=1 {r['jvp1_s']:.2f} s, k=5 {r['jvp5_s']:.2f} s; U^T J k=1 {r['vjp1_s']:.2f} s, "
          f"k=5 {r['vjp5_s']:.2f} s; peak {r['peak_rss_mib']:.0f} MiB; others {other:.0f}%",
          file=sys.stderr, flush=True)
    return r


def machine():
    info = {}
    with open("/proc/cpuinfo") as f:
        for ln in f:
            k, _, v = ln.partition(":")
            k = k.strip()
            if k in ("model name", "cpu family", "model") and k not in info:
                info[k] = v.strip()
    import torch
    return {"cpu": f"{info.get('model name')} (family {info.get('cpu family')}, model {info.get('model')})",
            "online_cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_mkldnn": torch.backends.mkldnn.is_available(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()
            if hasattr(torch.backends, "cpu") and hasattr(torch.backends.cpu, "get_cpu_capability") else None,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "env": {k: os.environ.get(k) for k in ENV_SHOWN},
            "loadavg_start": open("/proc/loadavg").read().split()[:3]}


def checkpoint(args, res):
    """the results so far (a long run stopped early keeps them)"""
    if args.json:
        with open(args.json + ".partial", "w") as f:
            json.dump(res, f, indent=1)


def cmd_bench(args):
    threads_list = [int(v) for v in args.threads_list.split(",")]
    ks = [int(v) for v in args.ks.split(",")]
    res = {"machine": machine(), "model": args.model, "jvp_method": args.jvp_method, "vjp_method": args.vjp_method,
           "reps_forward": args.reps, "reps_products": args.reps_products, "rows": []}
    t_start = time.time()
    for th in threads_list:
        lf = loco_forward(args, th, [1, 3])
        ll = loco_lin(args, th)
        fw = {r["batch"]: r for r in lf["forward"]}
        res.setdefault("loco", {})[str(th)] = {"bench": lf, "bench_lin": ll}
        rows = res["rows"]
        for B in (1, 3):
            tr = torch_row(args, "forward", th, batch=B)
            rows.append({"what": f"forward, batch {B}", "threads": th, "loco_s": fw[B]["median_s"],
                         "loco_peak_mib": fw[B]["peak_rss_mib"], "torch_s": tr["median_s"],
                         "torch_peak_mib": tr["peak_rss_mib"], "torch": tr,
                         "loco_other_pct": fw[B]["other_cpu_pct"]})
        for k in ks:
            tr = torch_row(args, "jvp", th, k=k, method=args.jvp_method)
            checkpoint(args, res)
            rows.append({"what": f"J V, k = {k}", "threads": th, "loco_s": ll[f"jvp{k}_s"],
                         "loco_peak_mib": ll["peak_rss_mib"], "torch_s": tr["median_s"],
                         "torch_peak_mib": tr["peak_rss_mib"], "torch": tr, "loco_other_pct": ll["other_cpu_pct"]})
        for k in ks:
            tr = torch_row(args, "vjp", th, k=k, method=args.vjp_method)
            rows.append({"what": f"U^T J, k = {k}", "threads": th, "loco_s": ll[f"vjp{k}_s"],
                         "loco_peak_mib": ll["peak_rss_mib"], "torch_s": tr["median_s"],
                         "torch_peak_mib": tr["peak_rss_mib"], "torch": tr, "loco_other_pct": ll["other_cpu_pct"],
                         "loco_record_s": ll["record_s"], "torch_record_s": tr["record_s"]})
            checkpoint(args, res)
    if args.default_malloc_row:
        th = max(threads_list)
        tr = torch_row(args, "forward", th, batch=1, default_malloc=True)
        res["torch_default_malloc_forward"] = tr
    res["wall_s"] = time.time() - t_start
    res["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    print_table(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
        os.unlink(args.json + ".partial")
    return 0


def cmd_table(args):
    with open(args.json_file) as f:
        res = json.load(f)
    res.setdefault("loadavg_end", ["?"] * 3)
    res.setdefault("wall_s", float("nan"))
    print_table(res)
    return 0


def print_table(res):
    m = res["machine"]
    print(f"CPU: {m['cpu']}, {m['online_cpus']} online; torch {m['torch']} (oneDNN {m['torch_mkldnn']}); "
          f"OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE']}")
    print("torch's environment: " + ", ".join(f"{k}={v}" for k, v in m["env"].items()))
    print(f"load average at start {' '.join(m['loadavg_start'])}, at end {' '.join(res['loadavg_end'])}; "
          f"wall {res['wall_s']:.0f} s")
    print(f"torch J V: {res['jvp_method']}, U^T J: {res['vjp_method']}; forward: median of {res['reps_forward']} "
          f"after a warm-up; products: median of {res['reps_products']} after a warm-up with k = 1 (loco: "
          f"bench_lin, best of {res['reps_products']})\n")
    print("| threads | what | loco | PyTorch 1.13 | torch / loco | loco peak MiB | torch peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        print(f"| {r['threads']} | {r['what']} | {r['loco_s']:.2f} s | {r['torch_s']:.2f} s | "
              f"**{r['torch_s'] / r['loco_s']:.2f}x** | {r['loco_peak_mib']:.0f} | {r['torch_peak_mib']:.0f} |")
    ths = sorted({r["threads"] for r in res["rows"]})
    for th in ths:
        byw = {r["what"]: r for r in res["rows"] if r["threads"] == th}
        if "J V, k = 5" in byw and "U^T J, k = 5" in byw:
            lo = byw["J V, k = 5"]["loco_s"] + byw["U^T J, k = 5"]["loco_s"]
            to = byw["J V, k = 5"]["torch_s"] + byw["U^T J, k = 5"]["torch_s"]
            print(f"| {th} | one iteration step: J V + U^T J, k = 5 | {lo:.2f} s | {to:.2f} s | **{to / lo:.2f}x** | | |")
    if len(ths) > 1:
        a = {r["what"]: r for r in res["rows"] if r["threads"] == ths[0]}
        b = {r["what"]: r for r in res["rows"] if r["threads"] == ths[-1]}
        print(f"\nspeed-up {ths[-1]} threads over {ths[0]}:")
        for w in a:
            if w in b:
                print(f"  {w:24s} loco {a[w]['loco_s'] / b[w]['loco_s']:.2f}x, torch {a[w]['torch_s'] / b[w]['torch_s']:.2f}x")
    if "torch_default_malloc_forward" in res:
        d = res["torch_default_malloc_forward"]
        print(f"\ntorch forward batch 1, {d['threads']} threads, glibc's default malloc settings: median "
              f"{d['median_s']:.2f} s (runs {', '.join(f'{v:.2f}' for v in d['times_s'])}), peak {d['peak_rss_mib']:.0f} MiB")
    print("\nothers' CPU share during each measurement (% of all CPUs): " + ", ".join(
        f"{r['threads']}t {r['what']}: torch {r['torch']['other_cpu_pct']:.0f} loco {r['loco_other_pct']:.0f}"
        for r in res["rows"]))


# ---- command line ------------------------------------------------------------------------

def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare eps, x0_hat, J V and U^T J with loco")
    c.add_argument("model")
    c.add_argument("--t", type=float, default=600.0)
    c.add_argument("--k", type=int, default=2)
    c.add_argument("--batch", type=int, default=2)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--jvp-methods", default="vmap")
    c.add_argument("--vjp-methods", default="batched")
    c.add_argument("--tol", type=float, default=1e-4, help="bound on every relative difference (default 1e-4)")
    c.add_argument("--json")
    b = sub.add_parser("bench", help="loco and torch side by side")
    b.add_argument("model")
    b.add_argument("--threads-list", default="1,2")
    b.add_argument("--ks", default="1,5")
    b.add_argument("--reps", type=int, default=3, help="timed forward passes after the warm-up (median)")
    b.add_argument("--reps-products", type=int, default=2, help="timed products after the warm-up (median)")
    b.add_argument("--jvp-method", default="vmap", choices=["vmap", "dual-batch", "dual-loop"])
    b.add_argument("--vjp-method", default="batched", choices=["batched", "loop"])
    b.add_argument("--default-malloc-row", action="store_true",
                   help="also one torch forward pass (batch 1, most threads) with glibc's default malloc")
    b.add_argument("--json")
    tb = sub.add_parser("table", help="print the table of a saved --json file (or its .partial)")
    tb.add_argument("json_file")
    m = sub.add_parser("_measure")
    m.add_argument("model")
    m.add_argument("--what", required=True)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--batch", type=int, default=1)
    m.add_argument("--k", type=int, default=0)
    m.add_argument("--method", default="")
    m.add_argument("--reps", type=int, default=3)
    for p in (c, b, m, tb):
        p.add_argument("--default-malloc", action="store_true", help="do not re-execute with the malloc settings")
    args = ap.parse_args()
    return {"check": cmd_check, "bench": cmd_bench, "_measure": cmd_measure, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    maybe_reexec()
    sys.exit(main())
