"""The course's lesson list, generated from the lessons themselves: adding a lesson is adding one notebook.

Each lesson `nbs/NN_name.ipynb` says what the home page and the sidebar need in its own title cell,
which nbdev reads as the page's front matter:

    # The CIE Lab colour space

    > sRGB to linear light to XYZ to Lab, by hand, ...

    - syllabus: sRGB → XYZ → CIE Lab by hand, why Lab, the gamut, normalisation

`syllabus` is the row's "What it teaches"; an optional `- syllabus_title: Short title` is the row's
link text when it should be shorter than the title (lesson 00 has one). A value that starts with a
backtick or holds `: ` or ` #` goes in double quotes, as YAML wants.

The order is the file names' order (`06a_name.ipynb` goes between 06 and 07; `_name.ipynb` is a
scratch notebook and is left out). From these, this tool writes `nbs/sidebar.yml`, the syllabus
table of `nbs/index.ipynb` (a row with a Colab badge per lesson) and README.md (with
tools/readme.py); it also holds the setup cell that opens every notebook, `SETUP_CELL`.

    python tools/lessons.py                   # regenerate nbs/sidebar.yml, the syllabus in nbs/index.ipynb, README.md
    python tools/lessons.py --check           # exit 1 if any of them is out of date, or a setup cell is not SETUP_CELL
    python tools/lessons.py new 14_name "Title" "One-line description" "what it teaches, for the syllabus"
"""
import importlib.util, json, re, sys, tomllib
from pathlib import Path

from fastcore.nbio import md_frontmatter

ROOT = Path(__file__).resolve().parent.parent

# The first cell of every notebook: hidden in the docs; in Colab it installs colorcourse (never torch) from the package
# index, or, before the first release is there, from the GitHub repository (at the version's tag when it has one, else
# main); it says whether a GPU is present. tests/test_setup_cell.py runs it offline against a local index and git repository.
def course_version(root=ROOT) -> str:
    "The package's version, as colorcourse/__init__.py states it."
    return re.search(r'__version__\s*=\s*["\']([^"\']+)', (Path(root) / 'colorcourse' / '__init__.py').read_text()).group(1)


SETUP_CELL = """#| hide
# Setup: in Colab, install the course package (Colab's own torch stays as it is); elsewhere nothing is installed.
import sys, subprocess
if 'google.colab' in sys.modules:
    repo, version = 'https://github.com/colorcourse/colorcourse', '@VERSION@'
    for spec in ('colorcourse', f'colorcourse @ git+{repo}@v{version}', f'colorcourse @ git+{repo}'):   # the index, the tag, main
        pip = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', spec], capture_output=True, text=True)
        if pip.returncode == 0: break
    else: raise RuntimeError(f'could not install colorcourse from the package index or from {repo}:\\n{pip.stderr[-2000:]}')
%config InlineBackend.figure_formats = ['jpeg']  # photos stored as JPEG keep notebooks and docs small
import torch
print('GPU:', torch.cuda.get_device_name(0) if torch.cuda.is_available()
      else 'none, so this notebook runs on the CPU (lessons that train: Runtime > Change runtime type > GPU)')""".replace('@VERSION@', course_version())

# The lessons that train models, by number: only these ask Colab for a GPU runtime (notebook metadata `accelerator`).
TRAINING_LESSONS = ('04', '05', '06', '07', '08', '09', '10', '11', '12b', '13')


def wants_gpu(nb_name: str) -> bool:
    "Whether the notebook `nb_name` trains models, and so asks Colab for a GPU."
    number = re.match(r'(\d+[a-z]?)_', nb_name)
    return bool(number) and number.group(1) in TRAINING_LESSONS


def colab_metadata(nb: dict, nb_name: str) -> dict:
    "`nb`'s metadata with Colab's GPU hint set for a lesson that trains and removed for one that does not."
    meta = dict(nb['metadata'])
    colab = {k: v for k, v in meta.get('colab', {}).items() if k != 'gpuType'}
    meta.pop('accelerator', None)
    if wants_gpu(nb_name): meta['accelerator'], colab['gpuType'] = 'GPU', 'T4'
    meta['colab'] = {'provenance': [], **colab}
    return meta


def write_colab_metadata(root=ROOT) -> list:
    "Give every notebook the GPU hint `colab_metadata` says; the names of those changed."
    changed = []
    for path in sorted((Path(root) / 'nbs').glob('*.ipynb')):
        if path.name.startswith('_'): continue
        nb = read_json(path)
        meta = colab_metadata(nb, path.name)
        if meta != nb['metadata']: nb['metadata'] = meta; path.write_text(write_json(nb), encoding='utf-8'); changed.append(path.name)
    return changed


