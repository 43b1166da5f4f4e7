"""The course on a CUDA GPU in at most 8 minutes: the benchmark, every lesson's full configuration, the CUDA checks and
every mixed-precision path, measured and written to one JSON file.

On a machine with one CUDA GPU, from the repository root:

    python tools/gpu_check.py --data .gpu_data --out gpu_check.json

On a CPU, in well under a minute, to check this script itself (tiny sizes, a few steps, the scikit-image sample photos as data;
the parts that need a GPU are recorded as skipped):

    python tools/gpu_check.py --dry-run --out /tmp/gpu_check.json

Parts, in the order they run; each is isolated (on the GPU, each runs in its own process with a time limit), so one
that fails records its traceback and the others still run. A time budget (`--budget`, 480 s) is enforced: a part
that no longer fits is skipped and listed under `skipped`; `--parts` runs only the parts named (e.g. the skipped
ones, in a second run).

- `environment`: GPU model, driver, torch/CUDA/cuDNN/fastai versions, bf16 support, the date (UTC).
- `amp_paths`: one short training with each mixed-precision path on real photos: fastai's `to_fp16` and
  `to_bf16` on a U-Net Learner and on the GAN Learner (whose callback then scales D's loss too), the Learners' own
  fast path (`fast=True`), and both as built; every loss must stay finite.
- `bench_64`: `colorcourse bench --sizes 64` (fp32 and AMP, channels_last off/on, the data pipeline, Lab conversion,
  end to end), its JSON saved whole; `bench_256` and `bench_128` follow the lessons.
- `lesson_<notebook>`: each training lesson's full configuration, read from its `course_config(full=...)` cell
  (`tools/lesson_configs.py`): the lesson's architectures at its size, width and batch size, on the local stand-in
  for its dataset, for a fixed number of steps: images/s, peak GPU memory per model
  (`torch.cuda.max_memory_allocated`), the lesson's peak RAM (`resource.getrusage`, whole process) and any failure
  with its traceback. `LESSON_MODELS` below mirrors the models each notebook trains.
- `bench_256`, `bench_128`: as `bench_64`.
- `bench_fp16_vs_bf16`: the pix2pix training step in fp32, AMP fp16 (with a gradient scaler) and AMP bf16,
  channels_last, at 64, 128 and 256 px: the benchmark itself uses one AMP type, bf16 where it is native.
- `cuda_tests`: the pytest tests that run only on a CUDA GPU (marked `skipif(not torch.cuda.is_available(), ...)`).
- `cuda_notebooks`: `nbdev-test --flags cuda` on each notebook with a `#| cuda` cell.
- `bench_compile`: `colorcourse bench --sizes 64 --models pix2pix --compile` (torch.compile takes minutes).

The data folder (`--data DIR`) stands in for the downloads, small enough to travel with the repository (the two
together under 64 MiB):

    DIR/imagenet/   ImageNet photos (Tiny ImageNet, the COCO sample and Imagenette are replaced by these)
    DIR/cifar10/    CIFAR-10 training images (lesson 10)

Make it from the course's copies of the data (300 ImageNet photos and 3,000 CIFAR-10 training images, 11 MiB; git
ignores `.gpu_data/`):

    python tools/gpu_check.py --prepare .gpu_data --shared ../shared/data

A GPU machine with PyTorch but without fastai and nbdev gets them as wheels (`tools/gpu_wheels.txt`, 13 MiB; git ignores
`.whl/`), fetched where pip works:

    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \\
        -d .whl -r tools/gpu_wheels.txt

and installed there, before the run, with

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=$PWD:/tmp/site PATH=/tmp/site/bin:$PATH
"""
import argparse, datetime, gc, json, math, os, platform, re, resource, shutil, signal, subprocess, sys, tempfile, time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / 'tools')]   # colorcourse from this checkout, and lesson_configs beside this file

BUDGET_S = 480
# dataset of a full configuration -> the subfolder of --data that stands in for it
STAND_INS = {'tiny-imagenet': 'imagenet', 'coco-sample': 'imagenet', 'imagenette': 'imagenet', 'imagenette-320': 'imagenet', 'imagenet-sample': 'imagenet',
             'cifar10': 'cifar10'}


# --- running parts within a time budget ---

def now_utc() -> str:
    "The time now, UTC, ISO 8601 to the second."
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def failure(e: BaseException) -> dict:
    "A failed part or model as JSON: the exception in one line and its traceback."
    return dict(status='failed', error=f'{type(e).__name__}: {e}', traceback=traceback.format_exc())


def write_json(path: Path, obj):
    "Write `obj` to `path` through a temporary file, so a reader never sees half a file."
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(obj, indent=1, default=str) + '\n')
    tmp.replace(path)


def run_command(cmd: list, timeout: float, cwd=ROOT, env=None) -> dict:
    "Run `cmd` in its own process group; kill the group at `timeout` s. Exit code, seconds, output tails, whether it timed out."
    start = time.perf_counter()
    p = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try: out, err = p.communicate(timeout=max(1, timeout)); timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(); timed_out = True
    return dict(cmd=' '.join(map(str, cmd)), returncode=p.returncode, timed_out=timed_out,
                seconds=round(time.perf_counter() - start, 1), stdout_tail=out[-3000:], stderr_tail=err[-3000:])


