"""Training on several processes, as lesson 13's "More than one GPU" runs it: `torchrun` starts two CPU processes
(gloo), fastai's `distrib_ctx` (lesson 04's `distributed_training`) shards the data and averages the gradients.

Each launch costs the start of two Python processes that import torch and fastai (about 10 s on 2 cores), so the
file launches three times in all."""
import json, os, signal, subprocess, sys, textwrap, threading, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = [str(Path(sys.executable).parent / 'torchrun'), '--standalone', '--nproc_per_node', '2']
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))   # one thread per process: two processes on two cores
B, STEPS = 2, 4                                                     # the batch of each of two processes; steps compared
LOSS_RTOL = 1e-5   # float32 sums the same numbers in another order: we measured 1e-7; per-process BatchNorm would differ by ~1e-2

# Run by one process with batches of 2B, and by two processes with batches of B each, on the same data: an instance-norm
# U-Net without dropout (so the batch statistics of BatchNorm, which DDP keeps per process, play no part). Then the
# GAN trains on the same processes, and each process reports whether every process holds the same weights.
WORKER = textwrap.dedent('''
    import json, sys
    import torch, torch.distributed as dist
    from fastai.callback.core import Callback
    from fastai.data.core import DataLoaders
    from colorcourse.core import seed_everything
    from colorcourse.data import CachedImages, ColorDataLoader, LabBatch, prepare_images, resolve_source
    from colorcourse.gan import gan_learner
    from colorcourse.pix2pix import PatchDiscriminator
    from colorcourse.training import (colorization_learner, distributed_setup, distributed_teardown, distributed_training,
                                      is_main_process, wait_for_all)
    from colorcourse.unet import UnetGenerator

    out, bs, B, STEPS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    class StepLosses(Callback):
        "The training loss of every step, averaged over the processes: the loss of the whole batch."
        def before_fit(self): self.losses = []
        def after_batch(self):
            if not self.training: return
            loss = self.learn.loss.detach().clone()
            if dist.is_initialized(): dist.all_reduce(loss); loss /= dist.get_world_size()
            self.losses.append(loss.item())

    def same_everywhere(module) -> bool:
        "Whether every process holds the parameters of `module` that this one holds."
        mine = torch.cat([p.detach().flatten() for p in module.parameters()])
        if not dist.is_initialized(): return True
        every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(every, mine)
        return all(torch.equal(every[0], t) for t in every)

    def loaders() -> DataLoaders:
        "Unshuffled, uncropped photos; for one process in the order that makes its batch k the union of both processes' batches k."
        array, names, _ = prepare_images(resolve_source('sample')[0], 40, progress=False)
        n, half = 2 * B * STEPS, B * STEPS   # DistributedDL gives process r the r-th half of the epoch
        order = (list(range(n)) if bs == B else [r * half + k * B + j for k in range(STEPS) for r in (0, 1) for j in range(B)])
        make = lambda ds, bs: ColorDataLoader(ds, bs=bs, n=len(ds), shuffle=False, after_batch=LabBatch(32, False), device='cpu')
        return DataLoaders(make(CachedImages(array, [i % len(array) for i in order], names), bs),
                           make(CachedImages(array, [0, 1], names), 2), device='cpu')

    distributed_setup()
    try:
        seed_everything(0)
        dls = loaders()
        learn = colorization_learner(dls, UnetGenerator(1, 2, n_down=5, nf=8, norm='instance', dropout=False), cbs=StepLosses(), metrics=[])
        with distributed_training(learn), learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
        report = dict(losses=learn.step_losses.losses, unet_same=same_everywhere(learn.model))
        gan = gan_learner(dls, UnetGenerator(1, 2, n_down=5, nf=8), PatchDiscriminator(3, nf=8, n_layers=2), metrics=[])
        D_before = [p.detach().clone() for p in gan.model.discriminator.parameters()]
        with distributed_training(gan), gan.no_bar(), gan.no_logging(): gan.fit(1, 2e-4)
        report.update(G_same=same_everywhere(gan.model.generator), D_same=same_everywhere(gan.model.discriminator),
                      D_trained=any(not torch.equal(a, b) for a, b in zip(D_before, gan.model.discriminator.parameters())),
                      unwrapped=type(gan.model.generator).__name__ + ',' + type(gan.model.discriminator).__name__)
        if is_main_process(): open(out, 'w').write(json.dumps(report))
        wait_for_all()
    finally: distributed_teardown()
''')


def _failed(p: subprocess.Popen, out: str, err: str) -> str:
    "The tail of a failed run's output, for the assertion message."
    return f"exit {p.returncode}:\n{out[-3000:]}\n{err[-3000:]}"


