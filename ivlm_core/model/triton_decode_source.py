"""Triton source of the decode kernels (`decode_kernels` is their Python side and imports this module only
when a kernel is first used, so ivlm imports without Triton). Module level, as Triton's compiler and its CPU
interpreter both resolve the helper a kernel calls from the module's globals."""

import triton
import triton.language as tl


@triton.jit
def weight_chunk(w_ptr, rows, rows_ok, k0, K, stride_wn, BLOCK_K: tl.constexpr):
    """Weight rows `rows`, reduction columns k0..k0+BLOCK_K, in float32."""
    rk = k0 + tl.arange(0, BLOCK_K)
    return tl.load(w_ptr + rows[:, None] * stride_wn + rk[None, :], mask=rows_ok[:, None] & (rk < K)[None, :],
                   other=0.0).to(tl.float32)


@triton.jit
def input_chunk(x_ptr, nw_ptr, rm, m_ok, rstd, k0, K, stride_xm, BLOCK_K: tl.constexpr, NORM: tl.constexpr):
    """Input rows, columns k0..k0+BLOCK_K, in float32; with NORM as LlamaRMSNorm rounds it (normalise in float32,
    round to the dtype, scale in the dtype, round again)."""
    dtype = nw_ptr.dtype.element_ty
    rk = k0 + tl.arange(0, BLOCK_K)
    k_ok = rk < K
    xv = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=m_ok[:, None] & k_ok[None, :],
                 other=0.0).to(tl.float32)
    if NORM:
        scale = tl.load(nw_ptr + rk, mask=k_ok, other=0.0).to(tl.float32)
        xv = (xv * rstd[:, None]).to(dtype).to(tl.float32)
        xv = (xv * scale[None, :]).to(dtype).to(tl.float32)
    return xv


@triton.jit
def products(x_ptr, w_ptr, nw_ptr, rows, rows_ok, second, M, K, eps, stride_xm, stride_wn,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NORM: tl.constexpr,
             PAIRED: tl.constexpr, PDL: tl.constexpr):
    """(BLOCK_M, BLOCK_N) float32 products of the input rows with weight rows `rows`, and with `rows +
    second` when PAIRED (one pass over the input serves both).

    With PDL (programmatic dependent launch, Hopper) the next kernel may be scheduled as soon as every program
    of this one has started, and this one reads its first weight chunk before waiting for the previous kernel
    to finish: weights are never written, everything else (input rows, residual, tables) is read after."""
    rm = tl.arange(0, BLOCK_M)
    m_ok = rm < M
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    w = weight_chunk(w_ptr, rows, rows_ok, 0, K, stride_wn, BLOCK_K)
    if PAIRED:
        wb = weight_chunk(w_ptr, rows + second, rows_ok, 0, K, stride_wn, BLOCK_K)
    if PDL:
        tl.extra.cuda.gdc_wait()
    rstd = tl.full([BLOCK_M], 1.0, dtype=tl.float32)
    if NORM:
        squares = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            xv = input_chunk(x_ptr, nw_ptr, rm, m_ok, rstd, k0, K, stride_xm, BLOCK_K, False)
            squares += xv * xv
        rstd = tl.rsqrt(tl.sum(squares, axis=1) / K + eps)
    xv = input_chunk(x_ptr, nw_ptr, rm, m_ok, rstd, 0, K, stride_xm, BLOCK_K, NORM)
    acc = xv[:, None, :] * w[None, :, :]
    if PAIRED:
        acc_b = xv[:, None, :] * wb[None, :, :]
    for k0 in range(BLOCK_K, K, BLOCK_K):
        xv = input_chunk(x_ptr, nw_ptr, rm, m_ok, rstd, k0, K, stride_xm, BLOCK_K, NORM)
        acc += xv[:, None, :] * weight_chunk(w_ptr, rows, rows_ok, k0, K, stride_wn, BLOCK_K)[None, :, :]
        if PAIRED:
            acc_b += xv[:, None, :] * weight_chunk(w_ptr, rows + second, rows_ok, k0, K, stride_wn, BLOCK_K)[None, :, :]
    y = tl.sum(acc, axis=2)
    if PAIRED:
        y_b = tl.sum(acc_b, axis=2)
    else:
        y_b = y
    return y, y_b


