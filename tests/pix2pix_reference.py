"""What the reference transcriptions in test_unet, test_pix2pix and test_resnet share: the norm layers of
junyanz/pytorch-CycleGAN-and-pix2pix (models/networks.py, BSD licence), our 'spectral' option as the
reference's 'none' with spectral norm around every conv, and the layer-by-layer comparison."""
import functools

import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm


class Identity(nn.Module):  # the reference defines its own Identity
    def forward(self, x): return x


def ref_norm_layer(norm_type):
    "The reference's get_norm_layer; 'spectral' maps to its 'none'."
    if norm_type == 'batch': return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm_type == 'instance': return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm_type in ('none', 'spectral'): return lambda x: Identity()
    raise NotImplementedError(norm_type)


def with_spectral(net, norm):
    "For 'spectral': spectral norm around every (transposed) conv of the reference's 'none' network."
    if norm == 'spectral':
        for seq in list(net.modules()):
            if isinstance(seq, nn.Sequential):
                for i, m in enumerate(seq):
                    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)): seq[i] = spectral_norm(m)
    return net


def param_shapes(m): return (type(m).__name__, sorted(tuple(p.shape) for p in m.parameters()))


def leaf_layers(net, describe=param_shapes):
    "The ordered list of `describe(leaf)` for every leaf layer; a spectral-normed conv counts as one leaf."
    out = []
    def visit(m):
        if hasattr(m, 'parametrizations') or not list(m.children()): out.append(describe(m))
        else:
            for c in m.children(): visit(c)
    visit(net)
    return out


def n_params(net): return sum(p.numel() for p in net.parameters())
