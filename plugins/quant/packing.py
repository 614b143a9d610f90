"""Packing b-bit codes into bytes, so a 4-bit model really takes half a byte per weight.

- 8 bits: one code per byte (the uint8 tensor itself);
- 4 bits: two codes per byte, the first in the low nibble;
- 2 bits: four codes per byte, the first in the lowest two bits;
- 3 bits: eight codes in three bytes: the 24-bit little-endian integer sum_i code_i << 3i is stored as
  its three bytes. No bit is wasted (a 3-bit code in a 4-bit slot would cost a third more).

The flattened code tensor is padded with zeros to a whole number of packing units (2, 4 or 8 codes);
:func:`unpack` takes the number of codes and drops the padding again.
"""

from __future__ import annotations

import torch

from hfx_plugins.quant.affine import check_bits

__all__ = ["pack", "packed_nbytes", "unpack"]

_CODES_PER_UNIT = {8: 1, 4: 2, 2: 4, 3: 8}  # codes per packing unit
_BYTES_PER_UNIT = {8: 1, 4: 1, 2: 1, 3: 3}


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes that ``n`` codes of ``bits`` bits take once packed."""
    check_bits(bits)
    units = -(-n // _CODES_PER_UNIT[bits])  # ceil
    return units * _BYTES_PER_UNIT[bits]


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Any-shape uint8 codes in [0, 2^bits) -> 1-D uint8 of :func:`packed_nbytes` bytes."""
    check_bits(bits)
    flat = codes.reshape(-1).to(torch.uint8)
    if bits == 8:
        return flat.clone()
    per = _CODES_PER_UNIT[bits]
    pad = -flat.numel() % per
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    units = flat.view(-1, per).to(torch.int32)  # (U, per)
    shifts = torch.arange(per, dtype=torch.int32, device=flat.device) * bits  # (per,)
    words = (units << shifts).sum(-1)  # (U,): the codes side by side, first code in the lowest bits
    if bits == 3:
        byte_shifts = torch.tensor([0, 8, 16], dtype=torch.int32, device=flat.device)
        return ((words[:, None] >> byte_shifts) & 0xFF).to(torch.uint8).reshape(-1)  # (3U,)
    return words.to(torch.uint8)  # (U,): 8 bits fit a byte exactly for 4 and 2 bits


def unpack(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """1-D (N,) packed uint8 bytes from :func:`pack` -> the first ``n`` codes as a 1-D (n,) uint8 tensor.

    The inverse of :func:`pack` for the same ``bits`` (its zero padding dropped); the layouts are this module's.

    Raises:
        HfxError: ``bits`` not one of 2, 3, 4, 8.
    """
    check_bits(bits)
    if bits == 8:
        return packed[:n]
    per = _CODES_PER_UNIT[bits]
    if bits == 3:
        b = packed.view(-1, 3).to(torch.int32)  # (U, 3)
        words = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)  # (U,)
        shifts = torch.arange(per, dtype=torch.int32, device=packed.device) * bits  # (per,)
        return ((words[:, None] >> shifts) & 7).reshape(-1)[:n].to(torch.uint8)
    # 4 and 2 bits: shift the bytes themselves (uint8 ops, no widening), one column per code position
    mask = 2**bits - 1
    codes = torch.stack([(packed >> (i * bits)) & mask for i in range(per)], dim=-1)  # (U, per)
    return codes.reshape(-1)[:n]
