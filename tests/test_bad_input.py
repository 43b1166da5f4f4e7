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


# 4. NaN weights: refused when saved, when loaded, and when a model in memory predicts NaN.
def test_nan_weights_are_refused_not_colorized_black(tmp_path, model, ckpt):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    from colorcourse.inference import load_checkpoint, predict_ab
    broken = pix2pix_generator(32, nf=8)
    with torch.no_grad(): next(broken.parameters()).fill_(float('nan'))
    with pytest.raises(ValueError, match='NaN or infinite weights'): save_checkpoint(tmp_path / 'nan.safetensors', broken, size=32)
    assert not (tmp_path / 'nan.safetensors').exists()
    state = load_file(str(ckpt))
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], float('nan'))
    with safe_open(str(ckpt), 'pt') as f: meta = f.metadata()
    save_file(state, str(tmp_path / 'nan.safetensors'), metadata=meta)      # as a diverged run of an older version wrote it
    with pytest.raises(ValueError, match='NaN or infinite'): load_checkpoint(tmp_path / 'nan.safetensors')
    one_line_error(cli('colorize', tmp_path / 'nan.safetensors', '-o', tmp_path / 'out', '--checkpoint', tmp_path / 'nan.safetensors'),
                   'NaN or infinite')
    assert not (tmp_path / 'out').exists()
    with pytest.raises(ValueError, match='NaN'): predict_ab(broken, torch.zeros(1, 1, 32, 32))


# 5. What the tool writes, it reads: a checkpoint named model.pth (as `train --out model.pth` writes it) colorizes.
def test_a_checkpoint_named_pth_colorizes(tmp_path, model):
    from colorcourse.inference import load_colorizer
    path = save_checkpoint(tmp_path / 'model.pth', model, size=32)
    assert load_colorizer(path).checkpoint['size'] == 32
    coffee().save(tmp_path / 'coffee.jpg')
    rc, out, err = cli('colorize', tmp_path / 'coffee.jpg', '-o', tmp_path / 'out', '--checkpoint', path)
    assert rc == 0, err
    assert Image.open(tmp_path / 'out' / 'coffee_color.jpg').size == (96, 64)


# 6. Output files get the permissions open() gives under the umask; --force keeps a replaced file's own.
def test_outputs_get_the_umask_permissions(tmp_path, model, ckpt):
    from colorcourse.inference import colorize_files
    coffee().save(tmp_path / 'coffee.png')
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / 'm.safetensors', model, size=32)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        out, = colorize_files([tmp_path / 'coffee.png'], tmp_path / 'out', model, size=32, progress=False)
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        os.chmod(out, 0o640)
        assert cli('colorize', tmp_path / 'coffee.png', '-o', tmp_path / 'out', '--checkpoint', ckpt, '--force')[0] == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o640
        os.umask(0o077)
        assert stat.S_IMODE(save_checkpoint(tmp_path / 'private.safetensors', model, size=32).stat().st_mode) == 0o600
    finally: os.umask(old)


# 10. A failed write names the file asked for, never the temporary '.part' file; an output that is a folder is refused first.
def test_write_errors_name_the_real_file(tmp_path, ckpt):
    from colorcourse.inference import _write_atomically
    def disk_full(tmp): raise OSError(28, 'No space left on device', tmp)
    with pytest.raises(OSError) as e: _write_atomically(tmp_path / 'photo.png', disk_full)
    assert 'photo.png' in str(e.value) and '.part' not in str(e.value)
    assert not list(tmp_path.iterdir())
    coffee().save(tmp_path / 'coffee.png')
    (tmp_path / 'out' / 'coffee_color.png').mkdir(parents=True)
    line = one_line_error(cli('colorize', tmp_path / 'coffee.png', '-o', tmp_path / 'out', '--checkpoint', ckpt, '--force'),
                          'coffee_color.png', 'is a folder')
    assert '.part' not in line
