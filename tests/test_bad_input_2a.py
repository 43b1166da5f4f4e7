"Bad input, second round (issue 31), part A"
import errno, os, re, resource, struct, subprocess, sys, threading, time, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorcourse.data import open_image
from colorcourse.inference import colorize, load_checkpoint, save_checkpoint
from colorcourse.pix2pix import pix2pix_generator


def coffee_gray(size=(96, 64)) -> np.ndarray:
    from skimage import data
    return np.asarray(Image.fromarray(data.coffee()).resize(size).convert('L'), dtype=np.float32)


def with_metadata(src: Path, dest: Path, change=lambda info: info, tensors=lambda state: state) -> Path:
    "A copy of checkpoint `src` at `dest` with its colorcourse metadata changed by `change(dict)` and its tensors by `tensors(state)`."
    import json
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(str(src), 'pt') as f: info = json.loads(f.metadata()['colorcourse'])
    save_file(tensors(load_file(str(src))), str(dest), metadata={'colorcourse': json.dumps(change(info))})
    return dest


# 1. A float photo in [0, 1] that overshoots to 1.05 keeps its brightness (with a warning), as a PIL image and as a float TIFF.
def test_float_photo_slightly_above_one_keeps_its_brightness(tmp_path, model):
    import tifffile
    gray = coffee_gray()
    photo = gray / 255 * 1.05                              # a [0, 1] photo whose highlights overshoot by 5%
    expected = np.clip(gray * 1.05, 0, 255).mean()
    tifffile.imwrite(tmp_path / 'float.tif', photo)
    for image in (Image.fromarray(photo), tmp_path / 'float.tif'):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            out, read = colorize(image, model, size=32), open_image(image)
        assert abs(np.asarray(out.convert('L'), dtype=float).mean() - expected) < 3
        assert abs(np.asarray(read.convert('L'), dtype=float).mean() - expected) < 1
        assert len(caught) == 2 and all(str(w.message).endswith('is taken as 0..1: its values above 1 are clipped to white')
                                        for w in caught), [str(w.message) for w in caught]


# 2. A full disk while a checkpoint is written: an OSError (ENOSPC) naming the file; the earlier file is kept, no temporary file stays.
@pytest.fixture(params=['tmpfs', 'simulated'])
def full_disk(request, tmp_path, monkeypatch):
    "A folder in which the first small checkpoint fits and a larger one does not: a real tmpfs where we may mount one, else a simulated disk."
    folder = tmp_path / 'disk'
    folder.mkdir()
    if request.param == 'tmpfs':
        if os.geteuid() != 0 or subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=96k', 'tmpfs', str(folder)],
                                               capture_output=True).returncode:
            pytest.skip('mounting a tmpfs needs root')
        request.addfinalizer(lambda: subprocess.run(['umount', str(folder)]))
    else:
        import safetensors.torch
        import colorcourse.core as core   # where save_checkpoint lives (lesson 04 exports it to the light module)
        real = safetensors.torch.save_file
        def save_file(tensors, filename, metadata=None):
            if sum(t.numel() for t in tensors.values()) < 50_000: return real(tensors, filename, metadata=metadata)
            Path(filename).write_bytes(b'\0' * 1000)          # safetensors got this far, then the disk was full
            raise safetensors.SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')
        monkeypatch.setattr(core, 'save_file', save_file)
    return folder


def test_full_disk_while_saving_a_checkpoint_raises_oserror(full_disk):
    torch.manual_seed(0)
    small, large = pix2pix_generator(32, nf=2), pix2pix_generator(32, nf=16)
    path = save_checkpoint(full_disk / 'model.safetensors', small, size=32)
    before = path.read_bytes()
    with pytest.raises(OSError) as e: save_checkpoint(path, large, size=32, overwrite=True)
    assert e.value.errno == errno.ENOSPC
    assert str(e.value) == f"cannot write {path}: No space left on device", str(e.value)
    assert path.read_bytes() == before and [p.name for p in full_disk.iterdir()] == ['model.safetensors']
    with pytest.raises(OSError, match='No space left on device'): save_checkpoint(full_disk / 'new.safetensors', large, size=32)
    assert [p.name for p in full_disk.iterdir()] == ['model.safetensors']


