"""`python -m keel.localfleet` (what `make run` runs): see `keel.localfleet.launcher`."""

import sys

from keel.localfleet.launcher import main

sys.exit(main())
