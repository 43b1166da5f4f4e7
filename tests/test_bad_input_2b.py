"Bad input, second round (issue 31), part B"
import errno, io, os, signal, tempfile, threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorcourse.inference import colorize, colorize_files, save_checkpoint, load_checkpoint
from colorcourse.pix2pix import pix2pix_generator
from conftest import cli, one_line_error, coffee


def photos(folder: Path, names=('a.png', 'b.png', 'c.png')) -> Path:
    "A folder of small colour photos named `names`."
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names): coffee((96 + 8 * i, 64)).save(folder / n)
    return folder


TINY_TRAIN = ('--model', 'unet', '--size', '32', '--epochs', '1', '--epoch-len', '8', '--bs', '4', '--nf', '4', '--valid-pct', '0')


@pytest.fixture
def full_disk(monkeypatch, tmp_path):
    "Writes into any folder named 'full' fail as on a full disk (the folder itself gets created, as the writer does); temp files go to tmp_path/'spare'."
    import colorcourse.core as core   # where save_checkpoint lives (lesson 04 exports it to the light module)
    real = core._write_atomically
    def write(path, fn, replace=True):
        if Path(path).parent.name == 'full': raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, fn, replace)
    monkeypatch.setattr(core, '_write_atomically', write)
    (tmp_path / 'spare').mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'spare'))
    return tmp_path / 'spare'


def saved_elsewhere(line: str, spare: Path) -> Path:
    "The checkpoint that a failed write put in the temp folder `spare`, named in `line`, checked to load."
    saved = [p for p in spare.rglob('*.safetensors')]
    assert len(saved) == 1 and str(saved[0]) in line, (line, saved)
    assert load_checkpoint(saved[0]).checkpoint['size'] in (32, 64)
    return saved[0]


# 2. A full disk while train writes its checkpoint: one line, exit 2, and the trained model saved elsewhere and named.
def test_train_on_a_full_disk_keeps_the_model(tmp_path, full_disk):
    out = tmp_path / 'full' / 'm.safetensors'
    line = one_line_error(cli('train', *TINY_TRAIN, '--out', out), 'No space left on device', str(out))
    saved_elsewhere(line, full_disk)
    assert not out.exists()


# 2. The same for demo, which also leaves no empty output folder behind.
def test_demo_on_a_full_disk_keeps_the_model_and_leaves_no_empty_folder(tmp_path, full_disk, monkeypatch):
    import colorcourse.cli as cli_module
    monkeypatch.setattr(cli_module, 'demo_config', lambda device: dict(size=64, epochs=1, epoch_len=8, bs=4, nf=4, lr=2e-3))
    line = one_line_error(cli('demo', '-o', tmp_path / 'full'), 'No space left on device', 'demo.safetensors')
    saved_elsewhere(line, full_disk)
    assert not (tmp_path / 'full').exists()


OUT_OF_MEMORY = [RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
                              "allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)"),
                 torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.\nGPU 0 has a total capacity of 15 GiB"),
                 MemoryError()]


# 3. Running out of memory while training is one line naming the options that reduce it, whatever the allocator raised.
@pytest.mark.parametrize('error', OUT_OF_MEMORY, ids=['cpu', 'cuda', 'python'])
def test_out_of_memory_in_training_is_one_line(tmp_path, monkeypatch, error):
    from colorcourse.training import RECIPES
    def fit(learn, epochs, lr): raise error
    monkeypatch.setattr(RECIPES['unet'], 'fit_schedule', fit)
    line = one_line_error(cli('train', *TINY_TRAIN, '--out', tmp_path / 'm.safetensors'), 'not enough memory', '--size', '--nf', '--bs')
    assert ': ;' not in line and 'enforce fail' not in line
    assert not (tmp_path / 'm.safetensors').exists()


# 3. A batch size far above the photos does not make an epoch that many crops: it is clamped to the epoch, with one warning.
def test_a_huge_batch_size_is_clamped_to_the_epoch(tmp_path, monkeypatch):
    from colorcourse.training import RECIPES
    seen = []
    monkeypatch.setattr(RECIPES['unet'], 'fit_schedule', lambda learn, epochs, lr: seen.append((learn.dls.train.bs, learn.dls.train.n)))
    rc, out, err = cli('train', '--model', 'unet', '--size', '32', '--epochs', '1', '--nf', '4', '--valid-pct', '0', '--bs', '200000',
                       '--out', tmp_path / 'm.safetensors')
    assert rc == 0, err
    (bs, n), = seen
    assert bs == n and n <= 7, seen                                      # the sample photos, one crop each
    assert len(err.strip().splitlines()) == 1 and '--bs' in err and 'warning' in err, err


