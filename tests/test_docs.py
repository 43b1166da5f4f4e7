"""The docs site as nbdev builds it: `nbdev-proc-nbs` succeeds, links inside the site resolve, every
exported name is documented, and every page renders in a headless browser without console errors.

Quarto cannot be installed on the build machines, so the pages are rendered from nbdev's processed
notebooks (`_proc/`, exactly what `quarto render` reads) with nbconvert's HTML exporter, and opened
in Debian's Chromium (`.ci/run` installs it). The deploy workflow renders the same `_proc/` with Quarto."""
import json, os, re, shutil, subprocess, sys
from pathlib import Path

import nbformat
import pytest
import yaml

from conftest import NBS, ROOT

ALL_NBS = sorted(p.name for p in NBS.glob('*.ipynb') if not p.name.startswith('_'))
SITE_URL = yaml.safe_load((NBS / 'nbdev.yml').read_text())['website']['site-url'].rstrip('/') + '/'
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
NO_CHROMIUM = 'Debian package `chromium` is not installed (.ci/run installs it: apt-get install chromium)'


def sidebar_names() -> set:
    "Notebooks named in nbs/sidebar.yml: the pages of the site."
    return set(re.findall(r'[\w.-]+\.ipynb', (NBS / 'sidebar.yml').read_text()))


def skip_if_in_progress(name: str):
    "A notebook not yet in the sidebar is a lesson being written: its docs are checked once the lead adds it (test_course checks the sidebar)."
    if name not in sidebar_names(): pytest.skip(f'{name} is not in nbs/sidebar.yml yet (a lesson in progress)')


# --- nbdev-proc-nbs, once per test run, into a copy of the checkout ---

def _proc_one(root: Path, name: str, env: dict) -> str:
    "Process one notebook; '' or the tail of the error."
    r = subprocess.run(['nbdev-proc-nbs', '--file-glob', name, '--n-workers', '0'], cwd=root, capture_output=True, text=True, timeout=600, env=env)
    if r.returncode == 0 and (root / '_proc' / name).exists(): return ''
    err = (r.stdout + r.stderr).strip().splitlines()
    start = max([i for i, l in enumerate(err) if l.startswith('Exception: Error in notebook')] or [len(err) - 20])
    return '\n'.join(err[start:])[-3000:]


@pytest.fixture(scope='module')
def site(tmp_path_factory) -> dict:
    "`nbdev-proc-nbs` in a copy of the checkout (nothing written in the repo); the `_proc` folder and each failing notebook's error."
    root = tmp_path_factory.mktemp('site')
    for f in ('pyproject.toml', 'README.md'): shutil.copy2(ROOT / f, root / f)
    shutil.copytree(ROOT / 'colorcourse', root / 'colorcourse', ignore=shutil.ignore_patterns('__pycache__'))
    skip = shutil.ignore_patterns('_*.ipynb', '.ipynb_checkpoints', 'models', '*.safetensors', '*.pth')
    in_progress = lambda d, names: {n for n in names if n.endswith('.ipynb') and n not in sidebar_names()}
    shutil.copytree(NBS, root / 'nbs', ignore=lambda d, names: skip(d, names) | in_progress(d, names))
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / 'nbdev-proc-nbs').exists(): pytest.fail('nbdev-proc-nbs is missing: pip install -e ".[dev]"')
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    if not shutil.which('quarto'):
        # nbdev-proc-nbs does not need Quarto, but offers to install it (with sudo and a download) when it is missing.
        stub = root / '.bin'; stub.mkdir()
        (stub / 'quarto').write_text('#!/bin/sh\necho "quarto is not installed (tests/test_docs.py stub)" >&2\nexit 1\n')
        (stub / 'quarto').chmod(0o755)
        env['PATH'] = f"{stub}{os.pathsep}{env['PATH']}"
    r = subprocess.run([bin_dir / 'nbdev-proc-nbs', '--n-workers', '2'], cwd=root, capture_output=True, text=True, timeout=900, env=env)
    errors = {}
    if r.returncode != 0:  # find which notebooks fail, one at a time (the ones already processed are cached)
        errors = {n: e for n in ALL_NBS if not (root / '_proc' / n).exists() and (e := _proc_one(root, n, env))}
        if not errors: errors = {'(all)': (r.stdout + r.stderr)[-3000:]}
    return dict(root=root, proc=root / '_proc', errors=errors)