SYLLABUS_HEADER = "| # | Lesson | What it teaches | Open |\n|---|---|---|---|"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def read_json(path) -> dict: return json.loads(Path(path).read_text(encoding='utf-8'))
def write_json(nb: dict) -> str: return json.dumps(nb, indent=1, ensure_ascii=False) + '\n'   # nbdev-clean's format
def source(cell) -> str: return ''.join(cell['source'])
def source_lines(text: str) -> list:
    "A cell's text as the list of lines a notebook stores (each but the last ends with a newline)."
    lines = text.split('\n')
    return [l + '\n' for l in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def lesson_paths(root=ROOT) -> list:
    "The lesson notebooks in syllabus order (file-name order): every notebook but the home page and scratch (`_`) ones."
    return sorted(p for p in (Path(root) / 'nbs').glob('*.ipynb') if p.name != 'index.ipynb' and not p.name.startswith('_'))


def front_matter(nb_path) -> dict:
    "The front matter nbdev makes of a notebook's title cell (`# title`, `> description`, `- key: value` lines)."
    cell = next((c for c in read_json(nb_path)['cells'] if c['cell_type'] == 'markdown'), None)
    return md_frontmatter(source(cell)) if cell else {}


def lesson_info(nb_path) -> dict:
    "What the syllabus and the sidebar say of one lesson: number, notebook, link text, what it teaches."
    nb_path = Path(nb_path)
    fm = front_matter(nb_path)
    for key in ('title', 'description', 'syllabus'):
        if not fm.get(key):
            raise ValueError(f"{nb_path.name}: its title cell has no {key!r} (see tools/lessons.py: `# Title`, `> description`, `- syllabus: ...`)")
    number = re.match(r'(\d+[a-z]?)_', nb_path.name)
    if not number: raise ValueError(f"{nb_path.name}: a lesson's file name starts with its number, like `06_unet.ipynb` or `06a_name.ipynb`")
    return dict(number=number.group(1), name=nb_path.name, title=str(fm.get('syllabus_title') or fm['title']), teaches=str(fm['syllabus']))


def colab_url(nb_name: str, root=ROOT) -> str:
    "The address that opens `nbs/nb_name` of the main branch in Colab (the repository from pyproject.toml)."
    repo = tomllib.loads((Path(root) / 'pyproject.toml').read_text())['project']['urls']['Repository']
    return f"https://colab.research.google.com/github/{repo.removeprefix('https://github.com/').rstrip('/')}/blob/main/nbs/{nb_name}"


def syllabus_table(root=ROOT) -> str:
    "The home page's syllabus: one row per lesson with its link, what it teaches and its Colab badge."
    rows = [f"| {l['number']} | [{l['title']}]({l['name']}) | {l['teaches']} | [![Open In Colab]({BADGE})]({colab_url(l['name'], root)}) |"
            for l in map(lesson_info, lesson_paths(root))]
    return '\n'.join([SYLLABUS_HEADER, *rows])


def sidebar_yaml(root=ROOT) -> str:
    "nbs/sidebar.yml: the home page, then every lesson in order."
    lines = ['website:', '  sidebar:', '    contents:', '      - index.ipynb', '      - section: Lessons', '        contents:']
    return '\n'.join(lines + [f'          - {p.name}' for p in lesson_paths(root)]) + '\n'


def index_json(root=ROOT) -> str:
    "nbs/index.ipynb with its syllabus table regenerated (everything else as it is)."
    nb = read_json(Path(root) / 'nbs' / 'index.ipynb')
    table = re.compile(re.escape(SYLLABUS_HEADER) + r'(?:\n\|[^\n]*)*')
    cells = [c for c in nb['cells'] if c['cell_type'] == 'markdown' and table.search(source(c))]
    if len(cells) != 1: raise ValueError(f"nbs/index.ipynb: expected one syllabus table starting with {SYLLABUS_HEADER.splitlines()[0]!r}, found {len(cells)}")
    text = table.sub(lambda m: syllabus_table(root), source(cells[0]), count=1)
    cells[0]['source'] = source_lines(text)
    return write_json(nb)


def readme_text(root=ROOT, index_text: str = None) -> str:
    "README.md as tools/readme.py renders it (from `index_text` when given, else from nbs/index.ipynb)."
    spec = importlib.util.spec_from_file_location('readme_tool', Path(__file__).with_name('readme.py'))
    tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)
    if index_text is None: return tool.render_readme(root)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:   # the regenerated home page, rendered as readme.py will once it is written
        nb = Path(tmp) / 'index.ipynb'
        nb.write_text(index_text, encoding='utf-8')
        return tool.render_readme(root, nb)


