"The installed `colorcourse` command, run as a user runs it."
import re, subprocess

import colorcourse


def run(exe, *args):
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def test_version(console_script):
    r = run(console_script, '--version')
    assert r.returncode == 0 and r.stdout.strip() == f'colorcourse {colorcourse.__version__}'


def test_help_lists_the_subcommands(console_script):
    r = run(console_script, '--help')
    assert r.returncode == 0 and 'usage: colorcourse' in r.stdout and 'info' in r.stdout


def test_no_command_prints_help(console_script):
    r = run(console_script)
    assert r.returncode == 0 and 'usage: colorcourse' in r.stdout


def test_info_names_the_device(console_script):
    r = run(console_script, 'info')
    assert r.returncode == 0, r.stderr
    assert f'colorcourse {colorcourse.__version__}' in r.stdout
    assert re.search(r'^device: (cpu: \d+ threads|cuda: .+|mps: .+)$', r.stdout, re.M), r.stdout


def test_unknown_command_is_one_clear_error(console_script):
    r = run(console_script, 'paint')
    assert r.returncode == 2 and "invalid choice: 'paint'" in r.stderr and 'Traceback' not in r.stderr