@triton.jit
def gemv_kernel(x_ptr, w_ptr, y_ptr, res_ptr, nw_ptr, M, N, K, eps, stride_xm, stride_wn, stride_ym,
                stride_rm, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                NORM: tl.constexpr, GATED: tl.constexpr, RESIDUAL: tl.constexpr, PDL: tl.constexpr):
    dtype = y_ptr.dtype.element_ty
    rm = tl.arange(0, BLOCK_M)
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    y, up = products(x_ptr, w_ptr, nw_ptr, rn, n_ok, N, M, K, eps, stride_xm, stride_wn, BLOCK_M, BLOCK_N,
                     BLOCK_K, NORM, GATED, PDL)
    if GATED:  # SiLU(gate) * up with the modules' roundings
        gate = y.to(dtype).to(tl.float32)
        y = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32) * up.to(dtype).to(tl.float32)
    out_mask = (rm < M)[:, None] & n_ok[None, :]
    if RESIDUAL:
        res = tl.load(res_ptr + rm[:, None] * stride_rm + rn[None, :], mask=out_mask, other=0.0)
        y = y.to(dtype).to(tl.float32) + res.to(tl.float32)
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], y.to(dtype), mask=out_mask)


@triton.jit
def qkv_rope_kernel(x_ptr, w_ptr, nw_ptr, cos_ptr, sin_ptr, cols_ptr, q_ptr, k_ptr, v_ptr, M, K, eps, tokens,
                    heads, kv_heads, stride_xm, stride_wn, stride_cm, sq_b, sq_h, sq_t, sk_b, sk_h, sk_t,
                    sv_b, sv_h, sv_t, HALF: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, PDL: tl.constexpr):
    """Norm + q/k/v product + rotary for one head's columns (i and i + HALF together), q written to its
    buffer and k, v straight into the cache columns of their tokens."""
    dtype = q_ptr.dtype.element_ty
    per_head = HALF // BLOCK_N
    head = tl.program_id(0) // per_head
    i = (tl.program_id(0) % per_head) * BLOCK_N + tl.arange(0, BLOCK_N)
    first, second = products(x_ptr, w_ptr, nw_ptr, head * 2 * HALF + i, i < HALF, HALF, M, K, eps, stride_xm,
                             stride_wn, BLOCK_M, BLOCK_N, BLOCK_K, True, True, PDL)
    a = first.to(dtype).to(tl.float32)
    b = second.to(dtype).to(tl.float32)
    rm = tl.arange(0, BLOCK_M)
    batch = rm // tokens
    token = rm % tokens
    out_mask = (rm < M)[:, None] & (i < HALF)[None, :]
    if head < heads + kv_heads:  # q and k: rotary as the modules round it, (x * cos) + (rotate_half(x) * sin)
        trig = rm[:, None] * stride_cm + i[None, :]
        cos_a = tl.load(cos_ptr + trig, mask=out_mask, other=0.0).to(tl.float32)
        cos_b = tl.load(cos_ptr + trig + HALF, mask=out_mask, other=0.0).to(tl.float32)
        sin_a = tl.load(sin_ptr + trig, mask=out_mask, other=0.0).to(tl.float32)
        sin_b = tl.load(sin_ptr + trig + HALF, mask=out_mask, other=0.0).to(tl.float32)
        rotated_a = (a * cos_a).to(dtype).to(tl.float32) + (-b * sin_a).to(dtype).to(tl.float32)
        b = (b * cos_b).to(dtype).to(tl.float32) + (a * sin_b).to(dtype).to(tl.float32)
        a = rotated_a
    column = tl.load(cols_ptr + token)
    if head < heads:
        base = q_ptr + batch * sq_b + head * sq_h + token * sq_t
    elif head < heads + kv_heads:
        base = k_ptr + batch * sk_b + (head - heads) * sk_h + column * sk_t
    else:
        base = v_ptr + batch * sv_b + (head - heads - kv_heads) * sv_h + column * sv_t
    tl.store(base[:, None] + i[None, :], a.to(dtype), mask=out_mask)
    tl.store(base[:, None] + (i + HALF)[None, :], b.to(dtype), mask=out_mask)
