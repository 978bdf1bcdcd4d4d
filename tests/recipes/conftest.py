"""The recipe tests: every app in examples/recipes, imported and driven in-process (and, in
test_recipes_servers.py, served by real servers).

The examples' directory goes first on ``sys.path`` here, before the test modules import the
examples, as ``uvicorn --app-dir examples/recipes`` would put it.
"""

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "recipes"

if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))
