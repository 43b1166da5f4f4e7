"The colour bins of lesson 05 against the sRGB gamut, and a short classification run that learns."
import itertools, warnings

import torch

from colorcourse.cnn import ABQuantizer, ColorCNN, RebalancedCELoss, plain_cnn, train_colorizer
from colorcourse.data import colorization_dls
from colorcourse.lab import AB_SCALE, lab_encode


def random_ab(n: int = 64) -> torch.Tensor:
    "The ab (model space) of random sRGB colours: every one of them is in the gamut."
    return lab_encode(torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(0)))[1]


def test_every_srgb_colour_lies_in_the_square_of_its_nearest_bin():
    q, ab = ABQuantizer(), random_ab()
    centre = q.centers[q.nearest(ab)].permute(0, 3, 1, 2) / AB_SCALE
    assert ((centre - ab).abs() * AB_SCALE).max() <= q.grid / 2 + 1e-3


def test_soft_encoding_keeps_the_colour():
    "The mean of a pixel's soft encoding is close to its colour: the encoding loses little."
    q, ab = ABQuantizer(), random_ab()
    mean = q.decode((q.soft_encode(ab) + 1e-12).log(), T=1.)
    error = (mean - ab).norm(dim=1) * AB_SCALE
    assert error.mean() < 1 and error.max() < 5


def test_a_short_classification_run_learns():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dls = colorization_dls('sample', size=32, bs=16, epoch_len=128, valid_pct=0.25)
        q = ABQuantizer()
        w = q.weights(q.prior(ab for _, ab in itertools.islice(dls.train, 4)))
        learn = train_colorizer(dls, lambda: ColorCNN(8, n_mid=2, quantizer=q), lambda m: RebalancedCELoss(m, w), epochs=4)
    losses = [float(v) for v in learn.recorder.losses]
    assert all(map(lambda v: v == v, losses)) and sum(losses[-4:]) < sum(losses[:4])


def test_same_recipe_same_result():
    "train_colorizer reseeds data and weights: two runs of one recipe end with the same weights."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dls = colorization_dls('sample', size=16, bs=8, epoch_len=16, valid_pct=0.25)
        a, b = (train_colorizer(dls, lambda: plain_cnn(4, depth=3), epochs=1).model for _ in range(2))
    for pa, pb in zip(a.parameters(), b.parameters()): assert torch.equal(pa, pb)