def write_setup_cells(root=ROOT) -> list:
    "Make SETUP_CELL the first cell of every notebook whose first cell is an older setup cell; the names of those rewritten."
    fixed = []
    for name in setup_cell_problems(root):
        path = Path(root) / 'nbs' / name
        nb = read_json(path)
        first = nb['cells'][0]
        if first['cell_type'] != 'code' or not source(first).startswith('#| hide\n# Setup:'): continue   # not a setup cell: left for a person
        first['source'], first['outputs'], first['execution_count'] = source_lines(SETUP_CELL), [], None
        path.write_text(write_json(nb), encoding='utf-8'); fixed.append(name)
    return fixed


def setup_cell_problems(root=ROOT) -> list:
    "Notebooks (the home page too) whose first cell is not exactly SETUP_CELL."
    nbs = sorted(p for p in (Path(root) / 'nbs').glob('*.ipynb') if not p.name.startswith('_'))
    return [p.name for p in nbs if (c := read_json(p)['cells'][0])['cell_type'] != 'code' or source(c) != SETUP_CELL]


def generated(root=ROOT) -> dict:
    "Each generated file's path and the text it must have."
    root = Path(root)
    index = index_json(root)
    return {root / 'nbs' / 'sidebar.yml': sidebar_yaml(root), root / 'nbs' / 'index.ipynb': index,
            root / 'README.md': readme_text(root, index)}


def stale(root=ROOT, texts: dict = None) -> list:
    "The generated files that differ from what the lessons say (`texts`: `generated(root)`, when already at hand)."
    texts = generated(root) if texts is None else texts
    return [p for p, text in texts.items() if not p.exists() or p.read_text(encoding='utf-8') != text]


def new_lesson(name: str, title: str, description: str, teaches: str, root=ROOT) -> Path:
    "Write nbs/NN_name.ipynb: the setup cell, the title cell with its front matter, the Colab badge, `#| default_exp`."
    if not re.fullmatch(r'\d+[a-z]?_\w+', name): raise ValueError(f"{name!r}: a lesson is named like 14_name or 06a_name")
    path = Path(root) / 'nbs' / f'{name}.ipynb'
    if path.exists(): raise FileExistsError(f"{path} exists already: not overwriting it")
    q = lambda v: json.dumps(v, ensure_ascii=False)   # a JSON string is a YAML string, whatever it holds
    module = name.split('_', 1)[1]
    cells = [('code', SETUP_CELL), ('markdown', f"# {title}\n\n> {description}\n\n- syllabus: {q(teaches)}"),
             ('markdown', f"[![Open In Colab]({BADGE})]({colab_url(path.name, root)})\n\n**What you will learn**\n\n- ..."),
             ('code', f"#| default_exp {module}"),
             ('markdown', "## Summary\n\n..."), ('markdown', "## Exercises\n\n1. ..."), ('markdown', "## References\n\n- ...")]
    def cell(i, kind, text):
        c = dict(cell_type=kind, id=f'{name[:4]}{i:04d}', metadata={}, source=source_lines(text))
        if kind == 'code': c.update(execution_count=None, outputs=[])
        return c
    kernel = dict(display_name='python3', language='python', name='python3')
    nb = dict(cells=[cell(i, k, t) for i, (k, t) in enumerate(cells)], nbformat=4, nbformat_minor=5,
              metadata=dict(kernelspec=kernel))
    nb['metadata'] = colab_metadata(nb, path.name)
    path.write_text(write_json(nb), encoding='utf-8')
    return path


def main(argv=None) -> int:
    "Regenerate the lesson list (sidebar, syllabus, README), check it with --check, or start a lesson with `new`."
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['new']:
        if len(argv) != 5: print(__doc__, file=sys.stderr); return 2
        print(f"wrote {new_lesson(*argv[1:]).relative_to(ROOT)}: write the lesson, then run `python tools/lessons.py`")
        return 0
    if '--check' not in argv:
        for name in write_setup_cells(): print(f"wrote the setup cell of nbs/{name}")
        for name in write_colab_metadata(): print(f"wrote Colab's GPU hint of nbs/{name}")
    bad_setup = setup_cell_problems()
    if bad_setup: print(f"the first cell of {', '.join(bad_setup)} is not the setup cell (SETUP_CELL in tools/lessons.py): copy it exactly", file=sys.stderr)
    if '--check' in argv:
        out = stale()
        if out: print(f"out of date with the lessons: {', '.join(str(p.relative_to(ROOT)) for p in out)}: run `python tools/lessons.py`", file=sys.stderr)
        return 1 if out or bad_setup else 0
    texts = generated()
    for path in stale(texts=texts):
        path.write_text(texts[path], encoding='utf-8'); print(f"wrote {path.relative_to(ROOT)}")
    return 1 if bad_setup else 0


if __name__ == '__main__': sys.exit(main())
