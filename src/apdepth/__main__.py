import sys

from apdepth.cli import main

sys.exit(main())
