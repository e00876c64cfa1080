"""``python3 -m llmhost.onhost TOOL ...``: the same entry point as the shipped zipapp."""

import sys

from llmhost.onhost.app import main

sys.exit(main())
