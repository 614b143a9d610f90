"""``python -m hfx`` (and ``accelerate launch -m hfx run ...``)."""

import sys

from hfx.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
