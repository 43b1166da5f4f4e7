"Bad input never loses a file or returns a silent wrong answer (issue 19): one test per defect, in-process and fast."
import io, os, stat
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorcourse.cli import main
from colorcourse.inference import colorize, save_checkpoint
from colorcourse.pix2pix import pix2pix_generator, PatchDiscriminator


def cli(*argv):
    "Run `colorcourse *argv` in this process: (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def one_line_error(result, *fragments, code=2):
    "A refusal: the exit code, one line on stderr naming the problem, no traceback."
    rc, _, err = result
    lines = err.strip().splitlines()
    assert rc == code, (rc, err)
    assert len(lines) == 1 and 'Traceback' not in err, err
    for f in fragments: assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return pix2pix_generator(32, nf=8).eval()


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory, model):
    return save_checkpoint(tmp_path_factory.mktemp('ckpt') / 'g.safetensors', model, size=32)


def coffee(size=(96, 64)) -> Image.Image:
    from skimage import data
    return Image.fromarray(data.coffee()).resize(size)


# 2. A LAB image has a band named 'A' (a*), which is no alpha channel.
def test_lab_image_gives_an_opaque_rgb_photo(model):
    out = colorize(coffee().convert('LAB'), model, size=32)
    assert out.mode == 'RGB' and out.size == (96, 64)
    assert colorize(coffee().convert('RGBA'), model, size=32).mode == 'RGBA'   # a real alpha is kept


# 3. A float image in [0, 255] (mode F, a float TIFF) keeps its brightness.
@pytest.mark.parametrize('top', [1., 255., 65535.])
def test_float_image_keeps_its_brightness(model, top):
    gray = np.asarray(coffee().convert('L'), dtype=np.float32)
    out = colorize(Image.fromarray(gray / 255 * top), model, size=32)
    assert abs(np.asarray(out.convert('L'), dtype=float).mean() - gray.mean()) < 3