def processed(site, name: str) -> dict:
    "The processed notebook `name` as JSON; fails if nbdev could not process it."
    if name in site['errors']: pytest.fail(f'nbdev-proc-nbs failed on {name}:\n{site["errors"][name]}')
    if not (site['proc'] / name).exists(): pytest.fail(f'nbdev-proc-nbs wrote no _proc/{name}:\n{site["errors"].get("(all)", "")}')
    return json.loads((site['proc'] / name).read_text())


def src(cell) -> str: return cell['source'] if isinstance(cell['source'], str) else ''.join(cell['source'])


def front_matter(nb) -> dict:
    "The YAML front matter nbdev writes as the first raw cell (title, description, output-file)."
    raw = next((src(c) for c in nb['cells'] if c['cell_type'] == 'raw'), '').strip()
    return (yaml.safe_load(raw.strip('-')) or {}) if raw.startswith('---') else {}


def page_name(name: str) -> str:
    "The HTML page Quarto writes for notebook `name`: nbdev sets `output-file` without the number (01_lab.ipynb -> lab.html)."
    from nbdev.config import nbpath2html
    return nbpath2html(name).name


@pytest.mark.parametrize('name', ALL_NBS)
def test_nbdev_proc_nbs_processes_the_notebook(site, name):
    "nbdev's docs processors execute every cell with an import or an export (and show_doc): such a cell must not use earlier results."
    skip_if_in_progress(name)
    if '(all)' in site['errors']: pytest.fail(f"nbdev-proc-nbs failed:\n{site['errors']['(all)']}")
    fm = front_matter(processed(site, name))
    assert fm.get('title'), f'{name}: nbdev found no title (a `# Title` markdown cell)'
    assert fm.get('output-file', page_name(name)) == page_name(name)


def test_committed_quarto_config_is_what_nbdev_writes(site):
    "nbdev-docs rewrites nbs/nbdev.yml from pyproject.toml: the committed one must already be that (else the site and the repo disagree)."
    for f in ('nbdev.yml', '_quarto.yml'):
        assert (site['root'] / 'nbs' / f).read_text() == (NBS / f).read_text(), f'nbs/{f} differs from what nbdev-proc-nbs writes'


# --- ids (anchors) and links ---

def pandoc_id(heading: str) -> str:
    "The id pandoc (and so Quarto) gives a heading: lower case, alphanumerics `_-.`, spaces to hyphens, from the first letter."
    text = re.sub(r'\{[^}]*\}\s*$', '', heading)            # attributes
    text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', text)     # links keep their text
    text = re.sub(r'<[^>]+>|[`*]', '', text).strip().lower()
    text = re.sub(r'\s+', '-', re.sub(r'[^\w\s.-]', '', text))
    return re.sub(r'^[^a-z]+', '', text)


def page_anchors(nb) -> set:
    "Every id a page will have: headings of markdown cells and of markdown outputs (show_doc), explicit `{#id}` and `id=` attributes."
    texts = [src(c) for c in nb['cells'] if c['cell_type'] == 'markdown']
    for c in nb['cells']:
        for o in c.get('outputs', []):
            md = o.get('data', {}).get('text/markdown')
            if md: texts.append(md if isinstance(md, str) else ''.join(md))
    ids = set()
    for t in texts:
        t = re.sub(r'```.*?```', '', t, flags=re.S)
        for h in re.findall(r'^#{1,6}\s+(.+?)\s*$', t, re.M):
            explicit = re.search(r'\{[^}]*#([\w.:-]+)[^}]*\}\s*$', h)
            ids.add(explicit.group(1) if explicit else pandoc_id(h))
        ids.update(re.findall(r'\{#([\w.:-]+)', t))
        ids.update(re.findall(r'\bid="([^"]+)"', t))
    return ids


