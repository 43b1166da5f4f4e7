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
from conftest import cli, one_line_error, coffee


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


# 7. One unreadable photo among good ones: every readable one is colorized, the bad one named, exit code 2;
#    a second run refuses to overwrite without --force, and the fixed photo can then be colorized alone.
def test_one_unreadable_photo_costs_only_itself(tmp_path, ckpt):
    photos, out = tmp_path / 'photos', tmp_path / 'out'
    photos.mkdir()
    coffee().save(photos / 'a_coffee.jpg'); coffee().convert('L').save(photos / 'c_gray.png')
    (photos / 'b_broken.jpg').write_bytes(b'\xff\xd8\xff\xe0' + b'garbage' * 10)
    line = one_line_error(cli('colorize', photos, '-o', out, '--checkpoint', ckpt), 'colorized 2 of 3', 'b_broken.jpg')
    assert 'a_coffee' not in line and 'c_gray' not in line
    assert sorted(p.name for p in out.iterdir()) == ['a_coffee_color.jpg', 'c_gray_color.png']
    before = {p: p.read_bytes() for p in out.iterdir()}
    one_line_error(cli('colorize', photos, '-o', out, '--checkpoint', ckpt), 'exist already', '--force')
    assert {p: p.read_bytes() for p in out.iterdir()} == before
    coffee().save(photos / 'b_broken.jpg')
    assert cli('colorize', photos / 'b_broken.jpg', '-o', out, '--checkpoint', ckpt)[0] == 0
    assert {p: p.read_bytes() for p in out.iterdir() if p in before} == before and (out / 'b_broken_color.jpg').exists()


# 10. A failure leaves no empty folder behind: colorize with nothing readable, train that fails before training.
def test_a_failure_leaves_no_empty_folder(tmp_path, ckpt):
    (tmp_path / 'broken.png').write_bytes(b'not a png')
    one_line_error(cli('colorize', tmp_path / 'broken.png', '-o', tmp_path / 'new' / 'out', '--checkpoint', ckpt), 'broken.png')
    one_line_error(cli('train', '--data', tmp_path / 'no_photos', '--out', tmp_path / 'models' / 'm.safetensors'), 'no such folder')
    one_line_error(cli('demo', '-o', tmp_path / 'demo', '--epochs', '0'), '--epochs')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['broken.png']


# 10. The API says what colorize accepts: a path or a PIL image; an empty image is named as such; mode 'La' works.
def test_colorize_says_what_it_accepts(model):
    for wrong in (torch.zeros(1, 1, 32, 32), np.zeros((32, 32), np.uint8)):
        with pytest.raises(TypeError, match="a photo's path or a PIL image"): colorize(wrong, model, size=32)
    with pytest.raises(ValueError, match='no pixels'): colorize(Image.new('L', (0, 0)), model, size=32)
    out = colorize(Image.new('La', (40, 30), (128, 255)), model, size=32)
    assert out.mode == 'RGBA' and out.size == (40, 30)


# 10. Progress bars only on a terminal: with stdout redirected, stdout holds the result line alone.
def test_no_progress_bars_when_stdout_is_not_a_terminal(tmp_path, ckpt):
    class Terminal(io.StringIO):
        def isatty(self): return True
    coffee().save(tmp_path / 'coffee.jpg')
    out, err = io.StringIO(), Terminal()
    with redirect_stdout(out), redirect_stderr(err):
        assert main(['colorize', str(tmp_path / 'coffee.jpg'), '-o', str(tmp_path / 'out'), '--checkpoint', str(ckpt)]) == 0
    assert out.getvalue() == f"colorized 1 photo(s) into {tmp_path / 'out'} with {ckpt}\n"
    rc, out, err = cli('train', '--model', 'unet', '--size', '32', '--epochs', '1', '--epoch-len', '8', '--bs', '4', '--nf', '8',
                       '--out', tmp_path / 'm.safetensors')
    assert rc == 0, err
    assert '\r' not in out and '█' not in out and 'train_loss' in out, out