# 4. bench on a device that does not exist, is absent, or holds no data: one line, exit 2, nothing run.
def test_bench_refuses_a_device_it_cannot_use(monkeypatch):
    import colorcourse.speed as speed
    runs = []
    monkeypatch.setattr(speed, 'run_bench', lambda *a, **k: runs.append(a) or {'train': [], 'seconds': 0.1})
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    one_line_error(cli('bench', '--device', 'bogus'), '--device', 'bogus')
    one_line_error(cli('bench', '--device', 'cuda'), '--device', 'cuda', 'no CUDA GPU')
    one_line_error(cli('bench', '--device', 'meta'), '--device', 'meta')
    assert runs == []


# 6. A photo deleted while a folder is colorized costs only itself: the others are written, then the summary names it.
def test_a_photo_deleted_during_the_run_costs_only_itself(tmp_path, ckpt, monkeypatch):
    import colorcourse.inference as inference
    src, out = photos(tmp_path / 'photos'), tmp_path / 'out'
    real = inference.colorize
    def colorize_then_delete(img, *a, **k):
        (src / 'b.png').unlink(missing_ok=True)   # after the first photo: b vanishes
        return real(img, *a, **k)
    monkeypatch.setattr(inference, 'colorize', colorize_then_delete)
    line = one_line_error(cli('colorize', src, '-o', out, '--checkpoint', ckpt), 'colorized 2 of 3', 'b.png')
    assert sorted(p.name for p in out.iterdir()) == ['a_color.png', 'c_color.png']
    assert 'a.png' not in line.split('skipped')[1]


# 7. Output names of 241-255 bytes (legal) are written; any one failed write skips that photo, names its output, and goes on.
def test_long_output_names_and_a_failed_write_cost_only_that_photo(tmp_path, model, monkeypatch):
    import colorcourse.inference as inference
    long_stem = 'x' * (250 - len('_color.png'))
    src = photos(tmp_path / 'photos', (f'{long_stem}.png', 'b.png', 'c.png'))
    written = colorize_files(src, tmp_path / 'out', model, size=32, progress=False)
    assert len(written) == 3 and len((tmp_path / 'out' / f'{long_stem}_color.png').name) == 250
    real = inference.save_image
    def save(img, path, exif=None, replace=True):
        if path.name == 'b_color.png': raise OSError(errno.EIO, os.strerror(errno.EIO), str(path.parent / '.b_color.png.1234.part'))
        return real(img, path, exif, replace)
    monkeypatch.setattr(inference, 'save_image', save)
    with pytest.raises(ValueError) as e: colorize_files(src, tmp_path / 'out2', model, size=32, progress=False)
    assert 'colorized 2 of 3' in str(e.value) and 'b_color.png' in str(e.value) and '.part' not in str(e.value), e.value
    assert sorted(p.name for p in (tmp_path / 'out2').iterdir()) == sorted([f'{long_stem}_color.png', 'c_color.png'])


# 11. --epoch-len has an upper bound; a lack of memory with no message is not 'error: ; try a smaller size'.
def test_epoch_len_is_bounded_and_memory_errors_name_trains_options(tmp_path, monkeypatch):
    import colorcourse.cli as cli_module
    def no_memory(*a, **k): raise MemoryError()
    monkeypatch.setattr(cli_module, 'load_data', no_memory)
    one_line_error(cli('train', '--epoch-len', str(10 ** 12), '--out', tmp_path / 'm.safetensors'), '--epoch-len', 'at most 10000000')
    line = one_line_error(cli('train', '--out', tmp_path / 'm.safetensors'), 'not enough memory', '--epoch-len', '--bs')
    assert ': ;' not in line and 'smaller size' not in line


