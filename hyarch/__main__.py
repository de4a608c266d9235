import sys

from hyarch.cli import main

sys.exit(main())