# 9. Arguments are checked before any work: sizes, epochs, and train's --valid-pct (the option its own advice names).
def test_arguments_are_checked(tmp_path, ckpt):
    coffee().save(tmp_path / 'coffee.jpg')
    for size in ('1', '0', '-5', '100000'):
        one_line_error(cli('colorize', tmp_path / 'coffee.jpg', '-o', tmp_path / 'out', '--checkpoint', ckpt, '--size', size), '--render-size', size)   # --size: the former name
    for epochs in ('-1', '0'):
        one_line_error(cli('demo', '-o', tmp_path / 'demo', '--epochs', epochs), '--epochs', epochs)
    for option, value in (('--size', '8'), ('--bs', '0'), ('--nf', '0'), ('--lr', '0'), ('--epoch-len', '0'), ('--valid-pct', '1')):
        one_line_error(cli('train', '--out', tmp_path / 'm.safetensors', option, value), option)
    one = tmp_path / 'one'; one.mkdir(); coffee((64, 64)).save(one / 'coffee.png')
    line = one_line_error(cli('train', '--data', one, '--out', tmp_path / 'm.safetensors'), '--valid-pct 0')
    assert 'valid_pct=0' not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ['coffee.jpg', 'one']
    with pytest.raises(ValueError, match='size must be a whole number of pixels'): colorize(coffee(), pix2pix_generator(32, nf=8), size=1)


# 10. A warning (a photo larger than PIL's decompression-bomb limit) is one line naming the command, not a raw warning.
def test_warnings_are_one_line(tmp_path, ckpt, monkeypatch):
    coffee().save(tmp_path / 'big.png')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 96 * 64 * 2 // 3)   # the photo exceeds the limit, but not twice
    rc, out, err = cli('colorize', tmp_path / 'big.png', '-o', tmp_path / 'out', '--checkpoint', ckpt)
    assert rc == 0, err
    assert err.startswith('colorcourse colorize: warning: Image size') and len(err.strip().splitlines()) == 1, err
    assert 'DecompressionBombWarning' not in err and 'warnings.warn' not in err


def rewrite_metadata(src: Path, dest: Path, change) -> Path:
    "A copy of checkpoint `src` at `dest` whose colorcourse metadata (the JSON text) is `change(text)`."
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(str(src), 'pt') as f: text = f.metadata()['colorcourse']
    save_file(load_file(str(src)), str(dest), metadata={'colorcourse': change(text)})
    return dest


# 8. Checkpoint metadata is checked before it is trusted: types, nesting, bounds, and the weights' shapes before any allocation.
def test_checkpoint_metadata_is_checked_before_it_is_trusted(tmp_path, ckpt):
    import json, resource
    from colorcourse.inference import load_checkpoint, load_colorizer
    cases = {
        'huge': (lambda t: t.replace('"nf": 8', '"nf": 4096'), 'do not fit'),
        'list': (lambda t: '[1, 2, 3]', 'a list, not an object'),
        'notjson': (lambda t: t[:-5], 'not JSON'),
        'deep': (lambda t: '[' * 100_000 + ']' * 100_000, 'malformed'),
        'nested': (lambda t: json.dumps(dict(json.loads(t), args={'size': 32, 'nf': [[[[[[[[[[8]]]]]]]]]]})), 'nest more than 8'),
        'argtype': (lambda t: json.dumps(dict(json.loads(t), args={'size': 32, 'nf': {'a': 1}})), 'nf is a dict'),
        'wrongarg': (lambda t: json.dumps(dict(json.loads(t), args={'size': 32, 'colour': 'red'})), 'do not build a pix2pix_generator'),
        'archtype': (lambda t: json.dumps(dict(json.loads(t), arch=['pix2pix_generator'])), 'not a name'),
        'size': (lambda t: json.dumps(dict(json.loads(t), size='64')), 'size must be a whole number'),
        'bigsize': (lambda t: json.dumps(dict(json.loads(t), size=10 ** 6)), 'size must be a whole number'),
        'bigint': (lambda t: json.dumps(dict(json.loads(t), args={'size': 32, 'nf': 10 ** 12})), 'out of any sane range'),
    }
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name, (change, message) in cases.items():
        path = rewrite_metadata(ckpt, tmp_path / f'{name}.safetensors', change)
        with pytest.raises(ValueError, match=message): load_checkpoint(path)
        one_line_error(cli('colorize', path, '-o', tmp_path / 'out', '--checkpoint', path), message.split()[0])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 2 ** 20   # KiB: well under the 8 GiB nf=4096 asks for
    assert not (tmp_path / 'out').exists()


