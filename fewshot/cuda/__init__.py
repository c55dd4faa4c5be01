"""Elementwise and resampling ops: a plain-PyTorch reference beside each compiled kernel.

Import the ops from here; :mod:`fewshot.cuda.dispatch` picks the implementation.
"""

from .bias_act_ref import ACTIVATIONS, bias_act_ref
from .dispatch import bias_act, filtered_lrelu, upfirdn2d
from .filtered_lrelu_ref import filtered_lrelu_ref
from .resample import conv2d_resample, direct_convs_in, downsample2d, filter2d, upsample2d
from .upfirdn2d_ref import setup_filter, upfirdn2d_ref

__all__ = [
    "ACTIVATIONS",
    "bias_act",
    "bias_act_ref",
    "conv2d_resample",
    "direct_convs_in",
    "downsample2d",
    "filter2d",
    "filtered_lrelu",
    "filtered_lrelu_ref",
    "setup_filter",
    "upfirdn2d",
    "upfirdn2d_ref",
    "upsample2d",
]
