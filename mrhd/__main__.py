import sys

from mrhd.cli import main

sys.exit(main())