@pytest.fixture(scope='module')
def pages(site) -> dict:
    "page file name (lab.html, and 01_lab.ipynb for links to the notebook) -> the ids on that page."
    out = {}
    for name in ALL_NBS:
        ok = name not in site['errors'] and (site['proc'] / name).exists()
        # a notebook nbdev failed on (its own test fails) still counts as a page, with the ids of its markdown
        nb = processed(site, name) if ok else json.loads((NBS / name).read_text())
        out[page_name(name)] = out[name] = page_anchors(nb)
        if not ok or name not in sidebar_names():  # unprocessed or in progress: take the show_doc anchors nbdev's index promises
            out[name] |= {link.partition('#')[2] for syms in modidx_syms().values() for link, _ in syms.values()
                          if link.partition('#')[0] == page_name(name)}
    return out


def internal_links(text: str):
    "Links in Markdown or HTML that point inside the site: relative ones and absolute ones to the site's own address."
    text = re.sub(r'```.*?```|`[^`\n]*`', '', text, flags=re.S)   # code is not links (nbdev's links keep their code in the text part)
    targets = re.findall(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)', text) + re.findall(r'(?:href|src)="([^"]+)"', text)
    for t in targets:
        if t.startswith(SITE_URL): yield t[len(SITE_URL):]
        elif not re.match(r'^[a-z][a-z0-9+.-]*:', t, re.I): yield t   # no scheme: relative


def check_link(target: str, here: str, pages: dict, nbs_dir: Path) -> str:
    "'' when `target` (seen on page `here`) resolves, else why not."
    path, _, anchor = target.partition('#')
    path = path.split('?')[0]
    if not path: page = here
    elif path.endswith(('.ipynb', '.html')):
        page = Path(path).name
        if page not in pages: return f'{target}: no notebook or page named {page}'
    else:
        return '' if (nbs_dir / path).exists() else f'{target}: no file nbs/{path}'
    if anchor and anchor not in pages[page]: return f'{target}: {page} has no #{anchor}'
    return ''


@pytest.mark.parametrize('name', ALL_NBS)
def test_internal_links_resolve(site, pages, name):
    "Links to other lessons (.ipynb or their .html pages), to #anchors, to images: in the notebook's markdown and in nbdev's rewritten docs."
    skip_if_in_progress(name)
    here = page_name(name)
    source = json.loads((NBS / name).read_text())
    bad = [e for c in source['cells'] if c['cell_type'] == 'markdown' for t in internal_links(src(c)) if (e := check_link(t, name, pages, NBS))]
    # nbdev turns `name` in backticks into links to the page that documents it: those must land too.
    nb = processed(site, name) if name not in site['errors'] else dict(cells=[])  # nbdev's failure is its own test's
    for c in nb['cells']:
        texts = [src(c)] if c['cell_type'] == 'markdown' else [
            (md if isinstance(md, str) else ''.join(md)) for o in c.get('outputs', []) if (md := o.get('data', {}).get('text/markdown'))]
        bad += [e for t in texts for link in internal_links(t) if (e := check_link(link, here, pages, NBS))]
    assert not bad, f'{name}: broken links:\n' + '\n'.join(sorted(set(bad)))


# --- every exported name is documented ---

def module_notebooks() -> dict:
    "module (e.g. 'cnn') -> the notebook that exports it (`#| default_exp`)."
    out = {}
    for name in ALL_NBS:
        m = re.search(r'#\|\s*default_exp\s+([\w.]+)', (NBS / name).read_text())
        if m: out[m.group(1)] = name
    return out


def modidx_syms() -> dict:
    "colorcourse/_modidx.py's symbols: module -> {qualified name: (doc link, file)}."
    ns = {}
    exec((ROOT / 'colorcourse' / '_modidx.py').read_text(), ns)
    return {m.removeprefix('colorcourse.'): syms for m, syms in ns['d']['syms'].items()}