# 5. Loading from several threads at once leaves sys.stdout and the warning filters alone, during and after.
def test_loading_from_threads_leaves_stdout_and_warnings_alone(tmp_path, ckpt, capsys, monkeypatch):
    import colorcourse.inference as inference
    from colorcourse.core import ARCHITECTURES, build_from_config, build_note, _import_lessons   # lesson 04's checkpoints, in the light module
    _import_lessons(); load_checkpoint(ckpt)        # first imports (the course's, torch's meta kernels) may add warning filters of their own
    def noisy(nf: int = 2):                          # a builder with a note, as lesson 09's resnet_unet has
        build_note('noisy: built'); return torch.nn.Conv2d(1, nf, 1)
    monkeypatch.setitem(ARCHITECTURES, 'noisy', noisy)
    noisy()
    assert capsys.readouterr().out == 'noisy: built\n'
    stdout, filters = sys.stdout, list(warnings.filters)
    photo = Image.fromarray(coffee_gray((48, 32)).astype(np.uint8))
    jobs = [lambda: load_checkpoint(ckpt)] * 3 + [lambda: build_from_config({'arch': 'noisy', 'args': {}})] * 2 + \
           [inference.pretrained, lambda: colorize(photo)]
    seen, errors, done = set(), [], threading.Event()
    def watch():
        while not done.is_set(): seen.add((sys.stdout is stdout, warnings.filters == filters)); time.sleep(0.002)
    def run(job, barrier):
        try: barrier.wait(); job()
        except Exception as e: errors.append(e)
    watcher = threading.Thread(target=watch); watcher.start()
    try:
        for _ in range(3):
            inference._shipped_colorizer.cache_clear()    # colorize(model=None) loads the shipped colorizer again
            barrier = threading.Barrier(len(jobs))
            threads = [threading.Thread(target=run, args=(job, barrier)) for job in jobs]
            for t in threads: t.start()
            for t in threads: t.join()
            assert sys.stdout is stdout and warnings.filters == filters
    finally:
        done.set(); watcher.join()
        sys.stdout = stdout
    assert not errors, errors
    assert seen == {(True, True)}, seen
    assert capsys.readouterr().out == ''              # a builder's note is not printed while a model is rebuilt from its config


# 8. A checkpoint whose weights are integers or booleans is refused, naming the tensor; BatchNorm's integer counter still loads.
@pytest.mark.parametrize('dtype', [torch.int32, torch.bool])
def test_integer_or_boolean_weights_are_refused(tmp_path, ckpt, model, dtype):
    state = model.state_dict()
    assert any(v.dtype == torch.int64 for v in state.values())          # num_batches_tracked: an integer that belongs
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    cast = lambda s: {k: v.to(dtype) if k == name else v for k, v in s.items()}
    bad = with_metadata(ckpt, tmp_path / 'int.safetensors', tensors=cast)
    message = re.escape(f"are not all floating point ({name} is {str(dtype).split('.')[-1]})")
    with pytest.raises(ValueError, match=message): load_checkpoint(bad)
    with pytest.raises(ValueError, match=message): load_checkpoint(bad, model=pix2pix_generator(32, nf=8))
    torch.save(cast(state), tmp_path / 'int.pth')
    with pytest.raises(ValueError, match=message): load_checkpoint(tmp_path / 'int.pth', model=pix2pix_generator(32, nf=8))
    assert load_checkpoint(ckpt).checkpoint['arch'] == 'pix2pix_generator'


# 9. A tiny crafted checkpoint whose metadata asks for a ResNet of 65,536 blocks is refused in well under a second, spending no memory.
def test_a_crafted_huge_architecture_is_refused_fast(tmp_path):
    from colorcourse.resnet import ResnetGenerator
    small = save_checkpoint(tmp_path / 'small.safetensors', ResnetGenerator(nf=2, n_blocks=1), size=32)
    crafted = with_metadata(small, tmp_path / 'crafted.safetensors', lambda info: dict(info, args=dict(info['args'], n_blocks=65536)),
                            lambda state: {k: v for k, v in list(state.items())[:3]})
    assert crafted.stat().st_size < 2048
    peak, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(ValueError, match='do not fit the ResnetGenerator its metadata describes'): load_checkpoint(crafted)
    assert time.perf_counter() - start < 1    # about 0.1 s on a quiet CPU; a minute before the build was bounded
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 50 * 1024   # KiB
    assert load_checkpoint(small).checkpoint['arch'] == 'ResnetGenerator'


# 10. ICC profiles are applied: the pixels come out as sRGB (a Gray Gamma 1.8 JPEG, an Adobe RGB PNG), with no profile attached.
def s15(x: float) -> bytes: return struct.pack('>i', round(x * 65536))


