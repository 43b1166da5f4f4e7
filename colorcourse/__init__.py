__version__ = "0.0.1"

import warnings as _warnings
# fastai's own layers use `torch.jit.script`, which newer PyTorch warns about on import; nothing a user of
# colorcourse can act on, so that one message is not shown (every other warning is).
_warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