def exporting_notebooks(module: str) -> dict:
    "page -> notebook, for every notebook that exports cells to `module`: its `#| default_exp`, or `#| export module` (lessons 02 and 04 put the fastai-free readers and checkpoints in core)."
    pattern = re.compile(r'#\|\s*(?:default_exp|exporti?)\s+' + re.escape(module) + r'\b')
    return {page_name(name): name for name in ALL_NBS if pattern.search((NBS / name).read_text())}


@pytest.mark.parametrize('module', sorted(modidx_syms()))
def test_every_exported_name_has_docs(site, pages, module):
    "Each public name of colorcourse/_modidx.py: a show_doc on the page of the notebook that exports it (nbdev adds one per exported function and class) at the anchor the index links to."
    nb_name = module_notebooks().get(module)
    assert nb_name, f'colorcourse.{module} is in _modidx.py but no notebook has `#| default_exp {module}`'
    skip_if_in_progress(nb_name)
    exporters = exporting_notebooks(module)
    docs = {}
    def notebook_docs(name):
        "The names a notebook shows with show_doc, and its whole processed text."
        if name not in docs:
            nb = processed(site, name)
            code = '\n'.join(src(c) for c in nb['cells'] if c['cell_type'] == 'code')
            docs[name] = set(re.findall(r'show_doc\(\s*([\w.]+)', code)), json.dumps(nb)
        return docs[name]
    missing = []
    for qual, (link, _) in modidx_syms()[module].items():
        name = qual.removeprefix(f'colorcourse.{module}.')
        if any(part.startswith('_') for part in name.split('.')): continue   # private helpers and dunders
        # the protocols of the libraries: fastai Callback events, fastai Metric, nn.Module.forward
        if '.' in name and re.fullmatch(r'(before|after)_\w+|forward|reset|accumulate|value|name', name.split('.')[-1]): continue
        link_page, _, anchor = link.partition('#')
        if link_page not in exporters:
            missing.append(f'{name}: _modidx links to {link_page}, which no notebook exporting to {module} makes ({", ".join(exporters)})'); continue
        page = link_page
        shown, text = notebook_docs(exporters[page])
        if '.' not in name:
            if name not in shown: missing.append(f'{name}: no show_doc({name}) on {page}')
            elif anchor not in pages[page]: missing.append(f'{name}: {page} has no #{anchor}')
        elif name not in shown and name.split('.')[-1] not in text:
            missing.append(f'{name}: the method is neither shown with show_doc nor named on {page}')
    assert not missing, f'colorcourse.{module} ({nb_name}):\n' + '\n'.join(missing)


# --- pages rendered to HTML and opened in Chromium ---

CELL_KEYS = {'cell_type', 'source', 'metadata', 'outputs', 'execution_count', 'id', 'attachments'}
# Injected first into each page: report console.error calls, failed loads of local files and unhandled rejections in a form
# Chromium's log shows (uncaught exceptions appear there by themselves as "Uncaught ...").
CONSOLE_HOOK = """<script>
(function(){
  var log = console.log.bind(console);
  console.error = function(){ log('CONSOLE-ERROR ' + Array.prototype.join.call(arguments, ' ')); };
  window.addEventListener('error', function(e){
    var t = e.target, url = t && (t.src || t.href);
    if (url && t !== window) { if (!/^https?:/.test(url)) log('CONSOLE-ERROR failed to load ' + url); }
  }, true);
  window.addEventListener('unhandledrejection', function(e){ log('CONSOLE-ERROR unhandled rejection ' + e.reason); });
})();
</script>"""


def directives(source: str) -> dict:
    return dict((m.group(1), m.group(2).strip()) for m in re.finditer(r'^#\|\s*([\w-]+)\s*:?\s*(.*)$', source, re.M))


