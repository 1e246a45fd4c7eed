"""A tile's columns as separate register vectors, and back, in plain Triton (no data movement when the tile's
layout gives each thread whole rows, as a contiguous vector load does).

``tl.split`` takes a last dimension of size 2 apart; halving splits of ``tl.reshape(x, (ROWS, TC / 2, 2))`` give
the TC columns of a (ROWS, TC) tile in order, and ``tl.join`` puts them back together for one vector store. The
lanes forward (selective_scan/lane_kernels.py) walks a chunk of time steps column by column this way; the causal
conv (causal_conv1d/triton_kernels.py) takes its shifted taps from the columns of two aligned loads.
"""
import triton
import triton.language as tl


@triton.jit
def _columns(x, ROWS: tl.constexpr, TC: tl.constexpr):
    """(ROWS, TC) -> the TC (ROWS,) columns in order (TC in 1, 2, 4, 8), by halving splits."""
    tl.static_assert(TC == 1 or TC == 2 or TC == 4 or TC == 8, "TC must be 1, 2, 4 or 8")
    if TC == 1:
        return (tl.reshape(x, (ROWS,)),)
    elif TC == 2:
        c0, c1 = tl.split(x)
        return (c0, c1)
    elif TC == 4:
        e, o = tl.split(tl.reshape(x, (ROWS, 2, 2)))  # columns 0, 2 | 1, 3
        c0, c2 = tl.split(e)
        c1, c3 = tl.split(o)
        return (c0, c1, c2, c3)
    else:
        e, o = tl.split(tl.reshape(x, (ROWS, 4, 2)))  # 0 2 4 6 | 1 3 5 7
        e0, e1 = tl.split(tl.reshape(e, (ROWS, 2, 2)))  # 0 4 | 2 6
        o0, o1 = tl.split(tl.reshape(o, (ROWS, 2, 2)))  # 1 5 | 3 7
        c0, c4 = tl.split(e0)
        c2, c6 = tl.split(e1)
        c1, c5 = tl.split(o0)
        c3, c7 = tl.split(o1)
        return (c0, c1, c2, c3, c4, c5, c6, c7)


@triton.jit
def _join_columns(c, ROWS: tl.constexpr, TC: tl.constexpr):
    """The inverse of _columns: a tuple of TC (ROWS,) columns -> (ROWS, TC)."""
    if TC == 1:
        return tl.reshape(c[0], (ROWS, 1))
    elif TC == 2:
        return tl.join(c[0], c[1])
    elif TC == 4:
        e = tl.join(c[0], c[2])
        o = tl.join(c[1], c[3])
        return tl.reshape(tl.join(e, o), (ROWS, 4))
    else:
        e = tl.reshape(tl.join(tl.join(c[0], c[4]), tl.join(c[2], c[6])), (ROWS, 4))
        o = tl.reshape(tl.join(tl.join(c[1], c[5]), tl.join(c[3], c[7])), (ROWS, 4))
        return tl.reshape(tl.join(e, o), (ROWS, 8))
