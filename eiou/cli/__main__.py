"""``python -m eiou.cli``: the same as the ``eiou`` command."""

import sys

from eiou.cli import main

sys.exit(main())
