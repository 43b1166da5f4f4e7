"Downloads against a web server on 127.0.0.1 (no test needs the internet), and the data pipeline's bad-input paths."
import hashlib, io, tarfile, threading, zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from colorcourse import data
from colorcourse.data import (DATASETS, RemoteDataset, colorization_dls, download, download_url, extract_archive,
                              verify_file)


class RangeHandler(SimpleHTTPRequestHandler):
    "Serves files from a folder, honours `Range: bytes=N-`, and logs each request path on the server."
    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get('Range')))
        path = self.translate_path(self.path)
        try: body = open(path, 'rb').read()
        except OSError: return self.send_error(404)
        start = int(self.headers['Range'].split('=')[1].rstrip('-')) if self.headers.get('Range') else 0
        if start >= len(body) and start: return self.send_error(416)
        self.send_response(206 if start else 200)
        self.send_header('Content-Length', str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args): pass


@pytest.fixture
def server(tmp_path):
    "A web server on 127.0.0.1 serving `tmp_path/'www'`; yields (base URL, folder, request log)."
    www = tmp_path / 'www'; www.mkdir()
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), partial(RangeHandler, directory=str(www)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True); thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}', www, httpd.requests
    httpd.shutdown(); httpd.server_close()


def photo_bytes(seed: int, fmt='PNG') -> bytes:
    "A small colourful image file."
    rng = np.random.default_rng(seed)
    buf = io.BytesIO(); Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def make_tar(path, files: dict):
    "A .tgz archive holding `files` (name -> bytes)."
    with tarfile.open(path, 'w:gz') as t:
        for name, content in files.items():
            info = tarfile.TarInfo(name); info.size = len(content); t.addfile(info, io.BytesIO(content))


def sha256(path) -> str: return 'sha256:' + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def toy_dataset(server, monkeypatch):
    "A registered dataset 'toy' whose archive holds 4 photos in two class folders, served locally."
    url, www, requests = server
    make_tar(www / 'toy.tgz', {f'toy/{c}/{i}.png': photo_bytes(i) for i, c in enumerate('aabb')})
    monkeypatch.setitem(DATASETS, 'toy', RemoteDataset(f'{url}/toy.tgz', sha256(www / 'toy.tgz'),
                                                       (www / 'toy.tgz').stat().st_size, 'toy', 'a test archive'))
    return www, requests


def test_download_once_then_no_network(toy_dataset, tmp_path):
    www, requests = toy_dataset
    root = download('toy', tmp_path / 'data', progress=False)
    assert root == tmp_path / 'data' / 'toy'
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob('*.png')) == ['a/0.png', 'a/1.png', 'b/2.png', 'b/3.png']
    assert len(requests) == 1
    assert not (tmp_path / 'data' / 'toy.tgz').exists() and not list((tmp_path / 'data').glob('*.part'))
    assert download('toy', tmp_path / 'data', progress=False) == root
    assert len(requests) == 1, "a second call must do no network work"
    dls = colorization_dls(root, size=16, bs=2, valid_pct=0.25, device='cpu')
    assert dls.counts.used == 4 and dls.one_batch()[0].shape == (2, 1, 16, 16)