# 12. colorize from several threads on a model left in train mode: the serial outputs, running stats untouched, train mode kept.
def test_colorize_from_threads_matches_serial_and_leaves_the_model_alone():
    torch.manual_seed(0)
    net = pix2pix_generator(32, nf=8)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    imgs = [coffee((96 + 16 * i, 64 + 8 * i)) for i in range(8)]
    serial = [np.asarray(colorize(img, net, size=32)) for img in imgs]
    assert net.training
    for _ in range(3):
        results, errors = [None] * len(imgs), []
        def work(i):
            try: results[i] = np.asarray(colorize(imgs[i], net, size=32))
            except Exception as e: errors.append(e)
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(imgs))]
        for t in threads: t.start()
        for t in threads: t.join()
        assert not errors, errors
        for s, r in zip(serial, results): np.testing.assert_array_equal(s, r)
        assert net.training
        for k, v in net.state_dict().items(): assert torch.equal(v, before[k]), k


# 13. A decompression bomb uploaded to the widget gets the same clear message as any unreadable upload.
def test_upload_of_a_decompression_bomb_is_a_clear_error(model, monkeypatch):
    from colorcourse.inference import UploadColorizer
    buf = io.BytesIO(); coffee().save(buf, format='PNG')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 96 * 64 // 4)   # the photo is over twice the limit
    with pytest.raises(ValueError, match='bomb.png is not an image PIL can read'):
        UploadColorizer(model, size=32).process(buf.getvalue(), 'bomb.png')


# 14. strip_rows must be a positive whole number.
@pytest.mark.parametrize('rows', [-1, 0, 2.5, True])
def test_strip_rows_is_checked(model, rows):
    with pytest.raises(ValueError, match='strip_rows must be a whole number of rows, at least 1'):
        colorize(coffee(), model, size=32, strip_rows=rows)


# Low: --suffix cannot leave the output folder, -o - is refused, --lr inf is refused before training.
def test_suffix_out_dir_and_lr_are_checked(tmp_path, ckpt):
    coffee().save(tmp_path / 'coffee.png')
    for suffix in ('/../../escaped', '_a/b'):
        one_line_error(cli('colorize', tmp_path / 'coffee.png', '-o', tmp_path / 'out', '--checkpoint', ckpt, '--suffix', suffix), '--suffix')
    one_line_error(cli('colorize', tmp_path / 'coffee.png', '-o', '-', '--checkpoint', ckpt), "-o -")
    for lr in ('inf', 'nan'):
        one_line_error(cli('train', '--out', tmp_path / 'm.safetensors', '--lr', lr), '--lr')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['coffee.png'] and not Path('-').exists()


# Low: a checkpoint written by someone else during training: the refusal names --force, and the model is saved elsewhere.
def test_train_refusal_names_force_and_keeps_the_model(tmp_path, monkeypatch, full_disk):
    from colorcourse.training import RECIPES
    out = tmp_path / 'm.safetensors'
    monkeypatch.setattr(RECIPES['unet'], 'fit_schedule', lambda learn, epochs, lr: out.write_bytes(b'another run'))
    line = one_line_error(cli('train', *TINY_TRAIN, '--out', out), '--force')
    assert 'overwrite=True' not in line and out.read_bytes() == b'another run'
    saved_elsewhere(line, full_disk)


# Low: colorize_files with a checkpoint's path loads it once, not once per photo.
def test_colorize_files_loads_a_checkpoint_once(tmp_path, ckpt, monkeypatch):
    import colorcourse.training as training, colorcourse.evaluation as evaluation, colorcourse.inference as inference
    loads = []
    real = training.load_checkpoint
    counting = lambda *a, **k: loads.append(a) or real(*a, **k)
    for m in (training, evaluation, inference): monkeypatch.setattr(m, 'load_checkpoint', counting)
    assert len(colorize_files(photos(tmp_path / 'photos'), tmp_path / 'out', str(ckpt), progress=False)) == 3
    assert len(loads) == 1