def child_env() -> dict:
    "The environment of a child process: this checkout first on the path, unbuffered output, no run-size settings (nbdev-test sets its own)."
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    for k in ('IN_TEST', 'COLORCOURSE_SMOKE', 'COLORCOURSE_OVERRIDES', 'COLORCOURSE_SOURCE'): env.pop(k, None)
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), *filter(None, [env.get('PYTHONPATH')])])
    return env


# --- the environment ---

def gpu_driver():
    "The NVIDIA driver's version from nvidia-smi, or None."
    if not shutil.which('nvidia-smi'): return None
    r = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'], capture_output=True, text=True)
    return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None


def environment() -> dict:
    "What the run ran on: GPU, driver, library versions, CPU, RAM, the repository's commit and the date."
    import torch, fastai, colorcourse
    env = dict(date=now_utc(), python=platform.python_version(), platform=platform.platform(), cpus=os.cpu_count(),
               ram_gib=round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30, 1),
               torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
               fastai=fastai.__version__, colorcourse=colorcourse.__version__, cuda_available=torch.cuda.is_available())
    try: env['commit'] = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip() or None
    except OSError: env['commit'] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), capability=f'{props.major}.{props.minor}',
                   multiprocessors=props.multi_processor_count, driver=gpu_driver(),
                   bf16_native=torch.cuda.is_bf16_supported(including_emulation=False))
    return env


# --- timing a Learner ---

def sync():
    "Wait for the GPU's queued work, if there is a GPU."
    import torch
    if torch.cuda.is_available(): torch.cuda.synchronize()


def step_timer(steps: int, warmup: int, stop: bool = True):
    "A fastai callback that records each training batch's loss and times `steps` batches after `warmup`; it ends the fit then if `stop`."
    from fastai.callback.core import Callback, CancelFitException
    import torch

    class StepTimer(Callback):
        order = 99   # after the training callbacks, so `learn.loss` is final
        def before_fit(self): self.n, self.t0, self.t1, self.loss_list = 0, None, None, []
        def after_batch(self):
            if not self.training: return
            self.loss_list.append(torch.as_tensor(self.learn.loss).detach().float().reshape(()))
            self.n += 1
            if self.n == warmup: sync(); self.t0 = time.perf_counter()
            if self.n == warmup + steps:
                sync(); self.t1 = time.perf_counter()
                if stop: raise CancelFitException()
        @property
        def losses(self) -> list: return [float(v) for v in torch.stack(self.loss_list).cpu()] if self.loss_list else []
        @property
        def seconds(self): return None if self.t1 is None else self.t1 - self.t0
    return StepTimer()


def measure_learner(make_learner, bs: int, steps: int, warmup: int) -> dict:
    "Build a Learner with `make_learner()`, train `warmup + steps` batches: images/s, peak GPU memory, losses, callbacks."
    import torch
    cuda = torch.cuda.is_available()
    if cuda: gc.collect(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    learn = make_learner()
    timer = step_timer(steps, warmup)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=[timer])
    secs, losses = timer.seconds, timer.losses
    res = dict(status='ok', bs=bs, steps=steps, warmup=warmup,
               params_m=round(sum(p.numel() for p in learn.model.parameters()) / 1e6, 3),
               img_s=round(bs * steps / secs, 1) if secs else None, step_ms=round(1000 * secs / steps, 2) if secs else None,
               peak_gpu_mib=round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
               losses=[round(v, 5) for v in losses], losses_finite=bool(losses) and all(math.isfinite(v) for v in losses),
               callbacks=[type(cb).__name__ for cb in learn.cbs])
    trainer = getattr(learn, 'conditional_gan_trainer', None)
    if trainer is not None and hasattr(trainer, 'amp'): res['gan_amp'] = str(trainer.amp)
    if secs is None: res.update(status='failed', error=f'the fit ended after {timer.n} of {warmup + steps} batches')
    del learn
    return res


def lesson_amp(learn):
    "What lessons 07, 08 and 11 do on a GPU: `to_bf16` where bf16 is native, else `to_fp16`; nothing on a CPU."
    import torch
    if not torch.cuda.is_available(): return learn
    return learn.to_bf16() if torch.cuda.is_bf16_supported(including_emulation=False) else learn.to_fp16()


# --- each training lesson's models, as its notebook builds them: name -> make(cfg, dls) -> Learner ---

def _l1(make_model):
    "A colorization Learner (L1 loss) on `make_model(cfg)`."
    def make(cfg, dls):
        from colorcourse.training import colorization_learner
        return colorization_learner(dls, make_model(cfg))
    return make


