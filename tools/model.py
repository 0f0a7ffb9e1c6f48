#!/usr/bin/python3
"""Llama decoder in PyTorch, numerically the Hugging Face `LlamaForCausalLM` forward.

RMSNorm in fp32 (x * rsqrt(mean(x^2) + eps) * weight), RoPE in the rotate-half layout,
GQA (key/value heads repeated), SwiGLU MLP, no biases, untied lm_head, causal softmax attention
scaled by 1/sqrt(head_dim). Parameter names equal HF's. Works on torch 1.13 (CPU) and 2.x (CUDA).
`forward(ids, cache=..., start_pos=...)` supports incremental decoding with a KV cache.
"""
import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class LlamaConfig:
    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    max_position_embeddings: int = 1024
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    bos_token_id: int = 0
    eos_token_id: int = 1
    pad_token_id: int = 2

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads

    def to_dict(self):
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)  # HF: weight * hidden_states.to(input_dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(positions, head_dim, theta, device):
    """positions: LongTensor [T]. Returns cos, sin [T, head_dim] in fp32 (HF layout: cat(freqs, freqs))."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):
    # x [B, H, T, D]; cos/sin [T, D]
    dtype = x.dtype
    x = x.float()
    return (x * cos + rotate_half(x) * sin).to(dtype)


# Query block of the optional blockwise path for torch 1.13 (no scaled_dot_product_attention
# there); None = the full T x T path. A block of queries attends only to the keys up to its own
# end, so the masked upper triangle beyond the block is never computed; with the additive mask
# fused into baddbmm, blocks of 128 are ~3.8x faster than the full path at T = 1024 on one CPU
# thread (fwd+bwd of the attention, measured), and equal to it up to fp32 rounding (max |diff|
# 3e-7 on random inputs). OFF by default so that the kvspan-brown recipe and every reference
# output stay bit for bit what they were; tools/train.py --attn-block 128 turns it on.
CAUSAL_BLOCK = None


def _blockwise_causal_attention(q, k, v):
    """q, k, v [B, H, T, D] (k/v already repeated to H heads) -> [B, H, T, D]; causal, no cache."""
    B, H, T, D = q.shape
    mask = torch.full((T, T), float("-inf"), device=q.device, dtype=q.dtype).triu(1)
    qf, kf, vf = q.reshape(B * H, T, D), k.reshape(B * H, T, D), v.reshape(B * H, T, D)
    outs = []
    for s in range(0, T, CAUSAL_BLOCK):
        e = min(T, s + CAUSAL_BLOCK)
        att = torch.baddbmm(mask[s:e, :e].expand(B * H, e - s, e), qf[:, s:e], kf[:, :e].transpose(1, 2),
                            alpha=1.0 / math.sqrt(D))
        att = torch.softmax(att.float(), dim=-1).to(q.dtype)
        outs.append(torch.bmm(att, vf[:, :e]))
    return torch.cat(outs, dim=1).view(B, H, T, D)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d, hd = cfg.hidden_size, cfg.head_dim
        self.nh, self.nkv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.q_proj = nn.Linear(d, self.nh * hd, bias=False)
        self.k_proj = nn.Linear(d, self.nkv * hd, bias=False)
        self.v_proj = nn.Linear(d, self.nkv * hd, bias=False)
        self.o_proj = nn.Linear(self.nh * hd, d, bias=False)

    def forward(self, x, cos, sin, layer_cache=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if layer_cache is not None:
            if "k" in layer_cache:
                k = torch.cat([layer_cache["k"], k], dim=2)
                v = torch.cat([layer_cache["v"], v], dim=2)
            layer_cache["k"], layer_cache["v"] = k, v
        S = k.shape[2]
        rep = self.nh // self.nkv
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        # causal mask for queries at absolute positions S-T .. S-1 over keys 0 .. S-1
        if hasattr(F, "scaled_dot_product_attention") and layer_cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif layer_cache is None and CAUSAL_BLOCK is not None and T > CAUSAL_BLOCK:
            y = _blockwise_causal_attention(q, k, v)
        else:
            att = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hd)
            qpos = torch.arange(S - T, S, device=x.device)[:, None]
            kpos = torch.arange(S, device=x.device)[None, :]
            att = att.masked_fill(kpos > qpos, float("-inf"))
            att = torch.softmax(att.float(), dim=-1).to(q.dtype)
            y = torch.matmul(att, v)
        y = y.transpose(1, 2).reshape(B, T, self.nh * self.hd)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, layer_cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, layer_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def new_cache(self):
        return [dict() for _ in range(self.cfg.num_hidden_layers)]

    def forward(self, ids, cache=None, start_pos=0):
        """ids [B, T] -> logits [B, T, V]. With `cache` (from new_cache()), keys/values are
        appended and ids are taken to sit at positions start_pos .. start_pos+T-1."""
        B, T = ids.shape
        pos = torch.arange(start_pos, start_pos + T, device=ids.device)
        cos, sin = rope_cos_sin(pos, self.cfg.head_dim, self.cfg.rope_theta, ids.device)
        x = self.model.embed_tokens(ids)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, None if cache is None else cache[i])
        x = self.model.norm(x)
        return self.lm_head(x)


def num_params(model):
    return sum(p.numel() for p in model.parameters())