def test_two_processes_follow_the_loss_curve_of_one_with_twice_the_batch(tmp_path):
    worker = tmp_path / 'worker.py'
    worker.write_text(WORKER)
    args = lambda name, bs: [str(tmp_path / name), str(bs), str(B), str(STEPS)]
    one = subprocess.Popen([sys.executable, str(worker), *args('one.json', 2 * B)], cwd=tmp_path, env=ENV, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    two = subprocess.Popen(TORCHRUN + [str(worker), *args('two.json', B)], cwd=tmp_path, env=ENV, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for p in (one, two):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, _failed(p, out, err)
    single, double = (json.loads((tmp_path / n).read_text()) for n in ('one.json', 'two.json'))
    assert len(single['losses']) == len(double['losses']) == STEPS   # two processes: half the batch, the same number of steps
    assert double['losses'] == pytest.approx(single['losses'], rel=LOSS_RTOL)
    assert single['losses'][-1] < single['losses'][0]   # and the curve is a curve: the U-Net learns
    # DDP keeps the copies identical: the U-Net, and the GAN's G and D, each wrapped apart (lesson 07)
    assert double['unet_same'] and double['G_same'] and double['D_same'] and double['D_trained']
    assert double['unwrapped'] == 'UnetGenerator,PatchDiscriminator'   # the wrappers are gone after the fit


def test_an_epoch_is_shared_by_the_processes():
    from colorcourse.cli import CLIError, _fit_batch_to_epoch, load_data
    dls = load_data('sample', 32, 8, 6, valid_pct=0)
    with pytest.warns(UserWarning, match='for each of 2 processes'): _fit_batch_to_epoch(dls, 8, 6, processes=2)
    assert (dls.train.bs, dls.train.n) == (3, 6)   # each process gets 3 of the epoch's 6 crops: one batch of 3
    with pytest.raises(CLIError, match='6 crops cannot be shared by 8 processes'): _fit_batch_to_epoch(dls, 8, 6, processes=8)


def _photo(folder: Path) -> Path:
    "A gray photo to colorize, in `folder`."
    from colorcourse.data import sample_images
    folder.mkdir()
    sample_images()[1].resize((90, 60)).convert('L').save(folder / 'cat.jpg')
    return folder / 'cat.jpg'


TRAIN = ['-m', 'colorcourse', 'train', '--model', 'pix2pix', '--data', 'sample', '--size', '32', '--epoch-len', '32',
         '--bs', '4', '--nf', '8']


def test_pix2pix_trains_on_two_processes_and_its_checkpoint_colorizes(tmp_path):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    ckpt = run_dir / 'p2p.safetensors'
    p = subprocess.run(TORCHRUN + TRAIN + ['--epochs', '2', '--out', str(ckpt)], cwd=run_dir, env=ENV, text=True,
                       capture_output=True, timeout=300)
    assert p.returncode == 0, f"exit {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    # one process prints the log: one header, one line per epoch, one score table
    assert p.stdout.count('pix2pix on 7 photos') == 1 and '2 processes with batches of 4 each' in p.stdout, p.stdout
    assert [l.split()[:2] for l in p.stdout.splitlines() if l.startswith('epoch ')] == [['epoch', '0'], ['epoch', '1']], p.stdout
    assert p.stdout.count('trained in') == 1 and p.stdout.count('\nmodel ') == 1, p.stdout
    # one process writes one file, and nothing else is left behind (no temporary file, no fastai `models` folder)
    assert sorted(f.name for f in run_dir.rglob('*')) == ['p2p.safetensors']
    from colorcourse.training import read_checkpoint_info
    info = read_checkpoint_info(ckpt)
    assert (info['meta']['recipe'], info['meta']['epochs'], info['size']) == ('pix2pix', 2, 32)
    photo = _photo(tmp_path / 'photos')
    c = subprocess.run([sys.executable, '-m', 'colorcourse', 'colorize', str(photo), '-o', str(tmp_path / 'out'),
                        '--checkpoint', str(ckpt)], env=ENV, text=True, capture_output=True, timeout=120)
    assert c.returncode == 0, c.stderr
    from PIL import Image
    with Image.open(tmp_path / 'out' / 'cat_color.jpg') as im: assert (im.size, im.mode) == ((90, 60), 'RGB')


@pytest.mark.slow
def test_ctrl_c_stops_every_process_and_leaves_no_file(tmp_path):
    ckpt = tmp_path / 'p2p.safetensors'
    # a terminal's Ctrl-C sends SIGINT to the launcher and its processes alike: their own process group
    p = subprocess.Popen(TORCHRUN + TRAIN + ['--epochs', '1000', '--out', str(ckpt)], cwd=tmp_path, env=ENV, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    watchdog = threading.Timer(300, os.killpg, (p.pid, signal.SIGKILL))   # a run that hangs fails the test instead
    watchdog.start()
    try:
        for line in p.stdout:   # wait until training runs: the first epoch's line
            if line.startswith('epoch 0'): break
        else: pytest.fail(f"training never started: {p.communicate()[1][-3000:]}")
        os.killpg(p.pid, signal.SIGINT)
        start = time.monotonic()
        _, err = p.communicate(timeout=60)
        stopped = time.monotonic() - start
    finally:
        watchdog.cancel()
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)
    assert err.count('colorcourse train: interrupted') == 2, err[-3000:]   # each process stopped itself, cleanly
    assert stopped < 60
    with pytest.raises(ProcessLookupError): os.killpg(p.pid, 0)          # no process of the run is left
    assert list(tmp_path.iterdir()) == []                                 # and no file: no checkpoint, no temporary one
