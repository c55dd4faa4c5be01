"""Elementwise and resampling ops: a plain-PyTorch reference beside each compiled kernel.

Import the ops from here; :mod:`fewshot.cuda.dispatch` picks the implementation.
"""

from .bias_act_ref import ACTIVATIONS, bias_act_ref
from .dispatch import bias_act, upfirdn2d
from .resample import conv2d_resample, downsample2d, filter2d, upsample2d
from .upfirdn2d_ref import setup_filter, upfirdn2d_ref

__all__ = [
    "ACTIVATIONS",
    "bias_act",
    "bias_act_ref",
    "conv2d_resample",
    "downsample2d",
    "filter2d",
    "setup_filter",
    "upfirdn2d",
    "upfirdn2d_ref",
    "upsample2d",
]