# Low: SIGTERM in the middle of a write leaves no .part file, and the command says it was terminated.
def test_sigterm_mid_write_leaves_no_part_file(tmp_path, ckpt, monkeypatch):
    import colorcourse.inference as inference
    coffee().save(tmp_path / 'coffee.png')
    def half_then_term(tmp):
        Path(tmp).write_bytes(b'half a photo')
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(inference, 'save_image', lambda img, path, exif=None, replace=True: inference._write_atomically(path, half_then_term))
    killed = []
    old = signal.signal(signal.SIGTERM, lambda *a: killed.append(a))   # stands in for the default, which ends the process
    try: result = cli('colorize', tmp_path / 'coffee.png', '-o', tmp_path / 'out', '--checkpoint', ckpt)
    finally: signal.signal(signal.SIGTERM, old)
    one_line_error(result, 'terminated', code=143)
    assert killed == [] and not (tmp_path / 'out').exists()


# Low: '-' and a FIFO are named for what they are, not "no such file".
def test_stdin_and_a_pipe_are_named_as_such(tmp_path, ckpt):
    os.mkfifo(tmp_path / 'pipe.png')
    for item in ('-', tmp_path / 'pipe.png'):
        line = one_line_error(cli('colorize', item, '-o', tmp_path / 'out', '--checkpoint', ckpt), 'not a photo file')
        assert 'no such file' not in line


# Low: control characters in a file name reach the terminal as escapes, and the error stays one line.
def test_control_characters_in_names_are_escaped(tmp_path, ckpt):
    (tmp_path / 'bad\nname\x1b[31m.png').write_bytes(b'not a png')
    line = one_line_error(cli('colorize', tmp_path, '-o', tmp_path / 'out', '--checkpoint', ckpt), 'bad\\nname\\x1b[31m.png')
    assert '\x1b' not in line


# Low: an output folder inside the input folder: a later run does not colorize the earlier outputs again.
def test_outputs_inside_the_input_folder_are_not_inputs(tmp_path, ckpt):
    src = photos(tmp_path / 'photos', ('a.png',))
    for _ in range(2): assert cli('colorize', src, '-o', src / 'out', '--checkpoint', ckpt, '--force')[0] == 0
    assert [p.name for p in (src / 'out').iterdir()] == ['a_color.png']
    sub = photos(tmp_path / 'photos' / 'sub', ('b.png',))   # an output folder around the input folder excludes nothing
    assert cli('colorize', sub, '-o', tmp_path / 'photos', '--checkpoint', ckpt)[0] == 0 and (tmp_path / 'photos' / 'b_color.png').exists()


def test_two_runs_into_one_output_never_replace_each_others_file(tmp_path, model, monkeypatch):
    "A file that appears in the output folder after the run checked it (another run's) is left as it was, and that photo is named as skipped."
    from colorcourse import inference
    (tmp_path / 'in').mkdir(); coffee().save(tmp_path / 'in' / 'a.png'); coffee().save(tmp_path / 'in' / 'b.png')
    out = tmp_path / 'out'
    planned = inference.plan_outputs
    def plan_then_race(files, out_dir, force=False, suffix='_color'):
        outs = planned(files, out_dir, force, suffix)
        Path(out_dir).mkdir(parents=True, exist_ok=True); outs[0].write_bytes(b'the other run')   # after the check, before the write
        return outs
    monkeypatch.setattr(inference, 'plan_outputs', plan_then_race)
    with pytest.raises(ValueError, match=r'colorized 1 of 2.*a_color.png.*appeared'):
        colorize_files(tmp_path / 'in', out, model=model, size=32, progress=False)
    assert (out / 'a_color.png').read_bytes() == b'the other run' and (out / 'b_color.png').exists()
    assert not [p for p in out.iterdir() if p.name.startswith('.')]                                  # no temporary file left
    written = colorize_files(tmp_path / 'in', out, model=model, size=32, progress=False, force=True)   # --force replaces
    assert len(written) == 2 and (out / 'a_color.png').read_bytes() != b'the other run'


def test_a_checkpoint_that_appears_meanwhile_is_not_replaced(tmp_path, model, monkeypatch):
    from colorcourse import core
    path = tmp_path / 'g.safetensors'
    real_save = core.save_file
    def save_while_another_run_saves(tensors, tmp, metadata=None):
        real_save(tensors, tmp, metadata=metadata); path.write_bytes(b'the other run')
    monkeypatch.setattr(core, 'save_file', save_while_another_run_saves)
    with pytest.raises(OSError, match='appeared'): save_checkpoint(path, model, size=32)
    assert path.read_bytes() == b'the other run' and [p.name for p in tmp_path.iterdir()] == ['g.safetensors']