def test_data_dir_from_environment(toy_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv('COLORCOURSE_DATA', str(tmp_path / 'elsewhere'))
    assert download('toy', progress=False) == tmp_path / 'elsewhere' / 'toy'


def test_bad_hash_deletes_the_download_and_raises(toy_dataset, tmp_path, monkeypatch):
    info = DATASETS['toy']
    monkeypatch.setitem(DATASETS, 'toy', RemoteDataset(info.url, 'sha256:' + '0' * 64, info.size, 'toy', 'tampered'))
    with pytest.raises(ValueError, match='corrupt and was deleted.*sha256'):
        download('toy', tmp_path / 'data', progress=False)
    assert list((tmp_path / 'data').iterdir()) == [], "nothing may be left behind"


def test_wrong_size_is_caught_before_hashing(server, tmp_path):
    url, www, _ = server
    (www / 'f.bin').write_bytes(b'x' * 100)
    with pytest.raises(ValueError, match='100 bytes, expected 99'):
        download_url(f'{url}/f.bin', tmp_path / 'f.bin', checksum=None, size=99, progress=False)
    assert not (tmp_path / 'f.bin').exists() and not (tmp_path / 'f.bin.part').exists()


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    url, www, requests = server
    payload = bytes(range(256)) * 4000
    (www / 'big.bin').write_bytes(payload)
    (tmp_path / 'big.bin.part').write_bytes(payload[:300_000])      # what an interrupted run left behind
    checksum = 'sha256:' + hashlib.sha256(payload).hexdigest()
    out = download_url(f'{url}/big.bin', tmp_path / 'big.bin', checksum, len(payload), progress=False)
    assert out.read_bytes() == payload
    assert requests == [('/big.bin', 'bytes=300000-')]


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(ConnectionError, match='cannot download http://127.0.0.1:9/'):
        download_url('http://127.0.0.1:9/x.tgz', tmp_path / 'x.tgz', progress=False, timeout=5)


def test_missing_file_on_server(server, tmp_path):
    url, _, _ = server
    with pytest.raises(ConnectionError, match='HTTP 404'):
        download_url(f'{url}/nothing.tgz', tmp_path / 'nothing.tgz', progress=False)


def test_md5_checks_and_unknown_kinds(tmp_path):
    f = tmp_path / 'f.bin'; content = b'a' * (2**20 + 10); f.write_bytes(content)
    verify_file(f, 'md5:' + hashlib.md5(content).hexdigest(), len(content))
    with pytest.raises(ValueError, match='failed its md5 check'):
        verify_file(f, 'md5:' + hashlib.md5(content[:2**20]).hexdigest())
    with pytest.raises(ValueError, match="unknown checksum kind 'crc32'"):
        verify_file(f, 'crc32:1234')


def test_zip_archives_and_unsafe_paths(tmp_path):
    good = tmp_path / 'good.zip'
    with zipfile.ZipFile(good, 'w') as z: z.writestr('photos/x.png', photo_bytes(1))
    dest = tmp_path / 'out'; dest.mkdir()
    assert extract_archive(good, dest) == [dest / 'photos'] and (dest / 'photos' / 'x.png').exists()
    evil = tmp_path / 'evil.tgz'
    make_tar(evil, {'../escaped.txt': b'gotcha'})
    with pytest.raises(ValueError, match='unsafe path'):
        extract_archive(evil, dest)
    assert not (tmp_path / 'escaped.txt').exists()


def test_extraction_never_overwrites_existing_folders(tmp_path):
    archive = tmp_path / 'a.tgz'; make_tar(archive, {'photos/new.png': photo_bytes(2)})
    dest = tmp_path / 'out'; (dest / 'photos').mkdir(parents=True); (dest / 'photos' / 'mine.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='photos'):
        extract_archive(archive, dest)
    assert (dest / 'photos' / 'mine.txt').read_text() == 'keep me' and not (dest / 'photos' / 'new.png').exists()


def test_a_dataset_fastai_hosts_goes_through_untar_data(server, tmp_path, monkeypatch):
    url, www, requests = server
    monkeypatch.setenv('FASTAI_HOME', str(tmp_path / 'fastai-home'))
    make_tar(www / 'toyfast.tgz', {f'toyfast/train/{c}/{i}.png': photo_bytes(i) for i, c in enumerate('ab')})
    monkeypatch.setitem(DATASETS, 'toyfast', RemoteDataset(f'{url}/toyfast.tgz', None, None, 'toyfast', 'a test', fastai=True))
    root = download('toyfast', tmp_path / 'data', progress=False)
    assert root == tmp_path / 'data' / 'toyfast'
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob('*.png')) == ['train/a/0.png', 'train/b/1.png']
    assert download('toyfast', tmp_path / 'data', progress=False) == root and len(requests) == 1, "cached after the first call"


def test_fastai_keeps_a_checksum_for_each_dataset_it_hosts():
    import fastai.data
    from fastdownload import read_checks, checks_module
    checks = read_checks(checks_module(fastai.data))
    hosted = [name for name, info in DATASETS.items() if info.fastai]
    assert sorted(hosted) == ['cifar10', 'coco-sample', 'imagenette', 'imagenette-320']
    assert all(DATASETS[name].url in checks for name in hosted)


def jpeg_bytes(w: int, h: int, seed: int) -> bytes:
    "A colourful JPEG of w x h pixels."
    rng = np.random.default_rng(seed)
    buf = io.BytesIO(); Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, 'JPEG'); return buf.getvalue()


def imagenet_zip(www, names_sizes: dict):
    "A zip like GitHub's archive of the ImageNet-sample repository: one folder of `<wnid>_<class>.JPEG` files and a README."
    with zipfile.ZipFile(www / 'sample.zip', 'w') as z:
        for i, (name, (w, h)) in enumerate(names_sizes.items()): z.writestr(f'repo-abc/{name}.JPEG', jpeg_bytes(w, h, i))
        z.writestr('repo-abc/README.md', 'photos')


