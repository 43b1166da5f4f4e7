"""`python -m colorcourse`: the `colorcourse` command, for launchers (`torchrun -m colorcourse train ...`) and where the script is not on the PATH.

Written by hand, the one module that is: nbdev exports one module per lesson, and this is no lesson's (nbs/12a_cli.ipynb shows and tests it)."""
import sys
from .cli import main

if __name__ == '__main__': sys.exit(main())