# 8 and 10. An unknown architecture is called unknown, not "not a colorizer"; memory errors are one line.
def test_unknown_architecture_and_memory_errors_are_named(tmp_path, ckpt, monkeypatch):
    import colorcourse.inference as inference
    path = rewrite_metadata(ckpt, tmp_path / 'dalle.safetensors', lambda t: t.replace('"pix2pix_generator"', '"Dalle"'))
    one_line_error(cli('colorize', path, '-o', tmp_path / 'out', '--checkpoint', path), "unknown architecture 'Dalle'")
    def no_memory(net, L): raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    monkeypatch.setattr(inference, '_forward', no_memory)
    coffee().save(tmp_path / 'coffee.jpg')
    one_line_error(cli('colorize', tmp_path / 'coffee.jpg', '-o', tmp_path / 'out', '--checkpoint', ckpt), 'not enough memory', 'smaller --render-size')


# 1. bench --output: checked before the benchmark runs, never overwrites without --force, written whole.
def test_bench_output_never_overwrites_and_is_checked_first(tmp_path, monkeypatch):
    import json, colorcourse.speed as speed
    runs = []
    monkeypatch.setattr(speed, 'run_bench', lambda *a, **k: runs.append(a) or {'train': [], 'seconds': 0.1})
    model = tmp_path / 'model.safetensors'; model.write_bytes(b'my precious checkpoint')
    one_line_error(cli('bench', '--output', model), 'exists', '--force')
    one_line_error(cli('bench', '--output', tmp_path), 'is a folder')
    (tmp_path / 'a_file').write_text('not a folder')
    one_line_error(cli('bench', '--output', tmp_path / 'a_file' / 'bench.json'), 'not a folder', 'a_file')
    for option, value in (('--sizes', '0'), ('--sizes', ','), ('--sizes', '100000'), ('--steps', '0'), ('--batch-size', '-1'), ('--nf', '0')):
        one_line_error(cli('bench', option, value), option)
    assert runs == [] and model.read_bytes() == b'my precious checkpoint'
    rc, out, err = cli('bench', '--output', tmp_path / 'new' / 'bench.json')
    assert rc == 0, err
    assert json.loads((tmp_path / 'new' / 'bench.json').read_text()) == json.loads(out)
    os.chmod(model, 0o640)
    assert cli('bench', '--output', model, '--force')[0] == 0
    assert json.loads(model.read_text())['seconds'] == 0.1 and stat.S_IMODE(model.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file', 'model.safetensors', 'new']


# 10. The same photo spelled two ways is one photo, not two inputs competing for one output.
def test_one_photo_spelled_two_ways_is_one_input(tmp_path, ckpt):
    (tmp_path / 'photos').mkdir(); coffee().save(tmp_path / 'photos' / 'coffee.jpg')
    rc, out, err = cli('colorize', tmp_path / 'photos' / 'coffee.jpg', tmp_path / 'photos' / '..' / 'photos' / 'coffee.jpg',
                       tmp_path / 'photos', '-o', tmp_path / 'out', '--checkpoint', ckpt)
    assert rc == 0, err
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['coffee_color.jpg']