def _gan(make_g, make_d, amp: bool):
    "A GAN Learner of `make_g(cfg)` against `make_d(cfg)`, with the lesson's mixed precision if `amp`."
    def make(cfg, dls):
        from colorcourse.gan import gan_learner
        learn = gan_learner(dls, make_g(cfg), make_d(cfg), lr=cfg.get('gan_lr', cfg.get('lr', 2e-4)))
        return lesson_amp(learn) if amp else learn
    return make


def _classes_cnn(cfg, dls):
    "Lesson 05's (and 11's) ColorCNN over quantised ab bins, with the rebalanced cross-entropy."
    import itertools
    from colorcourse.cnn import ABQuantizer, ColorCNN, RebalancedCELoss
    from colorcourse.training import colorization_learner
    q = ABQuantizer()
    weights = q.weights(q.prior(ab for _, ab in itertools.islice(dls.train, min(4, cfg.get('prior_batches', 4)))), lam=0.5)
    model = ColorCNN(cfg['nf'], cfg['n_mid'], quantizer=q)
    return colorization_learner(dls, model, loss_func=RebalancedCELoss(model, weights))


def _unet(n_down=None, skips=True):
    def make(cfg):
        from colorcourse.unet import UnetGenerator, max_n_down
        return UnetGenerator(n_down=n_down(cfg) if n_down else min(8, max_n_down(cfg['size'])), nf=cfg['nf'], skips=skips)
    return make

def _p2p_g(cfg):
    from colorcourse.pix2pix import pix2pix_generator
    from colorcourse.unet import max_n_down
    return pix2pix_generator(cfg['size'], cfg.get('n_down') or min(8, max_n_down(cfg['size'])), cfg['nf'])

def _patch(n_layers=3, norm='batch'):
    def make(cfg):
        from colorcourse.pix2pix import PatchDiscriminator
        return PatchDiscriminator(3, cfg['nf'], n_layers, norm)
    return make

def _pixel(norm='batch'):
    def make(cfg):
        from colorcourse.pix2pix import PixelDiscriminator
        return PixelDiscriminator(3, cfg['nf'], norm=norm)
    return make

def _dcgan_d(cfg):
    from colorcourse.gan import DCGANDiscriminator
    return DCGANDiscriminator(3, cfg['size'], cfg['nf'])

def _resnet(init=False, n_blocks=None):
    def make(cfg):
        from colorcourse.resnet import ResnetGenerator, init_weights
        G = ResnetGenerator(nf=cfg['nf'], n_blocks=n_blocks or cfg['n_blocks'])
        return init_weights(G) if init else G
    return make

def _resnet18_unet(cfg):
    "The ResNet-18 U-Net, without ImageNet weights: the GPU machine may have no internet, and speed does not depend on them."
    from colorcourse.resnet import resnet_unet
    return resnet_unet('resnet18', pretrained=False, size=cfg['size'], last_cross=cfg.get('last_cross', True))

def _resnet18_classifier(cfg, dls):
    "Lesson 09's encoder pretraining: the 1-channel ResNet-18 classifier (202 classes); cross-entropy against class 0 costs what the real labels do."
    import torch, torch.nn.functional as F
    from fastai.learner import Learner
    from colorcourse.resnet import resnet_classifier
    loss = lambda out, ab: F.cross_entropy(out, torch.zeros(len(out), dtype=torch.long, device=out.device))
    return lesson_amp(Learner(dls, resnet_classifier('resnet18', 202), loss_func=loss))

def _simple(cfg):
    from colorcourse.training import simple_colorizer
    return simple_colorizer(cfg['nf'])

def _plain(cfg):
    from colorcourse.cnn import plain_cnn
    return plain_cnn(cfg['nf'])

def _hint_unet(cfg):
    "Lesson 12b's hint model: the U-Net with 4 input channels (L, ab hints, mask), fed L alone (no hints) by the L1 step."
    from colorcourse.hints import HintColorizer
    from colorcourse.unet import UnetGenerator, max_n_down
    return HintColorizer(UnetGenerator(4, 2, min(6, max_n_down(cfg['size'])), cfg['nf']))   # 12b's depth: at most 6 levels

def _color_cnn(cfg):
    from colorcourse.cnn import ColorCNN
    return ColorCNN(cfg['nf'], cfg['n_mid'])