def to_html(nb: dict) -> str:
    "A processed notebook as an HTML page, as Quarto would show it: title and subtitle from the front matter, hidden inputs hidden."
    nb = json.loads(json.dumps(nb))
    fm, cells = front_matter(nb), []
    if fm.get('title'):
        cells.append(dict(cell_type='markdown', metadata={}, source=f"# {fm['title']}\n\n> {fm.get('description', '')}"))
    for c in nb['cells']:
        if c['cell_type'] == 'raw': continue
        c = {k: v for k, v in c.items() if k in CELL_KEYS}
        c['metadata'] = {}
        if c['cell_type'] == 'code':
            d = directives(src(c))
            if d.get('include') == 'false': continue
            if d.get('echo') == 'false': c['metadata']['transient'] = {'remove_source': True}
            if d.get('output') == 'false': c['outputs'] = []
        cells.append(c)
    nb['cells'] = cells
    node = nbformat.reads(json.dumps(nb), as_version=4)
    from nbconvert import HTMLExporter
    body, _ = HTMLExporter(template_name='lab').from_notebook_node(node)
    return body.replace('<head>', '<head>\n' + CONSOLE_HOOK, 1)


@pytest.fixture(scope='module')
def html_pages(site, tmp_path_factory) -> Path:
    "The folder with each processed notebook rendered as its page (lab.html, index.html, ...)."
    out = tmp_path_factory.mktemp('html')
    for name in ALL_NBS:
        if name in site['errors'] or not (site['proc'] / name).exists(): continue
        (out / page_name(name)).write_text(to_html(processed(site, name)))
    for folder in NBS.iterdir():   # the files pages refer to (nbs/images/...), which Quarto copies into the site
        if folder.is_dir() and not folder.name.startswith(('.', '_')): shutil.copytree(folder, out / folder.name)
    return out


def chromium(url: str, tmp: Path, screenshot: Path = None, size=(1280, 1600)) -> list:
    "Open `url` in headless Chromium (offline: every host name fails to resolve); the console errors it logged."
    shot = screenshot or tmp / 'shot.png'
    cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--hide-scrollbars', f'--user-data-dir={tmp / "profile"}', '--enable-logging=stderr',
           '--v=0', '--host-resolver-rules=MAP * ~NOTFOUND', '--virtual-time-budget=5000', f'--window-size={size[0]},{size[1]}',
           f'--screenshot={shot}', url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert shot.exists(), f'Chromium wrote no screenshot (exit {r.returncode}):\n{r.stderr[-3000:]}'
    console = [l.split(':CONSOLE', 1)[1] for l in r.stderr.splitlines() if ':CONSOLE' in l]
    return [l for l in console if 'CONSOLE-ERROR' in l or 'Uncaught' in l]


@pytest.mark.skipif(not CHROMIUM, reason=NO_CHROMIUM)
@pytest.mark.parametrize('name', ALL_NBS)
def test_page_opens_in_chromium_without_console_errors(site, html_pages, name, tmp_path):
    skip_if_in_progress(name)
    processed(site, name)   # fails with nbdev's error when the notebook could not be processed
    page = html_pages / page_name(name)
    errors = chromium(page.as_uri(), tmp_path)
    assert not errors, f'{page.name}: console errors:\n' + '\n'.join(errors)


def check_screenshot(png: Path, size=(1280, 1600)):
    "A real page: the requested size, mostly not white, and many colours (text, code highlighting, figures)."
    from PIL import Image
    import numpy as np
    img = Image.open(png).convert('RGB')
    assert img.size == size, f'{png.name}: {img.size} instead of {size}'
    a = np.asarray(img)
    colours = len(np.unique(a.reshape(-1, 3), axis=0))
    not_white = (a.min(axis=2) < 240).mean()
    assert colours > 500, f'{png.name}: only {colours} distinct colours: a blank or broken page?'
    assert not_white > 0.05, f'{png.name}: {not_white:.1%} of the pixels are not white: a blank page?'


@pytest.mark.skipif(not CHROMIUM, reason=NO_CHROMIUM)
@pytest.mark.parametrize('name', ['index.ipynb', '01_lab.ipynb'])
def test_screenshot_of_home_and_a_lesson(site, html_pages, name, tmp_path):
    "The home page (syllabus table, badges, gallery) and a lesson with figures render as real pages."
    page = html_pages / page_name(name)
    shot = tmp_path / f'{page.stem}.png'
    chromium(page.as_uri(), tmp_path, screenshot=shot)
    check_screenshot(shot)