def icc_profile(space: str, gamma: float, colorants=()) -> bytes:
    "A minimal ICC v2 display profile: b'GRAY' with one gamma curve, or b'RGB ' with three colorants (XYZ, D50 adapted) and one gamma."
    xyz = lambda v: b'XYZ ' + bytes(4) + b''.join(s15(c) for c in v)
    curve = b'curv' + bytes(4) + struct.pack('>IH', 1, round(gamma * 256))
    text = b'test profile\0'
    desc = b'desc' + bytes(4) + struct.pack('>I', len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    tags = [(b'desc', desc), (b'wtpt', xyz((0.9642, 1.0, 0.8249))), (b'cprt', b'text' + bytes(4) + b'none\0')]
    tags += [(b'kTRC', curve)] if space == b'GRAY' else [(n, xyz(c)) for n, c in zip((b'rXYZ', b'gXYZ', b'bXYZ'), colorants)] + \
            [(n, curve) for n in (b'rTRC', b'gTRC', b'bTRC')]
    table, body, start = b'', b'', 128 + 4 + 12 * len(tags)
    for name, data in tags:
        data += bytes(-len(data) % 4)
        table, body = table + name + struct.pack('>II', start + len(body), len(data)), body + data
    header = (struct.pack('>I', start + len(body)) + bytes(4) + bytes([2, 0x10, 0, 0]) + b'mntr' + space + b'XYZ ' + bytes(12)
              + b'acsp' + bytes(28) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(48))
    return header + struct.pack('>I', len(tags)) + table + body


ADOBE_RGB = [(0.60974, 0.31111, 0.01947), (0.20528, 0.62567, 0.06087), (0.14919, 0.06322, 0.74457)]   # colorants, D50
SRGB_D50 = [(0.4360747, 0.2225045, 0.0139322), (0.3850649, 0.7168786, 0.0971045), (0.1430804, 0.0606169, 0.7141733)]


def as_srgb(values: np.ndarray, gamma: float, colorants=None) -> np.ndarray:
    "What a colour-managed viewer shows for 8-bit `values` (gray (n,), or RGB (n, 3)) under a gamma (and colorants) profile, as 8-bit sRGB."
    linear = (values / 255.) ** (round(gamma * 256) / 256)
    if colorants is not None: linear = np.clip(linear @ np.array(colorants) @ np.linalg.inv(np.array(SRGB_D50)), 0, 1)
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return srgb * 255


@pytest.mark.parametrize('kind', ['gray gamma 1.8 JPEG', 'Adobe RGB PNG'])
def test_icc_profiles_are_converted_to_srgb(tmp_path, model, kind):
    if kind.startswith('gray'):
        pixels, gamma, colorants, name = np.arange(0, 256, 4, dtype=np.uint8).repeat(8).reshape(8, 64), 1.8, None, 'gray.jpg'
        Image.fromarray(pixels).save(tmp_path / name, quality=100, icc_profile=icc_profile(b'GRAY', 1.8))
        expected = as_srgb(pixels.astype(float), gamma)[..., None].repeat(3, -1)
    else:
        rng = np.random.default_rng(0)
        pixels, gamma, colorants, name = rng.integers(0, 256, (8, 64, 3), dtype=np.uint8), 2.2, ADOBE_RGB, 'adobe.png'
        Image.fromarray(pixels).save(tmp_path / name, icc_profile=icc_profile(b'RGB ', 2.2, ADOBE_RGB))
        expected = as_srgb(pixels.reshape(-1, 3).astype(float), gamma, colorants).reshape(pixels.shape)
    for read in (lambda: open_image(tmp_path / name), lambda: open_image(Image.open(tmp_path / name))):
        img = read()
        error = np.abs(np.asarray(img, dtype=float) - expected)
        assert error.mean() < 1.5 and error.max() <= 4, (error.mean(), error.max())
        assert img.mode == 'RGB' and 'icc_profile' not in img.info
    out = colorize(tmp_path / name, model, size=32)                   # the output's lightness is the converted photo's
    from colorcourse.lab import rgb_to_lab
    L = lambda a: rgb_to_lab(torch.from_numpy(np.asarray(a, dtype=np.float32) / 255).permute(2, 0, 1))[0]
    assert (L(out) - L(expected)).abs().mean() < 1


def test_a_quantizer_grid_that_would_exhaust_memory_is_refused():
    "A crafted checkpoint's ABQuantizer(grid=0.001) would ask for billions of bins: refused at once, by the class itself."
    from colorcourse.cnn import ABQuantizer
    for grid in (0.001, 0, -5, 1000, True, 'ten'):
        with pytest.raises(ValueError, match='grid'): ABQuantizer(grid)
    assert len(ABQuantizer(10)) > 200


def test_only_photo_decoders_open_a_file(tmp_path):
    "A file in a format PIL reads but no photo comes in (PCX here; EPS would run Ghostscript) is refused, not decoded."
    from colorcourse.data import open_image
    Image.new('RGB', (16, 16), (200, 40, 40)).save(tmp_path / 'x.png')
    Image.new('RGB', (16, 16), (200, 40, 40)).save(tmp_path / 'x.pcx')
    assert open_image(tmp_path / 'x.png').size == (16, 16)
    with pytest.raises(ValueError, match='cannot read image'): open_image(tmp_path / 'x.pcx')


def test_folder_search_follows_symlinked_folders_and_finds_avif(tmp_path):
    from PIL import features
    from colorcourse.data import find_images
    (tmp_path / 'elsewhere').mkdir(); (tmp_path / 'photos').mkdir()
    Image.new('RGB', (16, 16)).save(tmp_path / 'elsewhere' / 'a.png')
    (tmp_path / 'photos' / 'linked').symlink_to(tmp_path / 'elsewhere')
    (tmp_path / 'elsewhere' / 'loop').symlink_to(tmp_path / 'photos')            # a cycle: each real folder is searched once
    names = [p.name for p in find_images(tmp_path / 'photos')]
    assert names == ['a.png']
    if features.check('avif'):
        Image.new('RGB', (16, 16)).save(tmp_path / 'photos' / 'b.avif')
        assert sorted(p.name for p in find_images(tmp_path / 'photos')) == ['a.png', 'b.avif']