LESSON_MODELS = {
    '04_training': {'simple_colorizer, L1': _l1(_simple)},
    '05_cnn': {'plain CNN, L1': _l1(_plain), 'ColorCNN, L1': _l1(_color_cnn), 'ColorCNN, classes': _classes_cnn},
    '06_unet': {'U-Net, L1': _l1(_unet(lambda c: c['n_down'])), 'no skips, L1': _l1(_unet(lambda c: c['n_down'], skips=False))},
    '07_dcgan': {'U-Net + DCGAN': _gan(_unet(), _dcgan_d, amp=True), 'U-Net, L1': _l1(_unet())},
    '08_pix2pix': {'pix2pix (70x70 PatchGAN)': _gan(_p2p_g, _patch(3), amp=True), 'PixelGAN': _gan(_p2p_g, _pixel(), amp=True),
                   '16x16 PatchGAN': _gan(_p2p_g, _patch(1), amp=True), 'whole-image discriminator': _gan(_p2p_g, _dcgan_d, amp=True),
                   'U-Net, L1': _l1(_p2p_g)},
    '09_resnet': {'autoencoder': _l1(_unet(skips=False)), 'U-Net': _l1(_unet()), 'ResNet': _l1(_resnet()),
                  'ResNet-18 U-Net': _l1(_resnet18_unet), 'ResNet + PatchGAN': _gan(_resnet(init=True, n_blocks=6), _patch(3), amp=True),
                  'ResNet-18 classifier': _resnet18_classifier},
    '10_spectral_norm': {'PixelGAN, spectral norm': _gan(_p2p_g, _pixel('spectral'), amp=False),
                         'PixelGAN, BatchNorm': _gan(_p2p_g, _pixel('batch'), amp=False),
                         'PatchGAN 34x34, spectral norm': _gan(_p2p_g, _patch(2, 'spectral'), amp=False),
                         'PatchGAN 34x34, BatchNorm': _gan(_p2p_g, _patch(2, 'batch'), amp=False), 'U-Net, L1': _l1(_p2p_g)},
    '11_evaluation': {'CNN, L1': _l1(_color_cnn), 'CNN, classes': _classes_cnn, 'U-Net, L1': _l1(_unet()),
                      'U-Net + DCGAN': _gan(_unet(), _dcgan_d, amp=True), 'pix2pix': _gan(_p2p_g, _patch(3), amp=True),
                      'ResNet pix2pix': _gan(_resnet(init=True), _patch(3), amp=True), 'ResNet-18 U-Net': _l1(_resnet18_unet),
                      'pix2pix, SN PatchGAN': _gan(_p2p_g, _patch(3, 'spectral'), amp=True), 'ResNet-18 classifier': _resnet18_classifier},
    '12b_hints': {'U-Net with hints, L1': _l1(_hint_unet), 'U-Net, L1': _l1(_unet())},
}


def stand_in_source(dataset: str, data, dry_run: bool):
    "The local photos that stand in for `dataset`: the sample photos in a dry run, else `data/<stand-in>`."
    if dry_run: return 'sample'
    if dataset not in STAND_INS: raise ValueError(f"no local stand-in for dataset {dataset!r}; known: {sorted(STAND_INS)}")
    folder = Path(data) / STAND_INS[dataset]
    if not folder.is_dir(): raise FileNotFoundError(f"{folder} is missing: prepare the data folder (see this script's docstring)")
    return folder


def run_lesson(stem: str, data, dry_run: bool) -> dict:
    "Train each model of lesson `stem` in its full configuration (smoke in a dry run) for a few steps on local photos."
    import warnings, torch
    from lesson_configs import NBS, lesson_config, cache_bytes, DATASET_IMAGES
    from colorcourse.data import colorization_dls
    full = lesson_config(NBS / f'{stem}.ipynb', 'full')
    cfg = lesson_config(NBS / f'{stem}.ipynb', 'smoke' if dry_run else 'full')
    if dry_run: cfg['bs'] = min(cfg['bs'], 4)   # seconds on a CPU
    steps, warmup = (1, 1) if dry_run else (10, 3)
    source = stand_in_source(full['dataset'], data, dry_run)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # gray photos dropped: counted in dls.counts
        dls = colorization_dls(source, size=cfg['size'], bs=cfg['bs'], epoch_len=cfg['bs'] * (warmup + steps + 1), valid_pct=0.2,
                               progress=False)
    res = dict(config=cfg, full_config=full, run='smoke' if dry_run else 'full', data=str(source), images=dls.counts.used,
               cache_side=dls.cache_side, data_s=round(time.perf_counter() - start, 1), device=str(dls.device),
               full_dataset_images=DATASET_IMAGES.get(full['dataset']),
               full_cache_gb=round(cache_bytes(full['size'], DATASET_IMAGES[full['dataset']]) / 1e9, 2)
                             if full['dataset'] in DATASET_IMAGES else None, models={})
    for name, make in LESSON_MODELS[stem].items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                res['models'][name] = measure_learner(lambda: make(cfg, dls), cfg['bs'], steps, warmup)
        except Exception as e: res['models'][name] = failure(e)
        if torch.cuda.is_available(): gc.collect(); torch.cuda.empty_cache()
    res['peak_ram_mib'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    res['failed_models'] = [n for n, m in res['models'].items() if m['status'] != 'ok']
    return res


# --- mixed precision: the fastai paths, and fp16 against bf16 on one training step ---

def amp_paths(data, dry_run: bool) -> dict:
    "A short training with each mixed-precision path of fastai and of the GAN Learner; every loss must stay finite."
    import warnings, torch
    from colorcourse.data import colorization_dls
    from colorcourse.training import colorization_learner
    from colorcourse.gan import gan_learner
    from colorcourse.pix2pix import PatchDiscriminator, pix2pix_generator
    from colorcourse.unet import UnetGenerator
    size, bs, nf, steps = (32, 4, 8, 3) if dry_run else (64, 32, 32, 20)
    source = 'sample' if dry_run else Path(data) / 'imagenet'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dls = colorization_dls(source, size=size, bs=bs, epoch_len=bs * steps, valid_pct=0.2, progress=False)
    unet = lambda: colorization_learner(dls, UnetGenerator(n_down=5, nf=nf))
    gan = lambda: gan_learner(dls, pix2pix_generator(size, nf=nf), PatchDiscriminator(3, nf))
    paths = {'unet, as built': unet, 'unet, to_fp16': lambda: unet().to_fp16(), 'unet, to_bf16': lambda: unet().to_bf16(),
             'unet, fast=True': lambda: colorization_learner(dls, UnetGenerator(n_down=5, nf=nf), fast=True),
             'gan, as built': gan, 'gan, to_fp16': lambda: gan().to_fp16(), 'gan, to_bf16': lambda: gan().to_bf16(),
             'gan, fast=True': lambda: gan_learner(dls, pix2pix_generator(size, nf=nf), PatchDiscriminator(3, nf), fast=True)}
    res = dict(size=size, bs=bs, nf=nf, steps=steps, data=str(source), device=str(dls.device), paths={})
    for name, make in paths.items():
        try:
            if 'bf16' in name and torch.cuda.is_available() and not torch.cuda.is_bf16_supported(including_emulation=False):
                res['paths'][name] = dict(status='skipped', reason='this GPU has no native bfloat16'); continue
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')   # on a CPU, fastai's CUDA autocast is off: said by PyTorch each time
                learn = make()
                timer = step_timer(steps, 1, stop=False)
                with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=[timer])
            losses, valid = timer.losses, [float(v) for v in learn.recorder.values[-1]] if learn.recorder.values else []
            scaler = getattr(learn, 'scaler', None)
            r = dict(status='ok', losses=[round(v, 5) for v in losses], valid=[round(v, 5) for v in valid],
                     losses_finite=bool(losses) and all(math.isfinite(v) for v in losses + valid),
                     callbacks=[type(cb).__name__ for cb in learn.cbs],
                     grad_scale=float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else None)
            trainer = getattr(learn, 'conditional_gan_trainer', None)
            if trainer is not None and hasattr(trainer, 'amp'): r['gan_amp'] = str(trainer.amp)
            if not r['losses_finite']: r.update(status='failed', error='a loss is not finite')
            res['paths'][name] = r
            del learn
        except Exception as e: res['paths'][name] = failure(e)
    res['failed'] = [n for n, r in res['paths'].items() if r['status'] == 'failed']
    return res