def test_imagenet_sample_keeps_the_course_photos_shrunk(server, tmp_path, monkeypatch):
    url, www, _ = server
    imagenet_zip(www, {'n01_tench': (600, 400), 'n02_goldfish': (120, 90), 'n03_not_used': (300, 300)})
    monkeypatch.setattr(data, 'imagenet_sample_names', lambda: ['n01_tench', 'n02_goldfish'])
    monkeypatch.setitem(DATASETS, 'imagenet-sample', RemoteDataset(
        f'{url}/sample.zip', None, None, 'imagenet-sample', 'test', convert=data.imagenet_sample_photos))
    root = download('imagenet-sample', tmp_path / 'data', progress=False)
    assert sorted(p.name for p in root.iterdir()) == ['n01_tench.jpg', 'n02_goldfish.jpg']
    assert Image.open(root / 'n01_tench.jpg').size == (384, 256), "shorter side shrunk to 256"
    assert Image.open(root / 'n02_goldfish.jpg').size == (120, 90), "small photos are not enlarged"
    assert sorted(p.name for p in (tmp_path / 'data').iterdir()) == ['.imagenet-sample.complete', 'imagenet-sample']


def test_imagenet_sample_missing_photos_are_named(server, tmp_path, monkeypatch):
    url, www, _ = server
    imagenet_zip(www, {'n01_tench': (300, 300)})
    monkeypatch.setattr(data, 'imagenet_sample_names', lambda: ['n01_tench', 'n02_goldfish'])
    monkeypatch.setitem(DATASETS, 'imagenet-sample', RemoteDataset(f'{url}/sample.zip', None, None, 'imagenet-sample', 'test',
                                                                   convert=data.imagenet_sample_photos))
    with pytest.raises(ValueError, match='lacks 1 of the course.s 2 photos .n02_goldfish'):
        download('imagenet-sample', tmp_path / 'data', progress=False)
    assert not (tmp_path / 'data' / '.imagenet-sample.complete').exists() and not (tmp_path / 'data' / 'repo-abc').exists()


def test_the_package_lists_the_900_imagenet_photos():
    names = data.imagenet_sample_names()
    assert len(names) == 900 and len({n.split('_')[0] for n in names}) == 900
    assert all(n.startswith('n') and n[1:9].isdigit() for n in names)


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match='cifar10, coco-sample, imagenet-sample, imagenette, imagenette-320, tiny-imagenet'):
        download('coco')


def test_every_dataset_of_our_own_is_checked():
    for name, info in DATASETS.items():
        if info.fastai: continue
        assert info.checksum is not None or info.convert is not None, name
    assert DATASETS['tiny-imagenet'].checksum == 'md5:90528d7ca1a48142e341f4ef8d21d0de'


def test_lesson_source_override(monkeypatch, tmp_path):
    monkeypatch.setenv('COLORCOURSE_SOURCE', str(tmp_path))
    assert data.lesson_source('tiny-imagenet') == tmp_path
    monkeypatch.delenv('COLORCOURSE_SOURCE')
    assert data.lesson_source('sample') == 'sample'


def test_unwritable_disk_cache_is_a_clear_error(tmp_path):
    folder = tmp_path / 'photos'; folder.mkdir()
    for i in range(3): (folder / f'{i}.png').write_bytes(photo_bytes(i))
    (folder / '.colorcourse-cache').write_text('a file where the cache folder should go')   # fails even for root
    with pytest.raises(PermissionError, match="cannot write the image cache.*cache='memory'"):
        colorization_dls(folder, size=16, bs=2, cache='disk', device='cpu')
    assert (folder / '.colorcourse-cache').read_text().startswith('a file'), "the user's file is untouched"


def test_rgba_palette_cmyk_files_in_a_folder_all_train(tmp_path):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    rgb.convert('RGBA').save(tmp_path / 'rgba.png')
    rgb.convert('P', palette=Image.Palette.ADAPTIVE).save(tmp_path / 'palette.png')
    rgb.convert('CMYK').save(tmp_path / 'cmyk.jpg')
    rgb.save(tmp_path / 'plain.webp', lossless=True)
    dls = colorization_dls(tmp_path, size=16, bs=2, valid_pct=0.25, device='cpu')
    assert dict(dls.counts) == dict(found=4, used=4, gray=0, unreadable=0)
