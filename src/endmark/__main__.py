import sys

from endmark.cli import main

sys.exit(main())