def amp_speed(dry_run: bool) -> dict:
    "Images/s of the pix2pix training step (U-Net + PatchGAN, Adam) in fp32, AMP fp16 with a scaler and AMP bf16, channels_last."
    import torch, torch.nn.functional as F
    from colorcourse.pix2pix import PatchDiscriminator, pix2pix_generator
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    sizes, nf, steps, warmup = ([32], 8, 1, 1) if dry_run else ([64, 128, 256], 64, 10, 3)
    precisions = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}
    if device == 'cuda' and not torch.cuda.is_bf16_supported(including_emulation=False): precisions.pop('bf16')
    rows = []
    for size in sizes:
        bs = 2 if dry_run else min(512, max(8, 2 ** 22 // size ** 2))
        for name, dtype in precisions.items():
            try:
                torch.manual_seed(0)
                cl = torch.channels_last
                G = pix2pix_generator(size, nf=nf).to(device, memory_format=cl)
                D = PatchDiscriminator(3, nf).to(device, memory_format=cl)
                opt_g, opt_d = (torch.optim.Adam(m.parameters(), 2e-4, betas=(0.5, 0.999)) for m in (G, D))
                scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)
                L = (torch.rand(bs, 1, size, size, device=device) * 2 - 1).contiguous(memory_format=cl)
                ab = (torch.rand(bs, 2, size, size, device=device) * 2 - 1).contiguous(memory_format=cl)
                auto = lambda: torch.autocast(device, dtype=dtype, enabled=dtype is not None)
                bce = F.binary_cross_entropy_with_logits
                losses = []
                def step():
                    with auto():
                        fake = G(L)
                        real_logit, fake_logit = D(torch.cat([L, ab], 1)), D(torch.cat([L, fake.detach()], 1))
                        d_loss = 0.5 * (bce(real_logit.float(), torch.ones_like(real_logit.float()))
                                        + bce(fake_logit.float(), torch.zeros_like(fake_logit.float())))
                    opt_d.zero_grad(set_to_none=True); scaler.scale(d_loss).backward(); scaler.step(opt_d)
                    with auto():
                        g_logit = D(torch.cat([L, fake], 1))
                        g_loss = bce(g_logit.float(), torch.ones_like(g_logit.float())) + 100 * F.l1_loss(fake.float(), ab)
                    opt_g.zero_grad(set_to_none=True); scaler.scale(g_loss).backward(); scaler.step(opt_g); scaler.update()
                    losses.append(g_loss.detach())
                for _ in range(warmup): step()
                sync(); t = time.perf_counter()
                for _ in range(steps): step()
                sync(); secs = (time.perf_counter() - t) / steps
                finite = bool(torch.isfinite(torch.stack(losses)).all())
                rows.append(dict(size=size, bs=bs, nf=nf, precision=name, channels_last=True, img_s=round(bs / secs, 1),
                                 step_ms=round(1000 * secs, 2), losses_finite=finite))
                del G, D, opt_g, opt_d
            except Exception as e: rows.append(dict(size=size, precision=name, **failure(e)))
            if device == 'cuda': gc.collect(); torch.cuda.empty_cache()
    return dict(device=device, rows=rows)


# --- the benchmark, the CUDA tests and notebooks ---

def cli_entry() -> tuple:
    "The `colorcourse` command's entry point as pyproject.toml declares it: (module, function)."
    import tomllib
    target = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['scripts']['colorcourse']
    module, func = target.split(':')
    return module, func


def bench_args(size: int, out: Path, data, dry_run: bool, compile: bool = False) -> list:
    "The `colorcourse bench` arguments of one part: the GPU run's settings, or tiny CPU ones in a dry run."
    if dry_run:
        return ['bench', '--sizes', '32', '--models', 'pix2pix', '--steps', '1', '--nf', '8', '--batch-size', '2', '--quick',
                '--no-compile', '--device', 'cpu', '--data', 'sample', '--output', str(out)]
    args = ['bench', '--sizes', str(size), '--steps', '8', '--device', 'cuda', '--data', str(Path(data) / 'imagenet'),
            '--output', str(out), '--compile' if compile else '--no-compile']
    return args + (['--models', 'pix2pix'] if compile else [])


def bench(size: int, data, dry_run: bool, timeout: float, compile: bool = False) -> dict:
    "Run `colorcourse bench` for one size (in a dry run in this process, else as a command with a time limit); its JSON."
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'bench.json'
        args = bench_args(size, out, data, dry_run, compile)
        module, func = cli_entry()
        if dry_run:
            import contextlib, importlib, io
            with contextlib.redirect_stdout(io.StringIO()): rc = getattr(importlib.import_module(module), func)(args)
            run = dict(cmd='colorcourse ' + ' '.join(args), returncode=rc, timed_out=False)
        else:
            code = f"import sys; from {module} import {func}; sys.exit({func}())"   # the `colorcourse` command, installed or not
            run = run_command([sys.executable, '-c', code, *args], timeout, env=child_env())
        if run['returncode'] != 0 or not out.exists():
            raise RuntimeError(f"`{run['cmd']}` " + ('timed out' if run.get('timed_out') else f"exited {run['returncode']}")
                               + f": {run.get('stderr_tail', '')[-1500:]}")
        return dict(command=run['cmd'], seconds=run.get('seconds'), bench=json.loads(out.read_text()))


def cuda_flagged_notebooks(nbs=ROOT / 'nbs') -> list:
    "The notebooks with a cell flagged `#| cuda` (run only with `nbdev-test --flags cuda`)."
    flag = re.compile(r'^\s*#\|\s*cuda\s*$', re.M)
    return [p for p in sorted(Path(nbs).glob('*.ipynb'))
            if any(c['cell_type'] == 'code' and flag.search(''.join(c['source'])) for c in json.loads(p.read_text())['cells'])]


def cuda_notebooks(timeout: float) -> dict:
    "`nbdev-test --flags cuda` on each notebook with a `#| cuda` cell; the exit code and output of each."
    nbs, deadline, runs = cuda_flagged_notebooks(), time.perf_counter() + timeout, {}
    test = shutil.which('nbdev-test')   # else nbdev's function, called with keywords (from `python -c` it would not parse argv)
    cmd = [test] if test else [sys.executable, '-c', "import sys; from nbdev.test import nbdev_test; nbdev_test(path=sys.argv[1], flags='cuda')"]
    for nb in nbs:
        left = deadline - time.perf_counter()
        if left < 10: runs[nb.name] = dict(status='skipped', reason='budget'); continue
        r = run_command([*cmd, nb.relative_to(ROOT)] + (['--flags', 'cuda'] if test else []), left, env=child_env())
        runs[nb.name] = dict(status='ok' if r['returncode'] == 0 else 'failed', **r)
    return dict(notebooks=runs, note=None if nbs else 'no notebook has a `#| cuda` cell',
                failed=[n for n, r in runs.items() if r['status'] == 'failed'])


def cuda_test_ids(tests=ROOT / 'tests') -> list:
    "The pytest tests that run only on a CUDA GPU: those marked `skipif(not torch.cuda.is_available(), ...)`, as node ids."
    import ast
    ids = []
    for path in sorted(Path(tests).glob('test_*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith('test'): continue
            for d in node.decorator_list:
                if (isinstance(d, ast.Call) and getattr(d.func, 'attr', None) == 'skipif' and d.args
                        and re.search(r'\bnot\s+torch\.cuda\.is_available\(\)', ast.unparse(d.args[0]))):
                    ids.append(f'{path.relative_to(ROOT)}::{node.name}')
    return ids


def cuda_tests(timeout: float) -> dict:
    "Run the tests that need a CUDA GPU (slow ones too: they are few); pytest's summary and output."
    ids = cuda_test_ids()
    if not ids: return dict(tests=[], note='no test is marked to run only on a CUDA GPU')
    r = run_command([sys.executable, '-m', 'pytest', *ids, '-q', '-rs', '-p', 'no:cacheprovider'], timeout, env=child_env())
    summary = next((l for l in reversed(r['stdout_tail'].splitlines()) if re.search(r'passed|failed|error|skipped', l)), None)
    return dict(tests=ids, summary=summary, status='ok' if r['returncode'] == 0 else 'failed', **r)


# --- the plan ---

def plan(dry_run: bool) -> list:
    "The parts in the order they run: (name, minimum seconds worth starting, most seconds to give it, needs a GPU)."
    from lesson_configs import training_lessons
    lessons = [(f'lesson_{stem}', 20, 75, False) for stem in training_lessons()]
    return [('environment', 0, 60, False), ('amp_paths', 30, 90, False), ('bench_64', 40, 120, False), *lessons,
            ('bench_256', 40, 120, True), ('bench_128', 40, 120, True), ('bench_fp16_vs_bf16', 20, 60, False),
            ('cuda_tests', 20, 90, True), ('cuda_notebooks', 20, 90, True), ('bench_compile', 90, 240, True)]


def run_part(name: str, data, dry_run: bool, timeout: float) -> dict:
    "Run one part here, in this process; its result."
    if name == 'environment': return environment()
    if name == 'amp_paths': return amp_paths(data, dry_run)
    if name == 'bench_fp16_vs_bf16': return amp_speed(dry_run)
    if name == 'bench_compile': return bench(64, data, dry_run, timeout, compile=True)
    if name.startswith('bench_'): return bench(int(name.split('_')[1]), data, dry_run, timeout)
    if name.startswith('lesson_'): return run_lesson(name[len('lesson_'):], data, dry_run)
    if name == 'cuda_tests': return cuda_tests(timeout)
    if name == 'cuda_notebooks': return cuda_notebooks(timeout)
    raise ValueError(f"unknown part {name!r}")


def status_of(result: dict) -> str:
    "A finished part's status: 'failed' if it or any of its models, paths, notebooks or rows failed, else 'ok'."
    if not isinstance(result, dict): return 'ok'
    failed = result.get('status') == 'failed' or result.get('failed') or result.get('failed_models')
    failed = failed or any(r.get('status') == 'failed' for r in result.get('rows', []))
    return 'failed' if failed else 'ok'


def run_isolated(name: str, data, dry_run: bool, timeout: float) -> dict:
    "Run one part in a child process, killed at `timeout` s; its record."
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'part.json'
        cmd = [sys.executable, __file__, '--child', name, '--child-out', out, '--budget', int(timeout)]
        cmd += (['--data', data] if data else []) + (['--dry-run'] if dry_run else [])
        r = run_command(cmd, timeout + 5, env=child_env())
        if out.exists(): rec = json.loads(out.read_text())
        elif r['timed_out']: rec = dict(status='timed_out', error=f'killed after {timeout:.0f} s')
        else: rec = dict(status='failed', error=f"the child process exited {r['returncode']} without a result")
        if rec['status'] != 'ok': rec['stderr_tail'] = r['stderr_tail']
        return rec


def run_here(name: str, data, dry_run: bool, timeout: float) -> dict:
    "Run one part in this process; its record with status, seconds and result or error."
    start = time.perf_counter()
    try:
        result = run_part(name, data, dry_run, timeout)
        rec = dict(status=status_of(result), result=result)
    except Exception as e: rec = failure(e)
    rec['seconds'] = round(time.perf_counter() - start, 1)
    return rec


def check(data, dry_run: bool, out: Path, budget: float, parts=None, isolate=None) -> dict:
    "Run the plan's parts within `budget` seconds, writing the report to `out` after each; the report."
    isolate = not dry_run if isolate is None else isolate
    start = time.perf_counter()
    report = dict(tool='tools/gpu_check.py', dry_run=dry_run, date=now_utc(), budget_s=budget, data=str(data) if data else None,
                  isolated=isolate, environment=None, parts={}, skipped=[], failed=[])
    names = [p[0] for p in plan(dry_run)]
    unknown = sorted(set(parts or []) - set(names))
    if unknown: raise ValueError(f"unknown part(s) {unknown}; the parts are {names}")
    for name, min_s, cap_s, gpu_only in plan(dry_run):
        left = budget - (time.perf_counter() - start)
        if parts and name not in parts and name != 'environment': continue
        if dry_run and (gpu_only or name in ('bench_128', 'bench_256')):
            rec = dict(status='skipped', reason='dry run: needs a CUDA GPU' if gpu_only else 'dry run: the benchmark runs once, tiny')
        elif left < min_s and name != 'environment':
            rec = dict(status='skipped', reason=f'time budget: {left:.0f} s left of {budget:.0f}, the part needs at least {min_s} s')
        else:
            timeout = min(cap_s, left)
            print(f'gpu_check: {name} (up to {timeout:.0f} s)', file=sys.stderr, flush=True)
            rec = run_isolated(name, data, dry_run, timeout) if isolate and name != 'environment' else run_here(name, data, dry_run, timeout)
        if name == 'environment': report['environment'] = rec.get('result')
        report['parts'][name] = rec
        if rec['status'] == 'skipped': report['skipped'].append(name)
        elif rec['status'] != 'ok': report['failed'].append(name)
        report['elapsed_s'] = round(time.perf_counter() - start, 1)
        write_json(out, report)
    return report


# --- the data folder ---

def prepare(dest: Path, shared: Path, n_imagenet: int = 300, n_cifar: int = 3000, seed: int = 0) -> dict:
    "Copy a seeded random subset of the ImageNet sample and of CIFAR-10's training images into `dest`; what was copied."
    import random, tarfile
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()): raise FileExistsError(f"{dest} exists and is not empty: choose a new folder")
    photos = sorted((shared / 'imagenet-sample').glob('*.jpg'))
    archive = shared / 'cifar10' / 'cifar10-jpg.tar.gz'
    if not photos or not archive.exists(): raise FileNotFoundError(f"{shared} lacks imagenet-sample/*.jpg or {archive.relative_to(shared)}")
    rng = random.Random(seed)
    (dest / 'imagenet').mkdir(parents=True)
    for p in rng.sample(photos, min(n_imagenet, len(photos))): shutil.copy2(p, dest / 'imagenet' / p.name)
    with tarfile.open(archive) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile() and '/train/' in f'/{m.name}' and m.name.endswith('.jpg'))
    chosen = set(rng.sample(names, min(n_cifar, len(names))))
    with tarfile.open(archive) as tar:   # one pass in archive order: a gzip stream cannot seek back cheaply
        for m in tar:
            if m.name not in chosen: continue
            target = dest / 'cifar10' / Path(m.name).parent.name / Path(m.name).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(m).read())
    files = [p for p in dest.rglob('*') if p.is_file()]
    return dict(folder=str(dest), imagenet=len(list((dest / 'imagenet').iterdir())), cifar10=len(list((dest / 'cifar10').rglob('*.jpg'))),
                mib=round(sum(p.stat().st_size for p in files) / 2**20, 1))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', help='the data folder (imagenet/, cifar10/): see --prepare; not needed with --dry-run')
    p.add_argument('--out', help='the JSON report to write (an existing file is kept unless --force)')
    p.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    p.add_argument('--dry-run', action='store_true', help='on the CPU: tiny sizes, a few steps, the sample photos; GPU parts skipped')
    p.add_argument('--budget', type=float, default=BUDGET_S, help=f'seconds for the whole run (default {BUDGET_S})')
    p.add_argument('--parts', type=lambda t: [s for s in t.split(',') if s], default=None, help='run only these parts (comma-separated)')
    p.add_argument('--isolate', action=argparse.BooleanOptionalAction, default=None,
                   help='each part in its own process (default: on, except in a dry run)')
    p.add_argument('--prepare', metavar='DIR', help='make the data folder DIR from --shared and exit')
    p.add_argument('--shared', default=str(ROOT.parent / 'shared' / 'data'), help='the course data copies, for --prepare')
    p.add_argument('--child', help=argparse.SUPPRESS)
    p.add_argument('--child-out', help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.prepare:
        print(json.dumps(prepare(Path(args.prepare), Path(args.shared)), indent=1)); return 0
    if args.child:   # one part, in this (child) process
        rec = run_here(args.child, args.data, args.dry_run, args.budget)
        rec['peak_ram_mib'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        write_json(Path(args.child_out), rec); return 0
    if not args.out: print('gpu_check: error: --out is required', file=sys.stderr); return 2
    out = Path(args.out)
    if args.data: args.data = str(Path(args.data).resolve())   # the children run from the repository root
    if out.exists() and not args.force:
        print(f'gpu_check: error: {out} exists; pass --force to overwrite it', file=sys.stderr); return 2
    if not args.dry_run:
        import torch
        if not torch.cuda.is_available():
            print('gpu_check: error: no CUDA GPU here; use --dry-run to check the script on a CPU', file=sys.stderr); return 2
        if not args.data or not (Path(args.data) / 'imagenet').is_dir():
            print(f'gpu_check: error: --data must be a folder with imagenet/ (and cifar10/); got {args.data!r}. '
                  'Make one with --prepare', file=sys.stderr); return 2
    try: report = check(args.data, args.dry_run, out, args.budget, args.parts, args.isolate)
    except ValueError as e: print(f'gpu_check: error: {e}', file=sys.stderr); return 2
    print(f"gpu_check: {len(report['parts'])} parts in {report['elapsed_s']} s; failed: {report['failed'] or 'none'}; "
          f"skipped: {report['skipped'] or 'none'}; report: {out}", file=sys.stderr)
    return 0


if __name__ == '__main__': sys.exit(main())
